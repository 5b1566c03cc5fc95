"""Dataset mapper that loads each image's stack and keeps it aligned through every transform.

Geometric transforms (resize, crop, flip, ...) are applied to the image and the stack alike; a
flip also mirrors the polarization angles of a polarization stack (:meth:`PolarLayout.mirror`).
For a model whose branch reads the stack at ``MODEL.POLAR.INPUT_STRIDE`` s > 1, the stack is
delivered on the stride-s grid of the augmented image (``INPUT.STACK.RESOLUTION`` "branch",
:class:`GridStack`).
Photometric transforms change the RGB image only, unless ``INPUT.STACK.PHOTOMETRIC`` (then
brightness gains scale the stack too). Derived inputs (``INPUT.STACK.DERIVED``) are computed
by the model on its device (``INPUT.STACK.DERIVED_ON`` "model") or here after augmentation
("loader"). Bad samples raise a :class:`~polar_rcnn.data.errors.DataError` naming the
file, or are skipped during training (``DATASETS.ON_BAD_SAMPLE: "skip"``, see :mod:`.bad_samples`).
"""
import copy
import dataclasses
import logging
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
import torch
from PIL import Image
from fvcore.transforms.transform import BlendTransform, HFlipTransform, Transform, TransformList, VFlipTransform

from detectron2.config import configurable
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.utils import comm

from ..architecture import num_classes, stack_delivery_stride
from .bad_samples import ON_BAD_SAMPLE, BadSampleLog, bad_sample_log_path
from .errors import AnnotationError, DataError, ImageError, StackError
from .polar_layout import PolarLayout
from .reader import SampleReader
from .stack_grid import grid_geometry, resample_to_grid
from .stack_io import resize_stack, stack_to_tensor
from .record_validation import STACK_FILE_KEY, annotation_problems

logger = logging.getLogger(__name__)

# Transforms that change pixel values, not geometry: applied to the RGB image only by default.
PHOTOMETRIC_TRANSFORMS = (BlendTransform, T.ColorTransform)
MIRROR_TRANSFORMS = (HFlipTransform, VFlipTransform)


def _flatten(tfm: Transform) -> List[Transform]:
    if isinstance(tfm, TransformList):
        return [t for sub in tfm.transforms for t in _flatten(sub)]
    return [tfm]


_FAST_GEOMETRY = (T.CropTransform, T.NoOpTransform)  # apply_image returns a view
_INTERPOLATION = {Image.NEAREST: "nearest", Image.BILINEAR: "bilinear", Image.BICUBIC: "bicubic"}


@dataclass
class StackData:
    """A stack on its way through the augmentations, kept cheap: ``array`` is (H, W, C) in its
    stored dtype (often a view of the memory-mapped file, flipped or cropped without copying);
    the float stack is ``array[..., channel_index] * scale``. Converted to float only when a
    transform needs arithmetic (:meth:`to_float`)."""

    array: np.ndarray
    scale: float = 1.0
    channel_index: Optional[np.ndarray] = None  # pending channel gather (e.g. a flip's angle swap)

    def to_float(self) -> "StackData":
        """The float32 stack with scale and channel gather applied (a new array)."""
        array = self.array if self.channel_index is None else np.take(self.array, self.channel_index, axis=2)
        out = np.array(array, dtype=np.float32)
        if self.scale != 1.0:
            out *= np.float32(self.scale)
        return StackData(out)

    def values(self) -> np.ndarray:
        """The (H, W, C) float32 stack."""
        return self.to_float().array

    def to_tensor(self) -> torch.Tensor:
        """(C, H, W) tensor in the stored dtype (one copy; see :func:`stack_to_tensor`)."""
        return stack_to_tensor(self.array, self.channel_index)


def stack_values(inputs: dict) -> torch.Tensor:
    """The float32 (C, H, W) stack of a mapped dataset dict: ``"stack"`` times ``"stack_scale"``."""
    return inputs["stack"].float() * float(inputs.get("stack_scale", 1.0))


def _apply_resize(t: T.ResizeTransform, stack: StackData) -> StackData:
    if (t.h, t.w) == (t.new_h, t.new_w):
        return stack  # Detectron2 would still resample; a same-size bilinear resize is the identity
    interpolation = _INTERPOLATION.get(t.interp, "bilinear")
    return StackData(resize_stack(stack.array, (t.new_h, t.new_w), interpolation), stack.scale, stack.channel_index)


