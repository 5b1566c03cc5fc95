"""A stack resampled straight to the stride-s grid of its (augmented) image.

Cell ``(i, j)`` of the grid covers the image pixels ``[i*s, (i+1)*s) x [j*s, (j+1)*s)`` clipped to
the image, so the last row / column of cells is partial when s does not divide the image's size;
every cell holds the mean of the stack over the pixels it covers. The source may be the stack
before the image's resize: where every cell covers whole source pixels (the source -> grid
ratio is an integer per axis, e.g. no resize, or 0.8x at s = 4) the cell is the exact mean of
those source pixels (OpenCV's area resize, which for integer ratios is the block mean); the
caller resizes to the image first otherwise (:func:`grid_geometry` returns None).
"""
from fractions import Fraction
from typing import List, Optional, Tuple

import cv2
import numpy as np

from .stack_io import _CV2_MAX_CHANNELS, float16_to_float32

#: stored dtypes that OpenCV's area resize keeps; float16 is cast to float32 band by band first
_CV2_DTYPES = tuple(np.dtype(t) for t in (np.uint8, np.uint16, np.int16, np.float32, np.float64))

_FLOAT16_BAND_ROWS = 64  # source rows cast to float32 at a time (a few MB: stays in cache)

Segment = Tuple[int, int, int]  # (source start, source stop, cells)


def grid_size(size: Tuple[int, int], stride: int) -> Tuple[int, int]:
    """(rows, cols) of the stride-``stride`` grid of an image of ``size`` (H, W): ceil(H/s), ceil(W/s)."""
    return -(-int(size[0]) // stride), -(-int(size[1]) // stride)


def _axis_segments(source: int, image: int, stride: int, flipped: bool) -> Optional[List[Segment]]:
    """The source spans of the full cells and of the partial last cell along one axis, in source
    order (a flip puts the partial cell first), or None when a cell does not cover whole source
    pixels."""
    full, rest = divmod(image, stride)
    per_cell, rest_span = Fraction(stride * source, image), Fraction(rest * source, image)
    if per_cell.denominator != 1 or rest_span.denominator != 1:
        return None
    spans = [(int(per_cell) * full, full), (int(rest_span), 1 if rest else 0)]
    if flipped:
        spans.reverse()
    segments, start = [], 0
    for length, cells in spans:
        if cells:
            segments.append((start, start + length, cells))
        start += length
    return segments


def grid_geometry(source_size: Tuple[int, int], image_size: Tuple[int, int], stride: int,
                  flips: Tuple[bool, bool] = (False, False)) -> Optional[Tuple[List[Segment], List[Segment]]]:
    """Row and column segments mapping a source of ``source_size`` onto the grid of an image of
    ``image_size`` that is the source resized and then flipped (``flips`` = (vertical,
    horizontal)), or None where the cells do not cover whole source pixels."""
    rows = _axis_segments(int(source_size[0]), int(image_size[0]), stride, flips[0])
    cols = _axis_segments(int(source_size[1]), int(image_size[1]), stride, flips[1])
    return None if rows is None or cols is None else (rows, cols)


def _block_mean(block: np.ndarray, cells: Tuple[int, int], out: np.ndarray) -> None:
    """``out`` (rows, cols, C) = the means of ``block`` (rows*ky, cols*kx, C) over its ky x kx blocks."""
    rows, cols = cells
    if block.dtype in _CV2_DTYPES:
        if abs(block.strides[2]) > abs(block.strides[1]):  # channel-first memory: one plane at a time
            for c in range(block.shape[2]):
                out[..., c] = cv2.resize(block[..., c], (cols, rows), interpolation=cv2.INTER_AREA)
            return
        for i in range(0, block.shape[2], _CV2_MAX_CHANNELS):
            part = block[..., i:i + _CV2_MAX_CHANNELS]
            if block.shape[2] > _CV2_MAX_CHANNELS:
                part = np.ascontiguousarray(part)
            resized = cv2.resize(part, (cols, rows), interpolation=cv2.INTER_AREA)
            out[..., i:i + _CV2_MAX_CHANNELS] = resized.reshape(rows, cols, -1)
        return
    # float16 (no OpenCV resize): bands of whole cells cast to float32 into one small buffer, then
    # OpenCV's area mean of each band
    ky = block.shape[0] // rows
    band = max(1, _FLOAT16_BAND_ROWS // ky)  # grid rows per band
    buffer = np.empty((min(band, rows) * ky,) + block.shape[1:], np.float32)
    for r in range(0, rows, band):
        n = min(band, rows - r)
        part = float16_to_float32(block[r * ky:(r + n) * ky], out=buffer[:n * ky])
        _block_mean(part, (n, cols), out[r:r + n])


def grid_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype of a grid averaged from a ``dtype`` source: the same (OpenCV rounds integer means
    to the nearest stored value), float32 for float16."""
    return np.dtype(dtype) if np.dtype(dtype) in _CV2_DTYPES else np.dtype(np.float32)


def resample_to_grid(source: np.ndarray, geometry: Tuple[List[Segment], List[Segment]]) -> np.ndarray:
    """The (rows, cols, C) grid of an (H, W, C) ``source`` (any strides, e.g. a memory-mapped file
    or a crop of one; not flipped) for ``geometry`` from :func:`grid_geometry`, in source order
    (flip the result to get the image's order)."""
    row_segments, col_segments = geometry
    rows, cols = sum(s[2] for s in row_segments), sum(s[2] for s in col_segments)
    out = np.empty((rows, cols, source.shape[2]), grid_dtype(source.dtype))
    y = 0
    for y0, y1, ny in row_segments:
        x = 0
        for x0, x1, nx in col_segments:
            _block_mean(source[y0:y1, x0:x1], (ny, nx), out[y:y + ny, x:x + nx])
            x += nx
        y += ny
    return out


__all__ = ["grid_dtype", "grid_geometry", "grid_size", "resample_to_grid"]
