"""Mask R-CNN with the polar branch: the mask head reads the fused levels, trains, and COCO
evaluation reports "segm" beside "bbox" on synthetic data with instance masks."""
import pytest
import torch

from detectron2.data import build_detection_test_loader
from detectron2.evaluation import COCOEvaluator, inference_on_dataset
from detectron2.modeling import build_model
from detectron2.structures import PolygonMasks
from detectron2.utils.events import EventStorage

from tests.common import get_polar_cfg, random_inputs
from polar_rcnn.data import PolarDatasetMapper, register_polar_coco_instances
from polar_rcnn.data.synthetic import SyntheticConfig, generate_split


def mask_cfg(**overrides):
    return get_polar_cfg(MODEL__MASK_ON=True, **overrides)


def with_masks(inputs):
    """Box-shaped polygon masks for the random inputs' boxes."""
    for d in inputs:
        boxes = d["instances"].gt_boxes.tensor.tolist()
        d["instances"].gt_masks = PolygonMasks([[[x0, y0, x1, y0, x1, y1, x0, y1]] for x0, y0, x1, y1 in boxes])
    return inputs


@pytest.mark.parametrize("inject", ["rpn", "roi", "both"])
def test_mask_head_reads_the_roi_features_and_trains(inject):
    torch.manual_seed(0)
    model = build_model(mask_cfg(MODEL__POLAR__INJECT=inject, MODEL__POLAR__ZERO_INIT=False))
    fused = inject in ("roi", "both")
    assert model.roi_heads.mask_in_features == model.roi_heads.box_in_features
    assert all(f.endswith("_fused") == fused for f in model.roi_heads.mask_in_features)
    model.train()
    with EventStorage():
        losses = model(with_masks(random_inputs(2, (64, 80))))
        assert "loss_mask" in losses and all(torch.isfinite(v) for v in losses.values())
        sum(losses.values()).backward()
    branch = [p.grad for n, p in model.named_parameters() if "polar" in n and p.grad is not None]
    assert branch and any(g.abs().sum() > 0 for g in branch)
    mask_grads = [p.grad for p in model.roi_heads.mask_head.parameters()]
    assert all(g is not None for g in mask_grads) and any(g.abs().sum() > 0 for g in mask_grads)


def test_coco_evaluator_reports_segm_and_bbox(tmp_path):
    json_path = generate_split(str(tmp_path), "val", SyntheticConfig(
        image_size=(64, 64), num_bands=1, num_videos=1, frames_per_video=2, object_size=(16, 28), seed=5),
        progress=False)
    name = f"mask_test_{tmp_path.name}"
    register_polar_coco_instances(name, json_path, str(tmp_path / "val" / "images"), str(tmp_path / "val" / "stacks"))
    cfg = mask_cfg(MODEL__POLAR__IN_CHANNELS=4, INPUT__MIN_SIZE_TEST=64, INPUT__MAX_SIZE_TEST=64,
                   OUTPUT_DIR=str(tmp_path / "out"))
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0  # a random model: keep its detections to evaluate
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    loader = build_detection_test_loader(cfg, name, mapper=PolarDatasetMapper(cfg, is_train=False))
    (out,) = model([next(iter(loader))[0]])
    assert out["instances"].has("pred_masks") and len(out["instances"]) > 0
    evaluator = COCOEvaluator(name, output_dir=str(tmp_path / "eval"))
    results = inference_on_dataset(model, loader, evaluator)
    assert set(results) == {"bbox", "segm"}
    assert all(0.0 <= results[t]["AP"] <= 100.0 for t in ("bbox", "segm"))