def _mirror(stack: StackData, polar_layout: PolarLayout) -> StackData:
    index = polar_layout.mirror_index()
    if index is not None and (index == np.arange(len(index))).all():
        return stack
    if index is not None:  # a channel permutation: compose it, gathered later in the final copy
        composed = index if stack.channel_index is None else stack.channel_index[index]
        return StackData(stack.array, stack.scale, composed)
    return StackData(polar_layout.mirror(stack.values()))


def _stack_gain(t: Transform, stack: np.ndarray) -> np.ndarray:
    """A photometric transform applied to the stack: only intensity gains (``BlendTransform``
    towards 0, e.g. ``RandomBrightness``) have a meaning for every channel."""
    if isinstance(t, BlendTransform) and np.ndim(t.src_image) == 0 and float(t.src_image) == 0.0:
        return stack * np.float32(t.dst_weight)
    raise ValueError(f"INPUT.STACK.PHOTOMETRIC True applies brightness gains to the stack, but {t} has no stack "
                     "equivalent (it needs RGB): remove that augmentation or set INPUT.STACK.PHOTOMETRIC False")


def transform_stack(tfm: Transform, stack: StackData, *, polar_layout: Optional[PolarLayout] = None,
                    photometric: bool = False) -> StackData:
    """Apply ``tfm`` (one transform or a ``TransformList``) to a :class:`StackData`.

    Geometric transforms move the pixels like the image's; after each horizontal or vertical
    flip ``polar_layout`` mirrors the polarization angles. Resizes (OpenCV, skipped at the same
    size), flips, crops and angle swaps keep the stored dtype and avoid copies where they can;
    other transforms run on the float stack. Photometric transforms are skipped unless
    ``photometric`` (then only brightness gains are allowed).
    """
    for t in _flatten(tfm):
        if isinstance(t, PHOTOMETRIC_TRANSFORMS):
            if photometric:
                stack = StackData(_stack_gain(t, stack.values()))
            continue
        if isinstance(t, T.RotationTransform) and polar_layout is not None and polar_layout.polarization:
            raise ValueError("a rotation also rotates polarization angles, which is not implemented: "
                             "remove RandomRotation or set INPUT.STACK.POLARIZATION ''")
        if isinstance(t, T.ResizeTransform):
            stack = _apply_resize(t, stack)
        elif isinstance(t, MIRROR_TRANSFORMS):  # a view (fvcore's VFlipTransform copies twice)
            flipped = stack.array[:, ::-1] if isinstance(t, HFlipTransform) else stack.array[::-1]
            stack = StackData(flipped, stack.scale, stack.channel_index)
        elif isinstance(t, _FAST_GEOMETRY):
            stack = StackData(t.apply_image(stack.array), stack.scale, stack.channel_index)  # views
        else:
            stack = StackData(t.apply_image(stack.values()))
        if isinstance(t, MIRROR_TRANSFORMS) and polar_layout is not None:
            stack = _mirror(stack, polar_layout)
    return stack


