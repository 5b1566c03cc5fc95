"""Meta-architectures that carry the stack from the batched inputs to a polar backbone."""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable
from detectron2.modeling import (
    META_ARCH_REGISTRY,
    GeneralizedRCNN,
    RetinaNet,
    build_backbone,
    build_proposal_generator,
    build_roi_heads,
)
from detectron2.structures import ImageList

from .grid_inputs import pack_grid, packed_channels
from .injection import FUSED_SUFFIX, Injection
from .stack_derivation import stack_derivation_from_config


def _per_channel(values: Sequence[float], channels: int, key: str) -> torch.Tensor:
    values = list(values)
    if len(values) == 1:
        values = values * channels
    if len(values) != channels:
        raise ValueError(f"{key} has {len(values)} values; give 1 or MODEL.POLAR.IN_CHANNELS={channels}")
    return torch.tensor(values, dtype=torch.float32).view(-1, 1, 1)


def polar_inputs_config(cfg) -> dict:
    """The constructor arguments of :class:`PolarInputsMixin` from ``MODEL.POLAR``."""
    return {
        "stack_mean": cfg.MODEL.POLAR.STACK_MEAN,
        "stack_std": cfg.MODEL.POLAR.STACK_STD,
        "modality_dropout": cfg.MODEL.POLAR.MODALITY_DROPOUT,
        "stack_derivation": stack_derivation_from_config(cfg),
    }


def has_fused_levels(backbone) -> bool:
    """Whether ``backbone`` outputs fused levels (late fusion) rather than stack-aware plain ones."""
    return any(k.endswith(FUSED_SUFFIX) for k in backbone.output_shape())


