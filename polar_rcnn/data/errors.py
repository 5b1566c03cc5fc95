"""Errors raised for bad input data: each names the file and the problem.

Every error is a :class:`DataError` (a ``ValueError``) with three attributes: ``path`` (the file the
problem is in), ``problem`` (what is wrong, in words) and ``kind`` (a short machine-readable tag
from :data:`KINDS`, e.g. for counting problems in a dataset check). ``str(error)`` is
``"<path>: <problem>"``. Sample-level errors (one image, its stack or its annotations) can be
skipped during training with ``DATASETS.ON_BAD_SAMPLE: "skip"``; dataset-level ones (an unreadable
annotation JSON) always raise.
"""
from typing import Optional

KINDS = (
    "missing",  # a file does not exist
    "unreadable",  # a file exists but cannot be decoded (foreign format, corrupt data)
    "truncated",  # a file is shorter than its header says
    "format",  # unsupported extension / layout / dtype / number of dimensions / npz key
    "channels",  # wrong channel count
    "size",  # stack and image (or image and record) sizes differ
    "nonfinite",  # NaN or Inf values
    "range",  # values above the declared range (a raw frame's INPUT.STACK.RAW.BITS)
    "homography",  # a stack-to-image homography that is malformed, singular or maps the stack off the image
    "category",  # category_id not among the dataset's categories
    "box_empty",  # a box of zero / negative (or non-finite) width or height
    "box_outside",  # a box reaching outside the image
    "record",  # a dataset record lacks a required key
)


class DataError(ValueError):
    """Bad input data; ``str(e) == f"{e.path}: {e.problem}"``."""

    default_kind = "record"

    def __init__(self, path: str, problem: str, *, kind: Optional[str] = None):
        self.path = str(path)
        self.problem = problem
        self.kind = kind or self.default_kind
        if self.kind not in KINDS:
            raise ValueError(f"unknown DataError kind {self.kind!r}; one of {KINDS}")
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):  # picklable across data-loader worker processes
        return (_rebuild, (type(self), self.path, self.problem, self.kind))


def _rebuild(cls, path, problem, kind):
    return cls(path, problem, kind=kind)


class ImageError(DataError):
    """An image file is missing, unreadable, or its size differs from the record's height/width."""

    default_kind = "unreadable"


class StackError(DataError):
    """A stack file is missing, unreadable, of the wrong shape / channel count / size, or not finite."""

    default_kind = "unreadable"


class AnnotationError(DataError):
    """An annotation has an unknown category or a box outside the image / of non-positive area.
    ``path`` is the image file the annotation belongs to."""

    default_kind = "box_outside"


class DatasetError(DataError):
    """An annotation file (dataset JSON) is missing or not a valid COCO instances file.
    Never skipped: the whole dataset is unusable."""

    default_kind = "format"
