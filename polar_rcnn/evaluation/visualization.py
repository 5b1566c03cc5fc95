"""Pictures: ground truth, RPN proposals and detections over the image, next to views of the stack.

Drawing only (numpy in, RGB uint8 out); :mod:`polar_rcnn.evaluation.pictures` runs a model and
writes the files. A picture is a row of captioned panels (:func:`compose_row`); a run's pictures
stack into one grid (:func:`image_grid`).

Views of the stack (:func:`stack_panels`): for polarization stacks (``INPUT.STACK.POLARIZATION``
"angles", "stokes" or "dolp_aolp") DoLP as grey and AoLP as hue with DoLP as brightness (the usual
HSV view: unpolarized pixels, whose angle is noise, stay dark), from the Stokes parameters summed
over the bands; for other stacks the chosen channels (one: grey; three: as R, G, B), each stretched
between its 1st and 99th percentile.

Boxes have one colour per class (:func:`class_color`: the metadata's ``thing_colors``, else a
fixed palette), the same in ground truth and detections and in every run. Captions and the row
title are sized to the panels: they never reach over a panel's edge, at any image size.
"""
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from detectron2.structures import BoxMode
from detectron2.utils.colormap import colormap
from detectron2.utils.visualizer import Visualizer

from ..data.polar_layout import PolarLayout
from ..polarization import dolp_aolp, dolp_aolp_from_stack

Panel = Tuple[str, np.ndarray]  # (caption, (H, W, 3) RGB uint8)

GAP = 4  # px between panels and between the rows of a grid
_WHITE = 255
_PROPOSAL_COLOR = (0.1, 0.9, 0.9)  # cyan: RPN proposals, not classes
_PALETTE = colormap(rgb=True, maximum=1)  # fixed colours, indexed by class
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_MIN_FONT_SCALE = 0.25  # smallest text (about 6 px high); longer words are cut
#: full AoLP brightness at this DoLP or at the image's 99th percentile of DoLP, whichever is higher
AOLP_FULL_DOLP = 0.1


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


def aolp_panel(aolp: np.ndarray, dolp: Optional[np.ndarray] = None) -> np.ndarray:
    """AoLP in [0, pi) as hue (0 deg red, 60 deg green, 120 deg blue) at full saturation; the value
    (brightness) is DoLP relative to max(:data:`AOLP_FULL_DOLP`, its 99th percentile), so the angle of
    unpolarized pixels (noise) stays dark; ``dolp`` None: full brightness everywhere."""
    hue = np.mod(aolp, np.pi) / np.pi * 180.0
    if dolp is None:
        value = np.full_like(hue, 255.0)
    else:
        full = max(float(np.percentile(dolp, 99)), AOLP_FULL_DOLP)
        value = np.clip(dolp / full, 0.0, 1.0) * 255.0
    hsv = np.stack([np.minimum(hue, 179.0), np.full_like(hue, 255.0), value], axis=-1)
    return cv2.cvtColor((hsv + 0.5).astype(np.uint8), cv2.COLOR_HSV2RGB)


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
        return [("DoLP", dolp_panel(dolp)), ("AoLP hue, DoLP value", aolp_panel(aolp, dolp))]
    channels = list(channels) if channels else list(range(3 if stack.shape[2] >= 3 else 1))
    return [("stack ch " + ",".join(str(c) for c in channels), channels_panel(stack, channels))]


def stack_view(stack: np.ndarray) -> np.ndarray:
    """One RGB view of an (H, W, C) stack: AoLP as hue and DoLP as brightness for C a multiple of 4
    (band-major 0/45/90/135 degree images), else the first three channels stretched."""
    if stack.shape[2] % 4 == 0:
        dolp, aolp = dolp_aolp_from_stack(stack)
        return aolp_panel(aolp, dolp)
    return channels_panel(stack, [min(i, stack.shape[2] - 1) for i in range(3)])


def class_color(class_id: int, metadata=None) -> Tuple[float, float, float]:
    """RGB 0..1 colour of a (contiguous) class: ``metadata.thing_colors`` (0..255) when it has one,
    else a fixed palette entry; the same in every picture and every run."""
    colors = getattr(metadata, "thing_colors", None) if metadata is not None else None
    if colors and 0 <= class_id < len(colors):
        return tuple(float(c) / 255.0 for c in colors[class_id])
    return tuple(float(c) for c in _PALETTE[class_id % len(_PALETTE)])


def class_name(class_id: int, metadata=None) -> str:
    """``metadata.thing_classes[class_id]``, else the index as text."""
    names = getattr(metadata, "thing_classes", None) if metadata is not None else None
    return names[class_id] if names and 0 <= class_id < len(names) else str(class_id)


