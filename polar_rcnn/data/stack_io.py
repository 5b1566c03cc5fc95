"""Reading stacks (the extra modality aligned with an image) from disk.

Formats: ``.npy`` (memory-mapped), ``.npz`` (one named array), ``.tif`` / ``.tiff`` (multi-page:
one channel per page, read as channel-first; or one multi-channel page, channel-last), in
uint8, uint16, float16, float32 or float64. The axis order on disk is declared, not guessed
(``INPUT.STACK.LAYOUT``); every function returns (H, W, C). Problems raise
:class:`~polar_rcnn.data.errors.StackError` naming the file.
"""
import logging
import os
import warnings
import zipfile
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from .errors import StackError

logger = logging.getLogger(__name__)

LAYOUTS = ("HWC", "CHW")
STACK_EXTENSIONS = (".npy", ".npz", ".tif", ".tiff")
_DTYPE_SCALE = {np.dtype(np.uint8): 1.0 / 255, np.dtype(np.uint16): 1.0 / 65535}
_FLOAT_DTYPES = tuple(np.dtype(t) for t in (np.float16, np.float32, np.float64))
_CHECK_BAND_BYTES = 1 << 21  # check_finite reads this much at a time
_CV2_MAX_CHANNELS = 128  # cv2.resize (numpy -> Mat) takes at most this many channels per call

