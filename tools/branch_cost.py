#!/usr/bin/env python
"""Parameters and FLOPs that the polar branch (and its fusion) adds to a detector.

    python tools/branch_cost.py                       # R50-FPN Faster R-CNN, 800x1333, 24 channels
    python tools/branch_cost.py --depth 18 --height 256 --width 256 --variants default lightest

Each polar variant is built from configs/Base-PolarRCNN-FPN.yaml, given the weights of the vanilla
GeneralizedRCNN (so, with MODEL.POLAR.ZERO_INIT, it proposes exactly the same boxes and the ROI heads
cost the same), and counted with detectron2.utils.analysis.FlopCountAnalysis on one image with a
stack; the table shows polar minus vanilla. fvcore counts one multiply-add as one flop and skips
element-wise ops (additions, ReLU, sigmoid, pooling except adaptive average pooling). Takes ~10 min
on 2 CPU cores at the default size.
"""
import argparse
import logging
import os
import sys
from collections import OrderedDict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE_CONFIG = os.path.join(REPO, "configs", "Base-PolarRCNN-FPN.yaml")

# the short names of polar_rcnn.analysis.POLAR_VARIANTS, here for --help without importing polar_rcnn
# (tests/tools/test_help.py checks that they match)
POLAR_VARIANT_NAMES = ("default", "inject_both", "concat", "gate", "channel_attention", "notebook", "notebook_stride4",
                       "notebook_hidden32", "all_1x1", "one_stage", "lightest", "early")


def polar_variants():
    """(label -> config overrides on top of the base config (the defaults of polar_rcnn/config.py), short name ->
    label) of the polar variants; shared with tools/benchmark.py (polar_rcnn/analysis)."""
    from polar_rcnn.analysis import POLAR_VARIANTS

    variants = OrderedDict((v.label, dict(v.overrides)) for v in POLAR_VARIANTS.values())
    return variants, {v.name: v.label for v in POLAR_VARIANTS.values()}


def make_cfg(args, overrides):
    from polar_rcnn.analysis import base_config, variant_config

    return variant_config(base_config(BASE_CONFIG, depth=args.depth, channels=args.channels), overrides)


def count(model, inputs):
    from polar_rcnn.analysis import count_flops, num_parameters

    return count_flops(model, inputs), num_parameters(model)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=50, help="MODEL.RESNETS.DEPTH")
    parser.add_argument("--channels", type=int, default=24, help="MODEL.POLAR.IN_CHANNELS")
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--width", type=int, default=1333)
    parser.add_argument("--variants", nargs="*", default=None,
                        help=f"subset: {', '.join(POLAR_VARIANT_NAMES)} or full names (default: all)")
    args = parser.parse_args()
    import torch
    from detectron2.modeling import build_model
    from polar_rcnn.analysis import VANILLA, VARIANTS as BENCH_VARIANTS

    variants, short_names = polar_variants()
    logging.basicConfig(level=logging.WARNING)
    torch.set_grad_enabled(False)

    names = list(variants) if not args.variants else [short_names.get(v, v) for v in args.variants]
    unknown = [n for n in names if n not in variants]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {list(short_names)} or {list(variants)}")

    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, args.height, args.width, generator=g) * 255
    stack = torch.rand(args.channels, args.height, args.width, generator=g)
    torch.manual_seed(0)
    vanilla = build_model(make_cfg(args, BENCH_VARIANTS[VANILLA].overrides)).eval()
    base_flops, base_params = count(vanilla, [{"image": image}])

    size = f"{args.height}x{args.width}"
    print(f"R{args.depth}-FPN Faster R-CNN at {size}, stack of {args.channels} channels "
          f"(fvcore: 1 flop = 1 multiply-add)")
    print(f"vanilla model: {base_params / 1e6:.2f} M parameters, {base_flops / 1e9:.1f} GFLOPs\n")
    header = f"| {'variant':<40} | {'+params':>10} | {'+GFLOPs':>8} | {'+% FLOPs':>8} |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for name in names:
        torch.manual_seed(0)
        model = build_model(make_cfg(args, variants[name])).eval()
        incompatible = model.load_state_dict(vanilla.state_dict(), strict=False)
        if incompatible.unexpected_keys:
            sys.exit(f"{name}: unexpected keys {incompatible.unexpected_keys}")
        flops, params = count(model, [{"image": image, "stack": stack}])
        extra = flops - base_flops
        print(f"| {name:<40} | {params - base_params:>10,} | {extra / 1e9:>8.2f} | {100 * extra / base_flops:>7.1f}% |")


if __name__ == "__main__":
    main()
