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

import torch

from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.utils.analysis import FlopCountAnalysis

from polar_rcnn import add_polar_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE_CONFIG = os.path.join(REPO, "configs", "Base-PolarRCNN-FPN.yaml")

# name -> config overrides on top of the base config (the defaults of polar_rcnn/config.py)
VARIANTS = OrderedDict(
    [
        ("default", {}),  # 2 stages, hidden 96, 3x3 convs, stride 1, add, inject rpn
        ("default, INJECT both", {"MODEL.POLAR.INJECT": "both"}),
        ("default, FUSION concat", {"MODEL.POLAR.FUSION": "concat"}),
        ("default, FUSION gate", {"MODEL.POLAR.FUSION": "gate"}),
        ("default, FUSION channel_attention", {"MODEL.POLAR.FUSION": "channel_attention"}),
        ("2 stages, 1x1 convs, INPUT_STRIDE 4",
         {"MODEL.POLAR.PRE_KERNEL_SIZE": 1, "MODEL.POLAR.POST_KERNEL_SIZE": 1, "MODEL.POLAR.INPUT_STRIDE": 4}),
        ("1 stage, 3x3, INPUT_STRIDE 1", {"MODEL.POLAR.NUM_STAGES": 1}),
        ("lightest: 1 stage, 1x1, INPUT_STRIDE 4",
         {"MODEL.POLAR.NUM_STAGES": 1, "MODEL.POLAR.PRE_KERNEL_SIZE": 1, "MODEL.POLAR.INPUT_STRIDE": 4}),
        ("early fusion (stem)", {"MODEL.BACKBONE.NAME": "build_early_fusion_resnet_fpn_backbone"}),
    ]
)
SHORT_NAMES = {"default": "default", "lightest": "lightest: 1 stage, 1x1, INPUT_STRIDE 4",
               "early": "early fusion (stem)"}


def make_cfg(args, overrides):
    cfg = get_cfg()
    add_polar_config(cfg)
    cfg.merge_from_file(BASE_CONFIG)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.RESNETS.DEPTH = args.depth
    if args.depth in (18, 34):
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.POLAR.IN_CHANNELS = args.channels
    for key, value in overrides.items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = getattr(node, p)
        setattr(node, leaf, value)
    return cfg


def count(model, inputs):
    flops = FlopCountAnalysis(model, inputs)
    flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    return flops.total(), sum(p.numel() for p in model.parameters())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=50, help="MODEL.RESNETS.DEPTH")
    parser.add_argument("--channels", type=int, default=24, help="MODEL.POLAR.IN_CHANNELS")
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--width", type=int, default=1333)
    parser.add_argument("--variants", nargs="*", default=None,
                        help=f"subset: {', '.join(SHORT_NAMES)} or full names (default: all)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_grad_enabled(False)

    names = list(VARIANTS) if not args.variants else [SHORT_NAMES.get(v, v) for v in args.variants]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {list(SHORT_NAMES)} or {list(VARIANTS)}")

    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, args.height, args.width, generator=g) * 255
    stack = torch.rand(args.channels, args.height, args.width, generator=g)
    torch.manual_seed(0)
    vanilla = build_model(make_cfg(args, {"MODEL.META_ARCHITECTURE": "GeneralizedRCNN",
                                          "MODEL.BACKBONE.NAME": "build_resnet_fpn_backbone"})).eval()
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
        model = build_model(make_cfg(args, VARIANTS[name])).eval()
        incompatible = model.load_state_dict(vanilla.state_dict(), strict=False)
        if incompatible.unexpected_keys:
            sys.exit(f"{name}: unexpected keys {incompatible.unexpected_keys}")
        flops, params = count(model, [{"image": image, "stack": stack}])
        extra = flops - base_flops
        print(f"| {name:<40} | {params - base_params:>10,} | {extra / 1e9:>8.2f} | {100 * extra / base_flops:>7.1f}% |")


if __name__ == "__main__":
    main()
