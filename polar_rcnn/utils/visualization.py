"""Pictures: detections and ground truth over the image, next to a view of the stack."""
from typing import Optional

import cv2
import numpy as np

from detectron2.utils.visualizer import Visualizer

from ..data.polarization import dolp_aolp_from_stack


def stack_view(stack: np.ndarray) -> np.ndarray:
    """RGB uint8 view of an (H, W, C) stack: AoLP as hue and DoLP as brightness for polarization
    stacks (C a multiple of 4, band-major 0/45/90/135), else the first three channels stretched."""
    if stack.shape[2] % 4 == 0:
        dolp, aolp = dolp_aolp_from_stack(stack)
        hsv = np.stack(
            [aolp / np.pi * 179.0, np.full_like(dolp, 255.0), np.clip(dolp * 255.0, 0, 255)], axis=-1
        ).astype(np.uint8)
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    channels = stack[..., [min(i, stack.shape[2] - 1) for i in range(3)]].astype(np.float32)
    lo, hi = np.percentile(channels, (1, 99))
    return (np.clip((channels - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)


def detection_panel(
    image_rgb: np.ndarray,
    stack: Optional[np.ndarray],
    predictions=None,
    annotations=None,
    metadata=None,
    score_threshold: float = 0.5,
) -> np.ndarray:
    """One RGB picture: [ground truth | detections (score >= threshold) | stack view]."""
    panels = []
    if annotations is not None:
        gt = Visualizer(image_rgb, metadata).draw_dataset_dict({"annotations": annotations})
        panels.append(gt.get_image())
    if predictions is not None:
        predictions = predictions[predictions.scores >= score_threshold].to("cpu")
        panels.append(Visualizer(image_rgb, metadata).draw_instance_predictions(predictions).get_image())
    if stack is not None:
        panels.append(stack_view(stack))
    return np.concatenate(panels, axis=1)
