"""Helpers shared by the model tests: building, predicting, comparing detections, train steps."""
import torch

from detectron2.modeling import build_model
from detectron2.structures import BitMasks
from detectron2.utils.events import EventStorage

from tests.common import get_polar_cfg

VANILLA = {"MODEL__META_ARCHITECTURE": "GeneralizedRCNN", "MODEL__BACKBONE__NAME": "build_resnet_fpn_backbone"}


def build(seed=0, cfg=None, **overrides):
    """A model from ``cfg`` (default: ``get_polar_cfg(**overrides)``) with a seeded initialisation."""
    torch.manual_seed(seed)
    return build_model(cfg if cfg is not None else get_polar_cfg(**overrides))


def predict(model, inputs):
    model.eval()
    with torch.no_grad():
        return [o["instances"] for o in model(inputs)]


def max_detection_diff(a, b) -> float:
    """Largest abs difference of boxes, scores (and masks) of two equally long, same-class detection
    lists; fails if they are empty, differ in length or classes."""
    assert len(a) == len(b)
    diff = 0.0
    for x, y in zip(a, b):
        assert len(x) > 0, "no detections: the comparison would be vacuous"
        assert len(x) == len(y)
        assert torch.equal(x.pred_classes, y.pred_classes)
        diff = max(diff, (x.pred_boxes.tensor - y.pred_boxes.tensor).abs().max().item(),
                   (x.scores - y.scores).abs().max().item())
        if x.has("pred_masks"):
            diff = max(diff, (x.pred_masks.float() - y.pred_masks.float()).abs().max().item())
    return diff


def add_box_masks(inputs):
    """Give each input's instances ``gt_masks`` filling their boxes (for Mask R-CNN)."""
    for d in inputs:
        inst = d["instances"]
        h, w = inst.image_size
        masks = torch.zeros((len(inst), h, w), dtype=torch.bool)
        for i, (x0, y0, x1, y1) in enumerate(inst.gt_boxes.tensor.round().long().tolist()):
            masks[i, y0 : y1 + 1, x0 : x1 + 1] = True
        inst.gt_masks = BitMasks(masks)
    return inputs


def train_losses(model, inputs, steps=1, lr=0.02):
    """``steps`` SGD steps; returns the losses of the last forward, after its backward (grads kept)."""
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    with EventStorage():
        for step in range(steps):
            optimizer.zero_grad()
            losses = model(inputs)
            assert all(torch.isfinite(v) for v in losses.values()), losses
            sum(losses.values()).backward()
            if step < steps - 1:
                optimizer.step()
    return losses


def nonzero_grad(p) -> bool:
    return p.grad is not None and bool(p.grad.abs().sum() > 0)


def detections_differ(a, b, atol=1e-4) -> bool:
    for x, y in zip(a, b):
        if len(x) != len(y) or not torch.equal(x.pred_classes, y.pred_classes):
            return True
        if (x.pred_boxes.tensor - y.pred_boxes.tensor).abs().max() > atol or (x.scores - y.scores).abs().max() > atol:
            return True
    return False
