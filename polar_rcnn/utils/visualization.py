"""Pictures: ground truth, RPN proposals and detections over the image, next to views of the stack.

Drawing only (numpy in, RGB uint8 out); :mod:`polar_rcnn.evaluation.pictures` runs a model and
writes the files. A picture is a row of captioned panels (:func:`compose_row`); a run's pictures
stack into one grid (:func:`image_grid`).

Views of the stack (:func:`stack_panels`): for polarization stacks (``INPUT.STACK.POLARIZATION``
"angles", "stokes" or "dolp_aolp") DoLP as grey and AoLP as hue, from the Stokes parameters summed
over the bands; for other stacks the chosen channels (one: grey; three: as R, G, B), each stretched
between its 1st and 99th percentile.
"""
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from detectron2.utils.visualizer import Visualizer

from ..data.polar_layout import PolarLayout
from ..data.polarization import dolp_aolp, dolp_aolp_from_stack

Panel = Tuple[str, np.ndarray]  # (caption, (H, W, 3) RGB uint8)

CAPTION_HEIGHT = 18  # px above each panel, at scale 1
GAP = 4  # px between panels and between the rows of a grid
_WHITE = 255
_PROPOSAL_COLOR = (0.1, 0.9, 0.9)  # cyan: RPN proposals, not classes


def polarization_maps(stack: np.ndarray, layout: Optional[PolarLayout] = None) -> Tuple[np.ndarray, np.ndarray]:
    """DoLP (0..1) and AoLP (radians, [0, pi)) of an (H, W, C) polarization stack, from the Stokes
    parameters summed over its bands. ``layout`` None: band-major 0/45/90/135 degree images."""
    if layout is None:
        return dolp_aolp_from_stack(stack)
    if layout.polarization in ("angles", "stokes"):
        s = layout.stokes(stack).sum(axis=2)  # (H, W, 3)
        return dolp_aolp(s[..., 0], s[..., 1], s[..., 2])
    if layout.polarization == "dolp_aolp":
        h, w = stack.shape[:2]
        per_band = stack.reshape(h, w, layout.bands, 2).astype(np.float32)
        d, a = per_band[..., 0], per_band[..., 1]
        s1, s2 = (d * np.cos(2 * a)).sum(axis=2), (d * np.sin(2 * a)).sum(axis=2)
        return dolp_aolp(np.full_like(s1, float(layout.bands)), s1, s2)
    raise ValueError(f"a stack with INPUT.STACK.POLARIZATION {layout.polarization!r} has no DoLP / AoLP: "
                     "show its channels instead")


def dolp_panel(dolp: np.ndarray) -> np.ndarray:
    """DoLP 0..1 as grey (black: unpolarized, white: fully polarized)."""
    grey = (np.clip(dolp, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def aolp_panel(aolp: np.ndarray) -> np.ndarray:
    """AoLP in [0, pi) as hue (0 deg red, 60 deg green, 120 deg blue), full saturation and value."""
    hue = np.mod(aolp, np.pi) / np.pi * 180.0
    hsv = np.stack([np.minimum(hue, 179.0), np.full_like(hue, 255.0), np.full_like(hue, 255.0)], axis=-1)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)


def channels_panel(stack: np.ndarray, channels: Sequence[int]) -> np.ndarray:
    """One channel as grey or three as R, G, B, each stretched between its 1st and 99th percentile."""
    channels = list(channels)
    if len(channels) not in (1, 3):
        raise ValueError(f"show 1 or 3 stack channels, got {channels}")
    bad = [c for c in channels if not -stack.shape[2] <= c < stack.shape[2]]
    if bad:
        raise ValueError(f"stack channels {bad} do not exist: the stack has {stack.shape[2]} channels")
    x = stack[..., channels].astype(np.float32)
    lo, hi = np.percentile(x.reshape(-1, len(channels)), (1, 99), axis=0)
    x = np.clip((x - lo) / np.maximum(hi - lo, 1e-6), 0.0, 1.0)
    if len(channels) == 1:
        x = np.repeat(x, 3, axis=2)
    return (x * 255.0 + 0.5).astype(np.uint8)


def stack_panels(stack: np.ndarray, layout: Optional[PolarLayout] = None,
                 channels: Optional[Sequence[int]] = None) -> List[Panel]:
    """Captioned views of a stack: DoLP + AoLP for polarization layouts (unless ``channels`` is
    given), else ``channels`` (default: the first three, or the first one for fewer)."""
    polar = layout is not None and layout.polarization in ("angles", "stokes", "dolp_aolp")
    if polar and not channels:
        dolp, aolp = polarization_maps(stack, layout)
        return [("DoLP", dolp_panel(dolp)), ("AoLP (hue)", aolp_panel(aolp))]
    channels = list(channels) if channels else list(range(3 if stack.shape[2] >= 3 else 1))
    return [("stack ch " + ",".join(str(c) for c in channels), channels_panel(stack, channels))]


def stack_view(stack: np.ndarray) -> np.ndarray:
    """One RGB view of an (H, W, C) stack: AoLP as hue and DoLP as brightness for C a multiple of 4
    (band-major 0/45/90/135 degree images), else the first three channels stretched."""
    if stack.shape[2] % 4 == 0:
        dolp, aolp = dolp_aolp_from_stack(stack)
        hsv = np.stack([aolp / np.pi * 179.0, np.full_like(dolp, 255.0), np.clip(dolp * 255.0, 0, 255)], axis=-1)
        return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)
    return channels_panel(stack, [min(i, stack.shape[2] - 1) for i in range(3)])


