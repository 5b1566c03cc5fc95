"""Early-fusion baseline: the stack enters the ResNet stem as extra input channels."""
import logging
from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.layers import CNNBlockBase, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.fpn import FPN
from detectron2.modeling.backbone.resnet import BasicStem

from .backbone import build_image_resnet, check_polar_input, fpn_kwargs

logger = logging.getLogger(__name__)


class EarlyFusionStem(CNNBlockBase):
    """Detectron2's :class:`BasicStem` (conv 7x7/2, norm, ReLU, max-pool) whose conv also reads the
    stack and availability channels that follow the image channels.

    The conv's weights are kept in two parameters: ``conv1.weight`` over the image channels (named
    and shaped as in every image-only ResNet checkpoint, so any checkpointer loads it) and
    ``stack_weight`` over the extra channels. Loading a state dict that has ``conv1.weight`` but no
    ``stack_weight`` (an image-only checkpoint) sets ``stack_weight`` to zero, so the model starts as
    the image-only one. :meth:`freeze` (``MODEL.BACKBONE.FREEZE_AT >= 1``) freezes the image part
    only: the stack weights are new and always train.
    """

    def __init__(self, image_stem: BasicStem, extra_channels: int):
        """
        Args:
            image_stem: a built image-only stem; its conv (and norm) are reused as they are.
            extra_channels: input channels after the image channels (stack + availability).
        """
        super().__init__(image_stem.in_channels + extra_channels, image_stem.out_channels, image_stem.stride)
        self.image_channels = image_stem.in_channels
        self.extra_channels = extra_channels
        self.conv1 = image_stem.conv1
        out_channels, _, kh, kw = self.conv1.weight.shape
        self.stack_weight = nn.Parameter(self.conv1.weight.new_zeros((out_channels, extra_channels, kh, kw)))

    def freeze(self):
        super().freeze()
        self.stack_weight.requires_grad_(True)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv1
        image, extra = x[:, : self.image_channels], x[:, self.image_channels :]
        x = F.conv2d(image, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
        x = x + F.conv2d(extra, self.stack_weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)
        if conv.norm is not None:
            x = conv.norm(x)
        x = F.relu_(x)
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        key = prefix + "stack_weight"
        if prefix + "conv1.weight" in state_dict and key not in state_dict:
            logger.info("%sconv1: image-only weights loaded; %s starts at zero", prefix, key)
            state_dict[key] = torch.zeros_like(self.stack_weight)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)


class EarlyFusionFPN(FPN):
    """Detectron2's FPN over a ResNet with an :class:`EarlyFusionStem`: input ``[image, stack,
    availability]`` as built by :class:`~polar_rcnn.modeling.meta_arch.PolarInputsMixin`, output
    the usual levels (``"p2"``...). There are no separate fused levels: every consumer sees the stack.
    """

    def __init__(self, *, image_channels: int, stack_channels: int, **fpn_kwargs):
        super().__init__(**fpn_kwargs)
        stem = self.bottom_up.stem
        if not isinstance(stem, EarlyFusionStem) or stem.extra_channels != stack_channels + 1:
            raise ValueError(f"EarlyFusionFPN needs an EarlyFusionStem over {stack_channels} + 1 extra channels")
        self.image_channels = image_channels
        self.stack_channels = stack_channels

    @property
    def input_channels(self) -> int:
        return self.image_channels + self.stack_channels + 1

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        check_polar_input(self, x)
        return super().forward(x)


def _build_early_fusion_fpn(cfg, top_block: str) -> EarlyFusionFPN:
    bottom_up = build_image_resnet(cfg)
    stack_channels = cfg.MODEL.POLAR.IN_CHANNELS
    # the image stem is built (and frozen per FREEZE_AT) by Detectron2; wrap it to read the stack too
    bottom_up.stem = EarlyFusionStem(bottom_up.stem, stack_channels + 1)
    return EarlyFusionFPN(
        image_channels=len(cfg.MODEL.PIXEL_MEAN),
        stack_channels=stack_channels,
        **fpn_kwargs(cfg, bottom_up, top_block),
    )


@BACKBONE_REGISTRY.register()
def build_early_fusion_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> EarlyFusionFPN:
    """ResNet + FPN (p2-p6) whose stem reads ``MODEL.POLAR.IN_CHANNELS`` stack channels and the
    availability plane after the image; the ``MODEL.POLAR`` branch keys do not apply."""
    return _build_early_fusion_fpn(cfg, "maxpool")


@BACKBONE_REGISTRY.register()
def build_early_fusion_retinanet_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> EarlyFusionFPN:
    """As :func:`build_early_fusion_resnet_fpn_backbone`, with RetinaNet's P6/P7 top block."""
    return _build_early_fusion_fpn(cfg, "p6p7")
