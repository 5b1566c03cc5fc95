"""build_polar_optimizer: Detectron2's param groups, the branch's own learning rate and weight decay,
frozen parameters left out, gradient clipping, the trainer's build_optimizer, SOLVER.OPTIMIZER."""
import os
from types import SimpleNamespace

import pytest
import torch

from detectron2.modeling import build_model
from detectron2.solver import build_optimizer

from tests.common import CONFIG_DIR, get_polar_cfg
from polar_rcnn.engine import PolarTrainer, UnfreezeHook
from polar_rcnn.engine.freezing import freeze_from_config
from polar_rcnn.engine.optimizer import OPTIMIZERS, branch_parameters, build_polar_optimizer


def _model(cfg):
    return freeze_from_config(cfg, build_model(cfg))


def _hyper(optimizer):
    """parameter id -> (lr, weight_decay) of its group."""
    wd = optimizer.defaults["weight_decay"]
    return {id(p): (g["lr"], g.get("weight_decay", wd)) for g in optimizer.param_groups for p in g["params"]}


def test_defaults_give_detectron2s_groups():
    cfg = get_polar_cfg(SOLVER__BIAS_LR_FACTOR=2.0, SOLVER__WEIGHT_DECAY_NORM=0.0)
    model = _model(cfg)
    assert _hyper(build_polar_optimizer(cfg, model)) == _hyper(build_optimizer(cfg, model))


def test_branch_gets_its_own_lr_and_weight_decay():
    cfg = get_polar_cfg(MODEL__POLAR__LR_FACTOR=0.1, MODEL__POLAR__WEIGHT_DECAY=0.01, SOLVER__BASE_LR=0.02,
                        SOLVER__BIAS_LR_FACTOR=2.0, SOLVER__WEIGHT_DECAY=1e-4)
    model = _model(cfg)
    hyper = _hyper(build_polar_optimizer(cfg, model))
    branch = {id(p) for p in branch_parameters(model)}
    names = dict(model.named_parameters())
    assert branch and {id(p) for n, p in names.items() if "polar_branch" in n} <= branch
    for name, p in names.items():
        lr, wd = hyper[id(p)]
        bias = 2.0 if name.endswith(".bias") else 1.0
        if id(p) in branch:
            assert lr == pytest.approx(0.02 * 0.1 * bias) and wd == 0.01, name
        else:
            assert lr == pytest.approx(0.02 * bias), name
            assert wd in (1e-4, cfg.SOLVER.WEIGHT_DECAY_NORM), name


def test_frozen_parameters_never_reach_the_optimizer():
    cfg = get_polar_cfg(MODEL__POLAR__LR_FACTOR=0.5, MODEL__FREEZE__PARTS=["image_bottom_up", "fpn"])
    model = _model(cfg)
    in_optimizer = set(_hyper(build_polar_optimizer(cfg, model)))
    for name, p in model.named_parameters():
        assert (id(p) in in_optimizer) == p.requires_grad, name
    assert not model.backbone.bottom_up.stem.conv1.weight.requires_grad


def test_gradient_clipping_is_honoured():
    cfg = get_polar_cfg(MODEL__POLAR__LR_FACTOR=0.5, SOLVER__WEIGHT_DECAY=0.0)
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "value"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1e-3
    model = _model(cfg)
    optimizer = build_polar_optimizer(cfg, model)
    assert type(optimizer) is not torch.optim.SGD and isinstance(optimizer, torch.optim.SGD)
    for q in model.parameters():
        q.grad = torch.zeros_like(q) if q.requires_grad else None
    p = branch_parameters(model)[0]
    p.grad.fill_(10.0)
    before = p.detach().clone()
    optimizer.step()  # the gradient clipped to 1e-3, then a first SGD step at 0.5 x BASE_LR
    assert torch.allclose(before - p.detach(), torch.full_like(p, 1e-3 * 0.5 * cfg.SOLVER.BASE_LR), rtol=1e-3)


