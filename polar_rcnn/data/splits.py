"""Video-aware train/val/test splits of a COCO JSON, and near-duplicate frames across splits.

Frames of one video are near-duplicates of each other, so a frame-level random split leaks the
validation set into training. :func:`group_frames` gives every image a group (its ``video_id``;
without video ids: chains of similar consecutive frames plus all near-duplicate pairs, or
contiguous runs in file order), :func:`assign_groups` spreads whole groups over the splits by
image count, :func:`split_coco` writes each split's images and annotations (ids preserved), and
:func:`cross_split_matches` finds frames with a near-duplicate in another split.

Similarity of two frames: NCC of their gray thumbnails (:func:`thumbnail`: 32 x 32 pixels,
area-downsampled, blurred by 1 px, centred, unit norm). On the synthetic demo data consecutive
frames of a video score >= 0.98, any two frames of a video >= 0.9 and frames of different
videos <= 0.42.
"""
import logging
import math
import re
from typing import Dict, Hashable, List, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np

from .errors import DatasetError
from .reader import read_image_file

logger = logging.getLogger(__name__)

GROUP_MODES = ("auto", "video", "similarity", "order", "image")
"""How :func:`group_frames` groups images: ``auto`` = ``video`` when every image has a
``video_id``, else ``similarity``; ``order`` = contiguous runs of file order; ``image`` = none."""


def natural_key(name: str) -> Tuple:
    """Sort key ordering ``f2`` before ``f10``."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(name)))


def file_order(images: Sequence[Mapping]) -> List[int]:
    """Indices of ``images`` (COCO image entries) in natural order of their ``file_name``."""
    return sorted(range(len(images)), key=lambda i: natural_key(images[i].get("file_name", "")))


# ----------------------------------------------------------------------------- similarity


def thumbnail(path: str, size: int = 32, blur: float = 1.0) -> np.ndarray:
    """Flattened ``size`` x ``size`` gray thumbnail of an image (area-downsampled, then blurred by
    ``blur`` pixels so that a pixel of camera shake matters little), zero mean and unit norm
    (all zeros for a flat image): the dot product of two thumbnails is their NCC."""
    image = read_image_file(path, "L")[..., 0]  # read like the mapper (PIL, EXIF orientation)
    x = cv2.resize(image.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
    if blur > 0:
        x = cv2.GaussianBlur(x, (0, 0), sigmaX=blur, sigmaY=blur, borderType=cv2.BORDER_REFLECT)
    x = x.ravel()
    x -= x.mean()
    norm = float(np.linalg.norm(x))
    return x / norm if norm > 1e-6 else np.zeros_like(x)


def _row_blocks(n: int, budget: int = 1 << 24):
    """Row slices of an (n, n) similarity matrix of about ``budget`` entries each."""
    step = max(1, min(n, budget // max(n, 1)))
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


def cross_split_matches(thumbs: np.ndarray, labels: Sequence[Hashable]) -> Tuple[np.ndarray, np.ndarray]:
    """For every frame, its most similar frame with another label (split): (NCC, index) arrays;
    NCC -inf and index -1 where all frames share the label. O(n^2) dot products, in blocks."""
    labels = np.asarray([str(v) for v in labels])
    n = len(thumbs)
    best = np.full(n, -np.inf, dtype=np.float32)
    index = np.full(n, -1, dtype=np.int64)
    for rows in _row_blocks(n):
        sim = thumbs[rows] @ thumbs.T
        sim[labels[rows][:, None] == labels[None, :]] = -np.inf
        j = sim.argmax(axis=1)
        best[rows] = sim[np.arange(len(j)), j]
        index[rows] = np.where(np.isfinite(best[rows]), j, -1)
    return best, index


class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


def similarity_groups(thumbs: np.ndarray, order: Sequence[int], chain_threshold: float = 0.9,
                      duplicate_threshold: float = 0.95) -> List[int]:
    """Group id per frame: connected components of "consecutive in ``order`` with NCC >=
    ``chain_threshold``" (shots of a video) and "NCC >= ``duplicate_threshold``" (any two frames)."""
    n = len(thumbs)
    uf = _UnionFind(n)
    for a, b in zip(order[:-1], order[1:]):
        if float(thumbs[a] @ thumbs[b]) >= chain_threshold:
            uf.union(a, b)
    if duplicate_threshold > 0:
        for rows in _row_blocks(n):
            sim = thumbs[rows] @ thumbs.T
            for i, j in zip(*np.nonzero(sim >= duplicate_threshold)):
                i += rows.start
                if i < j:
                    uf.union(int(i), int(j))
    return [uf.find(i) for i in range(n)]


