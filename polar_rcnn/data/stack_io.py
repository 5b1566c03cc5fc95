"""Reading stacks (the extra modality aligned with an image) from disk.

Formats: ``.npy`` (memory-mapped), ``.npz`` (one named array), ``.tif`` / ``.tiff`` (multi-page:
one channel per page, read as channel-first; or one multi-channel page, channel-last), in
uint8, uint16, float16, float32 or float64. The axis order on disk is declared, not guessed
(``INPUT.STACK.LAYOUT``); every function returns (H, W, C). Problems raise
:class:`~polar_rcnn.data.errors.StackError` naming the file.
"""
import logging
import os
import zipfile
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

from .errors import StackError

logger = logging.getLogger(__name__)

LAYOUTS = ("HWC", "CHW")
STACK_EXTENSIONS = (".npy", ".npz", ".tif", ".tiff")
_DTYPE_SCALE = {np.dtype(np.uint8): 1.0 / 255, np.dtype(np.uint16): 1.0 / 65535}
_FLOAT_DTYPES = tuple(np.dtype(t) for t in (np.float16, np.float32, np.float64))
_CV2_MAX_CHANNELS = 128  # cv2.resize (numpy -> Mat) takes at most this many channels per call

__all__ = [
    "LAYOUTS",
    "STACK_EXTENSIONS",
    "StackError",
    "check_stack",
    "load_stack",
    "read_stack",
    "resize_stack",
    "stack_to_float",
]


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"INPUT.STACK.LAYOUT must be one of {LAYOUTS}, got {layout!r}")


def _read_npy(path: str) -> np.ndarray:
    fmt = np.lib.format
    with open(path, "rb") as f:
        version = fmt.read_magic(f)
        if version not in ((1, 0), (2, 0)):  # rare v3 headers: np.load reports truncation itself
            return np.load(path, mmap_mode="r")
        read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, _, dtype = read_header(f)
        offset = f.tell()
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    size = os.path.getsize(path)
    if size < expected:
        raise StackError(path, f"truncated .npy file: {size} bytes, its header ({dtype} {shape}) needs {expected}",
                         kind="truncated")
    return np.load(path, mmap_mode="r")


def _read_npz(path: str, npz_key: Optional[str]) -> np.ndarray:
    with np.load(path) as npz:
        keys = list(npz.files)
        if npz_key:
            if npz_key not in keys:
                raise StackError(path, f"no array {npz_key!r} (INPUT.STACK.NPZ_KEY) in .npz; it has {keys}",
                                 kind="format")
            key = npz_key
        elif len(keys) == 1:
            key = keys[0]
        else:
            raise StackError(path, f".npz holds {len(keys)} arrays {keys}: set INPUT.STACK.NPZ_KEY to one of them",
                             kind="format")
        return npz[key]


def _read_tiff(path: str) -> np.ndarray:
    import tifffile

    return tifffile.imread(path)


def read_stack(path: str, layout: str = "HWC", npz_key: Optional[str] = None) -> np.ndarray:
    """Read a stack file as an (H, W, C) array in its stored dtype.

    Args:
        path: a ``.npy``, ``.npz``, ``.tif`` or ``.tiff`` file holding a 3-d array.
        layout: axis order on disk, "HWC" (channel-last) or "CHW" (channel-first). Multi-page
            TIFFs (one page per channel) are "CHW", single-page multi-channel TIFFs "HWC".
        npz_key: name of the array in a ``.npz``; None or "" = the file's only array.
    Returns:
        A view (``.npy``: memory-mapped, read-only; never write to it) or an in-memory array.
    Raises:
        StackError: missing, unreadable, truncated, unsupported format, or not 3-d (``kind`` says which).
        ValueError: an unknown ``layout``.
    """
    _check_layout(layout)
    if not os.path.isfile(path):
        raise StackError(path, "stack file not found", kind="missing")
    ext = os.path.splitext(path)[1].lower()
    if ext not in STACK_EXTENSIONS:
        raise StackError(path, f"unsupported stack format {ext!r} (supported: {', '.join(STACK_EXTENSIONS)})",
                         kind="format")
    try:
        if ext == ".npy":
            array = _read_npy(path)
        elif ext == ".npz":
            array = _read_npz(path, npz_key)
        else:
            array = _read_tiff(path)
    except StackError:
        raise
    except (EOFError, zipfile.BadZipFile) as e:
        raise StackError(path, f"truncated or corrupt file ({type(e).__name__}: {e})", kind="truncated") from e
    except Exception as e:  # numpy / tifffile raise ValueError, OSError, KeyError, ... on foreign data
        kind = "truncated" if "failed to read" in str(e) or "truncated" in str(e) else "unreadable"
        raise StackError(path, f"cannot read stack ({type(e).__name__}: {e})", kind=kind) from e
    if array.ndim != 3:
        raise StackError(path, f"stack must have 3 dimensions ({layout}), got shape {array.shape}", kind="format")
    return array if layout == "HWC" else array.transpose(1, 2, 0)


