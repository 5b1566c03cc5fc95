#!/usr/bin/env python
"""Generate the synthetic RGB + polarization-stack dataset (train and val splits).

Example:
    python datasets/prepare_polar_synth.py --output datasets/polar_synth \\
        --train-videos 8 --val-videos 2 --frames-per-video 16 --size 256 --seed 0 --signal stack

Writes <output>/{train,val}.json, <output>/{train,val}/{images,stacks}/ and
<output>/generator.json (the parameters). Re-running with the same parameters is a
no-op; different parameters or --force regenerate. The val split uses
seed + VAL_SEED_OFFSET.
"""

import argparse
import logging
import os
from dataclasses import replace

from polar_rcnn.data.synthetic import (
    PARAMS_FILE,
    RAW_PATTERNS,
    SIGNAL_MODES,
    STACK_DTYPES,
    VAL_SEED_OFFSET,
    SyntheticConfig,
    prepare_synthetic_dataset,
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default="datasets/polar_synth", help="output directory")
    p.add_argument("--train-videos", type=int, default=8)
    p.add_argument("--val-videos", type=int, default=2, help="0 skips the val split")
    p.add_argument("--frames-per-video", type=int, default=16)
    p.add_argument("--size", type=int, nargs="+", default=[256], metavar="PX",
                   help="image size: one value (square) or H W")
    p.add_argument("--num-bands", type=int, default=6, help="spectral bands (channels = 4 x bands)")
    p.add_argument("--signal", choices=SIGNAL_MODES, default="stack")
    p.add_argument("--stack-dtype", choices=STACK_DTYPES, default="float16")
    p.add_argument("--objects-per-frame", type=int, nargs=2, default=[1, 4], metavar=("MIN", "MAX"))
    p.add_argument("--object-size", type=int, nargs=2, default=[24, 80], metavar=("MIN", "MAX"))
    p.add_argument("--rgb-contrast", type=float, default=0.04)
    p.add_argument("--noise-std", type=float, default=0.01)
    p.add_argument("--raw", choices=[r for r in RAW_PATTERNS if r], default="",
                   help="also write raw polarization-sensor frames (mono IMX250MZR / color IMX250MYR mosaics, "
                   "16-bit PNG) to <output>/<split>/raw/, named by the JSON key 'raw_file'")
    p.add_argument("--raw-bits", type=int, default=12, help="significant bits of the raw frames (default: 12)")
    p.add_argument("--video-trap", type=float, default=0.0, metavar="DOLP",
                   help="video-leakage trap: one class per video and a per-video background DoLP grating of "
                   "this amplitude (0: off) (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help=f"train seed; val uses seed + {VAL_SEED_OFFSET}")
    p.add_argument("--force", action="store_true", help="regenerate even if up to date")
    args = p.parse_args(argv)
    if len(args.size) not in (1, 2):
        p.error("--size takes one value (square) or two (H W)")
    return args


def build_configs(args):
    size = tuple(args.size) * 2 if len(args.size) == 1 else tuple(args.size)
    base = SyntheticConfig(
        image_size=size, num_bands=args.num_bands, frames_per_video=args.frames_per_video,
        objects_per_frame=tuple(args.objects_per_frame), object_size=tuple(args.object_size),
        signal=args.signal, rgb_contrast=args.rgb_contrast, noise_std=args.noise_std,
        stack_dtype=args.stack_dtype, raw=args.raw, raw_bits=args.raw_bits, video_trap=args.video_trap,
    )
    cfgs = {"train": replace(base, num_videos=args.train_videos, seed=args.seed)}
    if args.val_videos > 0:
        cfgs["val"] = replace(base, num_videos=args.val_videos, seed=args.seed + VAL_SEED_OFFSET)
    return cfgs


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    output = args.output
    if not prepare_synthetic_dataset(output, build_configs(args), force=args.force):
        print(f"{output}: up to date with these parameters ({PARAMS_FILE}); skipping (use --force)")
        return 0
    for split in build_configs(args):
        print(f"{split}: -> {os.path.join(output, split + '.json')}, {os.path.join(output, split, 'images')}, "
              f"{os.path.join(output, split, 'stacks')}")
    print(f"parameters -> {os.path.join(output, PARAMS_FILE)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