def test_an_unfrozen_branch_gets_its_own_lr_and_decay():
    # MODEL.FREEZE.UNFREEZE_PARTS ["polar_branch"]: the groups the hook adds carry LR_FACTOR / WEIGHT_DECAY
    # as if the branch had trained from the start
    cfg = get_polar_cfg(MODEL__POLAR__LR_FACTOR=0.1, MODEL__POLAR__WEIGHT_DECAY=0.01,
                        MODEL__FREEZE__PARTS=["polar_branch"], MODEL__FREEZE__UNFREEZE_ITER=5,
                        MODEL__FREEZE__UNFREEZE_PARTS=["polar_branch"])
    model = _model(cfg)
    optimizer = build_polar_optimizer(cfg, model)
    assert not branch_parameters(model)
    hook = UnfreezeHook(cfg)
    hook.trainer = SimpleNamespace(model=model, optimizer=optimizer, iter=5)
    hook.unfreeze()
    branch = branch_parameters(model)
    assert branch
    hyper = _hyper(optimizer)
    assert {hyper[id(p)][1] for p in branch} == {0.01}
    lr = 0.1 * cfg.SOLVER.BASE_LR
    assert {hyper[id(p)][0] for p in branch} <= {lr, lr * cfg.SOLVER.BIAS_LR_FACTOR}
    with pytest.raises(ValueError, match="LR_FACTOR must be >= 0"):
        cfg = get_polar_cfg(MODEL__POLAR__LR_FACTOR=-1.0)
        build_polar_optimizer(cfg, _model(cfg))


def test_the_trainer_builds_it():
    cfg = get_polar_cfg(MODEL__POLAR__LR_FACTOR=0.25)
    model = _model(cfg)
    hyper = _hyper(PolarTrainer.build_optimizer(cfg, model))
    assert {hyper[id(p)][0] for p in branch_parameters(model)} == {0.25 * cfg.SOLVER.BASE_LR}


# ------------------------------------------------------------------------------ SOLVER.OPTIMIZER
@pytest.mark.parametrize("name, expected", [("SGD", torch.optim.SGD), ("Adam", torch.optim.Adam),
                                            ("AdamW", torch.optim.AdamW)])
def test_solver_optimizer_picks_the_type_and_keeps_the_groups(name, expected):
    cfg = get_polar_cfg(SOLVER__OPTIMIZER=name, MODEL__POLAR__LR_FACTOR=0.1, MODEL__POLAR__WEIGHT_DECAY=0.01,
                        SOLVER__BASE_LR=1e-3, SOLVER__BIAS_LR_FACTOR=2.0, SOLVER__WEIGHT_DECAY=1e-4,
                        SOLVER__WEIGHT_DECAY_NORM=0.0)
    model = _model(cfg)
    optimizer = build_polar_optimizer(cfg, model)
    assert type(optimizer) is expected
    assert optimizer.defaults["lr"] == 1e-3 and optimizer.defaults["weight_decay"] == 1e-4
    if name == "SGD":
        assert optimizer.defaults["momentum"] == cfg.SOLVER.MOMENTUM
    else:
        assert optimizer.defaults["betas"] == (0.9, 0.999) and "momentum" not in optimizer.defaults
    # the param groups are the same, whichever optimizer: branch LR x 0.1, its own decay, bias LR x 2
    sgd = cfg.clone()
    sgd.SOLVER.OPTIMIZER = "SGD"
    hyper = _hyper(optimizer)
    assert hyper == _hyper(build_polar_optimizer(sgd, model))
    branch = {id(p) for p in branch_parameters(model)}
    assert branch
    for pname, p in model.named_parameters():
        lr, wd = hyper[id(p)]
        bias = 2.0 if pname.endswith(".bias") else 1.0
        assert lr == pytest.approx(1e-3 * bias * (0.1 if id(p) in branch else 1.0)), pname
        assert wd in ((0.01,) if id(p) in branch else (1e-4, 0.0)), pname


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_adam_steps_with_gradient_clipping(name):
    cfg = get_polar_cfg(SOLVER__OPTIMIZER=name, SOLVER__BASE_LR=1e-2, SOLVER__WEIGHT_DECAY=0.0)
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "value"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1e-3
    model = _model(cfg)
    optimizer = build_polar_optimizer(cfg, model)
    assert isinstance(optimizer, OPTIMIZERS[name]) and type(optimizer) is not OPTIMIZERS[name]
    for q in model.parameters():
        q.grad = torch.zeros_like(q) if q.requires_grad else None
    p = branch_parameters(model)[0]
    p.grad.copy_(torch.linspace(-5.0, 5.0, p.numel()).view_as(p))
    before = p.detach().clone()
    optimizer.step()
    # a first Adam step moves every parameter by lr * sign(grad) (bias-corrected m / sqrt(v)); the
    # clipped gradient (|g| <= 1e-3) still has the sign of the raw one
    step = before - p.detach()
    moved = p.grad != 0
    assert torch.allclose(step[moved], 1e-2 * torch.sign(p.grad[moved]), rtol=1e-3)
    assert p.grad.abs().max() <= 1e-3  # clipped in place before the step
    assert optimizer.state[p]["exp_avg"].abs().max() <= 1e-4 + 1e-9  # (1 - beta1) x clipped gradient


