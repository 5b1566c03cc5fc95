#!/usr/bin/env python
"""Estimate the stack-to-image homography of a two-sensor rig and write it into the dataset's JSON.

    .venv/bin/python tools/estimate_homography.py --config-file CONFIG --dataset my_train --write
    .venv/bin/python tools/estimate_homography.py --config-file CONFIG --dataset my_train \\
        --group-key camera_pair --frames 12 --write

For each camera pair (the records sharing the image-entry value of --group-key; without it the
whole dataset is one pair) a seeded sample of --frames records is read as training reads them
(INPUT.STACK.*, DATASETS.STACK_KEY of the config), and a homography is fitted per frame between the
stack's intensity and the image's gray level (OpenCV ECC, coarse to fine, from INPUT.STACK.HOMOGRAPHY
or the scaling between the two sizes). The pair's homography is the per-frame fit closest to all
the others; its residual misalignment is, per frame, the RMS distance in image pixels between where
that frame's own fit and the pair's homography put the stack's pixels (mean and max are printed).
With --write every image entry of the pair gets "stack_homography" in the dataset's JSON (its
json_file, rewritten atomically); the mapper then warps each stack onto its image's grid, and
tools/check_dataset.py pairs them through it.

Exit status: 0 when every pair got a homography, 1 when a pair got none, 2 on usage errors.
"""
import argparse
import logging
import sys
from typing import Optional, Sequence

logger = logging.getLogger("polar_rcnn.tools.estimate_homography")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", default="", metavar="FILE", help="config yaml (its INPUT.STACK and datasets)")
    p.add_argument("--dataset", required=True, metavar="NAME", help="registered dataset (e.g. by DATASETS.POLAR_COCO)")
    p.add_argument("--group-key", default="", metavar="KEY",
                   help="image-entry key naming the camera pair of each frame (default: one pair)")
    p.add_argument("--frames", type=int, default=8, help="frames sampled per camera pair (default: %(default)s)")
    p.add_argument("--levels", type=int, default=3, help="ECC pyramid levels (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the frame sample (default: %(default)s)")
    p.add_argument("--write", action="store_true", help="write the homographies into the dataset's JSON")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="config overrides: KEY VALUE ...")
    args = p.parse_args(argv)
    if args.frames < 1 or args.levels < 1:
        p.error("--frames and --levels must be >= 1")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    from polar_rcnn.engine.cli import setup_tool

    cfg = setup_tool(args.config_file, args.opts)
    return 2 if cfg is None else estimate(cfg, args)


def estimate(cfg, args: argparse.Namespace) -> int:
    """Calibrate every camera pair of ``args.dataset`` under ``cfg``, print, write (--write)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from polar_rcnn.data import DataError, SampleReader
    from polar_rcnn.data.rig_calibration import calibrate, camera_pairs, describe, write_homographies

    if args.dataset not in DatasetCatalog.list():
        print(f"Not registered: {args.dataset!r}. Registered: {sorted(DatasetCatalog.list())}", file=sys.stderr)
        return 2
    reader = SampleReader.from_config(cfg)
    json_file = MetadataCatalog.get(args.dataset).json_file
    try:
        records = DatasetCatalog.get(args.dataset)
        groups = camera_pairs(json_file, args.group_key) if args.group_key else None
    except DataError as e:
        print(f"Dataset error: {e}", file=sys.stderr)
        return 2
    pairs = calibrate(records, reader, frames=args.frames, seed=args.seed, pairs=groups,
                      init=reader.homography_of({}), levels=args.levels)
    for pair in pairs:
        print("\n".join(describe(pair, args.group_key)))
    if args.write:
        written = write_homographies(json_file, records, pairs, groups)
        print(f"wrote stack_homography into {written} image entries of {json_file}")
    return 0 if all(p.homography is not None for p in pairs) else 1


if __name__ == "__main__":
    sys.exit(main())
