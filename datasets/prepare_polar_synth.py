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
import json
import logging
import os
from dataclasses import asdict, replace

from tqdm import tqdm

from polar_rcnn.data.synthetic import (
    GENERATOR_VERSION,
    SIGNAL_MODES,
    STACK_DTYPES,
    VAL_SEED_OFFSET,
    SyntheticConfig,
    generate_split,
)

PARAMS_FILE = "generator.json"


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
        stack_dtype=args.stack_dtype,
    )
    cfgs = {"train": replace(base, num_videos=args.train_videos, seed=args.seed)}
    if args.val_videos > 0:
        cfgs["val"] = replace(base, num_videos=args.val_videos, seed=args.seed + VAL_SEED_OFFSET)
    return cfgs


def _params(cfgs):
    # JSON round trip so tuples compare equal to the lists read back from disk.
    return json.loads(json.dumps({
        "generator_version": GENERATOR_VERSION,
        "splits": {name: asdict(cfg) for name, cfg in cfgs.items()},
    }))


def _up_to_date(output, params, cfgs):
    path = os.path.join(output, PARAMS_FILE)
    if not os.path.isfile(path):
        return False
    try:
        with open(path) as fh:
            if json.load(fh) != params:
                return False
    except (OSError, ValueError):
        return False
    return all(os.path.isfile(os.path.join(output, f"{s}.json"))
               and os.path.isdir(os.path.join(output, s, "images"))
               and os.path.isdir(os.path.join(output, s, "stacks")) for s in cfgs)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cfgs = build_configs(args)
    params = _params(cfgs)
    output = args.output
    if not args.force and _up_to_date(output, params, cfgs):
        print(f"{output}: up to date with these parameters ({PARAMS_FILE}); skipping (use --force)")
        return 0

    os.makedirs(output, exist_ok=True)
    params_path = os.path.join(output, PARAMS_FILE)
    if os.path.exists(params_path):
        os.remove(params_path)  # invalid until every split is written
    for split, cfg in cfgs.items():
        total = cfg.num_videos * cfg.frames_per_video
        with tqdm(total=total, desc=split, unit="frame") as bar:
            json_path = generate_split(output, split, cfg, progress=False,
                                       on_frame=lambda done, total: bar.update(1))
        print(f"{split}: {total} frames -> {json_path}, "
              f"{os.path.join(output, split, 'images')}, {os.path.join(output, split, 'stacks')}")
    with open(params_path, "w") as fh:
        json.dump(params, fh, indent=2, sort_keys=True)
    print(f"parameters -> {params_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
