"""Single-image inference with an image and its stack, mirroring Detectron2's DefaultPredictor."""
from typing import Optional

import numpy as np
import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.modeling import build_model

from ..data.mapper import StackAugInput


class PolarPredictor:
    """Like :class:`detectron2.engine.DefaultPredictor`, plus an optional stack.

    ``predictor(image_bgr, stack)`` with ``image_bgr`` an (H, W, 3) uint8 BGR array (as cv2 reads it)
    and ``stack`` an (H, W, C) float array scaled like the mapper's output (see
    :func:`polar_rcnn.data.load_stack`), or None for image-only inference.
    """

    def __init__(self, cfg):
        self.cfg = cfg.clone()
        self.model = build_model(self.cfg)
        self.model.eval()
        if len(cfg.DATASETS.TEST):
            self.metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0])
        DetectionCheckpointer(self.model).load(cfg.MODEL.WEIGHTS)
        self.aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
        self.input_format = cfg.INPUT.FORMAT
        assert self.input_format in ["RGB", "BGR"], self.input_format

    def __call__(self, original_image: np.ndarray, stack: Optional[np.ndarray] = None) -> dict:
        with torch.no_grad():
            if self.input_format == "RGB":
                original_image = original_image[:, :, ::-1]
            height, width = original_image.shape[:2]
            if stack is not None and stack.shape[:2] != (height, width):
                raise ValueError(f"stack size {stack.shape[:2]} differs from the image's {(height, width)}")
            aug_input = StackAugInput(np.ascontiguousarray(original_image), stack=stack)
            self.aug(aug_input)
            inputs = {
                "image": torch.as_tensor(aug_input.image.astype("float32").transpose(2, 0, 1)),
                "height": height,
                "width": width,
            }
            if stack is not None:
                inputs["stack"] = torch.as_tensor(np.ascontiguousarray(aug_input.stack.transpose(2, 0, 1)))
            return self.model([inputs])[0]
