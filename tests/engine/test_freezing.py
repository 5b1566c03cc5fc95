"""MODEL.FREEZE: aliases and patterns, the optimizer, FrozenBatchNorm2d / eval mode, one train step."""
import copy
import itertools
import logging

import pytest
import torch
from torch import nn

from detectron2.engine import SimpleTrainer
from detectron2.layers import FrozenBatchNorm2d
from detectron2.utils.events import EventStorage

from tests.common import get_polar_cfg, random_inputs
from polar_rcnn.engine import PolarTrainer
from polar_rcnn.engine.freezing import is_kept_in_eval, part_of
from polar_rcnn.modeling import fusion_names

IMAGE_PARTS = ("backbone.bottom_up.", "backbone.fpn_", "backbone.top_block.")
# what each alias must freeze, written independently of the implementation
EXPECTED = {
    "image_bottom_up": lambda n: n.startswith("backbone.bottom_up."),
    "fpn": lambda n: n.startswith(("backbone.fpn_lateral", "backbone.fpn_output", "backbone.top_block.")),
    # the polar branch and the fusion modules: everything in the backbone but the image ResNet + FPN
    "polar_branch": lambda n: n.startswith("backbone.") and not n.startswith(IMAGE_PARTS),
    "rpn": lambda n: n.startswith("proposal_generator."),
    "box_head": lambda n: n.startswith("roi_heads.box_head."),
    "box_predictor": lambda n: n.startswith("roi_heads.box_predictor."),
}


def build(parts=(), seed=0, **overrides):
    cfg = get_polar_cfg(**overrides)
    cfg.MODEL.FREEZE.PARTS = list(parts)
    torch.manual_seed(seed)
    return PolarTrainer.build_model(cfg), cfg


def frozen_names(model):
    return {n for n, p in model.named_parameters() if not p.requires_grad}


def optimizer_params(optimizer):
    return {id(p) for g in optimizer.param_groups for p in g["params"]}


@pytest.mark.parametrize("alias", sorted(EXPECTED))
def test_alias_freezes_its_part_and_the_optimizer_gets_the_rest(alias):
    model, cfg = build([alias], MODEL__POLAR__FUSION="concat")  # a fusion with parameters
    names = [n for n, _ in model.named_parameters()]
    expected = {n for n in names if EXPECTED[alias](n)}
    assert expected, alias
    assert frozen_names(model) == expected
    optimizer = PolarTrainer.build_optimizer(cfg, model)
    assert optimizer_params(optimizer) == {id(p) for p in model.parameters() if p.requires_grad}


def test_polar_branch_alias_covers_fusion_modules():
    model, _ = build(["polar_branch"], MODEL__POLAR__FUSION="gate")
    frozen = frozen_names(model)
    assert any(n.startswith("backbone.polar_branch.") for n in frozen)
    assert any("fusion" in n for n in frozen), "the gate fusion's parameters are part of the polar branch"


@pytest.mark.parametrize("fusion", fusion_names())
def test_every_backbone_parameter_has_a_part(fusion):
    # a new backbone module outside image_bottom_up / fpn / polar_branch would escape the aliases
    model, _ = build(MODEL__POLAR__FUSION=fusion)
    parts = {n: part_of(n) for n, _ in model.named_parameters() if n.startswith("backbone.")}
    assert set(parts.values()) <= {"image_bottom_up", "fpn", "polar_branch"}, parts


def test_early_fusion_stack_weights_belong_to_the_polar_branch():
    model, _ = build(["image_bottom_up"], MODEL__BACKBONE__NAME="build_early_fusion_resnet_fpn_backbone")
    stack = [n for n, _ in model.named_parameters() if n.endswith("stem.stack_weight")]
    assert stack and all(part_of(n) == "polar_branch" for n in stack)
    assert not frozen_names(model) & set(stack)
    assert "backbone.bottom_up.stem.conv1.weight" in frozen_names(model)


@pytest.mark.parametrize(
    "pattern, expected",
    [
        ("roi_heads.box_head.fc1", lambda n: n.startswith("roi_heads.box_head.fc1.")),  # a module name
        ("backbone.bottom_up.res[45]*", lambda n: n.startswith(("backbone.bottom_up.res4", "backbone.bottom_up.res5"))),
        ("re:roi_heads\\..*\\.bias", lambda n: n.startswith("roi_heads.") and n.endswith(".bias")),
        ("proposal_generator.rpn_head.conv.weight", lambda n: n == "proposal_generator.rpn_head.conv.weight"),
    ],
)
def test_patterns_select_parameters_and_modules(pattern, expected):
    model, _ = build([pattern])
    want = {n for n, _ in model.named_parameters() if expected(n)}
    assert want and frozen_names(model) == want


@pytest.mark.parametrize(
    "freeze, match",
    [
        ({"PARTS": ["box_heads"]}, r"MODEL\.FREEZE\.PARTS: 'box_heads' is neither a known part"),
        ({"PARTS": ["roi_heads.nothing*"]}, r"MODEL\.FREEZE\.PARTS: 'roi_heads\.nothing\*'"),
        ({"PARTS": ["retinanet_head"]}, r"MODEL\.FREEZE\.PARTS: part 'retinanet_head' .* matches no parameter"),
        ({"PARTS": ["re:.*"]}, r"freezes every parameter"),
        ({"PARTS": ["re:roi_heads.(box"]}, r"MODEL\.FREEZE\.PARTS: 're:roi_heads\.\(box' is not a valid regular"),
        ({"PARTS": ["rpn"], "UNFREEZE_ITER": 5, "UNFREEZE_PARTS": ["box_head"]},
         r"MODEL\.FREEZE\.UNFREEZE_PARTS: 'box_head' selects no parameter that MODEL\.FREEZE\.PARTS froze"),
        ({"PARTS": ["rpn"], "UNFREEZE_ITER": 5}, r"UNFREEZE_ITER and MODEL\.FREEZE\.UNFREEZE_PARTS go together"),
        ({"PARTS": ["rpn"], "UNFREEZE_PARTS": ["rpn"]}, r"go together"),
    ],
)
def test_bad_freeze_config_raises_naming_the_key(freeze, match):
    cfg = get_polar_cfg()
    for key, value in freeze.items():
        setattr(cfg.MODEL.FREEZE, key, value)
    with pytest.raises(ValueError, match=match):
        PolarTrainer.build_model(cfg)