# ----------------------------------------------------------------------------- grouping and assignment


def resolve_group_mode(images: Sequence[Mapping], mode: str) -> str:
    """The effective mode: ``auto`` becomes ``video`` or ``similarity``; ``video`` needs every image's video_id."""
    if mode not in GROUP_MODES:
        raise ValueError(f"group mode must be one of {GROUP_MODES}, got {mode!r}")
    without = [im for im in images if im.get("video_id") is None]
    if mode == "auto":
        return "similarity" if without else "video"
    if mode == "video" and without:
        raise ValueError(f"{len(without)} images have no video_id (e.g. {without[0].get('file_name')!r}): "
                         "group them with 'similarity' or 'order' instead")
    return mode


def group_frames(images: Sequence[Mapping], mode: str, *, thumbs: Optional[np.ndarray] = None,
                 chunk_size: int = 32, chain_threshold: float = 0.9,
                 duplicate_threshold: float = 0.95) -> List[Hashable]:
    """Group key per image (COCO image entries) for ``mode`` in :data:`GROUP_MODES` (not ``auto``;
    see :func:`resolve_group_mode`). ``similarity`` needs ``thumbs`` (one :func:`thumbnail` per image)."""
    if mode == "video":
        return [("video", str(im["video_id"])) for im in images]
    if mode == "image":
        return [("image", i) for i in range(len(images))]
    order = file_order(images)
    if mode == "order":
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        keys = [None] * len(images)
        for rank, i in enumerate(order):
            keys[i] = ("run", rank // chunk_size)
        return keys
    if mode == "similarity":
        if thumbs is None or len(thumbs) != len(images):
            raise ValueError("grouping by similarity needs one thumbnail per image")
        return [("similar", g) for g in similarity_groups(thumbs, order, chain_threshold, duplicate_threshold)]
    raise ValueError(f"group mode must be one of {GROUP_MODES[1:]}, got {mode!r}")


def assign_groups(group_sizes: Mapping[Hashable, int], fractions: Mapping[str, float], seed: int = 0
                  ) -> Dict[Hashable, str]:
    """Split name per group: groups in seeded random order, each to the split furthest below its
    share of images (relative to its target; ties: larger fraction first), so every split with a
    positive fraction gets a group when there are enough groups."""
    if not fractions or any(f < 0 for f in fractions.values()) or sum(fractions.values()) <= 0:
        raise ValueError(f"split fractions must be >= 0 with a positive sum, got {dict(fractions)}")
    names = [n for n in fractions if fractions[n] > 0]
    keys = sorted(group_sizes, key=repr)
    np.random.default_rng(seed).shuffle(keys)
    total = sum(group_sizes.values())
    norm = sum(fractions[n] for n in names)
    target = {n: fractions[n] / norm * total for n in names}
    count = {n: 0 for n in names}
    rank = {n: r for r, n in enumerate(sorted(names, key=lambda n: -fractions[n]))}
    out = {}
    for key in keys:
        name = max(names, key=lambda n: ((target[n] - count[n]) / target[n] if target[n] else -math.inf, -rank[n]))
        out[key] = name
        count[name] += group_sizes[key]
    return out


def split_coco(coco: Mapping, image_split: Mapping[Hashable, str], names: Sequence[str], source: str = "<coco>"
               ) -> Dict[str, dict]:
    """One COCO dict per split name: the images whose id maps to it (entries unchanged), their
    annotations (ids unchanged) and every other top-level key (categories, info, ...) as is.
    Annotations of images not in ``coco["images"]`` are dropped with a warning."""
    ids = [im["id"] for im in coco["images"]]
    if len(set(ids)) != len(ids):
        raise DatasetError(source, "image ids are not unique", kind="format")
    missing = [i for i in ids if i not in image_split]
    if missing:
        raise ValueError(f"{len(missing)} images have no split (e.g. image id {missing[0]})")
    out = {}
    for name in names:
        part = {k: v for k, v in coco.items() if k not in ("images", "annotations")}
        part["images"] = [im for im in coco["images"] if image_split[im["id"]] == name]
        part["annotations"] = []
        out[name] = part
    orphans = 0
    for ann in coco.get("annotations", []):
        name = image_split.get(ann.get("image_id"))
        if name is None:
            orphans += 1
        elif name in out:
            out[name]["annotations"].append(ann)
    if orphans:
        logger.warning("%d annotations refer to no image of the file and are left out", orphans)
    return out
