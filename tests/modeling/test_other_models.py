"""The polar branch under Mask R-CNN and RetinaNet, and every ResNet depth."""
import os

import pytest
import torch

from detectron2.modeling import build_backbone

from tests.common import CONFIG_DIR, TEST_STACK_CHANNELS, get_polar_cfg, random_inputs, without
from polar_rcnn.data import loader_stack_channels
from polar_rcnn.modeling import PolarFPN, PolarRetinaNet, fused_name
from tests.modeling.polar_test_utils import VANILLA, add_box_masks, build, max_detection_diff, nonzero_grad, predict, train_losses

RETINA = {"MODEL__META_ARCHITECTURE": "PolarRetinaNet",
          "MODEL__BACKBONE__NAME": "build_polar_retinanet_resnet_fpn_backbone",
          "MODEL__RETINANET__NUM_CLASSES": 3,
          "MODEL__RESNETS__OUT_FEATURES": ["res3", "res4", "res5"],  # as Detectron2's RetinaNet: no P2
          "MODEL__FPN__IN_FEATURES": ["res3", "res4", "res5"],
          "MODEL__RETINANET__SCORE_THRESH_TEST": 0.0}  # untrained scores are ~0.01 (prior)
RETINA_LEVELS = ["p3", "p4", "p5", "p6", "p7"]


# ------------------------------------------------------------------------------------- Mask R-CNN
@pytest.mark.parametrize("inject", ["rpn", "roi", "both"])
def test_mask_head_reads_the_injected_features(inject):
    model = build(MODEL__MASK_ON=True, MODEL__POLAR__INJECT=inject)
    levels = ["p2", "p3", "p4", "p5"]
    expected = [fused_name(f) for f in levels] if inject in ("roi", "both") else levels
    assert list(model.roi_heads.mask_in_features) == expected
    assert list(model.roi_heads.box_in_features) == expected


def test_mask_rcnn_trains_and_equals_vanilla_untrained():
    model = build(seed=2, MODEL__MASK_ON=True, MODEL__POLAR__INJECT="roi", MODEL__POLAR__FUSION="gate")
    losses = train_losses(model, add_box_masks(random_inputs(2, (64, 96), seed=4)))
    assert "loss_mask" in losses
    assert nonzero_grad(model.backbone.polar_branch.post["p2"].weight)

    few = {"MODEL__MASK_ON": True, "TEST__DETECTIONS_PER_IMAGE": 10}  # pasting masks is slow on CPU
    vanilla = build(seed=1, **few, **VANILLA)
    polar = build(seed=2, **few, MODEL__POLAR__INJECT="both", MODEL__POLAR__FUSION="gate")
    polar.load_state_dict(vanilla.state_dict(), strict=False)
    inputs = random_inputs(1, (80, 96), with_instances=False, seed=3)
    result = predict(polar, inputs)
    assert result[0].pred_masks.shape[-2:] == (80, 96)
    assert max_detection_diff(result, predict(vanilla, without(inputs, "stack"))) < 1e-5


# --------------------------------------------------------------------------------------- RetinaNet
def test_retinanet_head_reads_fused_levels_and_trains():
    model = build(**RETINA)
    assert isinstance(model, PolarRetinaNet) and isinstance(model.backbone, PolarFPN)
    assert model.head_in_features == [fused_name(f) for f in RETINA_LEVELS]
    assert sorted(model.backbone.polar_branch.level_names) == sorted(RETINA_LEVELS)
    losses = train_losses(model, random_inputs(2, (64, 96), seed=4))
    assert set(losses) == {"loss_cls", "loss_box_reg"}
    assert nonzero_grad(model.backbone.polar_branch.post["p3"].weight)
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == []


def test_retinanet_untrained_equals_vanilla_retinanet():
    vanilla = build(seed=1, **{**RETINA, "MODEL__META_ARCHITECTURE": "RetinaNet",
                               "MODEL__BACKBONE__NAME": "build_retinanet_resnet_fpn_backbone"})
    polar = build(seed=2, **RETINA)
    incompatible = polar.load_state_dict(vanilla.state_dict(), strict=False)
    assert incompatible.unexpected_keys == []
    inputs = random_inputs(2, [(64, 96), (72, 80)], with_instances=False, seed=3)
    assert max_detection_diff(predict(polar, inputs), predict(vanilla, without(inputs, "stack"))) < 1e-5


def test_retinanet_early_fusion_trains():
    model = build(**{**RETINA, "MODEL__BACKBONE__NAME": "build_early_fusion_retinanet_resnet_fpn_backbone"})
    assert model.head_in_features == RETINA_LEVELS
    train_losses(model, random_inputs(2, (64, 96), seed=4))
    assert nonzero_grad(model.backbone.bottom_up.stem.stack_weight)


def test_retinanet_rejects_roi_injection():
    with pytest.raises(ValueError, match="MODEL.POLAR.INJECT: 'rpn'"):
        build(MODEL__POLAR__INJECT="roi", **RETINA)


def test_shipped_retinanet_config_builds_and_runs():
    cfg = get_polar_cfg()
    cfg.merge_from_file(os.path.join(CONFIG_DIR, "retinanet_R_18_FPN_demo_polar_synth.yaml"))
    model = build(cfg=cfg)
    assert isinstance(model, PolarRetinaNet)
    model.eval()
    with torch.no_grad():
        (out,) = model(random_inputs(1, (64, 96), channels=loader_stack_channels(cfg), with_instances=False))
    assert out["instances"].image_size == (64, 96)


# ------------------------------------------------------------------------------------------ depths
BLOCKS = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}


@pytest.mark.parametrize("depth", sorted(BLOCKS))
def test_every_resnet_depth_builds(depth):
    cfg = get_polar_cfg(MODEL__RESNETS__DEPTH=depth, MODEL__RESNETS__RES2_OUT_CHANNELS=64 if depth < 50 else 256)
    torch.manual_seed(0)
    backbone = build_backbone(cfg)
    assert [len(s) for s in backbone.bottom_up.stages] == BLOCKS[depth]
    shapes = backbone.output_shape()
    assert shapes[fused_name("p2")].channels == cfg.MODEL.FPN.OUT_CHANNELS
    assert backbone.polar_branch.pre.weight.shape[1] == TEST_STACK_CHANNELS


@pytest.mark.parametrize("depth", [18, 34])
@pytest.mark.parametrize("backbone", ["build_polar_resnet_fpn_backbone", "build_early_fusion_resnet_fpn_backbone"])
def test_small_depths_need_res2_out_channels_64(depth, backbone):
    cfg = get_polar_cfg(MODEL__RESNETS__DEPTH=depth, MODEL__RESNETS__RES2_OUT_CHANNELS=256, MODEL__BACKBONE__NAME=backbone)
    with pytest.raises(ValueError, match="MODEL.RESNETS.RES2_OUT_CHANNELS: 64"):
        build_backbone(cfg)


def test_unknown_depth_raises():
    with pytest.raises(ValueError, match="MODEL.RESNETS.DEPTH"):
        build_backbone(get_polar_cfg(MODEL__RESNETS__DEPTH=42))
