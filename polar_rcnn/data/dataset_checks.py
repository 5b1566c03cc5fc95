"""Finding problems in a dataset without training: files, sizes, values, boxes and image/stack pairing.

:func:`check_record` inspects one Detectron2 dataset dict (image, stack, annotations) and returns the
problems it found plus two small *structure maps*; :func:`pairing_problems` compares those maps to
find stacks that do not belong to their image. :func:`check_records` runs :func:`check_record` over
many records, optionally in a process pool. ``tools/check_dataset.py`` is the command-line front end.

Structure map: the image's gray level and the stack's intensity (mean over channels, which is
proportional to S0 for polarizer-angle stacks; S0 itself for Stokes stacks) are area-downsampled
to ``pair_size`` pixels on the longer side, band-passed (``GaussianBlur(x, 0.7) - GaussianBlur(x, 2)``:
pixel noise and slow shading removed), centred and scaled to unit norm, so the dot product of two
maps is their normalised cross-correlation (NCC). On the synthetic demo data (256 px, maps of 128 px) paired frames score
>= 0.98, other frames of the same video <= 0.97, other videos <= 0.06 and a stack shifted by 8 px ~0.
"""
import logging
import math
import multiprocessing
from collections import deque
from dataclasses import dataclass, field
from typing import Dict, Hashable, Iterable, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np


from .errors import AnnotationError, DataError, DatasetError, ImageError, StackError
from ..architecture import num_classes, num_classes_key
from .homography import inscribed_box
from .reader import SampleReader
from .stack_io import check_stack
from .record_validation import STACK_FILE_KEY, validate_record

logger = logging.getLogger(__name__)

#: Problem kinds ``<subject>_<kind>`` (subject from the error class, kind from
#: :data:`polar_rcnn.data.errors.KINDS`) plus the pairing kinds, with their meaning; the order of
#: the summary table.
PROBLEM_KINDS: Dict[str, str] = {
    "dataset_missing": "the dataset's annotation file does not exist",
    "dataset_unreadable": "the dataset's annotation file cannot be parsed",
    "dataset_format": "the dataset's annotation file is not a valid COCO instances file",
    "image_record": "a record names no image",
    "image_missing": "image file does not exist",
    "image_truncated": "image file is cut short",
    "image_unreadable": "image file cannot be decoded",
    "image_size": "image size differs from the record's height/width",
    "stack_record": "a record names no stack (no DATASETS.STACK_KEY in the JSON image entry)",
    "stack_missing": "stack file does not exist",
    "stack_truncated": "stack file is shorter than its header says",
    "stack_unreadable": "stack file cannot be read",
    "stack_format": "unsupported stack format, dimensions or dtype",
    "stack_channels": "stack channel count differs from INPUT.STACK.CHANNELS / MODEL.POLAR.IN_CHANNELS",
    "stack_size": "stack height/width differs from its image's",
    "stack_nonfinite": "stack contains NaN or Inf values",
    "stack_range": "raw polarization frame holds values above 2^INPUT.STACK.RAW.BITS - 1",
    "stack_homography": "stack-to-image homography is malformed, singular or maps the stack off the image",
    "annotation_category": "annotation category unknown to the dataset (or >= MODEL.ROI_HEADS.NUM_CLASSES)",
    "annotation_box_empty": "box of zero, negative or non-finite width or height",
    "annotation_box_outside": "box reaching outside the image",
    "pair_low_corr": "stack intensity does not correlate with its image's structure",
    "pair_better_match": "stack matches a neighbouring frame's image clearly better than its own",
}
_SUBJECTS = ((AnnotationError, "annotation"), (StackError, "stack"), (ImageError, "image"), (DatasetError, "dataset"))


@dataclass(frozen=True)
class Problem:
    """One problem: its kind (a key of :data:`PROBLEM_KINDS`), the file concerned and what is wrong."""

    kind: str
    file: str
    message: str
    dataset: str = ""

    @classmethod
    def from_error(cls, error: DataError, dataset: str = "") -> "Problem":
        subject = next((name for c, name in _SUBJECTS if isinstance(error, c)), "record")
        return cls(f"{subject}_{error.kind}", error.path, error.problem, dataset)

    def __str__(self) -> str:
        prefix = f"[{self.dataset}] " if self.dataset else ""
        return f"{prefix}{self.kind}: {self.file}: {self.message}"


