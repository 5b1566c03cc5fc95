"""Calibrating two-sensor rigs: the stack-to-image homography of each camera pair, from its frames.

:func:`calibrate` samples frames of each camera pair (records grouped by an image-entry key, or all
records as one pair), fits a homography per frame between the stack's intensity and the image's
gray level (:func:`~polar_rcnn.data.homography.estimate_homography`), keeps the per-frame fit
closest to all the others (the medoid, robust to a frame where the fit went astray) and reports the
residual misalignment: for each frame, the RMS distance in image pixels between where its own fit
and the chosen homography put the stack's pixels. :func:`write_homographies` stores the result in
the dataset's JSON (every image entry of the pair gets ``"stack_homography"``), atomically.
``tools/estimate_homography.py`` is the command-line front end.
"""
import json
import logging
from dataclasses import dataclass, field
from typing import Dict, Hashable, List, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..utils.atomic import atomic_write_text
from .datasets import HOMOGRAPHY_KEY
from .errors import DataError, DatasetError
from .homography import estimate_homography, misalignment_px
from .reader import SampleReader
from .record_validation import STACK_FILE_KEY

logger = logging.getLogger(__name__)


@dataclass
class FrameFit:
    """One frame's own fit: its image file, homography, ECC correlation and misalignment (px) from
    the pair's chosen homography."""

    file: str
    homography: np.ndarray
    correlation: float
    stack_hw: Tuple[int, int]
    misalignment_px: float = 0.0


@dataclass
class PairCalibration:
    """The homography of one camera pair (``group``: the records' group-key value) and its fits."""

    group: Hashable
    homography: Optional[np.ndarray]
    fits: List[FrameFit] = field(default_factory=list)
    failures: List[Tuple[str, str]] = field(default_factory=list)  # (file, why)
    records: int = 0  # records of the pair (all get the homography)

    @property
    def residual_px(self) -> Tuple[float, float]:
        """Mean and largest per-frame misalignment (image pixels) from the chosen homography."""
        values = [f.misalignment_px for f in self.fits]
        return (float(np.mean(values)), float(np.max(values))) if values else (float("nan"), float("nan"))


def frame_intensities(record: Dict, reader: SampleReader) -> Tuple[np.ndarray, np.ndarray]:
    """``(stack intensity, image gray)`` of a record, each float32 at its own size: the mean of the
    stack's channels (S0 for Stokes stacks) and the image read as the mapper reads it."""
    gray, raw_stack = reader.read_record_image(record, "L")
    stack = reader.load_stack(record[STACK_FILE_KEY], array=raw_stack)
    stride = 3 if reader.polar_layout is not None and reader.polar_layout.polarization == "stokes" else 1
    return stack[..., ::stride].mean(axis=2), gray[..., 0].astype(np.float32)


def _read_json(json_file: str) -> Dict:
    try:
        with open(json_file) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise DatasetError(json_file, f"cannot read the dataset JSON ({e})", kind="unreadable") from e


def camera_pairs(json_file: str, key: str) -> Dict[int, Hashable]:
    """``image_id -> value of the image entry's key`` (the camera pair of each frame); DatasetError
    when no entry has ``key``."""
    images = _read_json(json_file).get("images", [])
    pairs = {image["id"]: image[key] for image in images if key in image}
    if images and not pairs:
        found = sorted({k for image in images for k in image})
        raise DatasetError(json_file, f"no image entry has the camera-pair key {key!r}; the entries have {found}",
                           kind="format")
    return pairs


def _group(record: Dict, pairs: Optional[Mapping[int, Hashable]]) -> Hashable:
    return None if pairs is None else pairs.get(record.get("image_id"))


def calibrate(records: Sequence[Dict], reader: SampleReader, *, frames: int = 8, seed: int = 0,
              pairs: Optional[Mapping[int, Hashable]] = None, init: Optional[np.ndarray] = None,
              levels: int = 3) -> List[PairCalibration]:
    """Fit each camera pair's homography from a seeded sample of ``frames`` of its records (see the
    module docstring); ``pairs``: ``image_id -> camera pair`` (:func:`camera_pairs`; None: one
    pair); ``init``: the starting homography (default: the scaling between the sizes)."""
    groups: Dict[Hashable, List[Dict]] = {}
    for record in records:
        groups.setdefault(_group(record, pairs), []).append(record)
    out = []
    for group, members in groups.items():
        pair = PairCalibration(group, None, records=len(members))
        rng = np.random.default_rng(seed)
        chosen = members if len(members) <= frames else [members[i] for i in
                                                          np.sort(rng.choice(len(members), frames, replace=False))]
        for record in chosen:
            try:
                stack_gray, image_gray = frame_intensities(record, reader)
                h, rho = estimate_homography(stack_gray, image_gray, init, levels=levels)
            except DataError as e:
                pair.failures.append((e.path, e.problem))
                continue
            except cv2.error as e:
                pair.failures.append((record.get(STACK_FILE_KEY, record["file_name"]),
                                      f"ECC did not converge ({str(e).strip().splitlines()[-1]})"))
                continue
            pair.fits.append(FrameFit(record["file_name"], h, rho, stack_gray.shape))
        if pair.fits:
            hw = pair.fits[0].stack_hw
            distances = np.array([[misalignment_px(a.homography, b.homography, hw) for b in pair.fits]
                                  for a in pair.fits])
            pair.homography = pair.fits[int(distances.sum(axis=1).argmin())].homography
            for fit in pair.fits:
                fit.misalignment_px = misalignment_px(fit.homography, pair.homography, hw)
        out.append(pair)
    return out


def describe(pair: PairCalibration, group_key: str = "") -> List[str]:
    """Lines reporting one pair's calibration: skipped frames, the homography, its residual."""
    name = "all frames" if not group_key else f"{group_key} = {pair.group!r}"
    lines = [f"[{name}] skipped {file}: {why}" for file, why in pair.failures]
    if pair.homography is None:
        return lines + [f"[{name}] no homography: no frame could be fitted ({pair.records} records)"]
    mean, worst = pair.residual_px
    rho = float(np.mean([f.correlation for f in pair.fits]))
    lines.append(f"[{name}] homography from {len(pair.fits)} frames (ECC correlation {rho:.3f}; residual "
                 f"misalignment {mean:.2f} px mean, {worst:.2f} px max) for {pair.records} records:")
    lines.append("  " + np.array2string(pair.homography, precision=6, suppress_small=True).replace("\n", "\n  "))
    return lines


def write_homographies(json_file: str, records: Sequence[Dict], calibrations: Sequence[PairCalibration],
                       pairs: Optional[Mapping[int, Hashable]] = None) -> int:
    """Set ``"stack_homography"`` (3 rows, H[2][2] = 1) on every JSON image entry of each calibrated
    pair (records matched by ``image_id``; ``pairs`` as in :func:`calibrate`) and rewrite
    ``json_file`` atomically. Returns the entries set."""
    by_group = {c.group: c.homography for c in calibrations if c.homography is not None}
    ids = {r["image_id"]: by_group[_group(r, pairs)] for r in records if _group(r, pairs) in by_group}
    coco = _read_json(json_file)
    written = 0
    for image in coco.get("images", []):
        if image.get("id") in ids:
            h = ids[image["id"]] / ids[image["id"]][2, 2]
            image[HOMOGRAPHY_KEY] = [[float(f"{v:.9g}") for v in row] for row in h]
            written += 1
    atomic_write_text(json_file, json.dumps(coco))
    return written


__all__ = ["FrameFit", "PairCalibration", "calibrate", "camera_pairs", "describe", "frame_intensities", "write_homographies"]
