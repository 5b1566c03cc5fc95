"""Single-image inference with an image and its stack, mirroring Detectron2's DefaultPredictor."""
from typing import Optional

import numpy as np
import torch

from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.modeling import build_model

from ..architecture import stack_delivery_stride
from ..data import SampleReader, register_datasets_from_config
from ..data.mapper import StackAugInput
from .checkpoint import load_for_inference


class PolarPredictor:
    """Like :class:`detectron2.engine.DefaultPredictor`, plus an optional stack.

    ``predictor(image_bgr, stack)`` with ``image_bgr`` an (H, W, 3) uint8 BGR array (as cv2 reads it)
    and ``stack`` the (H, W, C) float array of its stack file as :func:`polar_rcnn.data.load_stack`
    returns it (scaled, not derived: ``INPUT.STACK.DERIVED`` is applied as in training, here or in the model),
    or None for image-only inference.
    """

    def __init__(self, cfg):
        self.cfg = cfg.clone()
        register_datasets_from_config(self.cfg)
        self.model = build_model(self.cfg)
        self.model.eval()
        if len(cfg.DATASETS.TEST):
            self.metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0])
        load_for_inference(self.model, cfg)
        self.reader = SampleReader.from_config(cfg)
        self.stack_stride = stack_delivery_stride(cfg)  # as the loader delivers it (INPUT.STACK.RESOLUTION)
        self.aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
        self.input_format = cfg.INPUT.FORMAT
        assert self.input_format in ["RGB", "BGR"], self.input_format

    def __call__(self, original_image: np.ndarray, stack: Optional[np.ndarray] = None) -> dict:
        with torch.no_grad():
            if self.input_format == "RGB":
                original_image = original_image[:, :, ::-1]
            height, width = original_image.shape[:2]
            if stack is not None and self.reader.homography is not None:  # a two-sensor rig: onto the image grid
                stack = self.reader.align(stack, self.reader.homography_of({}), (height, width), "stack")
            if stack is not None and stack.shape[:2] != (height, width):
                raise ValueError(f"stack size {stack.shape[:2]} differs from the image's {(height, width)}")
            aug_input = StackAugInput(np.ascontiguousarray(original_image), stack=stack, stack_stride=self.stack_stride)
            self.aug(aug_input)
            inputs = {
                "image": torch.as_tensor(aug_input.image.astype("float32").transpose(2, 0, 1)),
                "height": height,
                "width": width,
            }
            if stack is not None:
                if not self.reader.stacks:
                    raise ValueError("this model reads no stack (INPUT.STACK.ENABLED False): pass stack=None")
                stack = aug_input.stack
                if self.reader.derives_in_loader:
                    stack = self.reader.derive(stack)
                inputs["stack"] = torch.as_tensor(np.ascontiguousarray(stack.transpose(2, 0, 1)))
                if self.stack_stride > 1:
                    inputs["stack_stride"] = self.stack_stride
            return self.model([inputs])[0]