class GridStack:
    """A stack on its way to the stride-``stride`` grid of the augmented image (see
    :mod:`.stack_grid`), kept lazy: ``array`` is the (H, W, C) source in its stored dtype, never
    flipped (crops are views of it); the image's resize (``size``), flips and the flips' angle
    swap (``channel_index``) are pending, and applied by :meth:`to_grid` on the small grid. A
    brightness gain (``photometric``) multiplies ``scale``. Transforms that cannot stay pending
    (a crop after a resize, a mirror that needs arithmetic, any other transform) first apply what
    is pending at the image's resolution, as :func:`transform_stack` does."""

    def __init__(self, stack: StackData, stride: int, *, polar_layout: Optional[PolarLayout] = None,
                 photometric: bool = False):
        self.array, self.scale, self.channel_index = stack.array, stack.scale, stack.channel_index
        self.stride = stride
        self.size = tuple(stack.array.shape[:2])  # the image's (H, W)
        self.interpolation = "bilinear"
        self.flips = (False, False)  # (vertical, horizontal), pending
        self.polar_layout = polar_layout
        self.photometric = photometric

    def _stack_data(self) -> StackData:
        return StackData(self.array, self.scale, self.channel_index)

    def _resize_now(self) -> None:
        if tuple(self.array.shape[:2]) != self.size:
            self.array = resize_stack(self.array, self.size, self.interpolation)

    def _flipped(self, array: np.ndarray) -> np.ndarray:
        vertical, horizontal = self.flips
        return array[::-1 if vertical else 1, ::-1 if horizontal else 1]

    def _apply_pending(self) -> StackData:
        """Everything pending applied at the image's resolution: a :class:`StackData`."""
        self._resize_now()
        return StackData(self._flipped(self.array), self.scale, self.channel_index)

    def _reset(self, stack: StackData) -> None:
        self.array, self.scale, self.channel_index = stack.array, stack.scale, stack.channel_index
        self.size, self.flips = tuple(stack.array.shape[:2]), (False, False)

    def transform(self, tfm: Transform) -> None:
        for t in _flatten(tfm):
            if isinstance(t, PHOTOMETRIC_TRANSFORMS):
                if self.photometric:
                    self.scale *= float(_stack_gain(t, np.ones((), np.float32)))
                continue
            if isinstance(t, T.ResizeTransform):
                if (t.h, t.w) == (t.new_h, t.new_w):
                    continue
                if tuple(self.array.shape[:2]) != self.size:
                    self._resize_now()  # a second resize: the first one at the image's resolution
                self.size, self.interpolation = (t.new_h, t.new_w), _INTERPOLATION.get(t.interp, "bilinear")
            elif isinstance(t, MIRROR_TRANSFORMS) and (self.polar_layout is None
                                                       or self.polar_layout.mirror_index() is not None):
                vertical = isinstance(t, VFlipTransform)
                self.flips = (self.flips[0] ^ vertical, self.flips[1] ^ (not vertical))
                if self.polar_layout is not None:
                    self.channel_index = _mirror(self._stack_data(), self.polar_layout).channel_index
            elif isinstance(t, T.CropTransform):
                self._resize_now()
                h, w = self.size
                x0 = w - t.x0 - t.w if self.flips[1] else t.x0
                y0 = h - t.y0 - t.h if self.flips[0] else t.y0
                self.array = self.array[y0:y0 + t.h, x0:x0 + t.w]
                self.size = (t.h, t.w)
            elif not isinstance(t, T.NoOpTransform):
                self._reset(transform_stack(t, self._apply_pending(), polar_layout=self.polar_layout,
                                            photometric=self.photometric))

    def to_grid(self) -> StackData:
        """The stack on the grid (ceil(H/s), ceil(W/s)) of the augmented image, in the image's
        order: stored dtype (float32 for float16 stacks), ``channel_index`` still to gather."""
        geometry = grid_geometry(self.array.shape[:2], self.size, self.stride, self.flips)
        if geometry is None:  # cells that do not cover whole source pixels: the image's resize first
            self._resize_now()
            geometry = grid_geometry(self.array.shape[:2], self.size, self.stride, self.flips)
        return StackData(self._flipped(resample_to_grid(self.array, geometry)), self.scale, self.channel_index)


def apply_geometric_transforms(tfm: Transform, stack: np.ndarray, *, polar_layout: Optional[PolarLayout] = None,
                               photometric: bool = False) -> np.ndarray:
    """:func:`transform_stack` for an (H, W, C) float stack; returns the transformed float32 stack."""
    return transform_stack(tfm, StackData(stack), polar_layout=polar_layout, photometric=photometric).values()


class StackAugInput(T.AugInput):
    """:class:`AugInput` that also carries a stack and applies every geometric transform to it
    (and, with a ``polar_layout``, mirrors polarization angles on flips). ``stack`` is an (H, W, C)
    array; ``stack_scale`` turns its stored values into floats (see :class:`StackData`).
    ``stack_stride`` s > 1: the result is the stack on the stride-s grid of the augmented image
    (:class:`GridStack`), (ceil(H/s), ceil(W/s), C)."""

    def __init__(self, image: np.ndarray, *, stack: Optional[np.ndarray] = None, stack_scale: float = 1.0,
                 polar_layout: Optional[PolarLayout] = None, stack_photometric: bool = False,
                 stack_stride: int = 1, **kwargs):
        super().__init__(image, **kwargs)
        self.stack_stride = int(stack_stride)
        stack_data = StackData(stack, stack_scale) if stack is not None else None
        if stack_data is not None and self.stack_stride > 1:
            self._grid: Optional[GridStack] = GridStack(stack_data, self.stack_stride, polar_layout=polar_layout,
                                                        photometric=stack_photometric)
            stack_data = None
        else:
            self._grid = None
        self._stack_data = stack_data
        self._on_grid: Optional[StackData] = None  # the grid of the transforms so far, made on first use
        self.polar_layout = polar_layout
        self.stack_photometric = stack_photometric

    @property
    def stack_data(self) -> Optional[StackData]:
        """The transformed stack (on the grid when ``stack_stride`` > 1), see :class:`StackData`."""
        if self._grid is None:
            return self._stack_data
        if self._on_grid is None:
            self._on_grid = self._grid.to_grid()
        return self._on_grid

    @property
    def stack(self) -> Optional[np.ndarray]:
        """The transformed (H, W, C) float32 stack (on the grid when ``stack_stride`` > 1)."""
        stack_data = self.stack_data
        return None if stack_data is None else stack_data.values()

    def transform(self, tfm: Transform) -> None:
        super().transform(tfm)
        if self._grid is not None:
            self._grid.transform(tfm)
            self._on_grid = None
        elif self._stack_data is not None:
            self._stack_data = transform_stack(tfm, self._stack_data, polar_layout=self.polar_layout,
                                               photometric=self.stack_photometric)


