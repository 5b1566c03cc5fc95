"""MODEL.LOSS_WEIGHTS scale the four losses of polar and vanilla R-CNNs built by PolarTrainer."""
import functools

import pytest
import torch

from tests.common import get_polar_cfg, random_inputs, without
from detectron2.utils.events import EventStorage

from polar_rcnn.engine import PolarTrainer
from polar_rcnn.modeling.loss_weights import apply_loss_weights, weigh_losses

KEYS = {"RPN_CLS": "loss_rpn_cls", "RPN_LOC": "loss_rpn_loc", "ROI_CLS": "loss_cls", "ROI_LOC": "loss_box_reg"}


def _cfg(arch, **weights):
    cfg = get_polar_cfg()
    if arch == "GeneralizedRCNN":  # the vanilla RGB-only baseline
        cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
        cfg.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"
        cfg.INPUT.STACK.ENABLED = False
    for key, value in weights.items():
        cfg.MODEL.LOSS_WEIGHTS[key] = value
    return cfg


def _losses(cfg):
    torch.manual_seed(0)
    model = PolarTrainer.build_model(cfg)
    model.train()
    inputs = random_inputs(2, (64, 80), seed=1)
    if cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN":
        inputs = without(inputs, "stack")
    torch.manual_seed(1)  # proposal / ROI sampling
    with EventStorage():
        return {k: float(v.detach()) for k, v in model(inputs).items()}


@functools.lru_cache(maxsize=None)
def _unweighted(arch):
    return _losses(_cfg(arch))


@pytest.mark.parametrize("arch, key", [("PolarRCNN", "RPN_LOC"), ("GeneralizedRCNN", "ROI_CLS")])
def test_weight_zero_zeroes_one_loss_and_leaves_the_others(arch, key):
    base = _unweighted(arch)
    assert set(base) == set(KEYS.values()) and all(v > 0 for v in base.values())
    weighted = _losses(_cfg(arch, **{key: 0.0}))
    assert weighted[KEYS[key]] == 0.0
    for other, value in base.items():
        if other != KEYS[key]:
            assert weighted[other] == pytest.approx(value, rel=1e-6), other


def test_weights_multiply_and_gradients_follow():
    base = _unweighted("PolarRCNN")
    weighted = _losses(_cfg("PolarRCNN", RPN_CLS=2.0, ROI_LOC=0.5))
    assert weighted["loss_rpn_cls"] == pytest.approx(2.0 * base["loss_rpn_cls"], rel=1e-5)
    assert weighted["loss_box_reg"] == pytest.approx(0.5 * base["loss_box_reg"], rel=1e-5)
    assert weighted["loss_cls"] == pytest.approx(base["loss_cls"], rel=1e-6)

    # all weights 1: no hook at all; inference outputs are never touched
    cfg = _cfg("PolarRCNN")
    model = PolarTrainer.build_model(cfg)
    assert getattr(model, "loss_weights", None) is None
    losses = {"loss_cls": torch.tensor(1.0, requires_grad=True), "loss_mask": torch.tensor(3.0)}
    out = weigh_losses(losses, {"RPN_CLS": 1.0, "RPN_LOC": 1.0, "ROI_CLS": 0.0, "ROI_LOC": 1.0})
    out["loss_cls"].backward()
    assert float(out["loss_cls"].detach()) == 0.0 and float(out["loss_mask"]) == 3.0  # other losses untouched
    assert float(losses["loss_cls"].grad) == 0.0


def test_bad_weights_are_rejected():
    with pytest.raises(ValueError, match="MODEL.LOSS_WEIGHTS.ROI_LOC"):
        PolarTrainer.build_model(_cfg("PolarRCNN", ROI_LOC=-1.0))
    model = PolarTrainer.build_model(_cfg("PolarRCNN", ROI_LOC=2.0))
    with pytest.raises(RuntimeError, match="already has loss weights"):
        apply_loss_weights(model, {"ROI_LOC": 3.0})
