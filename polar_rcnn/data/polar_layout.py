"""What the channels of a stack mean: polarization layout, mirrors and derived model inputs.

Channels are band-major: ``channel = band * per_band + k`` with, per band,

* ``"angles"``: one image per polarizer angle in ``INPUT.STACK.ANGLES`` (k = angle index);
* ``"stokes"``: S0, S1, S2;
* ``"dolp_aolp"``: DoLP, AoLP (radians);
* ``""``: no polarization meaning (one band of all channels; flips leave values alone).

Derived inputs (``INPUT.STACK.DERIVED``), computed per band from "angles" or "stokes" stacks:
``"raw"`` (the channels as stored), ``"stokes"`` (S0, S1, S2) or ``"dolp_aolp_trig"``
(DoLP, cos 2 AoLP, sin 2 AoLP).
"""
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from .. import polarization as P
from .dofp import angle_order, raw_format_from_config

POLARIZATIONS = ("", "angles", "stokes", "dolp_aolp")
DERIVED_INPUTS = ("raw", "stokes", "dolp_aolp_trig")
_DERIVED_PER_BAND = {"stokes": 3, "dolp_aolp_trig": 3}


@dataclass(frozen=True)
class PolarLayout:
    """Channel semantics of a stack with ``channels`` channels (see module docstring)."""

    polarization: str = ""
    angles: Tuple[float, ...] = P.DEFAULT_ANGLES_DEG
    channels: int = 0

    def __post_init__(self):
        if self.polarization not in POLARIZATIONS:
            raise ValueError(f"INPUT.STACK.POLARIZATION must be one of {POLARIZATIONS}, got {self.polarization!r}")
        object.__setattr__(self, "angles", tuple(float(a) for a in self.angles))
        if self.polarization == "angles":
            P.check_angles(self.angles)
        if self.channels <= 0 or self.channels % self.per_band:
            raise ValueError(
                f"{self.channels} stack channels do not hold whole bands of {self.per_band} channels "
                f"(INPUT.STACK.POLARIZATION {self.polarization!r}{self._angles_note()}): set INPUT.STACK.CHANNELS "
                "(or MODEL.POLAR.IN_CHANNELS) to the channel count of the stack files"
            )

    def _angles_note(self) -> str:
        return f", INPUT.STACK.ANGLES {list(self.angles)}" if self.polarization == "angles" else ""

    @property
    def per_band(self) -> int:
        return {"angles": len(self.angles), "stokes": 3, "dolp_aolp": 2}.get(self.polarization, max(self.channels, 1))

    @property
    def bands(self) -> int:
        return self.channels // self.per_band

    # ------------------------------------------------------------------------------------ mirror
    def check_mirror(self) -> None:
        """ValueError if a flip cannot be expressed in this layout (an angle without its mirror)."""
        if self.polarization == "angles":
            P.mirror_angle_permutation(self.angles)

    def mirror_index(self) -> Optional[np.ndarray]:
        """The mirror as a channel gather (``mirrored = stack[..., index]``; identity for stacks
        without polarization), or None where it needs arithmetic (Stokes, DoLP/AoLP)."""
        if self.polarization == "angles":
            perm = np.asarray(P.mirror_angle_permutation(self.angles))
            return (np.arange(self.bands)[:, None] * self.per_band + perm[None, :]).ravel()
        if self.polarization in ("stokes", "dolp_aolp"):
            return None
        return np.arange(self.channels)

    def mirror(self, stack: np.ndarray) -> np.ndarray:
        """Polarization values of an (H, W, C) stack whose pixels were just mirrored (flipped
        horizontally or vertically): AoLP phi -> pi - phi. Returns a new array (or ``stack``
        itself when there is nothing to change)."""
        if self.polarization == "angles":
            index = self.mirror_index()
            return stack if (index == np.arange(len(index))).all() else stack[..., index]
        if self.polarization == "stokes":
            out = np.array(stack, copy=True)
            out[..., 2::3] *= -1.0
            return out
        if self.polarization == "dolp_aolp":
            out = np.array(stack, copy=True)
            out[..., 1::2] = P.mirror_aolp(out[..., 1::2])
            return out
        return stack

    # ----------------------------------------------------------------------------------- derive
    def check_derived(self, derived: str) -> None:
        if derived not in DERIVED_INPUTS:
            raise ValueError(f"INPUT.STACK.DERIVED must be one of {DERIVED_INPUTS}, got {derived!r}")
        if derived != "raw" and self.polarization not in ("angles", "stokes"):
            raise ValueError(f"INPUT.STACK.DERIVED {derived!r} is computed from polarizer-angle or Stokes "
                             f"stacks: set INPUT.STACK.POLARIZATION 'angles' or 'stokes' "
                             f"(got {self.polarization!r}), or DERIVED 'raw'")

    def derived_channels(self, derived: str) -> int:
        """Channels the model gets for ``derived`` (``INPUT.STACK.DERIVED``)."""
        self.check_derived(derived)
        return self.channels if derived == "raw" else self.bands * _DERIVED_PER_BAND[derived]

    def stokes(self, stack: np.ndarray) -> np.ndarray:
        """(H, W, C) "angles" or "stokes" stack -> (H, W, bands, 3) float32 S0, S1, S2."""
        h, w = stack.shape[:2]
        per_band = stack.reshape(h, w, self.bands, self.per_band)
        if self.polarization == "stokes":
            return per_band.astype(np.float32, copy=False)
        return P.stokes_from_intensities(per_band, self.angles)

    def derive(self, stack: np.ndarray, derived: str) -> np.ndarray:
        """The model input for ``derived`` from an (H, W, C) float stack: (H, W, derived_channels)."""
        self.check_derived(derived)
        if derived == "raw":
            return stack
        s = self.stokes(stack)
        if derived == "stokes":
            out = s
        else:  # dolp_aolp_trig
            out = np.stack(P.dolp_aolp_trig(s[..., 0], s[..., 1], s[..., 2]), axis=-1)
        return np.ascontiguousarray(out.reshape(stack.shape[:2] + (-1,)), dtype=np.float32)


