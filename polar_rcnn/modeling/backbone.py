"""Backbones that run the image through ResNet+FPN and fuse a polar branch into every level."""
import contextlib
from typing import Dict, Optional, Tuple

import torch
from torch import nn

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool, LastLevelP6P7
from detectron2.modeling.backbone.resnet import ResNet, build_resnet_backbone

from ..architecture import reads_stack_at_input_stride
from .fusion import AddFusion, build_polar_fusion
from .grid_inputs import packed_channels, unpack_grid
from .injection import Injection, fused_name
from .polar_branch import PolarBranch

RESNET_DEPTHS = (18, 34, 50, 101, 152)


class PolarFPN(FPN):
    """An FPN over the image plus a polar branch fused into each of its levels.

    Input: the tensor built by :class:`~polar_rcnn.modeling.meta_arch.PolarInputsMixin` — image
    channels, then the normalized stack, then one availability plane (1 where the image has a stack);
    with the branch's ``input_stride`` s > 1 the stack and availability plane are on the stride-s
    grid, packed after the image channels (:mod:`~polar_rcnn.modeling.grid_inputs`).

    Output: the FPN's levels under their usual names (``"p2"``...), untouched, plus each level fused
    with the polar features (by ``fusions[level]``) under :func:`fused_name` (``"p2_fused"``...).
    Which consumer (RPN, ROI heads, RetinaNet head) reads which set is decided by
    :class:`~polar_rcnn.modeling.injection.Injection` (``MODEL.POLAR.INJECT``). Images without a stack get the image features in both sets. Parameter names
    match Detectron2's FPN (plus ``polar_branch.*`` and ``polar_fusion.<level>.*``), so vanilla
    checkpoints load.
    """

    def __init__(
        self,
        *,
        polar_branch: PolarBranch,
        fusions: Optional[Dict[str, nn.Module]] = None,
        image_channels: int = 3,
        **fpn_kwargs,
    ):
        """
        Args:
            polar_branch: the branch; its ``level_names`` are the FPN levels that get fused
                versions (only those a consumer reads, so that every parameter gets a gradient).
            fusions: level name -> module mapping ``(image, polar)`` features to fused ones
                (see :mod:`polar_rcnn.modeling.fusion`); default :class:`AddFusion` everywhere.
            image_channels: leading channels of the input that hold the image.
            fpn_kwargs: arguments of :class:`detectron2.modeling.FPN`.
        """
        super().__init__(**fpn_kwargs)
        unknown = set(polar_branch.level_names) - set(self._out_features)
        if unknown:
            raise ValueError(
                f"polar levels {sorted(unknown)} are not FPN outputs {self._out_features}; "
                "for RetinaNet (p3-p7) use MODEL.BACKBONE.NAME: build_polar_retinanet_resnet_fpn_backbone"
            )
        if fusions is None:
            fusions = {k: AddFusion(channels=polar_branch.out_channels) for k in polar_branch.level_names}
        if set(fusions) != set(polar_branch.level_names):
            raise ValueError(f"fusions for {sorted(fusions)} but polar levels {sorted(polar_branch.level_names)}")
        self.image_channels = image_channels
        self.polar_branch = polar_branch
        self.polar_fusion = nn.ModuleDict({k: fusions[k] for k in polar_branch.level_names})

    @property
    def stack_channels(self) -> int:
        """Channels of the stack this backbone expects after the image channels."""
        return self.polar_branch.in_channels

    @property
    def stack_input_stride(self) -> int:
        """Stride of the grid the inputs' stack is read on (the branch's ``input_stride``)."""
        return self.polar_branch.input_stride

    @property
    def input_channels(self) -> int:
        if self.stack_input_stride > 1:
            return self.image_channels + packed_channels(self.stack_channels + 1, self.stack_input_stride)
        return self.image_channels + self.stack_channels + 1

    def output_shape(self) -> Dict[str, ShapeSpec]:
        shapes = super().output_shape()
        shapes.update({fused_name(k): shapes[k] for k in self.polar_branch.level_names})
        return shapes

    def split_input(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(image, stack, availability)`` of an input ``x``: (N, image, H, W), (N, C, h, w) and
        (N, h, w), at (h, w) = (H, W) / ``stack_input_stride``."""
        check_polar_input(self, x)
        image = x[:, : self.image_channels]
        if self.stack_input_stride > 1:
            grid = unpack_grid(x[:, self.image_channels :], self.stack_channels + 1, self.stack_input_stride)
            return image, grid[:, : self.stack_channels], grid[:, -1]
        return image, x[:, self.image_channels : self.image_channels + self.stack_channels], x[:, -1]

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        image, stack, availability = self.split_input(x)
        available = availability[:, 0, 0] > 0  # (N,), never padding: padding is at the bottom/right
        stride = self.stack_input_stride
        features = super().forward(image)
        # In training the branch always runs, so every parameter gets a gradient (DDP needs that).
        if not self.training and not bool(available.any()):
            features.update({fused_name(k): features[k] for k in self.polar_branch.level_names})
            return features
        sizes = {k: features[k].shape[-2:] for k in self.polar_branch.level_names}
        polar = self.polar_branch(stack, sizes, pooled=stride > 1)
        every = bool(available.all())  # the usual case: no per-image selection needed
        available = available.view(-1, 1, 1, 1)
        for k, p in polar.items():
            fused = self.polar_fusion[k](features[k], p)
            features[fused_name(k)] = fused if every else torch.where(available, fused, features[k])
        return features


def check_polar_input(backbone, x: torch.Tensor) -> None:
    """Raise if ``x`` is not ``(N, image + stack + 1, H, W)`` for a polar ``backbone``."""
    if x.dim() != 4 or x.shape[1] != backbone.input_channels:
        stride = getattr(backbone, "stack_input_stride", 1)
        parts = f"stack {backbone.stack_channels} + availability 1" + (
            f" on the stride-{stride} grid, packed" if stride > 1 else "")
        raise ValueError(
            f"{type(backbone).__name__} expects (N, {backbone.input_channels}, H, W) input "
            f"(image {backbone.image_channels} + {parts}), got {tuple(x.shape)}"
        )


def check_resnet_config(cfg) -> None:
    """Raise a ``ValueError`` naming the keys to change where Detectron2's ResNet would assert."""
    r = cfg.MODEL.RESNETS
    if r.DEPTH not in RESNET_DEPTHS:
        raise ValueError(f"MODEL.RESNETS.DEPTH must be one of {RESNET_DEPTHS}, got {r.DEPTH}")
    if r.DEPTH in (18, 34):
        wrong = [
            f"{key}: {want} (is {have})"
            for key, want, have in (
                ("MODEL.RESNETS.RES2_OUT_CHANNELS", 64, r.RES2_OUT_CHANNELS),
                ("MODEL.RESNETS.NUM_GROUPS", 1, r.NUM_GROUPS),
                ("MODEL.RESNETS.RES5_DILATION", 1, r.RES5_DILATION),
                ("MODEL.RESNETS.DEFORM_ON_PER_STAGE", [False] * 4, list(r.DEFORM_ON_PER_STAGE)),
            )
            if (any(have) if isinstance(want, list) else have != want)
        ]
        if wrong:
            raise ValueError(f"ResNet-{r.DEPTH} (basic blocks) needs " + "; ".join(wrong))


def build_image_resnet(cfg) -> ResNet:
    """Detectron2's ResNet over the image channels (``len(MODEL.PIXEL_MEAN)``), after checking depth."""
    check_resnet_config(cfg)
    return build_resnet_backbone(cfg, ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN)))


