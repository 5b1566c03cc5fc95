"""Summaries of repeated runs: mean ± std over seeds of COCO metrics, as markdown tables."""
import math
from typing import List, Mapping, Optional, Sequence, Tuple

#: COCO box metrics reported by default
METRICS = ("AP", "AP50", "AP75")


def mean_std(values: Sequence[float]) -> Tuple[float, Optional[float]]:
    """Mean and sample standard deviation (ddof 1; None for fewer than two values). NaN values
    (no detections) count as 0 AP. ValueError for no values."""
    values = [0.0 if math.isnan(v) else float(v) for v in values]
    if not values:
        raise ValueError("no values")
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def format_mean_std(values: Sequence[float], decimals: int = 1) -> str:
    """'12.3 ± 0.4' (or '12.3' for one value, '-' for none)."""
    if not values:
        return "-"
    mean, std = mean_std(values)
    return f"{mean:.{decimals}f}" if std is None else f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table (numbers right-aligned)."""
    def cell(v):
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |",
             "| " + " | ".join("---" if i == 0 else "---:" for i in range(len(headers))) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def results_table(results: Mapping[Tuple[str, str], Mapping[int, Mapping[str, float]]], variants: Sequence[str],
                  datasets: Sequence[str], metrics: Sequence[str] = METRICS, decimals: int = 1) -> str:
    """Markdown table: one row per variant, ``metrics`` (mean ± std over seeds) per dataset.

    ``results[(variant, dataset)][seed]`` is the run's ``{"AP": ..., "AP50": ...}`` (COCO %);
    missing runs show '-'. The last column counts the seeds."""
    headers = ["variant"] + [f"{d} {m}" for d in datasets for m in metrics] + ["seeds"]
    rows = []
    for v in variants:
        row: List[object] = [v]
        seeds = set()
        for d in datasets:
            runs = results.get((v, d), {})
            seeds |= set(runs)
            row += [format_mean_std([r[m] for r in runs.values() if m in r], decimals) for m in metrics]
        row.append(len(seeds))
        rows.append(row)
    return markdown_table(headers, rows)


def paired_differences(results: Mapping[Tuple[str, str], Mapping[int, Mapping[str, float]]], variant: str,
                       reference: str, dataset: str, metric: str = "AP") -> List[float]:
    """``metric`` of ``variant`` minus ``reference`` on ``dataset``, per seed both have."""
    a, b = results.get((variant, dataset), {}), results.get((reference, dataset), {})
    diffs = []
    for seed in sorted(set(a) & set(b)):
        x, y = a[seed].get(metric), b[seed].get(metric)
        if x is not None and y is not None:
            diffs.append((0.0 if math.isnan(x) else x) - (0.0 if math.isnan(y) else y))
    return diffs


def verdict(diffs: Sequence[float]) -> str:
    """Plain words for paired differences over seeds: 'higher' / 'lower' when every seed agrees in
    sign and the mean exceeds its standard deviation, else 'no clear difference'."""
    if not diffs:
        return "not measured"
    mean, std = mean_std(diffs)
    if std is None:
        return "one seed: no spread to judge"
    if all(d > 0 for d in diffs) and mean > std:
        return "higher on every seed"
    if all(d < 0 for d in diffs) and -mean > std:
        return "lower on every seed"
    return "no clear difference"


__all__ = ["METRICS", "format_mean_std", "markdown_table", "mean_std", "paired_differences", "results_table",
           "verdict"]
