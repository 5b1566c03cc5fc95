"""Seeded, physically motivated synthetic RGB + polarization-stack video dataset.

Physics
-------
A division-of-focal-plane polarization camera measures, for every spectral band
``b`` and linear-polarizer angle ``theta`` in :data:`POLARIZER_ANGLES_DEG`,
Malus' law for partially linearly polarized light::

    I(b, theta) = S0_b / 2 * (1 + DoLP * cos(2 * theta - 2 * AoLP))

``S0_b`` (total intensity of band ``b``, in [0, 1]) is a fixed convex mix of the
scene's R, G, B radiance (:func:`spectral_weights`), so the stack's total
intensity (``sum over angles / 2``) tracks the RGB image. From the four angles
one recovers ``S0 = I0 + I90``, ``S1 = I0 - I90``, ``S2 = I45 - I135``,
``DoLP = sqrt(S1^2 + S2^2) / S0`` and ``AoLP = atan2(S2, S1) / 2``
(:func:`polarization_from_intensities`).

Scene
-----
Each video has its own smooth random background (low-pass filtered noise: a
low-frequency colour field times a fine luminance texture) with weak
polarization (``background_dolp``, slowly varying random AoLP). Objects are
random (rotated) rectangles and ellipses that move with constant velocity,
bouncing off the borders, over ``frames_per_video`` frames, plus a small
integer camera jitter per frame. An object's fine texture is attached to it;
its colour is the local background colour times ``1 +- rgb_contrast``, so it is
camouflaged in RGB. Each object class (:data:`CATEGORIES`) has a polarization
signature (DoLP, AoLP); each object gets its class signature jittered by
+-0.05 DoLP and +-5 deg AoLP.

``signal`` switch (where the class/object information lives)
-------------------------------------------------------------
* ``"stack"``: camouflaged in RGB, class signature in the stack.
* ``"rgb"``:   a distinct class colour in RGB; the stack shows only background
  polarization everywhere (objects still appear in S0 through their colour).
* ``"both"``:  class colour in RGB and class signature in the stack.
* ``"none"``:  camouflaged in RGB and background polarization (control).

Video-leakage trap
------------------
With ``video_trap`` > 0 every object of a video gets one class (drawn per video) and the video's
background DoLP carries a grating of that amplitude with a random orientation, period and phase
per video: in the stack, a fingerprint of the video, and so of the class, that a model can
memorize on the videos it trains on and that says nothing about other videos (the notes' "learn
the videos, not the images"). Everything else is drawn as without it.

Independent zero-mean noise of std ``noise_std`` (triangular: sum of two
uniforms) is added to RGB and to every stack channel; values are clipped to
[0, 1], RGB is written as 8-bit PNG and the stack as ``.npy`` (see
:data:`CHANNEL_LAYOUT_DOC`, :func:`encode_stack`).

With ``raw`` "mono" or "color" a raw polarization-sensor frame is also written per frame, as
an IMX250MZR / IMX250MYR would record the scene (:func:`raw_frame`, :mod:`polar_rcnn.data.dofp`):
Malus' law with the frame's DoLP / AoLP on the luminance (mono) or on R, G, B (color), noise of
``noise_std`` (from its own seed, so the other files are the same with or without it), sampled
through the micro-polarizer (and Bayer) pattern and quantised to ``raw_bits`` bits in a 16-bit
PNG ``<split>/raw/<stem>.png``; the JSON image entry names it as ``"raw_file"``.

Seeding: video ``v`` of a split uses ``numpy.random.default_rng([cfg.seed, v])``,
so the same config gives identical bytes. Callers must give the validation
split a different seed (convention: ``seed + VAL_SEED_OFFSET``).
"""

import json
import logging
import math
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import cv2
import numpy as np
from tqdm import tqdm

from ..utils.atomic import atomic_write_text

logger = logging.getLogger(__name__)

__all__ = [
    "CHANNEL_LAYOUT_DOC",
    "POLARIZER_ANGLES_DEG",
    "CATEGORIES",
    "CLASS_COLORS_RGB",
    "SIGNAL_MODES",
    "STACK_DTYPES",
    "VAL_SEED_OFFSET",
    "GENERATOR_VERSION",
    "SyntheticConfig",
    "SyntheticFrame",
    "spectral_weights",
    "malus_stack",
    "polarization_from_intensities",
    "encode_stack",
    "decode_stack",
    "mask_to_polygons",
    "render_video",
    "generate_split",
]

GENERATOR_VERSION = 2  # 2: instance masks (COCO polygons) in the JSON
PARAMS_FILE = "generator.json"  # the parameters of a prepared dataset folder
VAL_SEED_OFFSET = 1000  # convention: val split uses cfg.seed + VAL_SEED_OFFSET
POLARIZER_ANGLES_DEG = (0, 45, 90, 135)
SIGNAL_MODES = ("stack", "rgb", "both", "none")
STACK_DTYPES = ("float16", "float32", "uint16", "uint8")
RAW_PATTERNS = ("", "mono", "color")  # "": no raw frames
RAW_JSON_KEY = "raw_file"  # image-entry key naming the raw frame (relative to <split>/raw)