def _visualizer(image_rgb: np.ndarray, metadata, scale: float) -> Visualizer:
    """A Visualizer whose labels and lines grow with large pictures (its default stops at
    ~1/90 of the image's size: unreadable labels at 800 px)."""
    v = Visualizer(image_rgb, metadata, scale=scale)
    v._default_font_size = max(v._default_font_size, image_rgb.shape[1] * scale / 40.0)
    return v


def _boxes_panel(image_rgb: np.ndarray, boxes: np.ndarray, classes: Sequence[int], labels: Sequence[str],
                 metadata, scale: float, masks=None) -> np.ndarray:
    """``masks``: None, or one per box (COCO polygon lists or (H, W) boolean arrays), filled in the box's colour."""
    v = _visualizer(image_rgb, metadata, scale)
    if len(boxes):
        v.overlay_instances(boxes=np.asarray(boxes, np.float32).reshape(-1, 4), labels=list(labels), masks=masks,
                            assigned_colors=[class_color(int(c), metadata) for c in classes])
    return v.get_output().get_image()


def ground_truth_panel(image_rgb: np.ndarray, annotations: List[dict], metadata=None, scale: float = 1.0) -> np.ndarray:
    """Dataset annotations (Detectron2 dataset-dict format, contiguous ``category_id``) over the
    image: boxes in their class colour (:func:`class_color`), labelled with the class name, and
    their polygon ``segmentation`` filled when every annotation has one."""
    boxes = [BoxMode.convert(list(a["bbox"]), a.get("bbox_mode", BoxMode.XYWH_ABS), BoxMode.XYXY_ABS)
             for a in annotations]
    classes = [int(a["category_id"]) for a in annotations]
    polygons = [a.get("segmentation") for a in annotations]
    masks = polygons if polygons and all(isinstance(p, list) and p for p in polygons) else None
    return _boxes_panel(image_rgb, np.asarray(boxes, np.float32), classes, [class_name(c, metadata) for c in classes],
                        metadata, scale, masks)


