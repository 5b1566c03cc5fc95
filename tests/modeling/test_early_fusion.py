"""Early fusion: the stack as extra stem channels; image-only weights load with zero stack weights."""
import os

import pytest
import torch

from detectron2.checkpoint import DetectionCheckpointer

from tests.common import DEMO_CONFIG, TEST_STACK_CHANNELS, get_polar_cfg, random_inputs, without
from polar_rcnn.data import loader_stack_channels
from polar_rcnn.modeling import EarlyFusionFPN, EarlyFusionStem, PolarRCNN
from tests.modeling.polar_test_utils import VANILLA, build, detections_differ, max_detection_diff, nonzero_grad, predict, train_losses

EARLY = {"MODEL__BACKBONE__NAME": "build_early_fusion_resnet_fpn_backbone"}
CONFIG = os.path.join(os.path.dirname(DEMO_CONFIG), "faster_rcnn_R_18_FPN_demo_early_fusion_polar_synth.yaml")


def perturb(param, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        param.copy_(torch.randn(param.shape, generator=g) * 0.05)


def stem_of(model) -> EarlyFusionStem:
    return model.backbone.bottom_up.stem


def test_builds_with_split_stem_weights():
    model = build(**EARLY)
    assert isinstance(model, PolarRCNN) and isinstance(model.backbone, EarlyFusionFPN)
    assert model.stack_channels == TEST_STACK_CHANNELS
    stem = stem_of(model)
    assert stem.conv1.weight.shape[1] == 3
    assert stem.stack_weight.shape[1] == TEST_STACK_CHANNELS + 1  # stack + availability
    assert torch.count_nonzero(stem.stack_weight) == 0
    # no fused levels: both consumers read the (stack-aware) plain levels
    assert list(model.proposal_generator.in_features) == ["p2", "p3", "p4", "p5", "p6"]
    assert list(model.roi_heads.in_features) == ["p2", "p3", "p4", "p5"]


@pytest.fixture(scope="module")
def rgb_checkpoint(tmp_path_factory):
    vanilla = build(seed=1, **VANILLA)
    folder = tmp_path_factory.mktemp("rgb")
    DetectionCheckpointer(vanilla, save_dir=str(folder)).save("rgb")
    return vanilla, str(folder / "rgb.pth")


def test_load_state_dict_of_image_only_model_zeroes_stack_weights(rgb_checkpoint):
    vanilla, _ = rgb_checkpoint
    model = build(seed=2, **EARLY)
    perturb(stem_of(model).stack_weight)
    model.load_state_dict(vanilla.state_dict(), strict=True)  # no missing key: the stem fills it
    assert torch.equal(stem_of(model).conv1.weight, vanilla.backbone.bottom_up.stem.conv1.weight)
    assert torch.count_nonzero(stem_of(model).stack_weight) == 0


def test_checkpointer_loads_image_only_weights_and_equals_the_rgb_model(rgb_checkpoint):
    vanilla, path = rgb_checkpoint
    model = build(seed=2, **EARLY)
    perturb(stem_of(model).stack_weight)
    DetectionCheckpointer(model).load(path)
    assert torch.count_nonzero(stem_of(model).stack_weight) == 0
    for name, value in vanilla.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name

    inputs = random_inputs(2, [(96, 128), (80, 112)], with_instances=False, seed=3)
    expected = predict(vanilla, without(inputs, "stack"))
    assert max_detection_diff(predict(model, inputs), expected) < 1e-5
    # and the stem does read the stack once its weights are non-zero
    perturb(stem_of(model).stack_weight)
    assert detections_differ(predict(model, inputs), expected)


def test_freeze_at_keeps_stack_weights_trainable():
    model = build(MODEL__BACKBONE__FREEZE_AT=2, **EARLY)
    stem = stem_of(model)
    assert not stem.conv1.weight.requires_grad and stem.stack_weight.requires_grad
    train_losses(model, random_inputs(2, (64, 96), seed=4))
    assert nonzero_grad(stem.stack_weight)
    assert stem.conv1.weight.grad is None


def test_wrong_input_channels_raise():
    model = build(**EARLY)
    with pytest.raises(ValueError, match=f"stack {TEST_STACK_CHANNELS}"):
        model.backbone(torch.rand(1, 3, 64, 64))


def test_shipped_config_builds_and_runs():
    cfg = get_polar_cfg()
    cfg.merge_from_file(CONFIG)  # its own stack channels and normalization
    model = build(cfg=cfg)
    assert isinstance(model.backbone, EarlyFusionFPN)
    losses = train_losses(model, random_inputs(1, (64, 96), channels=loader_stack_channels(cfg), seed=5))
    assert "loss_rpn_cls" in losses
