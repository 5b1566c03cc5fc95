"""Curves of a run from its ``metrics.json`` (Detectron2's JSONWriter: one JSON object per line):
training losses and evaluation AP over iterations, several runs on one figure (matplotlib, Agg).

Robust to what real files hold: lines cut off by an interrupted write are skipped, a key may be
missing from any line, evaluation lines are few, and a resumed (or restarted) run that appended to
the same file replaces the earlier run from the iteration where it started. A resume shows in the
file as iterations going back or repeating (a training line's keys again at a logged iteration;
evaluation lines share their training line's iteration without being a resume); the plots mark
it with a dotted vertical line at the first iteration logged after it.

Step-like keys (the learning rate) are drawn as steps (``drawstyle="steps-post"``), so a step
schedule looks like one; curves with fewer than :data:`SPARSE_POINTS` points get markers.
"""
import json
import logging
import math
import os
import re
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
#: losses of Detectron2's detectors, plotted first when present
LOSS_ORDER = ("total_loss", "loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg")
#: evaluation keys: "bbox/AP", "segm/AP50", "<dataset>/bbox/AP-glass", ...
EVAL_KEY = re.compile(r"(^|/)(bbox|segm|keypoints)/AP")
SUMMARY_EVAL = ("AP", "AP50", "AP75")
#: keys drawn as steps: the value holds until the next logged point
STEP_KEYS = ("lr",)
#: curves with fewer points than this get a marker on each point
SPARSE_POINTS = 30
PANEL_SIZE = (4.0, 3.0)  # inches per subplot
DPI = 100

Series = Tuple[List[int], List[float]]


def metrics_path(run: str) -> str:
    """``run`` itself if it is a file, else ``run/metrics.json``."""
    return run if os.path.isfile(run) else os.path.join(run, METRICS_FILE)


def read_metrics(run: str) -> List[Dict]:
    """The records of a run's ``metrics.json`` (a run folder or the file), one dict per line; lines
    that are not JSON objects are skipped with a warning. FileNotFoundError naming the path."""
    path = metrics_path(run)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no metrics file (is {run} a training OUTPUT_DIR?)")
    records, bad = [], 0
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if isinstance(record, dict):
                records.append(record)
            else:
                bad += 1
    if bad:
        logger.warning("%s: skipped %d lines that are not JSON objects", path, bad)
    return records


def _with_resumes(records: Sequence[Mapping]):
    """Yield ``(iteration, record, resumed)`` for the records with an integer iteration; ``resumed``
    is True for the first record after a resume: the trainer's ``"resumed_from"`` row, or a record
    whose iteration is below the previous one, or equal to it with keys (other than ``iteration``)
    that a record of that iteration already had (restarts, files of older versions)."""
    last, keys_at_last = -1, set()
    for r in records:
        it = r.get("iteration")
        if not isinstance(it, int) or isinstance(it, bool) or "eval_only" in r:  # --eval-only rows: no run
            continue
        keys = set(r) - {"iteration"}
        resumed = "resumed_from" in r or it < last or (it == last and bool(keys & keys_at_last))
        keys_at_last = keys if resumed or it != last else keys_at_last | keys
        last = it
        yield it, r, resumed


def resumes(records: Sequence[Mapping]) -> List[int]:
    """The first logged iteration after each resume (or restart) in ``records``, in file order."""
    return [it for it, _, resumed in _with_resumes(records) if resumed]


def series(records: Sequence[Mapping], key: str) -> Series:
    """(iterations, values) of ``key`` over the records that have it as a finite number, sorted by
    iteration. Detectron2 appends to metrics.json: after a resume (or a new run in the same folder)
    the later run replaces everything from its first iteration on."""
    points: Dict[int, float] = {}
    for it, r, resumed in _with_resumes(records):
        if resumed:
            points = {i: v for i, v in points.items() if i < it}
        value = r.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            points[it] = float(value)
    iters = sorted(points)
    return iters, [points[i] for i in iters]


