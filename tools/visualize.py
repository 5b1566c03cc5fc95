#!/usr/bin/env python
"""Pictures of a trained model: ground truth, top-k RPN proposals and detections over the image,
next to views of the stack (for polarization stacks DoLP as grey and AoLP as hue with DoLP as
brightness, else --channels). Boxes have one colour per class (the dataset's thing_colors, else a
fixed palette), the same in ground truth and detections and in every run; each row is titled with
the image's file name.

    .venv/bin/python tools/visualize.py --config-file configs/faster_rcnn_R_18_FPN_demo_polar_synth.yaml \\
        --output output/demo/pictures MODEL.WEIGHTS output/demo/model/model_final.pth
    .venv/bin/python tools/visualize.py --config-file CONFIG --input 'data/images/*.png' --stacks data/stacks \\
        --num-images 4 --topk 100 --channels 0,1,2 MODEL.WEIGHTS model.pth

Images: the first --num-images records of --dataset (default: the config's DATASETS.TEST[0]), with
their ground truth, or the files matching --input (stacks found by base name in --stacks, which a
model that reads stacks needs unless --rgb-only is given; an image without one is predicted from the
image alone, logged). Writes one PNG per image (<image base name>.png)
and grid.png (all of them, one row each) to --output. The model input is built exactly as
PolarPredictor builds it (INPUT.STACK.* of the config, DERIVED included); the stack views are
computed from the raw stack file.
"""
import argparse
import logging
import sys
from typing import Optional, Sequence

logger = logging.getLogger("polar_rcnn.tools.visualize")


def channel_list(text: str):
    """'0,1,2' -> [0, 1, 2]."""
    try:
        return [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"channel indices separated by commas, e.g. 0,1,2; got {text!r}")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, metavar="FILE", help="the model's config yaml")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--dataset", default="", metavar="NAME", help="registered dataset (default: DATASETS.TEST[0])")
    source.add_argument("--input", action="append", default=[], metavar="GLOB",
                        help="image file or quoted glob (repeatable)")
    p.add_argument("--stacks", default="", metavar="DIR", help="with --input: folder of stacks named like the images "
                   "(required for a model that reads stacks, unless --rgb-only)")
    p.add_argument("--rgb-only", action="store_true",
                   help="the model gets no stack, only the images (a model that reads stacks then uses its "
                        "image-only path); no stack views")
    p.add_argument("--output", default="output/pictures", metavar="DIR",
                   help="where the PNGs go (default: %(default)s)")
    p.add_argument("--num-images", type=int, default=6, metavar="N",
                   help="pictures (and grid rows) (default: %(default)s)")
    p.add_argument("--topk", type=int, default=50, metavar="K",
                   help="RPN proposals shown (0: no proposal panel) (default: %(default)s)")
    p.add_argument("--score-threshold", type=float, default=0.5, help="detections shown (default: %(default)s)")
    p.add_argument("--min-detections", type=int, default=3, metavar="K",
                   help="when no detection of an image reaches --score-threshold, its K best are drawn (a young "
                        "model scores low; 0: none) (default: %(default)s)")
    p.add_argument("--channels", type=channel_list, default=[], metavar="C[,C,C]",
                   help="1 or 3 stack channels to show instead of DoLP / AoLP (non-polarization stacks: "
                        "default the first three)")
    p.add_argument("--scale", type=float, default=1.0, help="picture size relative to the image (default: %(default)s)")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                   help="config overrides as trailing KEY VALUE pairs (MODEL.WEIGHTS FILE ...)")
    args = p.parse_args(argv)
    if args.num_images < 1 or args.topk < 0 or args.min_detections < 0 or args.scale <= 0:
        p.error("--num-images >= 1, --topk >= 0, --min-detections >= 0 and --scale > 0 required")
    if len(args.channels) not in (0, 1, 3):
        p.error("--channels takes 1 or 3 channel indices")
    if args.stacks and not args.input:
        p.error("--stacks goes with --input")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from polar_rcnn.data import DataError
    from polar_rcnn.engine.cli import setup_tool
    from polar_rcnn.evaluation import check_stack_source, records_from_files, without_stacks, write_pictures

    cfg = setup_tool(args.config_file, args.opts)
    if cfg is None:
        return 2
    if not cfg.MODEL.WEIGHTS:
        logger.warning("MODEL.WEIGHTS is empty: the pictures show an untrained model")
    metadata = None
    try:
        if args.input:
            check_stack_source(cfg, args.stacks, args.rgb_only)
            records = records_from_files(args.input, args.stacks or None)
        else:
            name = args.dataset or (cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "")
            if not name or name not in DatasetCatalog.list():
                print(f"Dataset {name!r} is not registered: give --dataset NAME or --input FILES. "
                      f"Registered: {sorted(DatasetCatalog.list())}", file=sys.stderr)
                return 2
            records = DatasetCatalog.get(name)
            metadata = MetadataCatalog.get(name)
        if args.rgb_only:
            records = without_stacks(records)
        paths, grid = write_pictures(cfg, records, args.output, num_images=args.num_images, topk=args.topk,
                                     score_threshold=args.score_threshold, min_detections=args.min_detections, channels=args.channels or None,
                                     scale=args.scale, metadata=metadata)
    except (DataError, FileNotFoundError, ValueError) as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    print(f"grid: {grid}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