def test_unknown_optimizer_names_the_key_and_the_choices():
    cfg = get_polar_cfg(SOLVER__OPTIMIZER="adam")
    with pytest.raises(ValueError, match=r"SOLVER.OPTIMIZER must be one of 'SGD', 'Adam', 'AdamW', got 'adam'"):
        build_polar_optimizer(cfg, _model(cfg))


def test_the_trainer_builds_adam_for_retinanet():
    cfg = get_polar_cfg(SOLVER__OPTIMIZER="AdamW", MODEL__POLAR__LR_FACTOR=0.5)
    cfg.merge_from_file(os.path.join(CONFIG_DIR, "retinanet_R_18_FPN_demo_polar_synth.yaml"))
    model = _model(cfg)
    optimizer = PolarTrainer.build_optimizer(cfg, model)
    assert type(optimizer) is torch.optim.AdamW
    assert {_hyper(optimizer)[id(p)][0] for p in branch_parameters(model)} == {0.5 * cfg.SOLVER.BASE_LR}
    assert {id(p) for p in model.parameters() if p.requires_grad} == set(_hyper(optimizer))


@pytest.mark.parametrize("name", ["SGD", "Adam"])
def test_full_model_clipping_scales_all_gradients_together(name):
    cfg = get_polar_cfg(SOLVER__OPTIMIZER=name, SOLVER__WEIGHT_DECAY=0.0, SOLVER__MOMENTUM=0.0)
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0
    model = _model(cfg)
    optimizer = build_polar_optimizer(cfg, model)
    assert isinstance(optimizer, OPTIMIZERS[name]) and type(optimizer) is not OPTIMIZERS[name]
    params = [q for q in model.parameters() if q.requires_grad]
    for q in model.parameters():
        q.grad = None
    a, b = params[0], params[1]
    a.grad = torch.full_like(a, 3.0)  # joint norm of the two: 5 (3 on a's elements, 4 on b's, per element)
    b.grad = torch.full_like(b, 4.0)
    joint = torch.sqrt(a.grad.square().sum() + b.grad.square().sum())
    before = [a.detach().clone(), b.detach().clone()]
    optimizer.step()
    assert torch.allclose(a.grad, torch.full_like(a, 3.0) / joint, rtol=1e-4)  # both scaled by the same factor
    assert torch.allclose(b.grad, torch.full_like(b, 4.0) / joint, rtol=1e-4)
    if name == "SGD":  # then the step, with the clipped gradient
        lr = next(g["lr"] for g in optimizer.param_groups if any(p is a for p in g["params"]))
        assert torch.allclose(before[0] - a.detach(), lr * a.grad, rtol=1e-3, atol=1e-9)
    assert not torch.equal(before[0], a.detach())


def test_full_model_clipping_is_state_dict_compatible_and_rejects_a_bad_norm():
    cfg = get_polar_cfg()
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"
    model = _model(cfg)
    optimizer = build_polar_optimizer(cfg, model)
    plain = torch.optim.SGD(optimizer.param_groups, lr=cfg.SOLVER.BASE_LR)
    plain.load_state_dict(optimizer.state_dict())  # checkpoints load into either
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.0
    with pytest.raises(ValueError, match="CLIP_VALUE must be > 0"):
        build_polar_optimizer(cfg, model)
