"""The baseline configs build what they promise: vanilla RGB-only, predictor-only, branch-only,
branch-then-heads (MODEL.FREEZE applied by PolarTrainer.build_model)."""
import os

import pytest
import torch

from detectron2.config import get_cfg
from detectron2.modeling import GeneralizedRCNN

from tests.common import CONFIG_DIR
from polar_rcnn import add_polar_config
from polar_rcnn.engine import PolarTrainer
from polar_rcnn.modeling import PolarRCNN

RGB_ONLY = "faster_rcnn_R_18_FPN_demo_rgb_only_polar_synth.yaml"
PREDICTOR_ONLY = "faster_rcnn_R_18_FPN_demo_rgb_predictor_only_polar_synth.yaml"
BRANCH_ONLY = "faster_rcnn_R_18_FPN_demo_branch_only_polar_synth.yaml"
BRANCH_THEN_HEADS = "faster_rcnn_R_18_FPN_demo_branch_then_heads_polar_synth.yaml"


def load(name):
    cfg = get_cfg()
    add_polar_config(cfg)
    cfg.merge_from_file(os.path.join(CONFIG_DIR, name))
    cfg.MODEL.WEIGHTS = ""
    return cfg


def trainable_prefixes(model):
    return {".".join(n.split(".")[:2]) for n, p in model.named_parameters() if p.requires_grad}


@pytest.fixture(scope="module")
def models():
    built = {}
    for name in (RGB_ONLY, PREDICTOR_ONLY, BRANCH_ONLY, BRANCH_THEN_HEADS):
        torch.manual_seed(0)
        built[name] = PolarTrainer.build_model(load(name))
    return built


def test_rgb_only_is_a_vanilla_faster_rcnn(models):
    model = models[RGB_ONLY]
    assert type(model) is GeneralizedRCNN
    assert not any("polar" in n for n, _ in model.named_parameters())
    assert all(p.requires_grad for p in model.parameters())  # demo: FREEZE_AT 0, from scratch
    cfg = load(RGB_ONLY)
    assert not cfg.INPUT.STACK.ENABLED


def test_predictor_only_trains_the_last_layer(models):
    model = models[PREDICTOR_ONLY]
    assert type(model) is GeneralizedRCNN
    assert trainable_prefixes(model) == {"roi_heads.box_predictor"}
    cfg = get_cfg()
    add_polar_config(cfg)
    cfg.merge_from_file(os.path.join(CONFIG_DIR, PREDICTOR_ONLY))
    assert cfg.MODEL.WEIGHTS == load(RGB_ONLY).OUTPUT_DIR + "/model_final.pth"


@pytest.mark.parametrize("name", [BRANCH_ONLY, BRANCH_THEN_HEADS])
def test_branch_configs_train_only_the_polar_branch_first(models, name):
    model = models[name]
    assert isinstance(model, PolarRCNN)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        n for n, _ in model.named_parameters() if n.startswith("backbone.polar_")
    }
    cfg = get_cfg()
    add_polar_config(cfg)
    cfg.merge_from_file(os.path.join(CONFIG_DIR, name))
    assert cfg.MODEL.WEIGHTS == load(RGB_ONLY).OUTPUT_DIR + "/model_final.pth"


def test_branch_then_heads_schedule():
    cfg = load(BRANCH_THEN_HEADS)
    assert 0 < cfg.MODEL.FREEZE.UNFREEZE_ITER < cfg.SOLVER.MAX_ITER
    assert set(cfg.MODEL.FREEZE.UNFREEZE_PARTS) == {"rpn", "box_head", "box_predictor"}