def test_freeze_at_is_still_honoured():
    model, _ = build(["rpn"], MODEL__BACKBONE__FREEZE_AT=2)
    frozen = frozen_names(model)
    assert {n for n in frozen if n.startswith("backbone.bottom_up.")} == {
        n for n, _ in model.named_parameters() if n.startswith(("backbone.bottom_up.stem.", "backbone.bottom_up.res2."))
    }
    assert all(not p.requires_grad for p in model.proposal_generator.parameters())


def test_frozen_batchnorm_stays_frozen_in_train_mode():
    bn = dict(MODEL__RESNETS__NORM="BN", MODEL__FPN__NORM="", MODEL__BACKBONE__FREEZE_AT=0)
    model, _ = build(["image_bottom_up"], **bn)
    bottom_up = model.backbone.bottom_up
    assert not any(isinstance(m, nn.BatchNorm2d) for m in bottom_up.modules())
    assert sum(isinstance(m, FrozenBatchNorm2d) for m in bottom_up.modules()) > 10
    for m in (model, copy.deepcopy(model)):
        m.train()
        assert m.training and m.roi_heads.training and m.backbone.polar_branch.training
        layers = [sub for sub in m.backbone.bottom_up.modules() if next(sub.children(), None) is None]
        assert layers and not any(layer.training for layer in layers)
        assert all(is_kept_in_eval(layer) for layer in layers)
        assert not any(is_kept_in_eval(sub) for sub in m.backbone.polar_branch.modules())

    # statistics of the frozen part do not move in a training forward; those of a trainable BN would
    reference, _ = build(**bn)
    reference.train()
    stats = {n: b.clone() for n, b in model.named_buffers() if n.endswith("running_mean")}
    ref_stats = {n: b.clone() for n, b in reference.named_buffers() if n.endswith("running_mean")}
    inputs = random_inputs(1, (64, 64), seed=1)
    with EventStorage():
        model(inputs)
        reference(inputs)
    assert stats and all(torch.equal(b, stats[n]) for n, b in model.named_buffers() if n in stats)
    assert any(not torch.equal(b, ref_stats[n]) for n, b in reference.named_buffers() if n in ref_stats)


def test_frozen_heads_still_compute_losses_for_the_branch():
    # the notebook's setup: everything but the polar branch frozen; the frozen RPN and ROI heads
    # must still give losses (Detectron2 computes them in training mode only) and gradients
    model, _ = build(["image_bottom_up", "fpn", "rpn", "box_head", "box_predictor"])
    model.train()
    assert model.proposal_generator.training and model.roi_heads.training
    with EventStorage():
        losses = model(random_inputs(2, (64, 64), seed=3))
    assert {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg"} <= set(losses)
    sum(losses.values()).backward()
    # (on 64 px images the anchors of p5/p6 all fall outside: their convs get zero gradients)
    grad = model.backbone.polar_branch.post["p2"].weight.grad
    assert grad is not None and grad.abs().sum() > 0
    assert all(p.grad is None for p in model.proposal_generator.parameters())


def test_one_train_step_changes_only_trainable_parameters():
    model, cfg = build(["image_bottom_up", "fpn", "rpn"])
    optimizer = PolarTrainer.build_optimizer(cfg, model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = SimpleTrainer(model, itertools.repeat(random_inputs(2, (64, 64), seed=2)), optimizer)
    trainer.train(0, 1)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert changed <= trainable
    assert {n for n in changed if n.startswith("roi_heads.box_predictor.")}, "the trainable heads did not move"
    assert {n for n in changed if n.startswith("backbone.polar_branch.post.")}, "the polar branch did not move"
    assert not any(n.startswith(("backbone.bottom_up.", "proposal_generator.")) for n in changed)


def test_parameter_table_is_logged(caplog):
    logger = logging.getLogger("polar_rcnn.engine.freezing")
    # caplog's handler directly on the logger, so that a setup_logger elsewhere cannot hide records
    logger.addHandler(caplog.handler)
    propagate, logger.propagate = logger.propagate, False
    caplog.set_level(logging.INFO, logger="polar_rcnn.engine.freezing")
    try:
        model, _ = build(["rpn", "box_head"])
    finally:
        logger.removeHandler(caplog.handler)
        logger.propagate = propagate
    text = "\n".join(r.getMessage() for r in caplog.records if r.name == "polar_rcnn.engine.freezing")
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("|")}
    rpn = sum(p.numel() for p in model.proposal_generator.parameters())
    polar = sum(p.numel() for p in model.backbone.polar_branch.parameters())
    assert [c.strip() for c in rows["rpn"].split("|")[2:4]] == ["0", f"{rpn:,}"]
    assert [c.strip() for c in rows["polar_branch"].split("|")[2:4]] == [f"{polar:,}", "0"]
    total = sum(p.numel() for p in model.parameters())
    assert sum(int(c.strip().replace(",", "")) for c in rows["total"].split("|")[2:4]) == total
