"""Per-level fusion of image features and polar features (``MODEL.POLAR.FUSION``).

Every fusion maps ``(image, polar)``, two (N, C, H, W) tensors, to fused (N, C, H, W) features and
returns ``image`` exactly when ``polar`` is zero at initialisation — with ``MODEL.POLAR.ZERO_INIT``
the branch outputs zeros, so an untrained polar detector equals the image-only one. Register a new
fusion with ``@register_fusion("name")`` on a module class whose ``from_config(cfg, channels)``
returns its arguments.
"""
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable
from detectron2.layers import Conv2d

_FUSIONS: Dict[str, type] = {}


def register_fusion(name: str) -> Callable[[type], type]:
    """Class decorator: make a fusion module selectable as ``MODEL.POLAR.FUSION: name``."""

    def register(cls: type) -> type:
        if name in _FUSIONS:
            raise KeyError(f"fusion {name!r} is already registered ({_FUSIONS[name].__name__})")
        _FUSIONS[name] = cls
        return cls

    return register


def fusion_names() -> List[str]:
    """Names accepted by ``MODEL.POLAR.FUSION``."""
    return sorted(_FUSIONS)


def build_polar_fusion(cfg, channels: int) -> nn.Module:
    """The fusion module named by ``cfg.MODEL.POLAR.FUSION`` for one level of ``channels``."""
    name = cfg.MODEL.POLAR.FUSION
    if name not in _FUSIONS:
        raise ValueError(f"MODEL.POLAR.FUSION must be one of {fusion_names()}, got {name!r}")
    return _FUSIONS[name](cfg, channels=channels)


@register_fusion("add")
class AddFusion(nn.Module):
    """``image + polar``; no parameters."""

    @configurable
    def __init__(self, *, channels: int):
        super().__init__()
        self.channels = channels

    @classmethod
    def from_config(cls, cfg, channels: int):
        return {"channels": channels}

    def forward(self, image: torch.Tensor, polar: torch.Tensor) -> torch.Tensor:
        return image + polar


@register_fusion("concat")
class ConcatFusion(nn.Module):
    """``conv1x1([image, polar])`` back to ``channels``.

    The conv starts as ``[identity | identity]``, i.e. as :class:`AddFusion`: the output is the
    image features while the polar features are zero, and gradients reach the branch from the first
    step (a zero polar half together with a zero-initialised branch would never train).
    """

    @configurable
    def __init__(self, *, channels: int):
        super().__init__()
        self.channels = channels
        self.conv = Conv2d(2 * channels, channels, kernel_size=1)
        eye = torch.eye(channels).view(channels, channels, 1, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.cat([eye, eye], dim=1))
            self.conv.bias.zero_()

    @classmethod
    def from_config(cls, cfg, channels: int):
        return {"channels": channels}

    def forward(self, image: torch.Tensor, polar: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([image, polar], dim=1))


@register_fusion("gate")
class SpatialGateFusion(nn.Module):
    """``image + g * polar`` with a spatial gate ``g = sigmoid(conv3x3([image, polar]))`` (N, 1, H, W),
    so the model learns where the stack is worth trusting."""

    @configurable
    def __init__(self, *, channels: int):
        super().__init__()
        self.channels = channels
        self.gate = Conv2d(2 * channels, 1, kernel_size=3, padding=1)
        nn.init.normal_(self.gate.weight, std=0.01)
        nn.init.zeros_(self.gate.bias)

    @classmethod
    def from_config(cls, cfg, channels: int):
        return {"channels": channels}

    def forward(self, image: torch.Tensor, polar: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.gate(torch.cat([image, polar], dim=1)))
        return image + gate * polar


@register_fusion("channel_attention")
class ChannelAttentionFusion(nn.Module):
    """``image + s * polar`` with a squeeze-and-excitation channel gate
    ``s = sigmoid(fc(relu(fc(avgpool([image, polar])))))`` (N, C, 1, 1)."""

    @configurable
    def __init__(self, *, channels: int, reduction: int = 16):
        """
        Args:
            reduction: the squeeze's width is ``2 * channels // reduction`` (at least 1).
        """
        super().__init__()
        if reduction < 1:
            raise ValueError(f"MODEL.POLAR.FUSION_REDUCTION must be >= 1, got {reduction}")
        self.channels = channels
        squeezed = max(1, 2 * channels // reduction)
        self.squeeze = Conv2d(2 * channels, squeezed, kernel_size=1)
        self.excite = Conv2d(squeezed, channels, kernel_size=1)

    @classmethod
    def from_config(cls, cfg, channels: int):
        return {"channels": channels, "reduction": cfg.MODEL.POLAR.FUSION_REDUCTION}

    def forward(self, image: torch.Tensor, polar: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(torch.cat([image, polar], dim=1), 1)
        scale = torch.sigmoid(self.excite(F.relu(self.squeeze(pooled))))
        return image + scale * polar
