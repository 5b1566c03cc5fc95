"""What inference reads: records for image files (stacks found by base name) and their arrays."""
import glob
import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..data import STACK_EXTENSIONS, STACK_FILE_KEY, SampleReader, StackError

logger = logging.getLogger(__name__)


def _expand(patterns: Sequence[str]) -> List[str]:
    files: List[str] = []
    for pattern in patterns:
        matched = sorted(glob.glob(os.path.expanduser(pattern)))
        if not matched:
            raise FileNotFoundError(f"--input {pattern!r} matches no file")
        files.extend(f for f in matched if os.path.isfile(f))
    return list(dict.fromkeys(files))


def records_from_files(patterns: Sequence[str], stack_dir: Optional[str] = None) -> List[Dict]:
    """Records (``file_name``, ``image_id`` 1..N in sorted order, ``stack_file_name`` when found) for
    the images matching ``patterns`` (globs or paths). An image's stack is ``stack_dir/<base name>``
    with the first of the extensions .npy, .npz, .tif, .tiff that exists; without one the record has
    no stack (image-only inference, logged). FileNotFoundError when ``stack_dir`` is not a folder."""
    if stack_dir and not os.path.isdir(os.path.expanduser(stack_dir)):
        raise FileNotFoundError(f"--stacks {stack_dir!r} is not a folder")
    stack_dir = os.path.expanduser(stack_dir) if stack_dir else stack_dir
    records = []
    for i, path in enumerate(_expand(patterns)):
        record = {"file_name": path, "image_id": i + 1}
        if stack_dir:
            base = os.path.splitext(os.path.basename(path))[0]
            stack = next((os.path.join(stack_dir, base + ext) for ext in STACK_EXTENSIONS
                          if os.path.isfile(os.path.join(stack_dir, base + ext))), None)
            if stack:
                record[STACK_FILE_KEY] = stack
        records.append(record)
    missing = sum(STACK_FILE_KEY not in r for r in records)
    if stack_dir and missing:
        logger.warning("%d of %d images have no stack in %s (image-only inference for them)", missing, len(records),
                       stack_dir)
    return records


def check_stack_source(cfg, stack_dir: Optional[str], rgb_only: bool) -> None:
    """ValueError when image files would reach a model that reads stacks (``INPUT.STACK.ENABLED``)
    with no stack folder, unless RGB-only inference was asked for (``rgb_only``); and when both a
    stack folder and ``rgb_only`` are given."""
    if stack_dir and rgb_only:
        raise ValueError("--stacks and --rgb-only exclude each other: give one")
    if cfg.INPUT.STACK.ENABLED and not stack_dir and not rgb_only:
        raise ValueError("this model reads stacks (INPUT.STACK.ENABLED True) and no --stacks DIR was given: "
                         "give the folder of the images' stacks, or --rgb-only to predict from the images alone")


def without_stacks(records: Sequence[Dict]) -> List[Dict]:
    """Shallow copies of ``records`` without their stack file (image-only inference)."""
    return [{k: v for k, v in r.items() if k != STACK_FILE_KEY} for r in records]


def load_inputs(cfg, record: Dict) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """The (H, W, 3) uint8 BGR image and the raw (H, W, C) float stack (``INPUT.STACK`` scale,
    ``raw_stack_channels(cfg)`` channels, not derived) of ``record``; the stack is None when the
    record names none, and, for models that read no stack (``INPUT.STACK.ENABLED`` False), when it
    cannot be read (logged): it is only shown then."""
    reader = SampleReader.from_config(cfg, image_format="BGR")
    image, raw_stack = reader.read_record_image(record)
    stack_file = record.get(STACK_FILE_KEY)
    if not stack_file:
        return image, None
    try:
        stack = reader.load_stack(stack_file, image.shape[:2], raw_stack, reader.homography_of(record))
    except StackError as e:
        if reader.stacks:
            raise
        logger.warning("Stack not shown (the model reads none): %s", e)
        return image, None
    return image, stack


def images_with_stacks(cfg, records: Sequence[Dict]):
    """Yield ``(record, image_bgr, raw_stack_or_None)`` for each record (see :func:`load_inputs`)."""
    for record in records:
        image, stack = load_inputs(cfg, record)
        yield record, image, stack
