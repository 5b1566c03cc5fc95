"""Shared helpers of the polar-rcnn tests: a tiny CPU config and random model inputs."""
import os
from typing import Iterable, List, Sequence, Tuple

import torch

from detectron2.config import get_cfg
from detectron2.structures import Boxes, Instances

import polar_rcnn  # noqa: F401  (registers backbones, meta-architectures, datasets)
from polar_rcnn import add_polar_config

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(REPO_ROOT, "configs")
DEMO_CONFIG = os.path.join(CONFIG_DIR, "faster_rcnn_R_18_FPN_demo_polar_synth.yaml")

#: Stack channels used by the small test config (the yaml default is 24).
TEST_STACK_CHANNELS = 6


def get_polar_cfg(**overrides):
    """A small CPU config: demo yaml (R18-FPN, GN) with narrow layers and few proposals.

    ``overrides`` are dotted config keys with ``__`` for ``.``, e.g.
    ``get_polar_cfg(MODEL__POLAR__INJECT="roi")``; values are set as given (not parsed).
    """
    cfg = get_cfg()
    add_polar_config(cfg)
    cfg.merge_from_file(DEMO_CONFIG)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.FPN.OUT_CHANNELS = 64  # GN(32 groups) needs a multiple of 32
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 64
    cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN = 200
    cfg.MODEL.RPN.PRE_NMS_TOPK_TEST = 200
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 64
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 64
    cfg.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 64
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 32
    cfg.MODEL.POLAR.IN_CHANNELS = TEST_STACK_CHANNELS
    cfg.MODEL.POLAR.HIDDEN_CHANNELS = 16
    # the demo's from-scratch choices back to the library defaults: zero-init branch, raw stacks
    cfg.MODEL.POLAR.ZERO_INIT = True
    cfg.MODEL.POLAR.STACK_MEAN = [0.0]
    cfg.MODEL.POLAR.STACK_STD = [1.0]
    cfg.INPUT.STACK.CHANNELS = 0
    cfg.INPUT.STACK.DERIVED = "raw"
    cfg.INPUT.MIN_SIZE_TRAIN = (96,)
    cfg.INPUT.MAX_SIZE_TRAIN = 160
    cfg.INPUT.MIN_SIZE_TEST = 96
    cfg.INPUT.MAX_SIZE_TEST = 160
    cfg.DATALOADER.NUM_WORKERS = 0
    for key, value in overrides.items():
        node = cfg
        *parents, leaf = key.split("__")
        for p in parents:
            node = getattr(node, p)
        if not hasattr(node, leaf):
            raise KeyError(f"unknown config key {key.replace('__', '.')}")
        setattr(node, leaf, value)
    return cfg


def random_inputs(
    n: int,
    sizes: Sequence[Tuple[int, int]],
    channels: int = TEST_STACK_CHANNELS,
    with_stack=True,
    with_instances: bool = True,
    num_classes: int = 3,
    seed: int = 0,
) -> List[dict]:
    """``n`` model inputs from a seeded generator.

    Args:
        sizes: (H, W) per input, or one (H, W) for all.
        with_stack: bool for all inputs, or a sequence of bools, one per input.
    Returns:
        dicts with ``"image"`` (3, H, W) float in [0, 255], ``"stack"`` (C, H, W) float in [0, 1]
        (if requested) and ``"instances"`` (gt_boxes, gt_classes; if requested).
    """
    g = torch.Generator().manual_seed(seed)
    if len(sizes) == 2 and all(isinstance(s, int) for s in sizes):
        sizes = [tuple(sizes)] * n
    if isinstance(with_stack, bool):
        with_stack = [with_stack] * n
    assert len(sizes) == n and len(with_stack) == n
    inputs = []
    for (h, w), stack_on in zip(sizes, with_stack):
        d = {"image": torch.rand((3, h, w), generator=g) * 255.0}
        if stack_on:
            d["stack"] = torch.rand((channels, h, w), generator=g)
        if with_instances:
            k = 3
            x0 = torch.rand(k, generator=g) * (w * 0.5)
            y0 = torch.rand(k, generator=g) * (h * 0.5)
            bw = 8 + torch.rand(k, generator=g) * (w * 0.4)
            bh = 8 + torch.rand(k, generator=g) * (h * 0.4)
            boxes = torch.stack([x0, y0, (x0 + bw).clamp(max=w - 1), (y0 + bh).clamp(max=h - 1)], 1)
            inst = Instances((h, w))
            inst.gt_boxes = Boxes(boxes)
            inst.gt_classes = torch.randint(0, num_classes, (k,), generator=g)
            d["instances"] = inst
        inputs.append(d)
    return inputs


def without(inputs: Iterable[dict], *keys: str) -> List[dict]:
    """Shallow copies of ``inputs`` with ``keys`` removed."""
    return [{k: v for k, v in d.items() if k not in keys} for d in inputs]
