"""What raw polarization-sensor frames cost and lose: the DoLP / AoLP error after mosaicing a
synthetic Malus'-law scene and demosaicing it (:func:`round_trip_errors`, on flat regions and at
edges), and the reader's time per raw frame next to a ready uint16 stack (:func:`raw_read_cost`)."""
import os
import statistics
import time
from typing import Dict, Sequence, Tuple

import cv2
import numpy as np

from .. import polarization as P
from ..data.dofp import RawFormat, mosaic
from ..data.reader import SampleReader
from ..data.stack_io import stack_to_tensor
from ..data.polar_layout import PolarLayout
from ..data.synthetic import SyntheticConfig, malus_stack, raw_frame, render_video

#: DoLP above which the AoLP error is measured (below it the angle is ill-defined)
AOLP_MIN_DOLP = 0.3


def _aolp_error_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = np.abs(a - b) % np.pi
    return np.rad2deg(np.minimum(d, np.pi - d))


def region_masks(labels: np.ndarray, period: int) -> Tuple[np.ndarray, np.ndarray]:
    """``(flat, edge)`` pixel masks of a label map: flat pixels have one label within the
    demosaicing footprint (``2 * period + 1`` px square), edge pixels touch another label."""
    labels = labels.astype(np.float32)
    size = 2 * period + 1
    kernel = np.ones((size, size), np.uint8)
    lo, hi = cv2.erode(labels, kernel), cv2.dilate(labels, kernel)
    flat = lo == hi
    edge = cv2.erode(labels, np.ones((3, 3), np.uint8)) != cv2.dilate(labels, np.ones((3, 3), np.uint8))
    border = np.zeros_like(flat)
    border[size:-size, size:-size] = True  # demosaicing replicates the frame's border
    return flat & border, edge & border


def round_trip_errors(pattern: str = "mono", interpolation: str = "bilinear", *, size: Tuple[int, int] = (128, 128),
                      bits: int = 12, noise_std: float = 0.0, frames: int = 2, seed: int = 0) -> Dict[str, float]:
    """Mosaic ``frames`` synthetic frames (:func:`~polar_rcnn.data.synthetic.raw_frame`), demosaic
    them as the reader does and compare DoLP and AoLP with the scene's true values.

    Returns mean and 95th-percentile absolute errors (DoLP in [0, 1]; AoLP in degrees where the true
    DoLP >= :data:`AOLP_MIN_DOLP`) on flat regions and at edges (:func:`region_masks`), and the
    pixel counts behind them.
    """
    cfg = SyntheticConfig(image_size=size, num_bands=1, num_videos=1, frames_per_video=frames, raw=pattern,
                          raw_bits=bits, noise_std=noise_std, seed=seed, object_size=(size[0] // 5, size[0] // 2))
    fmt = RawFormat(pattern, bits, interpolation)
    layout = PolarLayout("angles", channels=fmt.channels)
    errors = {region: {"dolp": [], "aolp": []} for region in ("flat", "edge")}
    for frame in render_video(cfg, 0):
        stack = fmt.demosaic(raw_frame(frame, cfg)).astype(np.float32) * np.float32(fmt.scale)
        intensities = stack.reshape(size + (fmt.bands, 4)).sum(axis=2)  # the bands' total light
        s = P.stokes_from_intensities(intensities, layout.angles)
        dolp, aolp = P.dolp_aolp(s[..., 0], s[..., 1], s[..., 2])
        for region, mask in zip(("flat", "edge"), region_masks(frame.labels, fmt.period)):
            errors[region]["dolp"].append(np.abs(dolp - frame.dolp)[mask])
            polarized = mask & (frame.dolp >= AOLP_MIN_DOLP)
            errors[region]["aolp"].append(_aolp_error_deg(aolp, frame.aolp)[polarized])
    out: Dict[str, float] = {}
    for region, values in errors.items():
        for name, parts in values.items():
            v = np.concatenate(parts)
            out[f"{region}_{name}_pixels"] = int(v.size)
            out[f"{region}_{name}_mean"] = float(v.mean()) if v.size else float("nan")
            out[f"{region}_{name}_p95"] = float(np.percentile(v, 95)) if v.size else float("nan")
    return out


def write_raw_samples(root: str, size: Tuple[int, int], pattern: str, bits: int = 12, count: int = 2,
                      seed: int = 0) -> Dict[str, Sequence[str]]:
    """``count`` raw ``pattern`` frames (16-bit PNG) of ``size`` and the uint16 ``.npy`` stacks
    demosaiced from them under ``root``: ``{"raw": paths, "stack": paths}``."""
    os.makedirs(root, exist_ok=True)
    fmt = RawFormat(pattern, bits)
    rng = np.random.default_rng(seed)
    h, w = size
    paths = {"raw": [], "stack": []}
    for i in range(count):
        low = rng.random((max(2, h // 64), max(2, w // 64), fmt.bands), dtype=np.float32)
        s0 = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC).reshape(h, w, fmt.bands)
        dolp = np.full((h, w), 0.3, np.float32)
        aolp = np.full((h, w), 0.5, np.float32)
        raw = mosaic(np.clip(malus_stack(np.clip(s0, 0, 1), dolp, aolp), 0, 1), fmt).astype(np.uint16)
        raw_path = os.path.join(root, f"raw_{pattern}_{h}x{w}_{i}.png")
        if not cv2.imwrite(raw_path, raw):
            raise OSError(f"cv2.imwrite failed for {raw_path}")
        stack_path = os.path.join(root, f"stack_{pattern}_{h}x{w}_{i}.npy")
        np.save(stack_path, fmt.demosaic(raw).astype(np.uint16))
        paths["raw"].append(raw_path)
        paths["stack"].append(stack_path)
    return paths


def raw_read_cost(root: str, size: Tuple[int, int] = (2048, 2448), patterns: Sequence[str] = ("mono", "color"),
                  interpolations: Sequence[str] = ("bilinear", "ea"), repeats: int = 3) -> Dict[str, Dict[str, float]]:
    """Median seconds per frame of :meth:`SampleReader.read_stack` (read, check, demosaic) on raw
    frames of ``size``, per pattern and interpolation, next to reading the same stack as a ready
    uint16 ``.npy``, each followed by the mapper's copy into a tensor (which is where a
    memory-mapped file is read). Keys ``"<pattern>/<interpolation>"`` and ``"<pattern>/npy uint16"``; each value
    has ``seconds`` and ``channels``."""
    out: Dict[str, Dict[str, float]] = {}
    for pattern in patterns:
        files = write_raw_samples(root, size, pattern)
        fmt = RawFormat(pattern)
        layout = PolarLayout("angles", channels=fmt.channels)
        readers = {f"{pattern}/{i}": SampleReader(raw=RawFormat(pattern, 12, i), polar_layout=layout,
                                                  channels=fmt.channels) for i in interpolations}
        readers[f"{pattern}/npy uint16"] = SampleReader(polar_layout=layout, channels=fmt.channels)
        for name, reader in readers.items():
            paths = files["stack"] if name.endswith("npy uint16") else files["raw"]
            times = []
            for _ in range(repeats):
                for path in paths:
                    start = time.perf_counter()
                    stack, _, _ = reader.read_stack(path, size)
                    stack_to_tensor(stack)  # the mapper's copy into a tensor (reads a memory-mapped file)
                    times.append(time.perf_counter() - start)
            out[name] = {"seconds": statistics.median(times), "channels": fmt.channels}
    return out
