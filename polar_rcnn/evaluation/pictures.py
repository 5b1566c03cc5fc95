"""Pictures of a model at work: ground truth, top-k RPN proposals and detections over the image,
next to views of the stack; one PNG per image and one grid PNG per run.

The model runs through :class:`~polar_rcnn.engine.PolarPredictor` (its preprocessing, the
model's own inference); the RPN proposals are those the model's ``proposal_generator`` produced
in that same forward pass, captured with a forward hook (:func:`capture_proposals`).
"""
import contextlib
import logging
import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np

from detectron2.modeling.postprocessing import detector_postprocess

from ..data.polar_layout import polar_layout_from_config
from ..engine.predictor import PolarPredictor
from . import visualization as vis
from .inputs import load_inputs

logger = logging.getLogger(__name__)

GRID_FILE = "grid.png"


@contextlib.contextmanager
def capture_proposals(model):
    """Within the block, the proposals (``list[Instances]``, one per image, in the network input's
    pixels) of every forward of ``model.proposal_generator`` are appended to the yielded list.
    Models without a proposal generator (RetinaNet) yield a list that stays empty."""
    captured: List = []
    generator = getattr(model, "proposal_generator", None)
    if generator is None:
        yield captured
        return
    handle = generator.register_forward_hook(lambda module, inputs, output: captured.append(output[0]))
    try:
        yield captured
    finally:
        handle.remove()


class PictureMaker:
    """Runs a :class:`PolarPredictor` on an image (and its stack) and draws the result.

    Args:
        cfg: the model's config (``MODEL.WEIGHTS`` loaded by the predictor; ``INPUT.STACK`` tells how
            to read and show stacks).
        predictor: an existing predictor for ``cfg`` (default: a new one).
        topk: RPN proposals shown (the k with the highest objectness); 0 = no proposal panel.
        score_threshold: detections shown.
        min_detections: when no detection reaches ``score_threshold``, the ``min_detections``
            best are shown instead (captioned so; a young model scores low); 0 = none.
        channels: stack channels to show (1 or 3) instead of DoLP / AoLP.
        scale: picture size relative to the image.
        metadata: class names for the labels (default: the predictor's, from ``DATASETS.TEST[0]``).
    """

    def __init__(self, cfg, predictor: Optional[PolarPredictor] = None, *, topk: int = 50,
                 score_threshold: float = 0.5, min_detections: int = 3, channels: Optional[Sequence[int]] = None,
                 scale: float = 1.0, metadata=None):
        if topk < 0 or scale <= 0 or min_detections < 0:
            raise ValueError(f"topk and min_detections must be >= 0 and scale > 0, got {topk}, {min_detections}, "
                             f"{scale}")
        self.cfg = cfg
        self.predictor = predictor if predictor is not None else PolarPredictor(cfg)
        self.topk = topk
        self.score_threshold = score_threshold
        self.min_detections = min_detections
        self.channels = list(channels) if channels else None
        self.scale = scale
        self.metadata = metadata if metadata is not None else getattr(self.predictor, "metadata", None)
        self.layout = polar_layout_from_config(cfg)
        self.reads_stack = bool(cfg.INPUT.STACK.ENABLED)

    def predict(self, image_bgr: np.ndarray, stack: Optional[np.ndarray]) -> Tuple[Dict, Optional[object]]:
        """(the predictor's outputs, the RPN proposals in image pixels sorted by objectness or None).

        ``stack`` is passed to the model only when it reads stacks (``INPUT.STACK.ENABLED``)."""
        with capture_proposals(self.predictor.model) as captured:
            outputs = self.predictor(image_bgr, stack if self.reads_stack else None)
        if not captured:
            return outputs, None
        height, width = image_bgr.shape[:2]
        proposals = detector_postprocess(captured[-1][0].to("cpu"), height, width)
        order = proposals.objectness_logits.argsort(descending=True)
        return outputs, proposals[order]

    def panels(self, record: Dict, image_bgr: np.ndarray, stack: Optional[np.ndarray], outputs: Dict,
               proposals=None) -> List[vis.Panel]:
        """The captioned panels of one image: ground truth (if the record has annotations), RPN
        top-k, detections, stack views (if there is a stack)."""
        image_rgb = np.ascontiguousarray(image_bgr[:, :, ::-1])
        s = self.scale
        panels = []
        if "annotations" in record:
            panels.append(("ground truth", vis.ground_truth_panel(image_rgb, record["annotations"], self.metadata, s)))
        if proposals is not None and self.topk:
            boxes = proposals.proposal_boxes.tensor[: self.topk].numpy()
            panels.append((f"RPN top-{len(boxes)}", vis.proposals_panel(image_rgb, boxes, s)))
        if "instances" in outputs:
            shown, below = vis.shown_detections(outputs["instances"], self.score_threshold, self.min_detections)
            caption = (f"top-{len(shown)} (all < {self.score_threshold:g})" if below
                       else f"detections >= {self.score_threshold:g} ({len(shown)})")
            panels.append((caption, vis.detections_panel(image_rgb, shown, self.metadata, None, s)))
        if stack is not None:
            panels.extend(vis.stack_panels(stack, self.layout, self.channels))
        return panels

    def picture(self, record: Dict, image_bgr: np.ndarray, stack: Optional[np.ndarray], outputs: Dict,
                proposals=None) -> np.ndarray:
        """One RGB picture: the :meth:`panels` side by side with captions, under the image's file name."""
        return vis.compose_row(self.panels(record, image_bgr, stack, outputs, proposals),
                               title=os.path.basename(record.get("file_name", "")))

    def __call__(self, record: Dict) -> Tuple[np.ndarray, Dict]:
        """Read ``record``'s image and stack, predict and draw: (RGB picture, outputs)."""
        image, stack = load_inputs(self.cfg, record)
        outputs, proposals = self.predict(image, stack)
        return self.picture(record, image, stack, outputs, proposals), outputs