class PolarInputsMixin:
    """``preprocess_image`` for meta-architectures whose inputs may carry ``"stack"``: a (C, H, W)
    tensor aligned with ``"image"`` (any dtype and strides, e.g. uint16 channels-last from
    :class:`~polar_rcnn.data.PolarDatasetMapper`; its values times the optional ``"stack_scale"``
    are what ``MODEL.POLAR.STACK_MEAN/STD`` normalize, after ``stack_derivation`` when there is one:
    the inputs then carry the stored stack and the derived input is computed here, on the device).

    Normalizes image and stack, appends an availability plane (0 for inputs without a stack, which
    then get image-only features) and pads them together, so the stack is padded exactly like the
    image. In training, ``modality_dropout`` is the probability that an input's stack is dropped
    (drawn from torch's global RNG, so ``torch.manual_seed`` / ``SEED`` make it reproducible).

    Mix in before a Detectron2 meta-architecture (``class M(PolarInputsMixin, GeneralizedRCNN)``)
    whose backbone has ``stack_channels`` and call :meth:`_init_polar_inputs` after its ``__init__``.
    """

    def _init_polar_inputs(self, stack_mean: Sequence[float], stack_std: Sequence[float],
                           modality_dropout: float = 0.0, stack_derivation: Optional[nn.Module] = None) -> None:
        stack_channels = getattr(self.backbone, "stack_channels", None)
        if stack_channels is None:
            raise ValueError(
                f"{type(self).__name__} needs a polar backbone (MODEL.BACKBONE.NAME: e.g. "
                f"build_polar_resnet_fpn_backbone or build_early_fusion_resnet_fpn_backbone); "
                f"got {type(self.backbone).__name__}"
            )
        if not 0.0 <= modality_dropout <= 1.0:
            raise ValueError(f"MODEL.POLAR.MODALITY_DROPOUT must be in [0, 1], got {modality_dropout}")
        if stack_derivation is not None and stack_derivation.out_channels != stack_channels:
            raise ValueError(f"the stack derivation gives {stack_derivation.out_channels} channels, the backbone "
                             f"reads {stack_channels} (MODEL.POLAR.IN_CHANNELS)")
        self.stack_channels = stack_channels
        self.stack_derivation = stack_derivation
        # channels of the inputs' "stack": what the derivation reads, else what the backbone reads
        self.input_stack_channels = stack_derivation.in_channels if stack_derivation is not None else stack_channels
        self.modality_dropout = float(modality_dropout)
        self.register_buffer("stack_mean", _per_channel(stack_mean, stack_channels, "MODEL.POLAR.STACK_MEAN"), False)
        self.register_buffer("stack_std", _per_channel(stack_std, stack_channels, "MODEL.POLAR.STACK_STD"), False)

    def drop_stacks(self, num_inputs: int) -> List[bool]:
        """Which inputs lose their stack: a Bernoulli(``modality_dropout``) draw per input in
        training; none in inference (and no RNG is used when the rate is 0)."""
        if not self.training or self.modality_dropout <= 0.0:
            return [False] * num_inputs
        return (torch.rand(num_inputs) < self.modality_dropout).tolist()

    def preprocess_image(self, batched_inputs: List[Dict[str, torch.Tensor]]) -> ImageList:
        """Normalize ``[image, stack, availability]`` per input and pad them into one batch.

        The result equals ``ImageList.from_tensors`` of the per-input concatenations, built with one
        allocation and in-place writes (only the padding is zero-filled): the stack (any dtype, e.g.
        uint16 straight from the loader) is converted, scaled by the input's ``"stack_scale"``
        (default 1) and normalized in place. For a backbone that reads the stack at a stride s > 1
        (``stack_input_stride``) the stack and availability are built on the stride-s grid of the
        padded batch and packed after the image (:mod:`.grid_inputs`); an input's stack is then
        either on that grid (``"stack_stride"`` s, as the loader delivers it) or at the image's
        resolution (average-pooled here, after the derivation). Either way the grid equals the
        average pooling of the full-resolution batch.
        """
        images = [x["image"].to(self.device) for x in batched_inputs]
        sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        height, width = max(h for h, _ in sizes), max(w for _, w in sizes)
        stride = self.backbone.size_divisibility
        grid_stride = getattr(self.backbone, "stack_input_stride", 1)
        for divisor in (stride, grid_stride):
            if divisor > 1:
                height, width = -(-height // divisor) * divisor, -(-width // divisor) * divisor
        c_image, c_stack = images[0].shape[0], self.stack_channels
        if grid_stride > 1:
            packed = packed_channels(c_stack + 1, grid_stride)
            batch = self.pixel_mean.new_empty((len(images), c_image + packed, height, width))
            stacks = self.pixel_mean.new_zeros((len(images), c_stack + 1, height // grid_stride, width // grid_stride))
        else:
            batch = self.pixel_mean.new_empty((len(images), c_image + c_stack + 1, height, width))
            stacks = batch[:, c_image:]
        padded = c_image if grid_stride > 1 else batch.shape[1]  # the packed grid is written whole below
        drops = self.drop_stacks(len(batched_inputs))
        for i, (inputs, image, (h, w), drop) in enumerate(zip(batched_inputs, images, sizes, drops)):
            batch[i, :padded, h:].zero_()  # padding (bottom, right); every other value is written below
            batch[i, :padded, :h, w:].zero_()
            batch[i, :c_image, :h, :w].copy_(image).sub_(self.pixel_mean).div_(self.pixel_std)
            gh, gw = -(-h // grid_stride), -(-w // grid_stride)
            stack = inputs.get("stack")
            if stack is None or drop:
                if grid_stride == 1:
                    stacks[i, :, :h, :w].zero_()  # zeros and availability 0: image-only features
                continue
            out = stacks[i, :c_stack, :gh, :gw]
            self._write_stack(inputs, stack, out, (h, w), grid_stride)
            if grid_stride > 1:  # cells cut by the image's edge: pooled with the zero padding
                if h % grid_stride:
                    out[:, -1].mul_((h % grid_stride) / grid_stride)
                if w % grid_stride:
                    out[:, :, -1].mul_((w % grid_stride) / grid_stride)
            stacks[i, -1, :gh, :gw] = 1.0
        if grid_stride > 1:
            batch[:, c_image:] = pack_grid(stacks, grid_stride)
        return ImageList(batch, sizes)

    def _write_stack(self, inputs: Dict[str, torch.Tensor], stack: torch.Tensor, out: torch.Tensor,
                     size: Tuple[int, int], grid_stride: int) -> None:
        """Write the normalized stack of ``inputs`` into ``out`` (C, h, w) on the ``grid_stride`` grid
        of an image of ``size``."""
        h, w = size
        given = int(inputs.get("stack_stride", 1))
        if given not in (1, grid_stride):
            raise ValueError(f"{inputs.get('file_name', 'input')}: stack on the stride-{given} grid, but this model "
                             f"reads it at stride {grid_stride}: set INPUT.STACK.RESOLUTION 'full' or deliver it "
                             "at the model's MODEL.POLAR.INPUT_STRIDE")
        gh, gw = -(-h // given), -(-w // given)
        if tuple(stack.shape) != (self.input_stack_channels, gh, gw):
            where = f" on the stride-{given} grid" if given > 1 else ""
            raise ValueError(
                f"{inputs.get('file_name', 'input')}: stack of shape {tuple(stack.shape)} does not "
                f"match its image; expected ({self.input_stack_channels}, {gh}, {gw}){where}"
            )
        scale = float(inputs.get("stack_scale", 1.0))
        if self.stack_derivation is None and given == grid_stride:
            out.copy_(stack.to(self.device, non_blocking=True))
        else:
            values = stack.to(self.device, non_blocking=True).to(out.dtype)
            if scale != 1.0:
                values = values * scale
            with torch.autocast(device_type=values.device.type, enabled=False):  # float32 under AMP too
                if self.stack_derivation is not None:
                    values = self.stack_derivation(values)
                if given < grid_stride:  # mean over the image's pixels of each cell
                    values = F.avg_pool2d(values[None], grid_stride, ceil_mode=True)[0]
                out.copy_(values)
            scale = 1.0
        out.mul_(scale / self.stack_std).sub_(self.stack_mean / self.stack_std)  # (x * scale - mean) / std


@META_ARCH_REGISTRY.register()
class PolarRCNN(PolarInputsMixin, GeneralizedRCNN):
    """:class:`GeneralizedRCNN` (Faster / Mask / Keypoint R-CNN) over a polar backbone, with the
    inputs of :class:`PolarInputsMixin`.

    With a late-fusion backbone (fused levels), ``MODEL.POLAR.INJECT`` chooses whether the RPN, the
    ROI heads (box, mask, keypoint) or both read the fused levels; the other consumer reads the
    untouched image levels. With an early-fusion backbone every consumer reads its (stack-aware)
    levels and INJECT does not apply.
    """

    @configurable
    def __init__(self, *, stack_mean: Sequence[float], stack_std: Sequence[float],
                 modality_dropout: float = 0.0, stack_derivation: Optional[nn.Module] = None, **kwargs):
        """
        Args:
            stack_mean, stack_std: per-channel stack normalization (1 value or ``stack_channels``).
            modality_dropout: probability of dropping an input's stack in training.
            stack_derivation: computes the backbone's stack input from the inputs' stored stack
                (:class:`~polar_rcnn.modeling.StackDerivation`), or None: the inputs carry it.
            kwargs: arguments of :class:`GeneralizedRCNN`.
        """
        super().__init__(**kwargs)
        self._init_polar_inputs(stack_mean, stack_std, modality_dropout, stack_derivation)

    @classmethod
    def from_config(cls, cfg):
        injection = Injection.from_config(cfg)
        backbone = build_backbone(cfg)
        # the consumers chosen by MODEL.POLAR.INJECT read the fused levels; the config is not modified
        heads_cfg = injection.heads_config(cfg) if has_fused_levels(backbone) else cfg
        return {
            "backbone": backbone,
            "proposal_generator": build_proposal_generator(heads_cfg, backbone.output_shape()),
            "roi_heads": build_roi_heads(heads_cfg, backbone.output_shape()),
            "input_format": cfg.INPUT.FORMAT,
            "vis_period": cfg.VIS_PERIOD,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            **polar_inputs_config(cfg),
        }


@META_ARCH_REGISTRY.register()
class PolarRetinaNet(PolarInputsMixin, RetinaNet):
    """:class:`RetinaNet` over a polar backbone (``build_polar_retinanet_resnet_fpn_backbone`` or
    ``build_early_fusion_retinanet_resnet_fpn_backbone``), with the inputs of
    :class:`PolarInputsMixin`. The head reads the fused levels; ``MODEL.POLAR.INJECT`` must be
    "rpn" or "both" (there are no ROI heads).
    """

    @configurable
    def __init__(self, *, stack_mean: Sequence[float], stack_std: Sequence[float],
                 modality_dropout: float = 0.0, stack_derivation: Optional[nn.Module] = None, **kwargs):
        """
        Args:
            stack_mean, stack_std, modality_dropout, stack_derivation: as in :class:`PolarRCNN`.
            kwargs: arguments of :class:`RetinaNet`.
        """
        super().__init__(**kwargs)
        self._init_polar_inputs(stack_mean, stack_std, modality_dropout, stack_derivation)

    @classmethod
    def from_config(cls, cfg):
        injection = Injection.from_config(cfg)
        ret = super().from_config(cfg)
        # fused levels have the shapes of the plain ones, so the head and anchors built for the
        # plain levels apply as they are; only the names the head reads change
        if has_fused_levels(ret["backbone"]):
            ret["head_in_features"] = injection.reads()["MODEL.RETINANET.IN_FEATURES"]
        ret.update(polar_inputs_config(cfg))
        return ret