def proposals_panel(image_rgb: np.ndarray, boxes: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Boxes (N, 4) XYXY in image pixels, e.g. the top-k RPN proposals, over the image."""
    v = _visualizer(image_rgb, None, scale)
    if len(boxes):
        v.overlay_instances(boxes=np.asarray(boxes), assigned_colors=[_PROPOSAL_COLOR] * len(boxes), alpha=0.3)
    return v.get_output().get_image()


def shown_detections(instances, score_threshold: float = 0.5, min_shown: int = 0):
    """(the detections to draw, whether they are the best below the threshold): those with score >=
    ``score_threshold``; when there are none, the ``min_shown`` highest-scoring ones (a young model
    scores low), flagged True."""
    instances = instances.to("cpu")
    kept = instances[instances.scores >= score_threshold]
    if len(kept) or not min_shown:
        return kept, False
    order = instances.scores.argsort(descending=True)[:min_shown]
    return instances[order], len(order) > 0


def detections_panel(image_rgb: np.ndarray, instances, metadata=None, score_threshold: Optional[float] = 0.5,
                     scale: float = 1.0) -> np.ndarray:
    """Predicted ``instances`` (Detectron2 ``Instances``) with score >= ``score_threshold`` (None:
    all of them, e.g. as :func:`shown_detections` chose them) over the image: boxes in their class
    colour (:func:`class_color`), labelled "<class> <score %>"; ``pred_masks`` (Mask R-CNN) filled."""
    instances = instances.to("cpu")
    if score_threshold is not None:
        instances = instances[instances.scores >= score_threshold]
    classes = instances.pred_classes.tolist() if instances.has("pred_classes") else [0] * len(instances)
    labels = [f"{class_name(c, metadata)} {s * 100:.0f}%" for c, s in zip(classes, instances.scores.tolist())]
    masks = list(instances.pred_masks.numpy().astype(bool)) if instances.has("pred_masks") else None
    return _boxes_panel(image_rgb, instances.pred_boxes.tensor.numpy(), classes, labels, metadata, scale, masks)


def _resized(image: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_NEAREST)


def _text_width(text: str, font_scale: float, thickness: int) -> int:
    return cv2.getTextSize(text, _FONT, font_scale, thickness)[0][0]


def _line_height(font_scale: float, thickness: int) -> int:
    (_, h), baseline = cv2.getTextSize("Ag", _FONT, font_scale, thickness)
    return h + baseline + max(1, int(round(3 * font_scale)))


def _thickness(font_scale: float) -> int:
    return max(1, int(round(font_scale * 1.5)))


def _wrap(text: str, width: int, font_scale: float, thickness: int) -> List[str]:
    """Words of ``text`` in lines no wider than ``width`` px; a word wider than that is cut."""
    lines: List[str] = []
    for word in text.split():
        while _text_width(word, font_scale, thickness) > width and len(word) > 1:
            word = word[:-1]
        candidate = f"{lines[-1]} {word}" if lines else word
        if lines and _text_width(candidate, font_scale, thickness) <= width:
            lines[-1] = candidate
        else:
            lines.append(word)
    return lines or [""]


def caption_font_scale(width: int) -> float:
    """Font scale of captions over panels ``width`` px wide: text about 1/30 of the width high,
    within 9..27 px."""
    return float(np.clip(width / 800.0, 0.35, 1.0))


def layout_captions(captions: Sequence[str], width: int, font_scale: Optional[float] = None,
                    height: Optional[int] = None) -> Tuple[float, int, List[List[str]], int]:
    """How captions are written over panels ``width`` px wide: (font scale, thickness, lines of
    each caption, caption height in px). The font shrinks (down to a readable minimum) until every
    word fits the width, then captions wrap at spaces; with ``height`` the lines must also fit it
    (the font shrinks further; lines that still do not fit are dropped)."""
    room = max(width - 4, 1)
    scale = caption_font_scale(width) if font_scale is None else font_scale
    words = [w for c in captions for w in c.split()] or [""]
    while scale > _MIN_FONT_SCALE and max(_text_width(w, scale, _thickness(scale)) for w in words) > room:
        scale = max(scale * 0.9, _MIN_FONT_SCALE)
    while True:
        thickness = _thickness(scale)
        lines = [_wrap(c, room, scale, thickness) for c in captions]
        needed = max(len(ls) for ls in lines) * _line_height(scale, thickness) + 2
        if height is None or needed <= height or scale <= _MIN_FONT_SCALE:
            break
        scale = max(scale * 0.9, _MIN_FONT_SCALE)
    if height is not None:
        fit = max(height, 0) // _line_height(scale, thickness)
        lines = [ls[:fit] for ls in lines]
        needed = height
    return scale, thickness, lines, needed


def _put_lines(canvas: np.ndarray, lines: Sequence[str], x: int, y: int, font_scale: float, thickness: int) -> None:
    step = _line_height(font_scale, thickness)
    (_, text_h), _ = cv2.getTextSize("Ag", _FONT, font_scale, thickness)
    for k, line in enumerate(lines):
        cv2.putText(canvas, line, (x, y + k * step + text_h + 1), _FONT, font_scale, (0, 0, 0), thickness, cv2.LINE_AA)


def compose_row(panels: Sequence[Panel], caption_height: Optional[int] = None, gap: int = GAP,
                title: str = "") -> np.ndarray:
    """Panels side by side on white, each with its caption above, and ``title`` (e.g. the image's
    file name) in a line over the row; all panels take the first panel's size.

    Captions are sized to the panel width and wrap onto more lines where needed
    (:func:`layout_captions`); ``caption_height`` fixes their height instead (0: no captions).
    Size: (title height + caption height + H, n * W + (n - 1) * gap, 3).
    """
    if not panels:
        raise ValueError("no panels to compose")
    h, w = panels[0][1].shape[:2]
    width = len(panels) * w + (len(panels) - 1) * gap
    if caption_height == 0:
        scale, thickness, lines, caption_h = caption_font_scale(w), 1, [[] for _ in panels], 0
    else:
        scale, thickness, lines, caption_h = layout_captions([c for c, _ in panels], w, height=caption_height)
    title_lines: List[str] = []
    title_h = 0
    bold = thickness + 1
    if title:
        title_lines = _wrap(title, max(width - 4, 1), scale, bold)
        title_h = len(title_lines) * _line_height(scale, bold) + 2
    top = title_h + caption_h
    row = np.full((top + h, width, 3), _WHITE, np.uint8)
    _put_lines(row, title_lines, 2, 0, scale, bold)
    for i, (_, image) in enumerate(panels):
        x = i * (w + gap)
        row[top:, x : x + w] = _resized(np.asarray(image, np.uint8)[..., :3], (h, w))
        # each caption drawn on its own panel's strip: text never reaches the next panel
        strip = np.full((caption_h, w, 3), _WHITE, np.uint8)
        _put_lines(strip, lines[i], 2, 0, scale, thickness)
        row[title_h:top, x : x + w] = strip
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
