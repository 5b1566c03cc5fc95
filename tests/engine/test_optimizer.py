"""build_polar_optimizer: Detectron2's param groups, the branch's own learning rate and weight decay,
frozen parameters left out, gradient clipping, the trainer's build_optimizer."""
import pytest
import torch

from detectron2.modeling import build_model
from detectron2.solver import build_optimizer

from tests.common import get_polar_cfg
from polar_rcnn.engine import PolarTrainer
from polar_rcnn.engine.freezing import freeze_from_config
from polar_rcnn.engine.optimizer import branch_parameters, build_polar_optimizer


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


def test_unfreezing_the_branch_with_its_own_lr_is_refused():
    cfg = get_polar_cfg(MODEL__POLAR__LR_FACTOR=0.1, MODEL__FREEZE__PARTS=["polar_branch"],
                        MODEL__FREEZE__UNFREEZE_ITER=5, MODEL__FREEZE__UNFREEZE_PARTS=["polar_branch"])
    with pytest.raises(ValueError, match="MODEL.POLAR.LR_FACTOR"):
        build_polar_optimizer(cfg, _model(cfg))
    with pytest.raises(ValueError, match="LR_FACTOR must be >= 0"):
        cfg = get_polar_cfg(MODEL__POLAR__LR_FACTOR=-1.0)
        build_polar_optimizer(cfg, _model(cfg))


def test_the_trainer_builds_it():
    cfg = get_polar_cfg(MODEL__POLAR__LR_FACTOR=0.25)
    model = _model(cfg)
    hyper = _hyper(PolarTrainer.build_optimizer(cfg, model))
    assert {hyper[id(p)][0] for p in branch_parameters(model)} == {0.25 * cfg.SOLVER.BASE_LR}
