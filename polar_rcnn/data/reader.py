"""How a config reads a sample's files: :class:`SampleReader`, built once from the config and used
by the mapper, the dataset checker, the stack statistics, the predictor and the file inputs alike.

It holds everything that turns ``INPUT.*`` into "read this image, read this stack": the image
format, the stack's axis order, dtype scale, ``.npz`` key, channel count, what a stack of another
size than its image means (``INPUT.STACK.RESIZE_MISMATCHED``), the channels' polarization meaning
(:class:`~polar_rcnn.data.PolarLayout`), the derived model input (``INPUT.STACK.DERIVED``) and,
for raw polarization-sensor frames (``INPUT.STACK.SOURCE`` "dofp"), their format
(:class:`~polar_rcnn.data.dofp.RawFormat`): such a frame is demosaiced on read, and a record whose
image file is its stack file gets its image made from the frame (:meth:`SampleReader.read_record_image`);
and the stack-to-image homography of two-sensor rigs (``INPUT.STACK.HOMOGRAPHY`` or the record's
``"stack_homography"``, :mod:`~polar_rcnn.data.homography`), which warps a stack onto its image's grid.
Problems raise :class:`~polar_rcnn.data.DataError` subclasses naming the file.
"""
import os
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from detectron2.data import detection_utils as utils

from ..config import DERIVED_ON_CHOICES
from .dofp import DOFP_ANGLES_DEG, RawFormat, angle_order, raw_format_from_config
from .errors import ImageError
from .homography import check_homography, parse_homography, warp_stack
from .polar_layout import DERIVED_INPUTS, PolarLayout, check_stack_config, raw_stack_channels
from .record_validation import STACK_FILE_KEY
from .stack_io import LAYOUTS, prepare_stack, read_stack, stack_scale, stack_to_float


def read_image_file(path: str, image_format: str = "BGR") -> np.ndarray:
    """Detectron2's ``read_image`` (PIL, EXIF orientation) with problems as :class:`ImageError`
    (kind "missing", "truncated" or "unreadable") naming the file."""
    if not os.path.isfile(path):
        raise ImageError(path, "image file not found", kind="missing")
    try:
        return utils.read_image(path, format=image_format)
    except Exception as e:  # PIL: UnidentifiedImageError, OSError (truncated), SyntaxError, ...
        kind = "truncated" if "truncated" in str(e) else "unreadable"
        raise ImageError(path, f"cannot read image ({type(e).__name__}: {e})", kind=kind) from e