__all__ = [
    "LAYOUTS",
    "STACK_EXTENSIONS",
    "StackError",
    "check_finite",
    "check_stack",
    "float16_to_float32",
    "load_stack",
    "read_stack",
    "resize_stack",
    "stack_scale",
    "stack_to_float",
    "stack_to_tensor",
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


def check_stack_file(path: str, extensions: Sequence[str], what: str = "stack") -> str:
    """The lower-case extension of ``path``; :class:`StackError` when the file does not exist
    ("missing") or its extension is not among ``extensions`` ("format")."""
    if not os.path.isfile(path):
        raise StackError(path, f"{what} file not found", kind="missing")
    ext = os.path.splitext(path)[1].lower()
    if ext not in extensions:
        raise StackError(path, f"unsupported {what} format {ext!r} (supported: {', '.join(extensions)})",
                         kind="format")
    return ext


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
    ext = check_stack_file(path, STACK_EXTENSIONS)
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


def stack_scale(dtype: np.dtype, scale: float = 0.0, path: str = "stack") -> float:
    """The multiplier from stored values to the float stack: ``scale``, or with 0 one chosen by
    dtype (1/255 uint8, 1/65535 uint16, 1 floats); other integer types need an explicit scale."""
    if scale != 0.0:
        return float(scale)
    dtype = np.dtype(dtype)
    if dtype in _DTYPE_SCALE:
        return _DTYPE_SCALE[dtype]
    if dtype in _FLOAT_DTYPES:
        return 1.0
    raise StackError(path, f"stack dtype {dtype} has no default scale: set INPUT.STACK.SCALE "
                           "(supported without it: uint8, uint16, float16, float32, float64)", kind="format")


def check_finite(array: np.ndarray, path: str = "stack") -> None:
    """Raise :class:`StackError` if a float stack holds NaN or Inf (integers always pass). Reads
    the exponent bits (one integer pass, no float temporaries); locates the first bad value only
    when there is one."""
    if array.dtype.kind != "f" or array.size == 0:
        return
    bits = {2: np.uint16, 4: np.uint32, 8: np.uint64}[array.dtype.itemsize]
    exponent = {2: 0x7C00, 4: 0x7F800000, 8: 0x7FF0000000000000}[array.dtype.itemsize]
    values = array.view(bits) if array.ndim else array.reshape(1).view(bits)
    # |x| as bits, a band of rows at a time into one small buffer (a whole-array temporary costs
    # its page faults: 2x the time at 800x1333x24)
    rows = max(1, _CHECK_BAND_BYTES // max(1, values[:1].nbytes))
    buffer = np.empty((min(rows, len(values)),) + values.shape[1:], bits)
    mask = bits(exponent | (exponent - 1))
    if all(np.bitwise_and(values[r:r + rows], mask, out=buffer[:len(values[r:r + rows])]).max() < exponent
           for r in range(0, len(values), rows)):
        return
    bad_mask = ~np.isfinite(array)
    bad = np.argwhere(bad_mask)[0].tolist()
    raise StackError(path, f"stack contains NaN or Inf values (first at (y, x, c) = {tuple(bad)}; "
                           f"{int(bad_mask.sum())} in all)", kind="nonfinite")


def stack_to_float(array: np.ndarray, scale: float = 0.0, path: str = "stack") -> np.ndarray:
    """Convert to a new float32 array; ``scale`` 0 picks one by dtype (see :func:`stack_scale`).
    Raises :class:`StackError` on NaN / Inf."""
    scale = stack_scale(array.dtype, scale, path)
    check_finite(array, path)
    # always a copy: never alias a memory-mapped file
    out = float16_to_float32(array) if array.dtype == np.float16 else np.array(array, dtype=np.float32)
    if scale != 1.0:
        out *= np.float32(scale)
    return out


_CV2_INTERPOLATION = {"nearest": cv2.INTER_NEAREST, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}


def float16_to_float32(array: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    """A float16 array (any non-negative strides, read-only too, e.g. memory-mapped) as float32,
    written into ``out`` (same shape) when given. Cast by torch, whose vectorized half-to-float
    copy is several times faster than numpy's ``astype`` (see docs/PERFORMANCE.md)."""
    if out is None:
        out = np.empty(array.shape, np.float32)
    if any(s < 0 for s in array.strides):
        np.copyto(out, array)
        return out
    with warnings.catch_warnings():  # torch warns on read-only arrays; the source is only read
        warnings.simplefilter("ignore", UserWarning)
        source = torch.from_numpy(array)
    torch.from_numpy(out).copy_(source)
    return out


def resize_stack(stack: np.ndarray, size: Tuple[int, int], interpolation: str = "bilinear") -> np.ndarray:
    """Resize an (H, W, C) stack to ``size`` = (H, W) with OpenCV (pixel-centre aligned, like the
    image's resize), any number of channels, keeping uint8 / uint16 / float32 / float64 (float16
    is resized as float32). ``interpolation``: "bilinear", "nearest" or "bicubic"."""
    h, w = int(size[0]), int(size[1])
    if stack.dtype == np.float16:
        stack = float16_to_float32(stack)
    flag = _CV2_INTERPOLATION[interpolation]
    return map_channel_chunks(stack, lambda part: cv2.resize(part, (w, h), interpolation=flag))


def map_channel_chunks(stack: np.ndarray, fn) -> np.ndarray:
    """``fn`` (an OpenCV image function) applied to an (H, W, C) stack in chunks of at most the
    channels OpenCV takes per call, the results concatenated back to (H', W', C)."""
    parts = [fn(np.ascontiguousarray(stack[..., i:i + _CV2_MAX_CHANNELS]))
             for i in range(0, stack.shape[2], _CV2_MAX_CHANNELS)]
    parts = [p[..., None] if p.ndim == 2 else p for p in parts]  # cv2 drops a single channel axis
    return np.concatenate(parts, axis=2) if len(parts) > 1 else parts[0]


def stack_to_tensor(stack: np.ndarray, channel_index: Optional[np.ndarray] = None) -> torch.Tensor:
    """An (H, W, C) array or view (memory-mapped, flipped, cropped, channel-first on disk...) as a
    (C, H, W) tensor of its own dtype (float64 -> float32), made with one copy in the source's
    memory order: channel-last sources give a channels-last tensor (a permuted view), so no
    transpose is paid in the data loader; the model's input copy handles any strides.
    ``channel_index`` (e.g. a flip's angle permutation) is gathered in the same copy."""
    dtype = np.float32 if stack.dtype == np.float64 else stack.dtype
    channel_first = stack.ndim == 3 and abs(stack.strides[2]) > abs(stack.strides[1])
    if channel_first:
        chw = stack.transpose(2, 0, 1)
        out = np.take(chw, channel_index, axis=0) if channel_index is not None else np.array(chw, order="C")
        return _as_tensor(out.astype(dtype, copy=False))
    if channel_index is not None:
        out = np.take(stack, channel_index, axis=2)
    elif _owned(stack):
        out = stack  # a fresh array of this sample (e.g. resized): no copy needed
    else:
        out = np.array(stack, order="C")
    return _as_tensor(out.astype(dtype, copy=False)).permute(2, 0, 1)


def _owned(array: np.ndarray) -> bool:
    """A C-contiguous, writeable array that owns its memory (not a view of a file or another array)."""
    return array.base is None and array.flags.c_contiguous and array.flags.writeable


def _as_tensor(array: np.ndarray) -> torch.Tensor:
    try:
        return torch.from_numpy(array)
    except TypeError:  # torch < 2.3 has no uint16 tensors
        return torch.from_numpy(array.astype(np.int32))


def prepare_stack(
    array: np.ndarray,
    path: str,
    *,
    layout: str = "HWC",
    scale: float = 0.0,
    expected_channels: Optional[int] = None,
    expected_size: Optional[Sequence[int]] = None,
    resize: bool = False,
    to_float: bool = True,
) -> Tuple[np.ndarray, bool]:
    """Check (channels, size, NaN/Inf, dtype), convert to float32 (``to_float``; else keep the
    stored dtype and the file's view, see :func:`stack_scale`) and (if ``resize`` and the size
    differs) resize a stack read by :func:`read_stack`. Returns ``(stack, was_resized)``."""
    check_stack(array, path, expected_channels=expected_channels,
                expected_size=None if resize else expected_size, layout=layout)
    if to_float:
        stack = stack_to_float(array, scale, path)
    else:
        stack_scale(array.dtype, scale, path)  # a dtype without a scale is an error here already
        check_finite(array, path)
        stack = array
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
