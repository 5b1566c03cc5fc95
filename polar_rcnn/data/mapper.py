"""Dataset mapper that loads each image's stack and keeps it aligned through every transform."""
import copy
import logging
from typing import Optional

import numpy as np
import torch
from fvcore.transforms.transform import BlendTransform, Transform, TransformList

from detectron2.config import configurable
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from .stack_io import load_stack

logger = logging.getLogger(__name__)

STACK_FILE_KEY = "stack_file_name"
"""Dataset-dict key holding the path of an image's stack file."""

# Transforms that change pixel values, not geometry: applied to the RGB image only.
PHOTOMETRIC_TRANSFORMS = (BlendTransform, T.ColorTransform)


def apply_geometric_transforms(tfm: Transform, stack: np.ndarray) -> np.ndarray:
    """Apply the geometric parts of ``tfm`` to an (H, W, C) float stack, skipping photometric ones."""
    transforms = tfm.transforms if isinstance(tfm, TransformList) else [tfm]
    for t in transforms:
        if not isinstance(t, PHOTOMETRIC_TRANSFORMS):
            stack = t.apply_image(stack)
    return stack


class StackAugInput(T.AugInput):
    """:class:`AugInput` that also carries a stack and applies every geometric transform to it."""

    def __init__(self, image: np.ndarray, *, stack: Optional[np.ndarray] = None, **kwargs):
        super().__init__(image, **kwargs)
        self.stack = stack

    def transform(self, tfm: Transform) -> None:
        super().transform(tfm)
        if self.stack is not None:
            self.stack = apply_geometric_transforms(tfm, self.stack)


class PolarDatasetMapper(DatasetMapper):
    """:class:`DatasetMapper` that also reads ``dataset_dict["stack_file_name"]`` and returns it,
    transformed exactly like the image, as ``"stack"``: a float32 (C, H, W) tensor scaled by
    ``INPUT.STACK.SCALE`` (normalization happens in the model, like the image's).
    """

    @configurable
    def __init__(
        self,
        is_train: bool,
        *,
        load_stacks: bool = True,
        stack_layout: str = "HWC",
        stack_scale: float = 0.0,
        stack_channels: Optional[int] = None,
        **kwargs,
    ):
        """
        Args:
            load_stacks: read the stack of each image; False gives plain RGB inputs.
            stack_layout: "HWC" or "CHW", the axis order of stack files.
            stack_scale: multiplier to float; 0 chooses by dtype.
            stack_channels: expected channel count (checked per file), or None.
            kwargs: arguments of :class:`DatasetMapper`.
        """
        super().__init__(is_train, **kwargs)
        self.load_stacks = load_stacks
        self.stack_layout = stack_layout
        self.stack_scale = stack_scale
        self.stack_channels = stack_channels

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ret = super().from_config(cfg, is_train)
        ret.update(
            load_stacks=cfg.INPUT.STACK.ENABLED,
            stack_layout=cfg.INPUT.STACK.LAYOUT,
            stack_scale=cfg.INPUT.STACK.SCALE,
            stack_channels=cfg.MODEL.POLAR.IN_CHANNELS,
        )
        return ret

    def __call__(self, dataset_dict):
        if not self.load_stacks:
            return super().__call__(dataset_dict)
        dataset_dict = copy.deepcopy(dataset_dict)  # modified below
        image = utils.read_image(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dataset_dict, image)
        if STACK_FILE_KEY not in dataset_dict:
            raise KeyError(f"{dataset_dict['file_name']}: dataset record has no '{STACK_FILE_KEY}'")
        stack = load_stack(
            dataset_dict[STACK_FILE_KEY],
            layout=self.stack_layout,
            scale=self.stack_scale,
            expected_channels=self.stack_channels,
            expected_size=image.shape[:2],
        )
        sem_seg_gt = None
        if "sem_seg_file_name" in dataset_dict:
            sem_seg_gt = utils.read_image(dataset_dict.pop("sem_seg_file_name"), "L").squeeze(2)

        aug_input = StackAugInput(image, stack=stack, sem_seg=sem_seg_gt)
        transforms = self.augmentations(aug_input)
        image, stack, sem_seg_gt = aug_input.image, aug_input.stack, aug_input.sem_seg

        image_shape = image.shape[:2]  # h, w
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        dataset_dict["stack"] = torch.as_tensor(np.ascontiguousarray(stack.transpose(2, 0, 1)))
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