def _has_flip(augmentations) -> bool:
    return any(isinstance(a, (T.RandomFlip, HFlipTransform, VFlipTransform)) for a in augmentations)


class PolarDatasetMapper(DatasetMapper):
    """:class:`DatasetMapper` that also reads ``dataset_dict["stack_file_name"]`` and returns it,
    transformed exactly like the image, as ``"stack"``: a (C, H, W) tensor in the file's dtype
    (uint8 / uint16 / float16 / float32; channels-last strides for HWC files) with
    ``"stack_scale"`` (``INPUT.STACK.SCALE``, or by dtype: 1/65535 for uint16) when it is not 1,
    or, with ``INPUT.STACK.DERIVED_ON`` "loader", the float32 inputs of ``INPUT.STACK.DERIVED``.
    With ``stack_stride`` s > 1 the stack is (C, ceil(H/s), ceil(W/s)) on the stride-s grid of the
    image (float32 for float16 files) and ``"stack_stride"`` is s. Conversion, scaling, derived
    inputs and normalization happen in the model, like the image's. Returns None for a skipped bad
    training sample.
    """

    @configurable
    def __init__(
        self,
        is_train: bool,
        *,
        reader: SampleReader = SampleReader(),
        stack_photometric: bool = False,
        stack_stride: int = 1,
        num_classes: Optional[int] = None,
        on_bad_sample: str = "raise",
        bad_sample_log: Optional[str] = None,
        **kwargs,
    ):
        """
        Args:
            reader: how images and stacks are read (``reader.stacks`` False: plain RGB inputs),
                the stacks' polarization layout (flips) and derived input; its ``image_format``
                is replaced by the mapper's ``image_format``.
            stack_photometric: brightness gains also scale the stack.
            stack_stride: s > 1 delivers the stack on the stride-s grid of the augmented image
                (``INPUT.STACK.RESOLUTION`` "branch"; ``"stack_stride"`` in the output), 1 at its resolution.
            num_classes: annotations must have category_id in [0, num_classes); None = unchecked.
            on_bad_sample: "raise" or "skip" (training only: evaluation always raises).
            bad_sample_log: JSON-lines file that skips are appended to (emptied here), or None.
            kwargs: arguments of :class:`DatasetMapper`.
        """
        if on_bad_sample not in ON_BAD_SAMPLE:
            raise ValueError(f"DATASETS.ON_BAD_SAMPLE must be one of {ON_BAD_SAMPLE}, got {on_bad_sample!r}")
        polar_layout = reader.polar_layout if reader.stacks else None
        if polar_layout is not None:
            if _has_flip(kwargs.get("augmentations", ())):
                polar_layout.check_mirror()
            if stack_photometric and polar_layout.polarization == "dolp_aolp":
                raise ValueError("INPUT.STACK.PHOTOMETRIC True scales stack intensities, but DoLP/AoLP stacks hold "
                                 "no intensity: set INPUT.STACK.PHOTOMETRIC False")
        super().__init__(is_train, **kwargs)
        self.reader = dataclasses.replace(reader, image_format=self.image_format)
        self.load_stacks = reader.stacks
        self.polar_layout = polar_layout
        self.stack_photometric = stack_photometric
        if stack_stride < 1:
            raise ValueError(f"stack_stride must be >= 1, got {stack_stride}")
        self.stack_stride = int(stack_stride)
        self.num_classes = num_classes
        self.on_bad_sample = on_bad_sample
        self.skip_bad_samples = is_train and on_bad_sample == "skip"
        self.bad_sample_log = BadSampleLog(bad_sample_log) if bad_sample_log and self.skip_bad_samples else None
        if self.bad_sample_log is not None:
            self.bad_sample_log.reset()
        self.num_skipped = 0  # in this process
        self.num_resized = 0  # in this process

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ret = super().from_config(cfg, is_train)
        skip = cfg.DATASETS.ON_BAD_SAMPLE == "skip" and is_train
        ret.update(
            reader=SampleReader.from_config(cfg),
            stack_photometric=cfg.INPUT.STACK.PHOTOMETRIC,
            stack_stride=stack_delivery_stride(cfg),
            num_classes=num_classes(cfg),
            on_bad_sample=cfg.DATASETS.ON_BAD_SAMPLE,
            bad_sample_log=bad_sample_log_path(cfg.OUTPUT_DIR, comm.get_rank()) if skip else None,
        )
        return ret

    # ---------------------------------------------------------------------------------- reading
    def _read_image(self, dataset_dict) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """The image and, when it was made from the record's raw frame, that frame's stack."""
        path = dataset_dict.get("file_name")
        if not path:
            raise ImageError(f"record image_id={dataset_dict.get('image_id')}", "dataset record has no 'file_name'",
                             kind="record")
        image, raw_stack = self.reader.read_record_image(dataset_dict)
        try:
            utils.check_image_size(dataset_dict, image)
        except utils.SizeMismatchError as e:
            raise ImageError(path, f"image size (H, W) {image.shape[:2]} differs from the record's "
                                   f"({dataset_dict.get('height')}, {dataset_dict.get('width')})", kind="size") from e
        return image, raw_stack

    def _read_stack(self, dataset_dict, image_size, array: Optional[np.ndarray] = None) -> Tuple[np.ndarray, float]:
        path = dataset_dict.get(STACK_FILE_KEY)
        if not path:
            raise StackError(dataset_dict["file_name"], f"dataset record has no '{STACK_FILE_KEY}' (no "
                                                        "DATASETS.STACK_KEY in the JSON image entry?)", kind="record")
        stack, scale, resized = self.reader.read_stack(path, image_size, array, self.reader.homography_of(dataset_dict))
        if resized:
            self.num_resized += 1
            n = self.num_resized
            log = logger.info if n == 1 or n % 1000 == 0 else logger.debug
            log("Resized stack %s to its image's %s (INPUT.STACK.RESIZE_MISMATCHED); %d resized so far "
                "in this process", path, tuple(image_size), n)
        return stack, scale

    def _check_annotations(self, dataset_dict) -> None:
        problems = annotation_problems(dataset_dict, self.num_classes)
        if problems:
            first = problems[0]
            more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
            raise AnnotationError(first.path, first.problem + more, kind=first.kind)

    # ---------------------------------------------------------------------------------- mapping
    def __call__(self, dataset_dict):
        try:
            return self._map(dataset_dict)
        except DataError as e:
            if not self.skip_bad_samples:
                raise
            self.num_skipped += 1
            logger.warning("Skipping bad sample (DATASETS.ON_BAD_SAMPLE 'skip'): %s", e)
            if self.bad_sample_log is not None:
                self.bad_sample_log.record(e)
            return None

    def _map(self, dataset_dict):
        dataset_dict = copy.deepcopy(dataset_dict)  # modified below
        image, raw_stack = self._read_image(dataset_dict)
        if self.is_train and "annotations" in dataset_dict:
            self._check_annotations(dataset_dict)
        stack, scale = self._read_stack(dataset_dict, image.shape[:2], raw_stack) if self.load_stacks else (None, 1.0)
        sem_seg_gt = None
        if "sem_seg_file_name" in dataset_dict:
            sem_seg_gt = utils.read_image(dataset_dict.pop("sem_seg_file_name"), "L").squeeze(2)

        aug_input = StackAugInput(image, stack=stack, stack_scale=scale, sem_seg=sem_seg_gt,
                                  polar_layout=self.polar_layout, stack_photometric=self.stack_photometric,
                                  stack_stride=self.stack_stride)
        transforms = self.augmentations(aug_input)
        image, stack_data, sem_seg_gt = aug_input.image, aug_input.stack_data, aug_input.sem_seg

        image_shape = image.shape[:2]  # h, w
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if stack_data is not None:
            if self.reader.derives_in_loader:
                stack_data = StackData(self.reader.derive(stack_data.values()))
            # stored dtype, channels-last when the file is: the model converts, scales and normalizes
            dataset_dict["stack"] = stack_data.to_tensor()
            if stack_data.scale != 1.0:
                dataset_dict["stack_scale"] = stack_data.scale
            if self.stack_stride > 1:
                dataset_dict["stack_stride"] = self.stack_stride
        if sem_seg_gt is not None:
            dataset_dict["sem_seg"] = torch.as_tensor(sem_seg_gt.astype("long"))
        if self.proposal_topk is not None:
            utils.transform_proposals(dataset_dict, image_shape, transforms, proposal_topk=self.proposal_topk)
        if not self.is_train:
            dataset_dict.pop("annotations", None)
            return dataset_dict
        if "annotations" in dataset_dict:
            self._transform_annotations(dataset_dict, transforms, image_shape)
        return dataset_dict