@dataclass(frozen=True)
class CheckOptions:
    """What :func:`check_record` checks and how (defaults match the command-line tool)."""

    reader: SampleReader = SampleReader()  # how images and stacks are read (reader.stacks False: no stacks)
    num_classes: Optional[int] = None  # category ids must be in [0, num_classes); None: >= 0 only
    pairing: bool = True  # compute structure maps for :func:`pairing_problems`
    intensity_stride: int = 1  # stack intensity = mean of channels[::stride] (3: S0 of Stokes stacks)
    pair_size: int = 128  # longer side of the structure maps (never upsampled)
    pair_smooth: float = 0.7  # Gaussian sigma (map pixels) removing pixel noise
    pair_sigma: float = 2.0  # Gaussian sigma (map pixels) of the background removed

    @classmethod
    def from_config(cls, cfg, num_classes: Optional[int] = None, **kwargs) -> "CheckOptions":
        """Options matching how :class:`~polar_rcnn.data.PolarDatasetMapper` reads data under ``cfg``.
        The stack intensity is S0 for INPUT.STACK.POLARIZATION "stokes" (every third channel), the
        mean of all channels otherwise; "dolp_aolp" stacks have none, so pairing is off for them."""
        s = cfg.INPUT.STACK
        if s.POLARIZATION == "dolp_aolp" and kwargs.get("pairing", True):
            logger.info("INPUT.STACK.POLARIZATION 'dolp_aolp': no intensity channel, the pairing check is off")
            kwargs["pairing"] = False
        return cls(reader=SampleReader.from_config(cfg), num_classes=num_classes,
                   intensity_stride=3 if s.POLARIZATION == "stokes" else 1, **kwargs)


@dataclass
class RecordResult:
    """What :func:`check_record` found for one record."""

    problems: List[Problem] = field(default_factory=list)
    image_map: Optional[np.ndarray] = None  # unit-norm structure map of the image, or None
    stack_map: Optional[np.ndarray] = None  # same for the stack intensity (same shape), or None


# ----------------------------------------------------------------------------- structure maps


