#!/usr/bin/env python
"""COCO box AP of a trained model under stack faults: shifted, missing, noisy.

    .venv/bin/python tools/robustness.py --config-file output/run/config.yaml \\
        --output output/run/robustness MODEL.WEIGHTS output/run/model_final.pth

Evaluates on --dataset (default: the config's first DATASETS.TEST) once without a fault, then
once per condition: the stack shifted against its image by each of --shifts px (horizontally, as a
side-by-side two-sensor rig misregisters; the exposed border repeats the edge), a seeded fraction
of the images without their stack (each of --missing), Gaussian noise of each std in --noise added
to the stack's float values (stored values times their scale, e.g. 0.01 of a [0, 1] sensor range).
The stack is delivered at full resolution (INPUT.STACK.RESOLUTION "full") so a shift is in image
pixels. Writes <output>/robustness.json and robustness.md (atomically) and prints the table.
"""
import argparse
import json
import logging
import math
import os
import sys
from typing import Optional, Sequence

logger = logging.getLogger("polar_rcnn.tools.robustness")


def _numbers(kind):
    """argparse type: comma-separated numbers ("" = none)."""
    def parse(text: str):
        try:
            return [kind(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")
    return parse


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, metavar="FILE", help="the run's config (e.g. its config.yaml)")
    p.add_argument("--dataset", default="", metavar="NAME", help="registered dataset (default: DATASETS.TEST[0])")
    p.add_argument("--shifts", type=_numbers(int), default=[1, 2, 4], metavar="PX,...",
                   help="horizontal shifts of the stack against its image, comma-separated (default: 1,2,4)")
    p.add_argument("--missing", type=_numbers(float), default=[0.25, 0.5, 1.0], metavar="F,...",
                   help="fractions of images evaluated without their stack (default: 0.25,0.5,1)")
    p.add_argument("--noise", type=_numbers(float), default=[0.01, 0.02, 0.05], metavar="STD,...",
                   help="stds of Gaussian noise on the float stack (default: 0.01,0.02,0.05)")
    p.add_argument("--seed", type=int, default=0, help="seed of the missing images and the noise (default: %(default)s)")
    p.add_argument("--output", required=True, metavar="DIR", help="where robustness.json / .md go")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides (KEY VALUE ...), e.g. MODEL.WEIGHTS")
    args = p.parse_args(argv)
    if any(not 0.0 <= f <= 1.0 for f in args.missing) or any(s < 0 for s in args.noise):
        p.error("--missing takes fractions in [0, 1] and --noise stds >= 0")
    return args


def markdown(rows, title: str) -> str:
    def fmt(v):
        return "-" if v is None else "no detections" if math.isnan(v) else f"{v:.1f}"

    base = rows[0]
    lines = [f"# {title}", "", "| condition | AP | AP50 | AP75 | ΔAP |", "| --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        delta = None if r["AP"] is None or base["AP"] is None else r["AP"] - base["AP"]
        delta = None if delta is not None and math.isnan(delta) else delta
        lines.append(f"| {r['condition']} | {fmt(r['AP'])} | {fmt(r['AP50'])} | {fmt(r['AP75'])} | "
                     f"{'-' if r is base or delta is None else f'{delta:+.1f}'} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    from detectron2.data import DatasetCatalog
    from detectron2.modeling import build_model
    from polar_rcnn.engine.checkpoint import load_for_inference
    from polar_rcnn.engine.cli import setup_tool
    from polar_rcnn.evaluation.robustness import StackPerturbation, robustness_table
    from polar_rcnn.utils.atomic import atomic_write_text

    cfg = setup_tool(args.config_file, args.opts)
    if cfg is None:
        return 2
    dataset = args.dataset or (cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "")
    if dataset not in DatasetCatalog.list():
        print(f"Dataset {dataset!r} is not registered. Registered: {sorted(DatasetCatalog.list())}", file=sys.stderr)
        return 2
    if not cfg.INPUT.STACK.ENABLED:
        print("Error: the config reads no stack (INPUT.STACK.ENABLED False): nothing to perturb", file=sys.stderr)
        return 2
    model = build_model(cfg)
    try:
        load_for_inference(model, cfg)
    except (FileNotFoundError, ValueError) as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2
    conditions = ([StackPerturbation(seed=args.seed)]
                  + [StackPerturbation(shift=(0, s), seed=args.seed) for s in args.shifts]
                  + [StackPerturbation(missing=f, seed=args.seed) for f in args.missing]
                  + [StackPerturbation(noise_std=n, seed=args.seed) for n in args.noise])
    rows = robustness_table(cfg, model, conditions, dataset)
    os.makedirs(args.output, exist_ok=True)
    weights = os.path.relpath(cfg.MODEL.WEIGHTS) if os.path.isabs(cfg.MODEL.WEIGHTS) else cfg.MODEL.WEIGHTS
    report = markdown(rows, f"Robustness of {weights} on {dataset}")
    atomic_write_text(os.path.join(args.output, "robustness.json"), json.dumps(
        {"weights": cfg.MODEL.WEIGHTS, "dataset": dataset, "rows": rows}, indent=2, default=list))
    atomic_write_text(os.path.join(args.output, "robustness.md"), report)
    print(report)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
