"""Raw division-of-focal-plane (DoFP) polarization frames: reading, checking, demosaicing, mosaicing.

A polarization sensor (Sony IMX250MZR mono, IMX250MYR color) writes one single-channel frame per
shot, usually 10 or 12 significant bits in a 16-bit PNG or TIFF. Its micro-polarizers repeat in
2x2 super-pixels::

    (y % 2, x % 2):  (0, 0) 90 deg   (0, 1) 45 deg
                     (1, 0) 135 deg  (1, 1) 0 deg

On the color sensor each super-pixel sits under one filter of an RGGB Bayer pattern of
super-pixels (4x4 repeat: R at rows 0-1 / columns 0-1, G at 0-1 / 2-3 and 2-3 / 0-1, B at 2-3 / 2-3).
:class:`RawFormat` (``INPUT.STACK.RAW.*``) reads such a frame, checks it (named
:class:`~polar_rcnn.data.errors.StackError` kinds: "format" not a 2-d integer frame, "size" not whole
super-pixels, "range" values above ``2**bits - 1``) and demosaics it with polanalyser into an
(H, W, bands * 4) stack in the stored dtype: band-major (mono: one band; color: R, G, B), the four
angles per band in the order the caller asks (``INPUT.STACK.ANGLES``, a permutation of 0/45/90/135).
:func:`mosaic` is the inverse sampling (used by the synthetic generator and the tests).
"""
from dataclasses import dataclass
from typing import Sequence, Tuple

import cv2
import numpy as np

from .errors import StackError
from .stack_io import check_stack_file

PATTERNS = ("mono", "color")
#: interpolation name -> suffix of OpenCV's Bayer conversion codes (polanalyser's COLOR_Polar* codes)
INTERPOLATIONS = {"bilinear": "", "ea": "_EA", "vng": "_VNG"}
RAW_EXTENSIONS = (".png", ".tif", ".tiff", ".npy")
DOFP_ANGLES_DEG = (0.0, 45.0, 90.0, 135.0)  # the order polanalyser returns them in
#: polarizer angle (degrees) at super-pixel position (y % 2, x % 2)
SUPERPIXEL = {(0, 0): 90.0, (0, 1): 45.0, (1, 0): 135.0, (1, 1): 0.0}
#: color band (0 R, 1 G, 2 B) of super-pixel position (y // 2 % 2, x // 2 % 2)
BAYER = {(0, 0): 0, (0, 1): 1, (1, 0): 1, (1, 1): 2}
_BGR_TO_RGB = (2, 1, 0)


def angle_order(angles_deg: Sequence[float]) -> Tuple[int, ...]:
    """Index into :data:`DOFP_ANGLES_DEG` of each of ``angles_deg`` (ValueError unless they are a
    permutation of 0, 45, 90, 135)."""
    wanted = [float(a) % 180.0 for a in angles_deg]
    if sorted(wanted) != list(DOFP_ANGLES_DEG):
        raise ValueError(f"INPUT.STACK.ANGLES {list(angles_deg)}: a raw polarization frame (INPUT.STACK.SOURCE "
                         f"'dofp') holds the angles {list(DOFP_ANGLES_DEG)}; set ANGLES to them, in any order")
    return tuple(DOFP_ANGLES_DEG.index(a) for a in wanted)