def check_stack(
    array: np.ndarray,
    path: str,
    *,
    expected_channels: Optional[int] = None,
    expected_size: Optional[Sequence[int]] = None,
    layout: str = "HWC",
) -> None:
    """Raise :class:`StackError` if an (H, W, C) stack read with ``layout`` has the wrong channel
    count or (when ``expected_size`` is given) a different (H, W); the message says whether the
    other layout would fit."""
    h, w, c = array.shape
    other = "CHW" if layout == "HWC" else "HWC"
    # what the file's axes would mean under the other layout: HWC (h, w, c) <-> CHW (c, h, w)
    swapped = (w, c, h) if layout == "HWC" else (c, h, w)
    hint = ""
    if expected_channels is not None and swapped[2] == expected_channels and (
        expected_size is None or tuple(swapped[:2]) == tuple(expected_size)
    ):
        hint = f"; the file looks {other}: set INPUT.STACK.LAYOUT {other!r}"
    if expected_channels is not None and c != expected_channels:
        raise StackError(
            path,
            f"stack has {c} channels ({layout} shape {(h, w, c)}), expected {expected_channels} "
            f"(INPUT.STACK.CHANNELS, else MODEL.POLAR.IN_CHANNELS){hint}",
            kind="channels",
        )
    if expected_size is not None and (h, w) != tuple(expected_size):
        raise StackError(
            path,
            f"stack size {(h, w)} (H, W) differs from its image's {tuple(expected_size)}"
            f"{hint or '; set INPUT.STACK.RESIZE_MISMATCHED True to resize it to the image'}",
            kind="size",
        )


def stack_to_float(array: np.ndarray, scale: float = 0.0, path: str = "stack") -> np.ndarray:
    """Convert to a new float32 array; ``scale`` 0 picks one by dtype (1/255 uint8, 1/65535
    uint16, 1 floats; other integer types need an explicit scale). Raises :class:`StackError`
    on NaN / Inf."""
    if scale == 0.0:
        if array.dtype in _DTYPE_SCALE:
            scale = _DTYPE_SCALE[array.dtype]
        elif array.dtype in _FLOAT_DTYPES:
            scale = 1.0
        else:
            raise StackError(path, f"stack dtype {array.dtype} has no default scale: set INPUT.STACK.SCALE "
                                   "(supported without it: uint8, uint16, float16, float32, float64)", kind="format")
    out = np.array(array, dtype=np.float32)  # always a copy: never alias a memory-mapped file
    if scale != 1.0:
        out *= np.float32(scale)
    if array.dtype.kind == "f" and not np.isfinite(out).all():  # integers are always finite
        bad = np.argwhere(~np.isfinite(out))[0].tolist()
        raise StackError(path, f"stack contains NaN or Inf values (first at (y, x, c) = {tuple(bad)}; "
                               f"{int((~np.isfinite(out)).sum())} in all)", kind="nonfinite")
    return out


def resize_stack(stack: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float (H, W, C) stack to ``size`` = (H, W) (pixel-centre aligned,
    like the image's resize), any number of channels."""
    h, w = int(size[0]), int(size[1])
    parts = [
        cv2.resize(stack[..., i:i + _CV2_MAX_CHANNELS], (w, h), interpolation=cv2.INTER_LINEAR)
        for i in range(0, stack.shape[2], _CV2_MAX_CHANNELS)
    ]
    parts = [p[..., None] if p.ndim == 2 else p for p in parts]  # cv2 drops a single channel axis
    return np.concatenate(parts, axis=2) if len(parts) > 1 else parts[0]


def prepare_stack(
    array: np.ndarray,
    path: str,
    *,
    layout: str = "HWC",
    scale: float = 0.0,
    expected_channels: Optional[int] = None,
    expected_size: Optional[Sequence[int]] = None,
    resize: bool = False,
) -> Tuple[np.ndarray, bool]:
    """Check, convert to float32 and (if ``resize`` and the size differs) resize a stack read by
    :func:`read_stack`. Returns ``(stack, was_resized)``."""
    check_stack(array, path, expected_channels=expected_channels,
                expected_size=None if resize else expected_size, layout=layout)
    stack = stack_to_float(array, scale, path)
    if expected_size is not None and stack.shape[:2] != tuple(expected_size):
        logger.debug("%s: resizing stack %s to the image's %s", path, stack.shape[:2], tuple(expected_size))
        return resize_stack(stack, expected_size), True
    return stack, False


def load_stack(
    path: str,
    *,
    layout: str = "HWC",
    scale: float = 0.0,
    expected_channels: Optional[int] = None,
    expected_size: Optional[Sequence[int]] = None,
    npz_key: Optional[str] = None,
    resize: bool = False,
) -> np.ndarray:
    """Read, validate and convert a stack to a new float32 (H, W, C) array.

    Args:
        path, layout, npz_key: see :func:`read_stack`.
        scale: multiplier to float; 0 = by dtype (1/255 uint8, 1/65535 uint16, 1 floats).
        expected_channels: required channel count, or None.
        expected_size: the image's (H, W), or None.
        resize: a stack of another size is resized (bilinear) to ``expected_size`` instead of rejected.
    Raises:
        StackError: see :func:`read_stack`, plus wrong channel count (``kind`` "channels"), size
        (``"size"``), NaN/Inf (``"nonfinite"``), a dtype without default scale (``"format"``).
    """
    array = read_stack(path, layout, npz_key)
    return prepare_stack(array, path, layout=layout, scale=scale, expected_channels=expected_channels,
                         expected_size=expected_size, resize=resize)[0]