def structure_map(gray: np.ndarray, size: int = 128, sigma: float = 2.0, smooth: float = 0.7) -> Optional[np.ndarray]:
    """Unit-norm, zero-mean band-pass map of a 2-D intensity image at ``size`` px (longer side).

    The dot product of two maps of equal shape is their normalised cross-correlation.
    Returns None when the map is flat (no structure to compare).
    """
    x = np.asarray(gray, dtype=np.float32)
    h, w = x.shape
    scale = size / max(h, w)
    if scale < 1.0:
        x = cv2.resize(x, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    fine = cv2.GaussianBlur(x, (0, 0), sigmaX=smooth, sigmaY=smooth, borderType=cv2.BORDER_REFLECT) if smooth > 0 else x
    x = fine - cv2.GaussianBlur(x, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
    x = x - x.mean()
    norm = float(np.linalg.norm(x))
    if not math.isfinite(norm) or norm <= 1e-6 * math.sqrt(x.size) * (float(np.abs(gray).max()) + 1e-30):
        return None
    return x / np.float32(norm)


def correlation(a: Optional[np.ndarray], b: Optional[np.ndarray]) -> Optional[float]:
    """NCC of two structure maps, or None if either is missing or their shapes differ."""
    if a is None or b is None or a.shape != b.shape:
        return None
    return float(np.dot(a.ravel(), b.ravel()))


# ----------------------------------------------------------------------------- one record


def _stack_intensity(path: str, options: CheckOptions, image_hw, errors: List[DataError],
                     array: Optional[np.ndarray] = None, record: Optional[Dict] = None
                     ) -> Tuple[Optional[np.ndarray], Optional[Tuple[slice, slice]]]:
    """Check the stack at ``path`` like the mapper (``image_hw``: the size it must have; ``array``:
    the file as read, if it was; ``record``: for its stack-to-image homography); return its (H, W)
    channel mean at that size (for pairing), or None when the stack has a problem, and, for a stack
    warped through a homography, the image box it covers (else None)."""
    reader = options.reader
    try:
        array = reader.read_array(path) if array is None else array
        homography = reader.homography_of(record or {})
    except StackError as e:
        errors.append(e)
        return None, None
    checks = [dict(expected_channels=reader.channels)]
    if image_hw is not None and not reader.resize_mismatched and homography is None:
        checks.append(dict(expected_size=image_hw))
    usable = True
    for check in checks:  # one call per check, so that both problems are reported
        try:
            check_stack(array, path, layout=reader.layout, **check)
        except StackError as e:
            errors.append(e)
            usable = False
    try:
        stack = reader.to_float(array, path)  # reads the whole file
    except StackError as e:
        errors.append(e)
        return None, None
    except (OSError, ValueError) as e:
        errors.append(StackError(path, f"cannot read values ({type(e).__name__}: {e})", kind="unreadable"))
        return None, None
    if not usable:
        return None, None
    intensity = stack[..., ::options.intensity_stride].mean(axis=2)
    if image_hw is not None and homography is not None:
        try:
            warped = reader.align(intensity[..., None], homography, image_hw, path)[..., 0]
        except StackError as e:
            errors.append(e)
            return None, None
        return warped, inscribed_box(homography, intensity.shape, image_hw)
    if image_hw is not None and intensity.shape != tuple(image_hw):  # RESIZE_MISMATCHED
        intensity = cv2.resize(intensity, (image_hw[1], image_hw[0]), interpolation=cv2.INTER_AREA)
    return intensity, None


def check_record(record: Dict, options: CheckOptions = CheckOptions()) -> RecordResult:
    """Check one dataset dict like training would read it: :func:`~polar_rcnn.data.validate_record`
    (files named and present, categories, boxes), the image (decodable, size), the stack (readable,
    channels, size, finite) and, with ``options.pairing``, the structure maps of both."""
    errors: List[DataError] = [
        e for e in validate_record(record, num_classes=options.num_classes)
        if options.reader.stacks or not isinstance(e, StackError)
    ]
    result = RecordResult()
    absent = {e.path for e in errors if e.kind in ("missing", "record")}
    file = record.get("file_name")
    gray, raw_stack, raw_failed = None, None, False
    if file and file not in absent:
        try:
            gray, raw_stack = options.reader.read_record_image(record, "L")  # gray, read like the mapper
            gray = gray[..., 0]
            h, w = record.get("height"), record.get("width")
            if h is not None and w is not None and (h, w) != gray.shape:
                errors.append(ImageError(file, f"image size (H, W) {gray.shape} differs from the record's "
                                               f"({h}, {w})", kind="size"))
        except (ImageError, StackError) as e:  # StackError: the raw frame an image is made from
            errors.append(e)
            raw_failed = isinstance(e, StackError)
    stack_file = record.get(STACK_FILE_KEY)
    intensity, box = None, None
    if options.reader.stacks and stack_file and stack_file not in absent:
        # the record's size when it has one: an image of another size is the image's problem
        image_hw = gray.shape if gray is not None else None
        if record.get("height") is not None and record.get("width") is not None:
            image_hw = (record["height"], record["width"])
        if not raw_failed:  # a raw frame's problem is reported once, from reading the image
            intensity, box = _stack_intensity(stack_file, options, image_hw, errors, raw_stack, record)
    if options.pairing and gray is not None and intensity is not None and intensity.shape == gray.shape:
        if box is not None:  # compare where the warped stack is: no edge along its frame
            gray, intensity = gray[box], intensity[box]
        maps = (structure_map(x, options.pair_size, options.pair_sigma, options.pair_smooth) for x in (gray, intensity))
        result.image_map, result.stack_map = maps
    result.problems = [Problem.from_error(e) for e in errors]
    return result


def check_records(
    records: Sequence[Dict], options: CheckOptions = CheckOptions(), workers: int = 0, chunksize: int = 4
) -> Iterator[RecordResult]:
    """:func:`check_record` for every record, in order; ``workers`` > 0 uses a process pool."""
    if workers <= 0 or len(records) < 2:
        for record in records:
            yield check_record(record, options)
        return
    # fork: workers start at once (no re-import of torch); elsewhere the platform's default. The
    # workers inherit one OpenCV thread from here: a forked child that changes OpenCV's thread count
    # after this process ran its thread pool waits forever for threads it does not have.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with multiprocessing.get_context(method).Pool(workers) as pool:
            yield from pool.imap(_CheckCall(options), records, chunksize=chunksize)
    finally:
        cv2.setNumThreads(threads)


class _CheckCall:
    """Picklable ``check_record`` with bound options (for ``Pool.imap``)."""

    def __init__(self, options: CheckOptions):
        self.options = options

    def __call__(self, record: Dict) -> RecordResult:
        return check_record(record, self.options)


# ----------------------------------------------------------------------------- pairing


@dataclass
class PairItem:
    """One frame for :func:`pairing_problems`: its files, its group (video) and its maps."""

    image_file: str
    stack_file: str
    group: Hashable
    image_map: Optional[np.ndarray]
    stack_map: Optional[np.ndarray]


def pairing_problems(
    items: Iterable[PairItem], *, min_corr: float = 0.5, margin: float = 0.05, neighbours: int = 3
) -> Iterator[Problem]:
    """Find stacks that do not belong to their image, streaming over ``items`` in frame order.

    A frame is flagged ``pair_better_match`` when the stack correlates with the image of one of
    the ``neighbours`` frames before or after it in the same group by more than ``margin`` above
    its own image (and by at least ``min_corr``), else ``pair_low_corr`` when its own correlation
    is below ``min_corr``. At most
    one pairing problem per frame; frames without maps (reported elsewhere) are skipped.
    """
    window: deque = deque()  # items of the current group, from pending - neighbours on
    pending = 0  # index in window of the next item to evaluate

    def evaluate(i: int) -> Optional[Problem]:
        item = window[i]
        if item.stack_map is None or item.image_map is None:
            if item.stack_map is None and item.image_map is None:
                return None
            flat = "stack intensity" if item.stack_map is None else "image"
            return Problem("pair_low_corr", item.stack_file, f"the {flat} is flat: no structure to compare "
                                                             f"with {item.image_file}")
        own = correlation(item.stack_map, item.image_map)
        best, best_item = None, None
        for j in range(max(0, i - neighbours), min(len(window), i + neighbours + 1)):
            if j == i:
                continue
            r = correlation(item.stack_map, window[j].image_map)
            if r is not None and (best is None or r > best):
                best, best_item = r, window[j]
        if best is not None and best >= min_corr and best > own + margin:
            return Problem("pair_better_match", item.stack_file,
                           f"matches the image {best_item.image_file} (NCC {best:.3f}) better than its own "
                           f"image {item.image_file} (NCC {own:.3f}; --pair-margin {margin:g})")
        if own < min_corr:
            return Problem("pair_low_corr", item.stack_file,
                           f"structure NCC with its image {item.image_file} is {own:.3f} < {min_corr:g} "
                           f"(--min-pair-corr): the stack may not belong to (or be aligned with) the image")
        return None

    for item in items:
        if window and item.group != window[-1].group:
            while pending < len(window):
                problem = evaluate(pending)
                pending += 1
                if problem is not None:
                    yield problem
            window.clear()
            pending = 0
        window.append(item)
        while pending + neighbours < len(window):
            problem = evaluate(pending)
            pending += 1
            if problem is not None:
                yield problem
            while pending - neighbours > 0:  # drop items no longer needed as neighbours
                window.popleft()
                pending -= 1
    while pending < len(window):
        problem = evaluate(pending)
        pending += 1
        if problem is not None:
            yield problem


def frame_order_key(record: Dict) -> Tuple:
    """Sort key placing the frames of a video together and in order (then by file name)."""
    video = record.get("video_id")
    frame = record.get("frame_id")
    frame = frame if isinstance(frame, (int, float)) and not isinstance(frame, bool) else math.inf
    group = ("", "") if video is None else (type(video).__name__, str(video))
    return group + (frame, str(record.get("file_name", "")))


def pairing_group(record: Dict) -> Hashable:
    """Group of a record for neighbour comparisons: its video id, or one group for all."""
    return record.get("video_id")


# ----------------------------------------------------------------------------- model vs dataset


def class_count_warning(cfg, thing_classes: Optional[Sequence[str]]) -> Optional[str]:
    """A sentence naming both numbers when the model's class count differs from the dataset's
    categories (``thing_classes``), else None (also when the categories are not known)."""
    if not thing_classes:
        return None
    key, n = num_classes_key(cfg), num_classes(cfg)
    if n == len(thing_classes):
        return None
    effect = ("the model has classes no annotation uses" if n > len(thing_classes)
              else "annotations of the last categories cannot be learned")
    return (f"{key} is {n} but the dataset has {len(thing_classes)} categories {list(thing_classes)} ({effect}): "
            f"set {key} {len(thing_classes)}")