@dataclass(frozen=True)
class SampleReader:
    """Reads images and stacks as the config says (see the module docstring).

    ``stacks`` False (``INPUT.STACK.ENABLED`` False): the model reads no stack; the settings still
    read stack files (e.g. to show them) but are not validated against the model.
    """

    image_format: str = "BGR"  # INPUT.FORMAT
    stacks: bool = True  # INPUT.STACK.ENABLED
    layout: str = "HWC"  # INPUT.STACK.LAYOUT
    scale: float = 0.0  # INPUT.STACK.SCALE (0: by dtype)
    npz_key: Optional[str] = None  # INPUT.STACK.NPZ_KEY
    channels: Optional[int] = None  # channels of the stack files; None: not checked
    resize_mismatched: bool = False  # INPUT.STACK.RESIZE_MISMATCHED
    polar_layout: Optional[PolarLayout] = None  # channel meaning (flips, derived inputs)
    derived: str = "raw"  # INPUT.STACK.DERIVED
    derived_on: str = "model"  # INPUT.STACK.DERIVED_ON
    raw: Optional[RawFormat] = None  # INPUT.STACK.RAW when INPUT.STACK.SOURCE is "dofp", else None
    homography: Optional[Tuple[float, ...]] = None  # INPUT.STACK.HOMOGRAPHY (9 numbers), or None
    homography_min_coverage: float = 0.5  # INPUT.STACK.HOMOGRAPHY_MIN_COVERAGE

    def __post_init__(self):
        if self.homography is not None:
            h = parse_homography(self.homography, "INPUT.STACK.HOMOGRAPHY")
            object.__setattr__(self, "homography", None if h is None else tuple(h.ravel().tolist()))
        if self.raw is not None and self.polar_layout is not None:
            if self.polar_layout.polarization != "angles" or self.polar_layout.channels != self.raw.channels:
                raise ValueError(f"raw {self.raw.pattern} frames demosaic into {self.raw.channels} polarizer-angle "
                                 f"channels; the polar_layout says {self.polar_layout}")
            angle_order(self.polar_layout.angles)
        if not self.stacks:
            return
        if self.layout not in LAYOUTS:
            raise ValueError(f"INPUT.STACK.LAYOUT must be one of {LAYOUTS}, got {self.layout!r}")
        if self.derived not in DERIVED_INPUTS:
            raise ValueError(f"INPUT.STACK.DERIVED must be one of {DERIVED_INPUTS}, got {self.derived!r}")
        if self.derived_on not in DERIVED_ON_CHOICES:
            raise ValueError(f"INPUT.STACK.DERIVED_ON must be one of {DERIVED_ON_CHOICES}, got {self.derived_on!r}")
        if self.polar_layout is None:
            if self.derived != "raw":
                raise ValueError(f"INPUT.STACK.DERIVED {self.derived!r} needs a polar_layout (INPUT.STACK.POLARIZATION)")
            return
        self.polar_layout.check_derived(self.derived)
        if self.channels is not None and self.channels != self.polar_layout.channels:
            raise ValueError(f"stack channels {self.channels} != polar_layout.channels {self.polar_layout.channels}")

    @classmethod
    def from_config(cls, cfg, image_format: Optional[str] = None) -> "SampleReader":
        """The reader of ``cfg`` (``INPUT.FORMAT`` unless ``image_format``); ValueError naming the
        key when the stack settings do not fit together (see :func:`check_stack_config`)."""
        s = cfg.INPUT.STACK
        layout = check_stack_config(cfg) if s.ENABLED else None
        return cls(
            image_format=image_format or cfg.INPUT.FORMAT,
            stacks=s.ENABLED,
            layout=s.LAYOUT,
            scale=s.SCALE,
            npz_key=s.NPZ_KEY or None,
            channels=raw_stack_channels(cfg),
            resize_mismatched=s.RESIZE_MISMATCHED,
            polar_layout=layout,
            derived=s.DERIVED,
            derived_on=s.DERIVED_ON,
            raw=raw_format_from_config(cfg),
            homography=tuple(s.HOMOGRAPHY) or None,
            homography_min_coverage=s.HOMOGRAPHY_MIN_COVERAGE,
        )

    # ------------------------------------------------------------------------------- images
    def read_image(self, path: str, image_format: Optional[str] = None) -> np.ndarray:
        """The image at ``path`` in ``image_format`` (default: the reader's), see :func:`read_image_file`."""
        return read_image_file(path, image_format or self.image_format)

    def image_from_stack(self, record: dict) -> bool:
        """Whether ``record``'s image is made from its stack file: a raw polarization frame
        (``INPUT.STACK.SOURCE`` "dofp") named both as the image (``file_name``) and as the stack."""
        image, stack = record.get("file_name"), record.get(STACK_FILE_KEY)
        return (self.raw is not None and bool(image) and bool(stack)
                and os.path.normpath(os.path.abspath(image)) == os.path.normpath(os.path.abspath(stack)))

    def read_record_image(self, record: dict, image_format: Optional[str] = None
                          ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """``record``'s image in ``image_format`` (default: the reader's) and, when it was made from
        the record's raw frame (:meth:`image_from_stack`: S0 per Bayer band, mono as gray), that
        frame's demosaiced stack (pass it to :meth:`read_stack` / :meth:`load_stack` as ``array``;
        None otherwise)."""
        if not self.image_from_stack(record):
            return self.read_image(record["file_name"], image_format), None
        array = self.read_array(record[STACK_FILE_KEY])
        return self.raw.image(array, image_format or self.image_format), array

    # ------------------------------------------------------------------------------- stacks
    @property
    def angles(self) -> Tuple[float, ...]:
        """Polarizer angles of the channels within a band (raw frames are demosaiced in this order)."""
        return self.polar_layout.angles if self.polar_layout is not None else DOFP_ANGLES_DEG

    @property
    def stored_scale(self) -> float:
        """``INPUT.STACK.SCALE``, else for raw frames 1 / (2^bits - 1), else 0 (by dtype)."""
        if self.scale == 0.0 and self.raw is not None:
            return self.raw.scale
        return self.scale

    def read_array(self, path: str) -> np.ndarray:
        """The stack file as stored, (H, W, C) (memory-mapped ``.npy``), unchecked; a raw frame
        checked and demosaiced (a new array)."""
        if self.raw is not None:
            return self.raw.load(path, self.angles)
        return read_stack(path, self.layout, self.npz_key)

    def homography_of(self, record: dict) -> Optional[np.ndarray]:
        """The (3, 3) stack-to-image homography of ``record``: its ``"stack_homography"``, else
        ``INPUT.STACK.HOMOGRAPHY``, else None (StackError naming the stack file when malformed)."""
        if record.get("stack_homography") is not None:
            return parse_homography(record["stack_homography"], record.get(STACK_FILE_KEY) or record.get("file_name"))
        return None if self.homography is None else np.asarray(self.homography, np.float64).reshape(3, 3)

    def align(self, stack: np.ndarray, homography: np.ndarray, image_hw: Sequence[int], path: str) -> np.ndarray:
        """``stack`` warped onto the ``image_hw`` grid (checked: :func:`~polar_rcnn.data.homography.check_homography`)."""
        check_homography(homography, stack.shape[:2], image_hw, path, self.homography_min_coverage)
        return warp_stack(stack, homography, image_hw)

    def read_stack(self, path: str, image_hw: Optional[Sequence[int]] = None, array: Optional[np.ndarray] = None,
                   homography: Optional[np.ndarray] = None) -> Tuple[np.ndarray, float, bool]:
        """The checked (channels, size, NaN/Inf, dtype) stack in its stored dtype: warped onto the
        ``image_hw`` grid through ``homography`` (see :meth:`homography_of`) when given, else
        resized to ``image_hw`` when it differs and ``resize_mismatched`` (else a size error);
        ``array``: the file's :meth:`read_array`, when already read. Returns ``(stack, scale,
        was_resized)``: ``stack * scale`` are its float values."""
        array = self.read_array(path) if array is None else array
        warp = homography is not None and image_hw is not None
        stack, resized = prepare_stack(array, path, layout=self.layout, scale=self.stored_scale,
                                       expected_channels=self.channels, expected_size=None if warp else image_hw,
                                       resize=self.resize_mismatched, to_float=False)
        scale = self.scale_of(stack, path)
        return (self.align(stack, homography, image_hw, path) if warp else stack), scale, resized

    def scale_of(self, array: np.ndarray, path: str = "stack") -> float:
        """The multiplier from ``array``'s stored values to floats (``INPUT.STACK.SCALE`` or by dtype)."""
        return stack_scale(array.dtype, self.stored_scale, path)

    def to_float(self, array: np.ndarray, path: str = "stack") -> np.ndarray:
        """A new float32 copy of ``array`` times its scale (NaN/Inf: :class:`StackError`)."""
        return stack_to_float(array, self.stored_scale, path)

    def load_stack(self, path: str, image_hw: Optional[Sequence[int]] = None, array: Optional[np.ndarray] = None,
                   homography: Optional[np.ndarray] = None) -> np.ndarray:
        """The stack as a new float32 (H, W, C) array of its values (checked, warped or resized as
        :meth:`read_stack`), not derived."""
        array = self.read_array(path) if array is None else array
        warp = homography is not None and image_hw is not None
        stack = prepare_stack(array, path, layout=self.layout, scale=self.stored_scale, expected_channels=self.channels,
                              expected_size=None if warp else image_hw, resize=self.resize_mismatched)[0]
        return self.align(stack, homography, image_hw, path) if warp else stack

    def derive(self, stack: np.ndarray) -> np.ndarray:
        """The model's stack input (``INPUT.STACK.DERIVED``) of a float (H, W, C) stack."""
        if self.polar_layout is None or self.derived == "raw":
            return stack
        return self.polar_layout.derive(stack, self.derived)

    @property
    def derives_in_loader(self) -> bool:
        """Whether the loader hands the model derived inputs (``INPUT.STACK.DERIVED_ON`` "loader");
        otherwise it hands the stack as stored and the model derives them on its device."""
        return self.derived != "raw" and self.derived_on == "loader"