CHANNEL_LAYOUT_DOC = (
    "Stack .npy arrays are (H, W, C) channel-last with C = num_bands * 4. "
    "Channel index = band * 4 + angle_index (band-major); angle_index follows "
    "POLARIZER_ANGLES_DEG = (0, 45, 90, 135) degrees. Band 0 is the blue end of "
    "the spectrum, band num_bands-1 the red end. Values obey Malus' law "
    "I(band, theta) = S0_band / 2 * (1 + DoLP * cos(2*theta - 2*AoLP)) with "
    "S0_band in [0, 1]; float16/float32 stacks hold these values directly, "
    "uint16/uint8 stacks hold round(value * 65535) / round(value * 255)."
)

CATEGORIES = [
    {"id": 1, "name": "glass", "supercategory": "material", "dolp": 0.6, "aolp_deg": 0},
    {"id": 2, "name": "plastic", "supercategory": "material", "dolp": 0.6, "aolp_deg": 60},
    {"id": 3, "name": "metal", "supercategory": "material", "dolp": 0.6, "aolp_deg": 120},
]
# Class colours used only when signal is "rgb" or "both".
CLASS_COLORS_RGB = {1: (0.30, 0.72, 0.85), 2: (0.85, 0.22, 0.25), 3: (0.80, 0.72, 0.25)}

_OBJ_DOLP_JITTER = 0.05
_OBJ_AOLP_JITTER_DEG = 5.0
_MAX_OVERHANG = 0.25  # fraction of an object's extent allowed outside the image
_MIN_VISIBLE = 0.5  # drop annotations of objects less visible than this
_NAME_RE = re.compile(r"^v\d+_f\d+\.(png|npy)$")


@dataclass
class SyntheticConfig:
    """Parameters of one generated split (see module docstring)."""

    image_size: Tuple[int, int] = (256, 256)  # H, W
    num_bands: int = 6  # spectral bands; channels = num_bands * 4 angles
    num_videos: int = 8
    frames_per_video: int = 16
    objects_per_frame: Tuple[int, int] = (1, 4)  # inclusive range (per video)
    object_size: Tuple[int, int] = (24, 80)  # min/max side in px
    signal: str = "stack"  # "stack" | "rgb" | "both" | "none"
    rgb_contrast: float = 0.04  # object/background RGB contrast for "stack"/"none"
    background_dolp: float = 0.05
    noise_std: float = 0.01
    stack_dtype: str = "float16"  # "float16" | "float32" | "uint16" | "uint8"
    seed: int = 0
    speed: Tuple[float, float] = (1.5, 4.0)  # object speed range, px / frame
    jitter: int = 1  # max global camera jitter per frame, px (uniform integer shift)
    raw: str = ""  # "" | "mono" | "color": also write raw polarization-sensor frames
    raw_bits: int = 12  # significant bits of the raw frames
    video_trap: float = 0.0  # > 0: one class per video and a per-video background DoLP grating of this amplitude

    def __post_init__(self):
        self.image_size = tuple(int(v) for v in self.image_size)
        self.objects_per_frame = tuple(int(v) for v in self.objects_per_frame)
        self.object_size = tuple(int(v) for v in self.object_size)
        self.speed = tuple(float(v) for v in self.speed)
        if len(self.image_size) != 2 or min(self.image_size) < 16:
            raise ValueError(f"image_size must be (H, W) >= 16, got {self.image_size}")
        if self.signal not in SIGNAL_MODES:
            raise ValueError(f"signal must be one of {SIGNAL_MODES}, got {self.signal!r}")
        if self.stack_dtype not in STACK_DTYPES:
            raise ValueError(f"stack_dtype must be one of {STACK_DTYPES}, got {self.stack_dtype!r}")
        lo, hi = self.objects_per_frame
        if not 0 <= lo <= hi:
            raise ValueError(f"objects_per_frame must satisfy 0 <= min <= max, got {self.objects_per_frame}")
        if not 4 <= self.object_size[0] <= self.object_size[1]:
            raise ValueError(f"object_size must satisfy 4 <= min <= max, got {self.object_size}")
        if self.num_bands < 1 or self.num_videos < 0 or self.frames_per_video < 1:
            raise ValueError("num_bands >= 1, num_videos >= 0 and frames_per_video >= 1 required")
        if self.seed < 0 or self.jitter < 0 or not 0 <= self.speed[0] <= self.speed[1]:
            raise ValueError("seed >= 0, jitter >= 0 and 0 <= speed[0] <= speed[1] required")
        if not 0.0 <= self.video_trap <= 1.0:
            raise ValueError(f"video_trap must be in [0, 1], got {self.video_trap}")
        if self.raw not in RAW_PATTERNS:
            raise ValueError(f"raw must be one of {RAW_PATTERNS}, got {self.raw!r}")
        if self.raw:
            period = self.raw_format.period
            if self.image_size[0] % period or self.image_size[1] % period:
                raise ValueError(f"raw {self.raw!r} frames need H and W multiples of {period}, got {self.image_size}")

    @property
    def raw_format(self):
        """The :class:`~polar_rcnn.data.dofp.RawFormat` of the raw frames (``raw`` set)."""
        from .dofp import RawFormat

        return RawFormat(self.raw, self.raw_bits)

    @property
    def num_channels(self) -> int:
        return self.num_bands * len(POLARIZER_ANGLES_DEG)


