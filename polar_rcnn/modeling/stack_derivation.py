"""Derived stack inputs (``INPUT.STACK.DERIVED``) computed on the model's device.

The loader then delivers the stack as stored (e.g. uint16 polarizer-angle images, already
mirrored for flips) and the model turns it into Stokes parameters (a fixed linear map of each
band's angle images, i.e. a 1x1 conv with fixed weights) or DoLP / cos 2AoLP / sin 2AoLP
(elementwise), with the conventions of :mod:`polar_rcnn.polarization`.
"""
from typing import Optional, Sequence

import torch
from torch import nn

from .. import polarization as P
from ..config import DERIVED_ON_CHOICES

DERIVED_MODES = ("stokes", "dolp_aolp_trig")
_EPS = 1e-6  # as polar_rcnn.polarization.dolp_aolp_trig


class StackDerivation(nn.Module):
    """(C_raw, H, W) float stack, band-major -> (bands * 3, H, W) derived input per band.

    ``polarization`` "angles": each band holds one image per polarizer angle of ``angles_deg``
    (Stokes by least squares); "stokes": each band holds (S0, S1, S2).
    """

    def __init__(self, *, derived: str, polarization: str, bands: int,
                 angles_deg: Sequence[float] = P.DEFAULT_ANGLES_DEG):
        super().__init__()
        if derived not in DERIVED_MODES:
            raise ValueError(f"INPUT.STACK.DERIVED {derived!r}: the model derives one of {DERIVED_MODES}")
        if polarization == "angles":
            matrix = torch.from_numpy(P.stokes_matrix(angles_deg))
        elif polarization == "stokes":
            matrix = torch.eye(3)
        else:
            raise ValueError(f"INPUT.STACK.DERIVED {derived!r} needs INPUT.STACK.POLARIZATION 'angles' or 'stokes', "
                             f"got {polarization!r}")
        if bands < 1:
            raise ValueError(f"StackDerivation needs >= 1 band, got {bands}")
        self.derived = derived
        self.bands = bands
        self.per_band = matrix.shape[0]
        self.register_buffer("stokes_matrix", matrix.t().contiguous(), persistent=False)  # (3, per_band)

    @property
    def in_channels(self) -> int:
        """Channels of the stack it reads."""
        return self.bands * self.per_band

    @property
    def out_channels(self) -> int:
        return self.bands * 3

    def forward(self, stack: torch.Tensor) -> torch.Tensor:
        c, h, w = stack.shape
        if c != self.in_channels:
            raise ValueError(f"StackDerivation expects {self.in_channels} channels ({self.bands} bands x "
                             f"{self.per_band}), got {c}")
        per_band = stack.reshape(self.bands, self.per_band, h * w)
        s = torch.matmul(self.stokes_matrix.to(stack.dtype), per_band)  # (bands, 3, h * w)
        if self.derived == "dolp_aolp_trig":
            s0, s1, s2 = s.unbind(1)
            norm = torch.sqrt(s1 * s1 + s2 * s2)
            dolp = (norm / s0.clamp_min(_EPS)).clamp(0.0, 1.0)
            inv = torch.where(norm > _EPS, 1.0 / norm.clamp_min(_EPS), torch.zeros_like(norm))
            s = torch.stack([dolp, s1 * inv, s2 * inv], dim=1)
        return s.reshape(self.out_channels, h, w)


def stack_derivation_from_config(cfg) -> Optional[StackDerivation]:
    """The derivation the model runs under ``cfg``, or None when the loader delivers the model's
    input as it is (``INPUT.STACK.DERIVED`` "raw", ``DERIVED_ON`` "loader" or stacks off)."""
    s = cfg.INPUT.STACK
    if s.DERIVED_ON not in DERIVED_ON_CHOICES:
        raise ValueError(f"INPUT.STACK.DERIVED_ON must be one of {DERIVED_ON_CHOICES}, got {s.DERIVED_ON!r}")
    if not s.ENABLED or s.DERIVED == "raw" or s.DERIVED_ON == "loader":
        return None
    in_channels = cfg.MODEL.POLAR.IN_CHANNELS
    if in_channels % 3:
        raise ValueError(f"INPUT.STACK.DERIVED {s.DERIVED!r} gives 3 channels per band: MODEL.POLAR.IN_CHANNELS "
                         f"({in_channels}) must be a multiple of 3")
    return StackDerivation(derived=s.DERIVED, polarization=s.POLARIZATION, bands=in_channels // 3,
                           angles_deg=s.ANGLES)


__all__ = ["StackDerivation", "stack_derivation_from_config"]