def fpn_kwargs(cfg, bottom_up: ResNet, top_block: str) -> dict:
    """Arguments of :class:`FPN` from the config; ``top_block`` is "maxpool" (p6) or "p6p7"."""
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
    if top_block == "p6p7":
        top = LastLevelP6P7(bottom_up.output_shape()["res5"].channels, out_channels)
    else:
        top = LastLevelMaxPool()
    return {
        "bottom_up": bottom_up,
        "in_features": cfg.MODEL.FPN.IN_FEATURES,
        "out_channels": out_channels,
        "norm": cfg.MODEL.FPN.NORM,
        "top_block": top,
        "fuse_type": cfg.MODEL.FPN.FUSE_TYPE,
    }


#: added to torch's initial seed for the generator that initialises the stack-reading modules
BRANCH_SEED_OFFSET = 1_000_003


@contextlib.contextmanager
def branch_rng():
    """Initialise the modules built inside from a CPU generator of their own (torch's initial seed +
    :data:`BRANCH_SEED_OFFSET`) and leave the global one as it was: every other module of a polar
    model then gets the same initial weights as the vanilla model with the same ``SEED``, so that a
    zero-initialised polar detector starts as exactly that RGB-only detector."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed((torch.initial_seed() + BRANCH_SEED_OFFSET) % (2 ** 63))
        yield


def _build_polar_fpn(cfg, top_block: str) -> PolarFPN:
    levels = Injection.from_config(cfg).fused_levels
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
    with branch_rng():
        branch = PolarBranch(cfg, level_names=levels, out_channels=out_channels)
        fusions = {k: build_polar_fusion(cfg, channels=out_channels) for k in levels}
    return PolarFPN(
        polar_branch=branch,
        fusions=fusions,
        image_channels=len(cfg.MODEL.PIXEL_MEAN),
        **fpn_kwargs(cfg, build_image_resnet(cfg), top_block),
    )


@BACKBONE_REGISTRY.register()
@reads_stack_at_input_stride
def build_polar_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> PolarFPN:
    """ResNet + FPN (p2-p6, as ``build_resnet_fpn_backbone``) with a :class:`PolarBranch` fused in."""
    return _build_polar_fpn(cfg, "maxpool")


@BACKBONE_REGISTRY.register()
@reads_stack_at_input_stride
def build_polar_retinanet_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> PolarFPN:
    """ResNet + FPN with RetinaNet's P6/P7 top block (as ``build_retinanet_resnet_fpn_backbone``)
    with a :class:`PolarBranch` fused in."""
    return _build_polar_fpn(cfg, "p6p7")