def ground_truth_panel(image_rgb: np.ndarray, annotations: List[dict], metadata=None, scale: float = 1.0) -> np.ndarray:
    """Dataset annotations (Detectron2 dataset-dict format) over the image."""
    return Visualizer(image_rgb, metadata, scale=scale).draw_dataset_dict({"annotations": annotations}).get_image()


def proposals_panel(image_rgb: np.ndarray, boxes: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Boxes (N, 4) XYXY in image pixels, e.g. the top-k RPN proposals, over the image."""
    v = Visualizer(image_rgb, None, scale=scale)
    if len(boxes):
        v.overlay_instances(boxes=np.asarray(boxes), assigned_colors=[_PROPOSAL_COLOR] * len(boxes), alpha=0.3)
    return v.get_output().get_image()


def detections_panel(image_rgb: np.ndarray, instances, metadata=None, score_threshold: float = 0.5,
                     scale: float = 1.0) -> np.ndarray:
    """Predicted ``instances`` (Detectron2 ``Instances``) with score >= ``score_threshold`` over the image."""
    instances = instances[instances.scores >= score_threshold].to("cpu")
    return Visualizer(image_rgb, metadata, scale=scale).draw_instance_predictions(instances).get_image()


def _resized(image: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_NEAREST)


def compose_row(panels: Sequence[Panel], caption_height: int = CAPTION_HEIGHT, gap: int = GAP) -> np.ndarray:
    """Panels side by side on white, each with its caption above; all take the first panel's size.

    Size: (caption_height + H, n * W + (n - 1) * gap, 3).
    """
    if not panels:
        raise ValueError("no panels to compose")
    h, w = panels[0][1].shape[:2]
    row = np.full((caption_height + h, len(panels) * w + (len(panels) - 1) * gap, 3), _WHITE, np.uint8)
    font_scale = max(caption_height / 36.0, 0.3)
    for i, (caption, image) in enumerate(panels):
        x = i * (w + gap)
        row[caption_height:, x : x + w] = _resized(np.asarray(image, np.uint8)[..., :3], (h, w))
        if caption_height > 0:
            cv2.putText(row, caption, (x + 2, caption_height - 5), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                        (0, 0, 0), 1, cv2.LINE_AA)
    return row


def image_grid(rows: Sequence[np.ndarray], gap: int = GAP) -> np.ndarray:
    """Pictures stacked vertically on white, left-aligned: (sum H + gaps, max W, 3)."""
    if not rows:
        raise ValueError("no pictures for the grid")
    width = max(r.shape[1] for r in rows)
    grid = np.full((sum(r.shape[0] for r in rows) + gap * (len(rows) - 1), width, 3), _WHITE, np.uint8)
    y = 0
    for r in rows:
        grid[y : y + r.shape[0], : r.shape[1]] = r
        y += r.shape[0] + gap
    return grid


def detection_panel(
    image_rgb: np.ndarray,
    stack: Optional[np.ndarray],
    predictions=None,
    annotations=None,
    metadata=None,
    score_threshold: float = 0.5,
) -> np.ndarray:
    """One RGB picture without captions: [ground truth | detections (score >= threshold) | stack view]."""
    panels = []
    if annotations is not None:
        panels.append(ground_truth_panel(image_rgb, annotations, metadata))
    if predictions is not None:
        panels.append(detections_panel(image_rgb, predictions, metadata, score_threshold))
    if stack is not None:
        panels.append(stack_view(stack))
    return np.concatenate(panels, axis=1)