@dataclass
class SyntheticFrame:
    """One rendered frame before encoding (``rgb``/``stack`` float32 in [0, 1])."""

    video_id: int
    frame_id: int
    rgb: np.ndarray  # (H, W, 3) float32, RGB order
    stack: np.ndarray  # (H, W, C) float32, layout CHANNEL_LAYOUT_DOC
    labels: np.ndarray  # (H, W) int16: -1 background, else object index in video
    objects: List[Dict] = field(default_factory=list)  # kept (annotated) objects
    radiance: Optional[np.ndarray] = None  # (H, W, 3) float32 noise-free RGB radiance
    dolp: Optional[np.ndarray] = None  # (H, W) float32 degree of linear polarization
    aolp: Optional[np.ndarray] = None  # (H, W) float32 angle of linear polarization, radians


# ----------------------------------------------------------------------------- physics


def spectral_weights(num_bands: int) -> np.ndarray:
    """(3, num_bands) weights: S0_band = rgb @ W; each column is a convex R,G,B mix.

    Band centres are evenly spaced on [0, 1] (blue to red); R, G, B sensitivities are
    Gaussians centred at 0.85, 0.5, 0.15 (sigma 0.2).
    """
    centres = np.linspace(0.0, 1.0, num_bands) if num_bands > 1 else np.array([0.5])
    mu = np.array([0.85, 0.5, 0.15])[:, None]
    w = np.exp(-0.5 * ((centres[None, :] - mu) / 0.2) ** 2)
    return (w / w.sum(axis=0, keepdims=True)).astype(np.float32)


def malus_stack(s0: np.ndarray, dolp: np.ndarray, aolp_rad: np.ndarray) -> np.ndarray:
    """Intensities behind the polarizers: (H, W, B) S0 and (H, W) DoLP/AoLP -> (H, W, B*4) float32."""
    theta2 = 2.0 * np.deg2rad(np.asarray(POLARIZER_ANGLES_DEG, dtype=np.float64))
    dolp = np.asarray(dolp, dtype=np.float32)
    phi2 = 2.0 * np.asarray(aolp_rad, dtype=np.float32)
    c, s = dolp * np.cos(phi2), dolp * np.sin(phi2)
    # 0.5 * (1 + DoLP cos(2theta - 2phi)) = 0.5 + 0.5 c cos2theta + 0.5 s sin2theta
    factor = (0.5 + c[..., None] * (0.5 * np.cos(theta2)).astype(np.float32)
              + s[..., None] * (0.5 * np.sin(theta2)).astype(np.float32))  # (H, W, 4)
    out = np.asarray(s0, dtype=np.float32)[..., :, None] * factor[..., None, :]  # (H, W, B, 4)
    return out.reshape(out.shape[:-2] + (-1,))


def polarization_from_intensities(i4: np.ndarray, eps: float = 1e-6):
    """(..., 4) intensities at POLARIZER_ANGLES_DEG -> (S0, DoLP, AoLP in degrees [0, 180))."""
    i4 = np.asarray(i4, dtype=np.float64)
    i0, i45, i90, i135 = (i4[..., k] for k in range(4))
    s0 = 0.5 * (i0 + i45 + i90 + i135)
    s1, s2 = i0 - i90, i45 - i135
    dolp = np.sqrt(s1 ** 2 + s2 ** 2) / np.maximum(s0, eps)
    aolp = np.rad2deg(0.5 * np.arctan2(s2, s1)) % 180.0
    return s0, dolp, aolp


