"""Reading stacks (the extra modality aligned with an image) from disk."""
import os
from typing import Optional

import numpy as np

LAYOUTS = ("HWC", "CHW")
_DTYPE_SCALE = {np.dtype(np.uint8): 1.0 / 255, np.dtype(np.uint16): 1.0 / 65535}


class StackError(ValueError):
    """A stack file that cannot be used; the message names the file and the problem."""


def read_stack(path: str, layout: str = "HWC") -> np.ndarray:
    """Read a stack file as an (H, W, C) array in its stored dtype (``.npy`` is memory-mapped)."""
    if layout not in LAYOUTS:
        raise ValueError(f"INPUT.STACK.LAYOUT must be one of {LAYOUTS}, got {layout!r}")
    if not os.path.isfile(path):
        raise StackError(f"{path}: stack file not found")
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".npy":
            array = np.load(path, mmap_mode="r")
        else:
            raise StackError(f"{path}: unsupported stack format {ext!r} (supported: .npy)")
    except StackError:
        raise
    except Exception as e:  # numpy raises ValueError/OSError/EOFError on truncated or foreign files
        raise StackError(f"{path}: cannot read stack ({type(e).__name__}: {e})") from e
    if array.ndim != 3:
        raise StackError(f"{path}: stack must have 3 dimensions ({layout}), got shape {array.shape}")
    return array if layout == "HWC" else array.transpose(1, 2, 0)


def stack_to_float(array: np.ndarray, scale: float = 0.0, path: str = "stack") -> np.ndarray:
    """Convert to float32; ``scale`` 0 picks one by dtype (1/255 uint8, 1/65535 uint16, 1 floats)."""
    if scale == 0.0:
        scale = _DTYPE_SCALE.get(array.dtype, 1.0)
    out = np.array(array, dtype=np.float32)  # always a copy: never alias a memory-mapped file
    if scale != 1.0:
        out *= np.float32(scale)
    if not np.isfinite(out).all():
        raise StackError(f"{path}: stack contains NaN or Inf values")
    return out


def load_stack(
    path: str,
    *,
    layout: str = "HWC",
    scale: float = 0.0,
    expected_channels: Optional[int] = None,
    expected_size: Optional[tuple] = None,
) -> np.ndarray:
    """Read, validate and convert a stack to float32 (H, W, C)."""
    array = read_stack(path, layout)
    if expected_channels is not None and array.shape[2] != expected_channels:
        raise StackError(
            f"{path}: stack has {array.shape[2]} channels ({layout} shape {array.shape}), "
            f"expected {expected_channels} (MODEL.POLAR.IN_CHANNELS)"
        )
    if expected_size is not None and tuple(array.shape[:2]) != tuple(expected_size):
        raise StackError(
            f"{path}: stack size {tuple(array.shape[:2])} (H, W) differs from its image's {tuple(expected_size)}"
        )
    return stack_to_float(array, scale, path)
