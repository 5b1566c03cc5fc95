#!/usr/bin/env python
"""Plot training losses and evaluation AP over iterations from runs' metrics.json files.

    .venv/bin/python tools/plot_metrics.py --runs output/demo/model
    .venv/bin/python tools/plot_metrics.py --runs output/a output/b --names rgb polar --output output/plots

Each --runs entry is a training OUTPUT_DIR (its metrics.json, as Detectron2's JSONWriter writes it)
or a metrics.json file. Writes <output>/losses.png (total_loss, every loss_* key, lr) and
<output>/eval.png (bbox/AP, AP50, AP75, then APs/m/l and the per-category AP-<class>), one subplot
per key and one line per run; a key that a run lacks is left out for that run, a figure whose
keys no run has is not written. The learning rate is drawn as steps, curves of few points with
markers; a resume (iterations in metrics.json going back or repeating) is a dotted vertical line
at the first iteration logged after it, and the later run replaces the earlier one from there. TensorBoard event files in the same folders stay readable with
`tensorboard --logdir DIR`.
"""
import argparse
import os
import sys
from typing import Optional, Sequence


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", required=True, metavar="DIR", help="OUTPUT_DIRs or metrics.json files")
    p.add_argument("--names", nargs="+", default=[], metavar="NAME",
                   help="legend names, one per run (default: the folder names)")
    p.add_argument("--output", default="", metavar="DIR", help="where the PNGs go (default: <first run>/plots)")
    p.add_argument("--smooth", type=int, default=1, metavar="N",
                   help="moving average over N logged points of the loss curves (1: as logged) (default: %(default)s)")
    args = p.parse_args(argv)
    if args.names and len(args.names) != len(args.runs):
        p.error(f"--names has {len(args.names)} names for {len(args.runs)} runs")
    if args.smooth < 1:
        p.error("--smooth must be >= 1")
    return args


def run_name(run: str) -> str:
    path = os.path.abspath(run)
    return os.path.basename(os.path.dirname(path) if os.path.isfile(path) else path)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    from polar_rcnn.utils.plots import plot_training, read_metrics, resumes

    names = args.names or [run_name(r) for r in args.runs]
    if len(set(names)) != len(names):  # same folder names in different places: full paths instead
        names = list(args.runs)
    try:
        runs = {name: read_metrics(run) for name, run in zip(names, args.runs)}
    except FileNotFoundError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2
    first = args.runs[0]
    output = args.output or os.path.join(os.path.dirname(first) if os.path.isfile(first) else first, "plots")
    written = plot_training(runs, output, smooth=args.smooth)
    for name, records in runs.items():
        resumed = resumes(records)
        print(f"{name}: {len(records)} records" + (f", resumed at {resumed}" if resumed else ""))
    if not written:
        print("Nothing to plot: no loss or evaluation keys in these metrics files.", file=sys.stderr)
        return 1
    for kind, path in written.items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