def comparison_picture(makers: Mapping[str, PictureMaker], record: Dict) -> np.ndarray:
    """One RGB picture of several models on one record: ground truth, then each model's detections
    captioned with its name (in ``makers`` order), then the stack views of the first model that
    reads stacks; each model reads the inputs its own config asks for."""
    panels: List[vis.Panel] = []
    stack_views: List[vis.Panel] = []
    for i, (name, maker) in enumerate(makers.items()):
        image, stack = load_inputs(maker.cfg, record)
        outputs, _ = maker.predict(image, stack)
        shown = record if i == 0 else {k: v for k, v in record.items() if k != "annotations"}
        for caption, panel in maker.panels(shown, image, None, outputs):
            panels.append((caption if caption == "ground truth" else f"{name}: {caption}", panel))
        if stack is not None and not stack_views:
            stack_views = vis.stack_panels(stack, maker.layout, maker.channels)
    return vis.compose_row(panels + stack_views, title=os.path.basename(record.get("file_name", "")))


def write_comparison_pictures(makers: Mapping[str, PictureMaker], records: Sequence[Dict], out_dir: str, *,
                              num_images: int = 6) -> Tuple[List[str], Optional[str]]:
    """:func:`comparison_picture` of the first ``num_images`` records, one PNG each in ``out_dir``
    and all of them in ``out_dir/grid.png``: (per-image paths, grid path or None)."""
    paths, rows, taken = [], [], set()
    for record in list(records)[:num_images]:
        picture = comparison_picture(makers, record)
        paths.append(write_png(os.path.join(out_dir, picture_name(record, taken)), picture))
        rows.append(picture)
    grid_path = write_png(os.path.join(out_dir, GRID_FILE), vis.image_grid(rows)) if rows else None
    logger.info("Wrote %d comparison pictures of %s to %s", len(paths), ", ".join(makers), out_dir)
    return paths, grid_path


def picture_name(record: Dict, taken: set) -> str:
    """``<image base name>.png``, with ``_<image_id>`` added when that name is taken."""
    base = os.path.splitext(os.path.basename(record["file_name"]))[0]
    name = f"{base}.png"
    if name in taken or name == GRID_FILE:
        name = f"{base}_{record.get('image_id', len(taken))}.png"
    taken.add(name)
    return name


def write_png(path: str, picture_rgb: np.ndarray) -> str:
    """Write an RGB uint8 picture as PNG; returns ``path``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if not cv2.imwrite(path, np.ascontiguousarray(picture_rgb[:, :, ::-1])):
        raise OSError(f"could not write {path}")
    return path


def write_pictures(cfg, records: Sequence[Dict], out_dir: str, *, num_images: int = 6, grid: bool = True,
                   maker: Optional[PictureMaker] = None, **maker_kwargs) -> Tuple[List[str], Optional[str]]:
    """Pictures of the first ``num_images`` records: one PNG each in ``out_dir`` and, with ``grid``,
    all of them stacked in ``out_dir/grid.png``. ``maker_kwargs`` go to :class:`PictureMaker`.

    Returns (per-image paths, grid path or None)."""
    maker = maker if maker is not None else PictureMaker(cfg, **maker_kwargs)
    paths, rows, taken = [], [], set()
    for record in list(records)[:num_images]:
        picture, _ = maker(record)
        paths.append(write_png(os.path.join(out_dir, picture_name(record, taken)), picture))
        rows.append(picture)
    grid_path = write_png(os.path.join(out_dir, GRID_FILE), vis.image_grid(rows)) if grid and rows else None
    logger.info("Wrote %d pictures%s to %s", len(paths), " and a grid" if grid_path else "", out_dir)
    return paths, grid_path
