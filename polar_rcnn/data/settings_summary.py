"""One line saying how stacks are read and fed to the model under a config (for the training log)."""
from typing import Sequence

from .polar_layout import check_stack_config

#: the values of MODEL.POLAR.STACK_MEAN / STACK_STD that leave the stack as it is
_IDENTITY_NORMALIZATION = ([0.0], [1.0])


def _values(values: Sequence[float], most: int = 3) -> str:
    shown = ", ".join(f"{v:g}" for v in list(values)[:most])
    return f"[{shown}, ... ({len(values)} values)]" if len(values) > most else f"[{shown}]"


def _normalization(cfg) -> str:
    mean, std = list(cfg.MODEL.POLAR.STACK_MEAN), list(cfg.MODEL.POLAR.STACK_STD)
    if (mean, std) == _IDENTITY_NORMALIZATION:
        return "normalization none (MODEL.POLAR.STACK_MEAN/STD defaults 0/1)"
    return f"normalization from the config (MODEL.POLAR.STACK_MEAN {_values(mean)}, STACK_STD {_values(std)})"


def _flips(cfg, polarization: str) -> str:
    flip = cfg.INPUT.RANDOM_FLIP
    if flip == "none":
        return "no flips (INPUT.RANDOM_FLIP none)"
    if not polarization:
        return f"{flip} flips leave stack values as they are (no polarization)"
    return f"{flip} flips mirror the polarization angles (AoLP -> pi - AoLP)"


def stack_settings_summary(cfg) -> str:
    """The ``INPUT.STACK`` / ``MODEL.POLAR`` settings that decide what the model sees, in one line:
    channels, layout, scale (by the files' dtype, or a fixed multiplier), polarization kind, whether
    flips mirror the angles, derived inputs, normalization source, photometric and modality
    dropout. ValueError (as :func:`~polar_rcnn.data.check_stack_config`) for an inconsistent config."""
    s = cfg.INPUT.STACK
    if not s.ENABLED:
        return "Stack: off (INPUT.STACK.ENABLED False): RGB-only inputs"
    layout = check_stack_config(cfg)
    if layout.polarization == "angles":
        kind = f"polarization angles {_values(layout.angles, most=len(layout.angles))} deg x {layout.bands} bands"
    elif layout.polarization:
        kind = f"polarization {layout.polarization} x {layout.bands} bands"
    else:
        kind = "no polarization meaning"
    scale = ("scale by the files' dtype (uint8 1/255, uint16 1/65535, float 1)" if not s.SCALE
             else f"scale {s.SCALE:g} (any dtype)")
    if s.DERIVED == "raw":
        model_input = f"model input the raw {layout.channels} channels"
    else:
        where = "on the model's device" if s.DERIVED_ON == "model" else "in the loader"
        model_input = f"model input {s.DERIVED} ({cfg.MODEL.POLAR.IN_CHANNELS} channels, computed {where})"
    parts = [
        f"Stack: {layout.channels} channels {s.LAYOUT}",
        scale,
        kind,
        _flips(cfg, layout.polarization),
        model_input,
        _normalization(cfg),
        f"photometric {'on' if s.PHOTOMETRIC else 'off'}",
        f"modality dropout {cfg.MODEL.POLAR.MODALITY_DROPOUT:g}",
    ]
    return "; ".join(parts)


__all__ = ["stack_settings_summary"]