def encode_stack(stack: np.ndarray, dtype: str) -> np.ndarray:
    """Float stack in [0, 1] -> on-disk dtype (uint types scaled to full range)."""
    if dtype == "uint16":
        return (np.clip(stack, 0.0, 1.0) * 65535.0 + 0.5).astype(np.uint16)
    if dtype == "uint8":
        return (np.clip(stack, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if dtype in ("float16", "float32"):
        return stack.astype(dtype)
    raise ValueError(f"unknown stack dtype {dtype!r}")


def decode_stack(stack: np.ndarray) -> np.ndarray:
    """On-disk stack -> float32 in [0, 1] (inverse of :func:`encode_stack`)."""
    if stack.dtype == np.uint16:
        return stack.astype(np.float32) / 65535.0
    if stack.dtype == np.uint8:
        return stack.astype(np.float32) / 255.0
    return stack.astype(np.float32)


# ----------------------------------------------------------------------------- scene


def _smooth_field(rng: np.random.Generator, shape: Tuple[int, int], sigma: float) -> np.ndarray:
    """Low-pass filtered Gaussian noise, standardised to zero mean / unit std."""
    noise = rng.standard_normal(shape, dtype=np.float32)
    f = cv2.GaussianBlur(noise, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
    return (f - f.mean()) / (f.std() + 1e-8)


def _texture01(z: np.ndarray, spread: float = 0.2) -> np.ndarray:
    return np.clip(0.5 + spread * z, 0.0, 1.0)


def _fine_texture(rng, shape) -> np.ndarray:
    """Fine luminance texture in [0, 1] (mix of two scales)."""
    z = 0.6 * _smooth_field(rng, shape, 1.5) + 0.8 * _smooth_field(rng, shape, 5.0)
    return _texture01(z)  # 0.6^2 + 0.8^2 = 1: z has unit variance


def _mean_matched_texture(rng, mask: np.ndarray) -> np.ndarray:
    """Object texture with the background's statistics and mean 0.5 inside ``mask``."""
    tex = _fine_texture(rng, mask.shape)
    return np.clip(tex + (0.5 - tex[mask].mean()), 0.0, 1.0)


def _shape_mask(rng, size_range, max_extent) -> np.ndarray:
    """Tight boolean mask of a random rotated rectangle or ellipse."""
    lo, hi = size_range
    hi = max(lo, min(hi, max_extent))
    lo = min(lo, hi)
    w, h = rng.uniform(lo, hi, size=2)
    angle = float(rng.uniform(0.0, 180.0))
    ellipse = bool(rng.random() < 0.5)
    a = math.radians(angle)
    if ellipse:
        ext_x = 2.0 * math.sqrt((w / 2 * math.cos(a)) ** 2 + (h / 2 * math.sin(a)) ** 2)
        ext_y = 2.0 * math.sqrt((w / 2 * math.sin(a)) ** 2 + (h / 2 * math.cos(a)) ** 2)
    else:
        ext_x = abs(w * math.cos(a)) + abs(h * math.sin(a))
        ext_y = abs(w * math.sin(a)) + abs(h * math.cos(a))
    pw, ph = int(math.ceil(ext_x)) + 3, int(math.ceil(ext_y)) + 3
    canvas = np.zeros((ph, pw), np.uint8)
    shift, scale = 4, 16.0
    centre = (int(round(pw / 2 * scale)), int(round(ph / 2 * scale)))
    if ellipse:
        axes = (int(round(w / 2 * scale)), int(round(h / 2 * scale)))
        cv2.ellipse(canvas, centre, axes, angle, 0, 360, 1, -1, cv2.LINE_8, shift)
    else:
        pts = cv2.boxPoints(((pw / 2, ph / 2), (float(w), float(h)), angle))
        cv2.fillPoly(canvas, [np.round(pts * scale).astype(np.int32)], 1, cv2.LINE_8, shift)
    ys, xs = np.nonzero(canvas)
    return canvas[ys.min():ys.max() + 1, xs.min():xs.max() + 1].astype(bool)


def _add_noise(rng, x: np.ndarray, std: float) -> None:
    """In place: add zero-mean noise of std ``std`` (sum of two uniforms, ~4x faster than
    Gaussian sampling) and clip to [0, 1]."""
    if std > 0:
        u = rng.random((2,) + x.shape, dtype=np.float32)
        x += (u[0] + u[1] - np.float32(1.0)) * np.float32(std * math.sqrt(6.0))
    np.clip(x, 0.0, 1.0, out=x)


def _outer_boundaries(mask: np.ndarray) -> Tuple[List[np.ndarray], bool]:
    """Outer boundaries of the 8-connected components of ``mask`` as (N, 2) int arrays of pixel
    corners, and whether any component has a hole. The contour of the mask upsampled 2x runs
    through sub-pixel centres a quarter pixel inside the edge; rounding maps them onto corners."""
    up = np.kron(mask.astype(np.uint8), np.ones((2, 2), np.uint8))
    contours, hierarchy = cv2.findContours(up, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    boundaries, has_hole = [], False
    for contour, (_, _, _, parent) in zip(contours, hierarchy[0] if hierarchy is not None else ()):
        if parent >= 0:
            has_hole = True
            continue
        p = np.floor((contour.reshape(-1, 2) + 0.5) / 2 + 0.5).astype(np.int64)
        p = p[np.any(p != np.roll(p, 1, axis=0), axis=1)]  # drop repeated corners
        before, after = p - np.roll(p, 1, axis=0), np.roll(p, -1, axis=0) - p
        boundaries.append(p[before[:, 0] * after[:, 1] != before[:, 1] * after[:, 0]])  # drop straight-on corners
    return boundaries, has_hole


def mask_to_polygons(mask: np.ndarray, offset: Tuple[int, int] = (0, 0)) -> List[List[float]]:
    """COCO polygons (flat ``[x0, y0, x1, y1, ...]`` lists, pixel ``x`` spanning [x, x + 1)) whose
    union is exactly the boolean ``mask``: they run along pixel edges, so their area is the pixel
    count and their extent the mask's box. COCO polygons cannot hold holes: a component with a
    hole is cut into polygons without one at a column through the hole. ``offset`` (x, y) is
    added to every point."""
    boundaries, has_hole = _outer_boundaries(mask)
    if has_hole:
        cols = np.nonzero(mask.any(axis=0))[0]
        holes = ~mask[:, cols[0]:cols[-1] + 1] & _filled(mask[:, cols[0]:cols[-1] + 1])
        cut = cols[0] + int(np.nonzero(holes.any(axis=0))[0].mean() + 0.5)
        left, right = mask.copy(), mask.copy()
        left[:, cut:], right[:, :cut] = False, False
        return mask_to_polygons(left, offset) + mask_to_polygons(right, offset)
    ox, oy = offset
    return [(p + np.array([ox, oy])).astype(np.float64).ravel().tolist() for p in boundaries]


def _filled(mask: np.ndarray) -> np.ndarray:
    """``mask`` with its holes filled (the background not 4-connected to the border)."""
    padded = np.pad(mask.astype(np.uint8), 1)
    flood = padded.copy()
    cv2.floodFill(flood, None, (0, 0), 1)
    return (padded | (1 - flood)).astype(bool)[1:-1, 1:-1]


def _init_objects(rng, cfg: SyntheticConfig, theme: Optional[Dict] = None) -> List[Dict]:
    """The objects of a video; ``theme`` (a :data:`CATEGORIES` entry) gives all of them its class
    (the draws are the same either way)."""
    H, W = cfg.image_size
    n = int(rng.integers(cfg.objects_per_frame[0], cfg.objects_per_frame[1] + 1))
    objects = []
    for k in range(n):
        mask = _shape_mask(rng, cfg.object_size, 0.8 * min(H, W))
        ph, pw = mask.shape
        cat = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
        cat = theme if theme is not None else cat
        lo = np.array([pw / 2, ph / 2]) - _MAX_OVERHANG * np.array([pw, ph])
        hi = np.array([W - pw / 2, H - ph / 2]) + _MAX_OVERHANG * np.array([pw, ph])
        start_lo = np.minimum(np.array([pw / 2, ph / 2]), (lo + hi) / 2)
        start_hi = np.maximum(np.array([W - pw / 2, H - ph / 2]), (lo + hi) / 2)
        speed = rng.uniform(*cfg.speed)
        direction = rng.uniform(0.0, 2.0 * np.pi)
        objects.append({
            "index": k,
            "category_id": cat["id"],
            "mask": mask,
            "full_area": int(mask.sum()),
            "texture": _mean_matched_texture(rng, mask),
            "gain": 1.0 + cfg.rgb_contrast * (1.0 if rng.random() < 0.5 else -1.0),
            "dolp": float(np.clip(cat["dolp"] + rng.uniform(-_OBJ_DOLP_JITTER, _OBJ_DOLP_JITTER), 0, 1)),
            "aolp_deg": float((cat["aolp_deg"]
                               + rng.uniform(-_OBJ_AOLP_JITTER_DEG, _OBJ_AOLP_JITTER_DEG)) % 180.0),
            "pos": rng.uniform(start_lo, start_hi),
            "vel": speed * np.array([np.cos(direction), np.sin(direction)]),
            "lo": lo,
            "hi": hi,
        })
    return objects


def _step(obj: Dict) -> None:
    """Constant-velocity motion with elastic bounce inside [lo, hi]."""
    p, v = obj["pos"] + obj["vel"], obj["vel"].copy()
    lo, hi = obj["lo"], obj["hi"]
    for d in range(2):
        if hi[d] <= lo[d]:
            p[d] = (lo[d] + hi[d]) / 2
            v[d] = 0.0
            continue
        if p[d] < lo[d]:
            p[d], v[d] = 2 * lo[d] - p[d], -v[d]
        elif p[d] > hi[d]:
            p[d], v[d] = 2 * hi[d] - p[d], -v[d]
        p[d] = min(max(p[d], lo[d]), hi[d])
    obj["pos"], obj["vel"] = p, v


def _video_trap(cfg: SyntheticConfig, video_index: int, size: Tuple[int, int]) -> Tuple[Dict, np.ndarray]:
    """The video-leakage trap of a video (``cfg.video_trap`` > 0), from its own seed so the rest of
    the video is drawn as without it: the class all its objects get, and a (H, W) background DoLP
    grating of amplitude ``video_trap`` whose orientation, period (6-24 % of the frame) and phase
    are random per video, so it tells the video (and with it the class) apart in the stack
    without telling anything about a video not seen in training."""
    rng = np.random.default_rng([cfg.seed, video_index, 2])
    theme = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
    theta, phase = rng.uniform(0.0, np.pi), rng.uniform(0.0, 2.0 * np.pi)
    period = rng.uniform(0.06, 0.24) * min(cfg.image_size)
    yy, xx = np.mgrid[0:size[0], 0:size[1]].astype(np.float32)
    wave = np.sin(2.0 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period + phase)
    return theme, (np.float32(cfg.video_trap) * (0.5 + 0.5 * wave)).astype(np.float32)


def render_video(cfg: SyntheticConfig, video_index: int) -> Iterator[SyntheticFrame]:
    """Yield the ``cfg.frames_per_video`` frames of video ``video_index`` (deterministic)."""
    rng = np.random.default_rng([cfg.seed, video_index])
    H, W = cfg.image_size
    J = cfg.jitter
    Hp, Wp = H + 2 * J, W + 2 * J
    bands_w = spectral_weights(cfg.num_bands)
    sigma_low = max(min(H, W) / 10.0, 2.0)

    # Background: low-frequency colour field x fine luminance texture; weak polarization.
    col_a, col_b = rng.uniform(0.15, 0.6, size=(2, 3)).astype(np.float32)
    mix = _texture01(_smooth_field(rng, (Hp, Wp), sigma_low), 0.25)
    bg_color = col_a * (1.0 - mix[..., None]) + col_b * mix[..., None]  # (Hp, Wp, 3)
    bg_lum = _fine_texture(rng, (Hp, Wp))
    bg_dolp = np.float32(cfg.background_dolp) * (
        0.7 + 0.6 * _texture01(_smooth_field(rng, (Hp, Wp), sigma_low)))  # mean ~ background_dolp
    aolp0 = np.float32(rng.uniform(0.0, np.pi))
    bg_aolp = aolp0 + np.float32(np.deg2rad(20.0)) * (
        _texture01(_smooth_field(rng, (Hp, Wp), sigma_low)) - 0.5)  # random angle +- 10 deg

    theme = None
    if cfg.video_trap > 0:
        theme, grating = _video_trap(cfg, video_index, (Hp, Wp))
        bg_dolp = bg_dolp + grating
    objects = _init_objects(rng, cfg, theme)
    class_colored = cfg.signal in ("rgb", "both")
    class_polarized = cfg.signal in ("stack", "both")

    for f in range(cfg.frames_per_video):
        jx, jy = (int(v) for v in rng.integers(-J, J + 1, size=2)) if J > 0 else (0, 0)
        win = (slice(J + jy, J + jy + H), slice(J + jx, J + jx + W))
        color = bg_color[win].copy()
        lum = bg_lum[win].copy()
        gain = np.ones((H, W), np.float32)
        dolp = bg_dolp[win].copy()
        aolp = bg_aolp[win].copy()
        labels = np.full((H, W), -1, np.int16)

        placed = []
        for obj in objects:  # painter's order: later objects occlude earlier ones
            ph, pw = obj["mask"].shape
            x0 = int(round(obj["pos"][0] - pw / 2)) - jx
            y0 = int(round(obj["pos"][1] - ph / 2)) - jy
            ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x0 + pw, W), min(y0 + ph, H)
            if ix1 <= ix0 or iy1 <= iy0:
                placed.append(None)
                continue
            loc = (slice(iy0 - y0, iy1 - y0), slice(ix0 - x0, ix1 - x0))
            img = (slice(iy0, iy1), slice(ix0, ix1))
            m = obj["mask"][loc]
            labels[img][m] = obj["index"]
            lum[img][m] = obj["texture"][loc][m]
            if class_colored:
                color[img][m] = CLASS_COLORS_RGB[obj["category_id"]]
            else:
                gain[img][m] = obj["gain"]  # camouflage: local colour, +-rgb_contrast
            if class_polarized:
                dolp[img][m] = obj["dolp"]
                aolp[img][m] = np.deg2rad(obj["aolp_deg"])
            placed.append((ix0, iy0, ix1, iy1))

        radiance = np.clip(color * ((0.6 + 0.5 * lum) * gain)[..., None], 0.0, 1.0)
        # S0 per band: convex R,G,B mix (explicit sum; avoids BLAS thread overhead).
        s0 = (radiance[..., 0:1] * bands_w[0] + radiance[..., 1:2] * bands_w[1]
              + radiance[..., 2:3] * bands_w[2])  # (H, W, B)
        stack = malus_stack(s0, dolp, aolp)
        _add_noise(rng, stack, cfg.noise_std)
        rgb = radiance.copy()
        _add_noise(rng, rgb, cfg.noise_std)

        kept = []
        for obj, box in zip(objects, placed):
            if box is None:
                continue
            ix0, iy0, ix1, iy1 = box
            vis = labels[iy0:iy1, ix0:ix1] == obj["index"]
            area = int(vis.sum())
            if area == 0 or area < _MIN_VISIBLE * obj["full_area"]:
                continue
            ys, xs = np.nonzero(vis)
            x, y = ix0 + int(xs.min()), iy0 + int(ys.min())
            w, h = int(xs.max() - xs.min()) + 1, int(ys.max() - ys.min()) + 1
            kept.append({
                "index": obj["index"],
                "category_id": obj["category_id"],
                "bbox": [float(x), float(y), float(w), float(h)],
                "area": float(area),
                "segmentation": mask_to_polygons(vis, (ix0, iy0)),  # the visible mask, as the box
                "dolp": obj["dolp"],
                "aolp_deg": obj["aolp_deg"],
            })
        yield SyntheticFrame(video_index, f, rgb, stack, labels, kept, radiance, dolp, aolp)
        for obj in objects:
            _step(obj)


def raw_frame(frame: SyntheticFrame, cfg: SyntheticConfig, noise_std: Optional[float] = None) -> np.ndarray:
    """The raw ``cfg.raw`` polarization-sensor frame of ``frame`` (see the module docstring):
    uint16 (H, W) values in [0, 2^raw_bits - 1]; ``noise_std`` overrides ``cfg.noise_std``."""
    from .dofp import mosaic

    bands = frame.radiance if cfg.raw == "color" else frame.radiance.mean(axis=2, keepdims=True)
    stack = malus_stack(bands, frame.dolp, frame.aolp)
    rng = np.random.default_rng([cfg.seed, frame.video_id, frame.frame_id, 1])
    _add_noise(rng, stack, cfg.noise_std if noise_std is None else noise_std)
    return mosaic(stack, cfg.raw_format).astype(np.uint16)


# ----------------------------------------------------------------------------- writer


def _config_dict(cfg: SyntheticConfig) -> Dict:
    """``cfg`` as a dict; ``video_trap`` only when set, so datasets without it keep the parameters
    (and the fingerprints, e.g. tools/evidence.py's) they had before the trap existed."""
    params = asdict(cfg)
    if not params["video_trap"]:
        del params["video_trap"]
    return params


def _info(cfg: SyntheticConfig, split: str) -> Dict:
    return {
        "description": "polar-rcnn synthetic RGB + polarization stack videos",
        "generator": __name__,
        "generator_version": GENERATOR_VERSION,
        "split": split,
        "signal": cfg.signal,
        "num_bands": cfg.num_bands,
        "num_channels": cfg.num_channels,
        "polarizer_angles_deg": list(POLARIZER_ANGLES_DEG),
        "channel_layout": CHANNEL_LAYOUT_DOC,
        "stack_dtype": cfg.stack_dtype,
        "stack_max_value": {"uint16": 65535, "uint8": 255}.get(cfg.stack_dtype, 1.0),
        "spectral_weights_rgb_to_band": spectral_weights(cfg.num_bands).astype(np.float64).round(6).tolist(),
        "class_signatures": [
            {"id": c["id"], "name": c["name"], "dolp": c["dolp"], "aolp_deg": c["aolp_deg"]}
            for c in CATEGORIES
        ],
        "config": _config_dict(cfg),
    }


def generate_split(output_dir: str, split: str, cfg: SyntheticConfig, progress: bool = True,
                   on_frame: Optional[Callable[[int, int], None]] = None) -> str:
    """Write <output_dir>/<split>/images/<video>_<frame>.png, <output_dir>/<split>/stacks/<same>.npy
    and <output_dir>/<split>.json (COCO instances). Return the JSON path.

    ``progress`` logs every ~10% of frames; ``on_frame(done, total)`` is called after each
    frame (e.g. to drive a progress bar). Stale ``v*_f*`` files from earlier runs are removed.
    Use a different ``cfg.seed`` per split (convention: val = train seed + VAL_SEED_OFFSET).
    """
    img_dir = os.path.join(output_dir, split, "images")
    stk_dir = os.path.join(output_dir, split, "stacks")
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(stk_dir, exist_ok=True)
    raw_dir = os.path.join(output_dir, split, "raw")
    if cfg.raw:
        os.makedirs(raw_dir, exist_ok=True)
    H, W = cfg.image_size
    vw = max(3, len(str(max(cfg.num_videos - 1, 0))))
    fw = max(4, len(str(cfg.frames_per_video - 1)))
    total = cfg.num_videos * cfg.frames_per_video
    images, annotations, written = [], [], set()
    track_base = 0
    done = 0
    for v in range(cfg.num_videos):
        for frame in render_video(cfg, v):
            stem = f"v{v:0{vw}d}_f{frame.frame_id:0{fw}d}"
            bgr = (frame.rgb[..., ::-1] * 255.0 + 0.5).astype(np.uint8)
            if not cv2.imwrite(os.path.join(img_dir, stem + ".png"), bgr):
                raise IOError(f"cv2.imwrite failed for {os.path.join(img_dir, stem + '.png')}")
            np.save(os.path.join(stk_dir, stem + ".npy"), encode_stack(frame.stack, cfg.stack_dtype))
            written.update((stem + ".png", stem + ".npy"))
            image_id = len(images) + 1
            images.append({
                "id": image_id, "file_name": stem + ".png", "stack_file": stem + ".npy",
                "height": H, "width": W, "video_id": v, "frame_id": frame.frame_id,
            })
            if cfg.raw:
                raw_path = os.path.join(raw_dir, stem + ".png")
                if not cv2.imwrite(raw_path, raw_frame(frame, cfg)):
                    raise IOError(f"cv2.imwrite failed for {raw_path}")
                images[-1][RAW_JSON_KEY] = stem + ".png"
            for obj in frame.objects:
                annotations.append({
                    "id": len(annotations) + 1, "image_id": image_id,
                    "category_id": obj["category_id"], "bbox": obj["bbox"], "area": obj["area"],
                    "segmentation": obj["segmentation"], "iscrowd": 0, "track_id": track_base + obj["index"] + 1,
                })
            done += 1
            if on_frame is not None:
                on_frame(done, total)
            if progress and (done == total or done % max(1, total // 10) == 0):
                logger.info("%s: %d/%d frames", split, done, total)
        track_base += cfg.objects_per_frame[1]

    stale = 0
    for d in (img_dir, stk_dir) + ((raw_dir,) if os.path.isdir(raw_dir) else ()):
        for name in os.listdir(d):
            if _NAME_RE.match(name) and (name not in written or (d == raw_dir and not cfg.raw)):
                os.remove(os.path.join(d, name))
                stale += 1
    if stale:
        logger.info("%s: removed %d stale files", split, stale)

    coco = {
        "info": _info(cfg, split),
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c["id"], "name": c["name"], "supercategory": c["supercategory"]}
                       for c in CATEGORIES],
    }
    json_path = os.path.join(output_dir, f"{split}.json")
    tmp = json_path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(coco, fh)
    os.replace(tmp, json_path)
    logger.info("%s: wrote %d images, %d annotations to %s", split, len(images), len(annotations), json_path)
    return json_path


def _params(cfgs: Dict[str, SyntheticConfig]) -> Dict:
    # JSON round trip so tuples compare equal to the lists read back from disk
    return json.loads(json.dumps({
        "generator_version": GENERATOR_VERSION,
        "splits": {name: _config_dict(cfg) for name, cfg in cfgs.items()},
    }))


def _up_to_date(output: str, params: Dict, splits) -> bool:
    path = os.path.join(output, PARAMS_FILE)
    try:
        with open(path) as fh:
            if json.load(fh) != params:
                return False
    except (OSError, ValueError):
        return False
    return all(os.path.isfile(os.path.join(output, f"{s}.json")) and os.path.isdir(os.path.join(output, s, "images"))
               and os.path.isdir(os.path.join(output, s, "stacks")) for s in splits)


def prepare_synthetic_dataset(output: str, cfgs: Dict[str, SyntheticConfig], *, force: bool = False,
                              progress: bool = True) -> bool:
    """Generate the splits ``cfgs`` (name -> config) under ``output`` unless ``output/generator.json``
    says they were made with the same parameters (and their files exist); ``force`` regenerates.
    The parameters file is removed first and written last (atomically), so an interrupted run is
    never taken as up to date. Returns whether anything was generated."""
    params = _params(cfgs)
    if not force and _up_to_date(output, params, cfgs):
        return False
    os.makedirs(output, exist_ok=True)
    params_path = os.path.join(output, PARAMS_FILE)
    if os.path.exists(params_path):
        os.remove(params_path)  # invalid until every split is written
    for split, cfg in cfgs.items():
        with tqdm(total=cfg.num_videos * cfg.frames_per_video, desc=split, unit="frame", disable=not progress) as bar:
            generate_split(output, split, cfg, progress=False, on_frame=lambda done, total: bar.update(1))
    atomic_write_text(params_path, json.dumps(params, indent=2, sort_keys=True))
    return True