def loss_keys(runs: Mapping[str, Sequence[Mapping]]) -> List[str]:
    """Loss keys of any run: :data:`LOSS_ORDER` first, then other ``loss_*`` keys sorted."""
    found = {k for records in runs.values() for r in records for k in r if k == "total_loss" or k.startswith("loss_")}
    return [k for k in LOSS_ORDER if k in found] + sorted(found - set(LOSS_ORDER))


def eval_keys(runs: Mapping[str, Sequence[Mapping]]) -> List[str]:
    """Evaluation AP keys of any run: the summary ones (AP, AP50, AP75) first, then the others
    (APs/m/l, per category) sorted."""
    found = {k for records in runs.values() for r in records for k in r if EVAL_KEY.search(k)}

    def rank(k):
        tail = k.rsplit("/", 1)[-1]
        return (SUMMARY_EVAL.index(tail) if tail in SUMMARY_EVAL else len(SUMMARY_EVAL), k)

    return sorted(found, key=rank)


def _smooth(values: List[float], window: int) -> List[float]:
    if window <= 1:
        return values
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw_runs(runs: Mapping[str, Sequence[Mapping]], keys: Sequence[str], *, title: str = "", smooth: int = 1,
              markers: bool = False, ncols: int = 3):
    """The figure of :func:`plot_runs` (the caller closes it), or None when no run has any key.

    Keys in :data:`STEP_KEYS` are drawn as steps; curves with fewer than :data:`SPARSE_POINTS`
    points (all, with ``markers``) get markers; each run's resumes are dotted vertical lines."""
    plt = _pyplot()
    keys = [k for k in keys if any(series(records, k)[0] for records in runs.values())]
    if not keys:
        return None
    ncols = max(1, min(ncols, len(keys)))
    nrows = math.ceil(len(keys) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(PANEL_SIZE[0] * ncols, PANEL_SIZE[1] * nrows), dpi=DPI,
                             squeeze=False)
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colors = {name: cycle[i % len(cycle)] for i, name in enumerate(runs)}  # a run keeps its colour everywhere
    resumed = {name: resumes(records) for name, records in runs.items()}
    for ax, key in zip(axes.flat, keys):
        for name, records in runs.items():
            iters, values = series(records, key)
            if not iters:
                continue
            ax.plot(iters, _smooth(values, smooth), label=name, color=colors[name],
                    drawstyle="steps-post" if key in STEP_KEYS else "default",
                    marker="o" if markers or len(iters) < SPARSE_POINTS else None, markersize=3)
            for k, it in enumerate(resumed[name]):
                ax.axvline(it, color=colors[name], linestyle=":", linewidth=1,
                           label=f"{name}: resumed" if k == 0 else None)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("iteration", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if len(runs) > 1 or any(resumed.values()):
            ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_runs(runs: Mapping[str, Sequence[Mapping]], keys: Sequence[str], path: str, **kwargs) -> Optional[str]:
    """One subplot per key, one line per run; writes ``path`` (PNG, ``ncols`` x rows panels of
    :data:`PANEL_SIZE` inches at :data:`DPI`) and returns it, or None when no run has any key.
    ``kwargs``: those of :func:`draw_runs`."""
    fig = draw_runs(runs, keys, **kwargs)
    if fig is None:
        return None
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=DPI)
    _pyplot().close(fig)
    return path


def plot_training(runs: Mapping[str, Sequence[Mapping]], out_dir: str, smooth: int = 1) -> Dict[str, str]:
    """``losses.png`` (losses and learning rate) and ``eval.png`` (evaluation AP) in ``out_dir``,
    each written only when some run has its keys; returns {"losses"|"eval": path}."""
    written = {}
    losses = plot_runs(runs, loss_keys(runs) + ["lr"], os.path.join(out_dir, "losses.png"),
                       title="training losses", smooth=smooth)
    if losses:
        written["losses"] = losses
    evals = plot_runs(runs, eval_keys(runs), os.path.join(out_dir, "eval.png"), title="evaluation", markers=True)
    if evals:
        written["eval"] = evals
    return written
