"""Backbones that run the image through ResNet+FPN and fuse a polar branch into every level."""
from typing import Dict, List

import torch
from torch import nn

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool
from detectron2.modeling.backbone.resnet import build_resnet_backbone

from .polar_branch import PolarBranch

FUSED_SUFFIX = "_fused"


def fused_name(level: str) -> str:
    """Name of the fused (image + polar) version of an FPN level, e.g. ``"p2" -> "p2_fused"``."""
    return level + FUSED_SUFFIX


class PolarFPN(FPN):
    """An FPN over the image plus a polar branch fused into each of its levels.

    Input: the tensor built by :class:`~polar_rcnn.modeling.meta_arch.PolarRCNN` — image channels,
    then the normalized stack, then one availability plane (1 where the image has a stack).

    Output: the FPN's levels under their usual names (``"p2"``...), untouched, plus each level with
    the polar features added under :func:`fused_name` (``"p2_fused"``...). Which consumer (RPN, ROI
    heads) reads which set is a matter of their ``IN_FEATURES``. Images without a stack get the
    image features in both sets. Parameter names match Detectron2's FPN, so vanilla checkpoints load.
    """

    def __init__(self, *, polar_branch: PolarBranch, image_channels: int = 3, **fpn_kwargs):
        """
        Args:
            polar_branch: the branch; its ``level_names`` are the FPN levels that get fused
                versions (only those a consumer reads, so that every parameter gets a gradient).
            image_channels: leading channels of the input that hold the image.
            fpn_kwargs: arguments of :class:`detectron2.modeling.FPN`.
        """
        super().__init__(**fpn_kwargs)
        unknown = set(polar_branch.level_names) - set(self._out_features)
        if unknown:
            raise ValueError(f"polar levels {sorted(unknown)} are not FPN outputs {self._out_features}")
        self.image_channels = image_channels
        self.polar_branch = polar_branch

    @property
    def input_channels(self) -> int:
        return self.image_channels + self.polar_branch.in_channels + 1

    def output_shape(self) -> Dict[str, ShapeSpec]:
        shapes = super().output_shape()
        shapes.update({fused_name(k): shapes[k] for k in self.polar_branch.level_names})
        return shapes

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        if x.dim() != 4 or x.shape[1] != self.input_channels:
            raise ValueError(
                f"{type(self).__name__} expects (N, {self.input_channels}, H, W) input "
                f"(image {self.image_channels} + stack {self.polar_branch.in_channels} + availability 1), "
                f"got {tuple(x.shape)}"
            )
        num_stack = self.polar_branch.in_channels
        image = x[:, : self.image_channels]
        stack = x[:, self.image_channels : self.image_channels + num_stack]
        available = x[:, -1, 0, 0]  # (N,), never padding: padding is at the bottom/right
        features = super().forward(image)
        # In training the branch always runs, so every parameter gets a gradient (DDP needs that).
        if not self.training and not bool(available.any()):
            features.update({fused_name(k): features[k] for k in self.polar_branch.level_names})
            return features
        polar = self.polar_branch(stack, {k: features[k].shape[-2:] for k in self.polar_branch.level_names})
        weight = available.view(-1, 1, 1, 1).to(features[self._out_features[0]].dtype)
        for k, p in polar.items():
            features[fused_name(k)] = features[k] + weight * p
        return features


INJECT_CHOICES = ("rpn", "roi", "both")


def injected_levels(cfg) -> List[str]:
    """FPN levels whose fused version is read, given ``MODEL.POLAR.INJECT``."""
    inject = cfg.MODEL.POLAR.INJECT
    if inject not in INJECT_CHOICES:
        raise ValueError(f"MODEL.POLAR.INJECT must be one of {INJECT_CHOICES}, got {inject!r}")
    levels = []
    if inject in ("rpn", "both"):
        levels += cfg.MODEL.RPN.IN_FEATURES
    if inject in ("roi", "both"):
        levels += [f for f in cfg.MODEL.ROI_HEADS.IN_FEATURES if f not in levels]
    return levels


@BACKBONE_REGISTRY.register()
def build_polar_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> PolarFPN:
    """ResNet + FPN (as ``build_resnet_fpn_backbone``) with a :class:`PolarBranch` fused in."""
    image_channels = len(cfg.MODEL.PIXEL_MEAN)
    bottom_up = build_resnet_backbone(cfg, ShapeSpec(channels=image_channels))
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
    return PolarFPN(
        polar_branch=PolarBranch(cfg, level_names=injected_levels(cfg), out_channels=out_channels),
        image_channels=image_channels,
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=out_channels,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