@dataclass(frozen=True)
class RawFormat:
    """How the raw frames of a dataset are written (``INPUT.STACK.RAW.*``)."""

    pattern: str = "mono"  # "mono" (IMX250MZR) or "color" (IMX250MYR)
    bits: int = 12  # significant bits of each value (8..16)
    interpolation: str = "bilinear"  # "bilinear", "ea" (edge-aware) or "vng" (8-bit frames only)

    def __post_init__(self):
        if self.pattern not in PATTERNS:
            raise ValueError(f"INPUT.STACK.RAW.PATTERN must be one of {PATTERNS} (mono: IMX250MZR, "
                             f"color: IMX250MYR), got {self.pattern!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"INPUT.STACK.RAW.INTERPOLATION must be one of {tuple(INTERPOLATIONS)}, "
                             f"got {self.interpolation!r}")
        if not isinstance(self.bits, (int, np.integer)) or not 8 <= self.bits <= 16:
            raise ValueError(f"INPUT.STACK.RAW.BITS must be an integer in 8..16, got {self.bits!r}")
        if self.interpolation == "vng" and self.bits > 8:
            raise ValueError(f"INPUT.STACK.RAW.INTERPOLATION 'vng' works on 8-bit frames only (OpenCV), but "
                             f"INPUT.STACK.RAW.BITS is {self.bits}: use 'bilinear' or 'ea'")

    @property
    def bands(self) -> int:
        return 3 if self.pattern == "color" else 1

    @property
    def channels(self) -> int:
        """Channels of the demosaiced stack: bands x 4 angles."""
        return 4 * self.bands

    @property
    def max_value(self) -> int:
        return 2 ** int(self.bits) - 1

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8 if self.bits <= 8 else np.uint16)

    @property
    def scale(self) -> float:
        """Multiplier from stored values to [0, 1]."""
        return 1.0 / self.max_value

    @property
    def period(self) -> int:
        """Pixels after which the sensor pattern repeats (2 mono, 4 color)."""
        return 4 if self.pattern == "color" else 2

    # ----------------------------------------------------------------------------- reading
    def read(self, path: str) -> np.ndarray:
        """The checked 2-d raw frame at ``path`` (see the module docstring for the errors)."""
        ext = check_stack_file(path, RAW_EXTENSIONS, "raw polarization frame")
        try:
            if ext == ".png":
                raw = cv2.imread(path, cv2.IMREAD_UNCHANGED)
                if raw is None:
                    raise ValueError("OpenCV cannot decode it")
            elif ext == ".npy":
                raw = np.load(path)
            else:
                import tifffile

                raw = tifffile.imread(path)
        except Exception as e:  # OpenCV / numpy / tifffile on foreign or cut data
            raise StackError(path, f"cannot read raw frame ({type(e).__name__}: {e})", kind="unreadable") from e
        self.check(raw, path)
        return raw

    def check(self, raw: np.ndarray, path: str = "raw frame") -> None:
        """StackError unless ``raw`` is a 2-d uint8/uint16 frame of whole sensor patterns with
        values <= 2**bits - 1."""
        if raw.ndim != 2:
            raise StackError(path, f"a raw polarization frame has one channel (2 dimensions), got shape {raw.shape}: "
                                   "is it already demosaiced or saved as color? (INPUT.STACK.SOURCE 'dofp')",
                             kind="format")
        if raw.dtype not in (np.uint8, np.uint16):
            raise StackError(path, f"raw frame dtype {raw.dtype}: expected uint8 or uint16 (8- or 16-bit PNG/TIFF)",
                             kind="format")
        h, w = raw.shape
        if h % self.period or w % self.period:
            what = "2x2 polarizer super-pixels" if self.pattern == "mono" else "4x4 polarizer/Bayer tiles"
            raise StackError(path, f"raw frame size (H, W) {(h, w)} is not made of whole {what} (H and W must be "
                                   f"multiples of {self.period}, INPUT.STACK.RAW.PATTERN {self.pattern!r})",
                             kind="size")
        top = int(raw.max()) if raw.size else 0
        if top > self.max_value:
            count = int((raw > self.max_value).sum())
            y, x = np.argwhere(raw > self.max_value)[0].tolist()
            raise StackError(path, f"raw frame holds values up to {top} > 2^{self.bits} - 1 = {self.max_value} "
                                   f"(INPUT.STACK.RAW.BITS {self.bits}; {count} values, first at (y, x) = {(y, x)}): "
                                   "set INPUT.STACK.RAW.BITS to the sensor's bit depth (16 for frames scaled to "
                                   "the full 16-bit range)", kind="range")

    # ----------------------------------------------------------------------------- demosaicing
    def demosaic(self, raw: np.ndarray, angles_deg: Sequence[float] = DOFP_ANGLES_DEG) -> np.ndarray:
        """(H, W) raw frame -> (H, W, bands * 4) stack in the raw dtype, band-major (R, G, B for
        color), angles in the order of ``angles_deg``."""
        import polanalyser

        code = polanalyser.ColorConversionCode(is_color=self.pattern == "color",
                                               suffix=INTERPOLATIONS[self.interpolation])
        images = polanalyser.demosaicing(np.ascontiguousarray(raw.astype(self.dtype, copy=False)), code)
        order = angle_order(angles_deg)
        if self.pattern == "mono":
            return np.stack([images[k] for k in order], axis=-1)
        out = np.empty(raw.shape + (3, 4), self.dtype)
        for j, k in enumerate(order):
            out[..., j] = images[k][..., _BGR_TO_RGB]
        return out.reshape(raw.shape + (12,))

    def load(self, path: str, angles_deg: Sequence[float] = DOFP_ANGLES_DEG) -> np.ndarray:
        """:meth:`read` then :meth:`demosaic`."""
        return self.demosaic(self.read(path), angles_deg)

    def image(self, stack: np.ndarray, image_format: str = "BGR") -> np.ndarray:
        """The uint8 (H, W, 3) picture (``image_format`` "BGR" / "RGB"; "L": (H, W, 1)) of a
        demosaiced stack: S0 / 2 (the mean over the four angles) per band scaled from
        [0, 2**bits - 1] to [0, 255]; mono frames give the same gray in all three channels."""
        h, w, c = stack.shape
        mean = stack.reshape(h, w, c // 4, 4).astype(np.float32).mean(axis=3)  # (H, W, bands) RGB
        rgb = np.clip(mean * np.float32(255.0 / self.max_value) + 0.5, 0, 255).astype(np.uint8)
        if rgb.shape[2] == 1:
            rgb = np.repeat(rgb, 3, axis=2)
        if image_format == "L":
            return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[..., None]
        if image_format == "RGB":
            return rgb
        if image_format == "BGR":
            return np.ascontiguousarray(rgb[..., ::-1])
        raise ValueError(f"an image made from a raw polarization frame is BGR, RGB or L, not INPUT.FORMAT "
                         f"{image_format!r}")


def raw_format_from_config(cfg):
    """The :class:`RawFormat` of ``INPUT.STACK.RAW`` when ``INPUT.STACK.SOURCE`` is "dofp", else None
    (ValueError naming the key on bad values)."""
    from ..config import STACK_SOURCES

    s = cfg.INPUT.STACK
    if s.SOURCE not in STACK_SOURCES:
        raise ValueError(f"INPUT.STACK.SOURCE must be one of {STACK_SOURCES}, got {s.SOURCE!r}")
    if s.SOURCE != "dofp":
        return None
    return RawFormat(s.RAW.PATTERN, s.RAW.BITS, s.RAW.INTERPOLATION)


def mosaic(stack: np.ndarray, raw_format: RawFormat, angles_deg: Sequence[float] = DOFP_ANGLES_DEG) -> np.ndarray:
    """The raw frame a sensor of ``raw_format`` records from a float (H, W, bands * 4) stack in
    [0, 1] (band-major; bands R, G, B for color; angles ``angles_deg`` per band): each pixel keeps
    its own polarizer's (and Bayer filter's) value, quantised to ``raw_format.bits`` bits.
    H and W must be multiples of the pattern's period."""
    h, w, c = stack.shape
    if c != raw_format.channels:
        raise ValueError(f"a {raw_format.pattern} raw frame samples {raw_format.channels} channels, got {c}")
    if h % raw_format.period or w % raw_format.period:
        raise ValueError(f"stack size {(h, w)}: H and W must be multiples of {raw_format.period} "
                         f"for a {raw_format.pattern} raw frame")
    index = {float(a) % 180.0: i for i, a in enumerate(angles_deg)}
    angle_order(angles_deg)  # all four angles present
    raw = np.empty((h, w), np.float32)
    for (py, px), angle in SUPERPIXEL.items():
        k = index[angle]
        if raw_format.pattern == "mono":
            raw[py::2, px::2] = stack[py::2, px::2, k]
            continue
        for (by, bx), band in BAYER.items():
            ys, xs = slice(2 * by + py, None, 4), slice(2 * bx + px, None, 4)
            raw[ys, xs] = stack[ys, xs, band * 4 + k]
    return (np.clip(raw, 0.0, 1.0) * raw_format.max_value + 0.5).astype(raw_format.dtype)


__all__ = ["DOFP_ANGLES_DEG", "INTERPOLATIONS", "PATTERNS", "RAW_EXTENSIONS", "RawFormat", "angle_order", "mosaic",
           "raw_format_from_config"]
