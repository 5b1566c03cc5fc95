"""Meta-architectures that carry the stack from the batched inputs to a polar backbone."""
from typing import Dict, List, Sequence

import torch

from detectron2.config import configurable
from detectron2.modeling import (
    META_ARCH_REGISTRY,
    GeneralizedRCNN,
    build_backbone,
    build_proposal_generator,
    build_roi_heads,
)
from detectron2.structures import ImageList

from .backbone import fused_name


def _per_channel(values: Sequence[float], channels: int, key: str) -> torch.Tensor:
    values = list(values)
    if len(values) == 1:
        values = values * channels
    if len(values) != channels:
        raise ValueError(f"{key} has {len(values)} values; give 1 or MODEL.POLAR.IN_CHANNELS={channels}")
    return torch.tensor(values, dtype=torch.float32).view(-1, 1, 1)


@META_ARCH_REGISTRY.register()
class PolarRCNN(GeneralizedRCNN):
    """:class:`GeneralizedRCNN` whose inputs may carry ``"stack"``: a (C, H, W) float tensor aligned
    with ``"image"`` (see :class:`~polar_rcnn.data.PolarDatasetMapper`).

    :meth:`preprocess_image` normalizes image and stack, appends an availability plane (0 for inputs
    without a stack, which then get image-only features) and pads them together, so the stack is
    padded exactly like the image. ``MODEL.POLAR.INJECT`` chooses whether the RPN, the ROI heads or
    both read the backbone's fused levels; the other consumer reads the untouched image levels.
    """

    @configurable
    def __init__(self, *, stack_mean: Sequence[float], stack_std: Sequence[float], **kwargs):
        super().__init__(**kwargs)
        if not hasattr(self.backbone, "polar_branch"):
            raise ValueError(
                f"{type(self).__name__} needs a polar backbone (e.g. MODEL.BACKBONE.NAME: "
                f"build_polar_resnet_fpn_backbone); got {type(self.backbone).__name__}"
            )
        self.stack_channels = self.backbone.polar_branch.in_channels
        self.register_buffer("stack_mean", _per_channel(stack_mean, self.stack_channels, "MODEL.POLAR.STACK_MEAN"), False)
        self.register_buffer("stack_std", _per_channel(stack_std, self.stack_channels, "MODEL.POLAR.STACK_STD"), False)

    @classmethod
    def from_config(cls, cfg):
        backbone = build_backbone(cfg)
        # the consumers chosen by MODEL.POLAR.INJECT read the fused levels; the config is not modified
        heads_cfg = cfg.clone()
        heads_cfg.defrost()
        if cfg.MODEL.POLAR.INJECT in ("rpn", "both"):
            heads_cfg.MODEL.RPN.IN_FEATURES = [fused_name(f) for f in cfg.MODEL.RPN.IN_FEATURES]
        if cfg.MODEL.POLAR.INJECT in ("roi", "both"):
            heads_cfg.MODEL.ROI_HEADS.IN_FEATURES = [fused_name(f) for f in cfg.MODEL.ROI_HEADS.IN_FEATURES]
        return {
            "backbone": backbone,
            "proposal_generator": build_proposal_generator(heads_cfg, backbone.output_shape()),
            "roi_heads": build_roi_heads(heads_cfg, backbone.output_shape()),
            "input_format": cfg.INPUT.FORMAT,
            "vis_period": cfg.VIS_PERIOD,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "stack_mean": cfg.MODEL.POLAR.STACK_MEAN,
            "stack_std": cfg.MODEL.POLAR.STACK_STD,
        }

    def preprocess_image(self, batched_inputs: List[Dict[str, torch.Tensor]]) -> ImageList:
        """Normalize, concatenate ``[image, stack, availability]`` per input, pad and batch."""
        tensors = []
        for inputs in batched_inputs:
            image = (inputs["image"].to(self.device) - self.pixel_mean) / self.pixel_std
            height, width = image.shape[-2:]
            stack = inputs.get("stack")
            if stack is None:
                tensors.append(torch.cat([image, image.new_zeros((self.stack_channels + 1, height, width))]))
                continue
            if tuple(stack.shape) != (self.stack_channels, height, width):
                raise ValueError(
                    f"{inputs.get('file_name', 'input')}: stack of shape {tuple(stack.shape)} does not "
                    f"match its image; expected ({self.stack_channels}, {height}, {width})"
                )
            stack = (stack.to(self.device, image.dtype) - self.stack_mean) / self.stack_std
            tensors.append(torch.cat([image, stack, image.new_ones((1, height, width))]))
        return ImageList.from_tensors(tensors, self.backbone.size_divisibility)