def raw_stack_channels(cfg) -> int:
    """Channels of the stack files: ``INPUT.STACK.CHANNELS``, or ``MODEL.POLAR.IN_CHANNELS`` if 0;
    for raw polarization frames (``INPUT.STACK.SOURCE`` "dofp") those of the demosaiced stack."""
    raw = raw_format_from_config(cfg)
    if raw is not None:
        return raw.channels
    return int(cfg.INPUT.STACK.CHANNELS) or int(cfg.MODEL.POLAR.IN_CHANNELS)


def polar_layout_from_config(cfg, channels: Optional[int] = None) -> PolarLayout:
    """The :class:`PolarLayout` of ``cfg.INPUT.STACK`` (ValueError naming the key on bad values)."""
    s = cfg.INPUT.STACK
    return PolarLayout(s.POLARIZATION, tuple(s.ANGLES), channels or raw_stack_channels(cfg))


def derived_channels(cfg) -> int:
    """Channels the model's stack input has under ``cfg``: what ``MODEL.POLAR.IN_CHANNELS`` must be.

    Raw stacks have ``INPUT.STACK.CHANNELS`` (0: ``MODEL.POLAR.IN_CHANNELS``) channels;
    ``INPUT.STACK.DERIVED`` "stokes" / "dolp_aolp_trig" give 3 per band.
    """
    return polar_layout_from_config(cfg).derived_channels(cfg.INPUT.STACK.DERIVED)


def loader_stack_channels(cfg) -> int:
    """Channels of the ``"stack"`` the loader hands the model: the stored ones, or the derived
    ones when ``INPUT.STACK.DERIVED_ON`` is "loader"."""
    if cfg.INPUT.STACK.DERIVED != "raw" and cfg.INPUT.STACK.DERIVED_ON == "loader":
        return derived_channels(cfg)
    return raw_stack_channels(cfg)


def check_stack_config(cfg) -> PolarLayout:
    """Validate ``INPUT.STACK`` against ``MODEL.POLAR.IN_CHANNELS``; ValueError saying what to set."""
    _check_raw_config(cfg)
    layout = polar_layout_from_config(cfg)
    derived = cfg.INPUT.STACK.DERIVED
    n = layout.derived_channels(derived)
    if n != cfg.MODEL.POLAR.IN_CHANNELS:
        raise ValueError(
            f"MODEL.POLAR.IN_CHANNELS is {cfg.MODEL.POLAR.IN_CHANNELS}, but INPUT.STACK.DERIVED {derived!r} gives "
            f"{n} channels from {layout.channels}-channel stacks ({layout.bands} bands x {layout.per_band}): "
            f"set MODEL.POLAR.IN_CHANNELS {n} (and INPUT.STACK.CHANNELS {layout.channels})"
        )
    return layout


def _check_raw_config(cfg) -> None:
    """ValueError when raw polarization frames (``INPUT.STACK.SOURCE`` "dofp") meet settings that
    do not describe their demosaiced stack."""
    s = cfg.INPUT.STACK
    raw = raw_format_from_config(cfg)
    if raw is None:
        return
    if s.POLARIZATION != "angles":
        raise ValueError(f"INPUT.STACK.SOURCE 'dofp' demosaics raw frames into polarizer-angle images: set "
                         f"INPUT.STACK.POLARIZATION 'angles' (got {s.POLARIZATION!r})")
    if s.CHANNELS not in (0, raw.channels):
        raise ValueError(f"INPUT.STACK.CHANNELS is {s.CHANNELS}, but a {raw.pattern} raw frame "
                         f"(INPUT.STACK.RAW.PATTERN) demosaics into {raw.channels} channels ({raw.bands} band(s) x 4 angles): set it to 0")
    angle_order(s.ANGLES)


__all__ = [
    "DERIVED_INPUTS",
    "POLARIZATIONS",
    "PolarLayout",
    "check_stack_config",
    "derived_channels",
    "loader_stack_channels",
    "polar_layout_from_config",
    "raw_stack_channels",
]
