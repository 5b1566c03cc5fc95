"""Cheap per-record checks of Detectron2 dataset dicts: files present, categories known, boxes sane.

Used by :class:`~polar_rcnn.data.PolarDatasetMapper` on every training sample (annotations only:
the files are read anyway) and by dataset tools on whole datasets (:func:`validate_record`).
"""
import os
from typing import List, Optional

import numpy as np

from detectron2.structures import BoxMode

from .errors import AnnotationError, DataError, ImageError, StackError

STACK_FILE_KEY = "stack_file_name"
"""Dataset-dict key holding the path of an image's stack file."""
UNKNOWN_CATEGORY = -1
"""``category_id`` given by :func:`~polar_rcnn.data.load_polar_coco_json` to annotations whose
JSON category is not among the file's categories (the JSON id is kept in ``"coco_category_id"``)."""
BOX_TOLERANCE = 1.0
"""Pixels a box may reach beyond the image border before it counts as outside the image."""


def annotation_problems(record: dict, num_classes: Optional[int] = None) -> List[AnnotationError]:
    """Problems of ``record["annotations"]``: a category outside [0, num_classes) (or unknown to
    the JSON), a box of zero / negative width or height, or a box reaching more than
    :data:`BOX_TOLERANCE` pixels outside the image (``record["height"]``, ``["width"]``)."""
    path = record.get("file_name", "<record without file_name>")
    height, width = record.get("height"), record.get("width")
    problems = []
    for i, anno in enumerate(record.get("annotations", ())):
        name = f"annotation {anno['id']}" if "id" in anno else f"annotation #{i}"
        cat = anno.get("category_id")
        if cat == UNKNOWN_CATEGORY:
            problems.append(AnnotationError(
                path, f"{name}: category_id {anno.get('coco_category_id')} is not among the JSON's categories",
                kind="category"))
        elif not isinstance(cat, (int, np.integer)) or cat < 0 or (num_classes is not None and cat >= num_classes):
            problems.append(AnnotationError(
                path, f"{name}: category_id {cat!r} is outside [0, {num_classes}) (the model's NUM_CLASSES)",
                kind="category"))
        bbox = anno.get("bbox")
        if bbox is None or len(bbox) != 4:
            problems.append(AnnotationError(path, f"{name}: bbox {bbox!r} is not 4 numbers", kind="box_empty"))
            continue
        x0, y0, x1, y1 = BoxMode.convert(list(bbox), anno.get("bbox_mode", BoxMode.XYWH_ABS), BoxMode.XYXY_ABS)
        if not all(np.isfinite([x0, y0, x1, y1])):
            problems.append(AnnotationError(path, f"{name}: bbox {list(bbox)} is not finite", kind="box_empty"))
        elif x1 <= x0 or y1 <= y0:
            problems.append(AnnotationError(
                path, f"{name}: bbox {list(bbox)} has zero or negative area (w {x1 - x0:g}, h {y1 - y0:g})", kind="box_empty"))
        elif height is not None and width is not None and (
            x0 < -BOX_TOLERANCE or y0 < -BOX_TOLERANCE or x1 > width + BOX_TOLERANCE or y1 > height + BOX_TOLERANCE
        ):
            problems.append(AnnotationError(
                path, f"{name}: bbox {list(bbox)} (x0, y0, x1, y1 = {x0:g}, {y0:g}, {x1:g}, {y1:g}) is outside "
                      f"the {width}x{height} image", kind="box_outside"))
    return problems


def validate_record(record: dict, metadata=None, *, check_files: bool = True,
                    num_classes: Optional[int] = None) -> List[DataError]:
    """All problems of one dataset dict, as :class:`DataError` instances (empty list: fine).

    Checks that ``file_name`` and ``stack_file_name`` are named and exist (``check_files``), and
    :func:`annotation_problems`. Does not read the files (use :func:`~polar_rcnn.data.read_stack`
    for that). ``num_classes`` defaults to ``len(metadata.thing_classes)`` when ``metadata``
    (a Detectron2 ``Metadata``) has them.

    Each error has ``path``, ``problem`` and ``kind`` (see :mod:`polar_rcnn.data.errors`);
    ``str(error)`` is a one-line message naming the file.
    """
    problems: List[DataError] = []
    image = record.get("file_name")
    where = image or f"record image_id={record.get('image_id')}"
    if not image:
        problems.append(ImageError(where, "dataset record has no 'file_name'", kind="record"))
    elif check_files and not os.path.isfile(image):
        problems.append(ImageError(image, "image file not found", kind="missing"))
    stack = record.get(STACK_FILE_KEY)
    if not stack:
        problems.append(StackError(where, f"dataset record has no '{STACK_FILE_KEY}' (no DATASETS.STACK_KEY in the JSON image entry?)",
                                   kind="record"))
    elif check_files and not os.path.isfile(stack):
        problems.append(StackError(stack, "stack file not found", kind="missing"))
    if num_classes is None and metadata is not None:
        num_classes = len(getattr(metadata, "thing_classes", ())) or None
    problems.extend(annotation_problems(record, num_classes))
    return problems
