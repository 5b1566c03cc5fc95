"""The optimizer of polar models: Detectron2's SGD with the stack-reading layers in param groups of
their own (``MODEL.POLAR.LR_FACTOR``, ``MODEL.POLAR.WEIGHT_DECAY``)."""
import logging
from typing import Any, Dict, List

import torch
from torch import nn

from detectron2.solver import get_default_optimizer_params
from detectron2.solver.build import maybe_add_gradient_clipping, reduce_param_groups

from .freezing import PART_ALIASES, unwrap

logger = logging.getLogger(__name__)

#: the freezing alias whose parameters get the branch's hyper-parameters (one definition of "the branch")
BRANCH_PART = "polar_branch"


def branch_parameters(model: nn.Module) -> List[nn.Parameter]:
    """The trainable parameters of the modules that read the stack (the ``polar_branch`` part of
    ``MODEL.FREEZE``: the late-fusion branch and fusions, the early-fusion stem's stack weights)."""
    matches = PART_ALIASES[BRANCH_PART][1]
    return [p for n, p in unwrap(model).named_parameters() if p.requires_grad and matches(n)]


def optimizer_param_groups(cfg, model: nn.Module) -> List[Dict[str, Any]]:
    """Param groups as :func:`detectron2.solver.build_optimizer` makes them
    (:func:`get_default_optimizer_params` over the trainable parameters: frozen ones never appear),
    with the branch's learning rate multiplied by ``MODEL.POLAR.LR_FACTOR`` and its weight decay set
    to ``MODEL.POLAR.WEIGHT_DECAY`` (< 0: as the other parameters)."""
    factor, decay = float(cfg.MODEL.POLAR.LR_FACTOR), float(cfg.MODEL.POLAR.WEIGHT_DECAY)
    if factor < 0:
        raise ValueError(f"MODEL.POLAR.LR_FACTOR must be >= 0, got {factor}")
    if (factor != 1.0 or decay >= 0) and _unfreezes_branch(cfg):
        raise ValueError(
            "MODEL.FREEZE.UNFREEZE_PARTS unfreezes the polar branch, whose late param groups get the default "
            "hyper-parameters: set MODEL.POLAR.LR_FACTOR: 1.0 and MODEL.POLAR.WEIGHT_DECAY: -1.0, or train "
            "the branch from the start"
        )
    groups = get_default_optimizer_params(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
        weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
    )
    if factor == 1.0 and decay < 0:
        return groups
    branch = {id(p) for p in branch_parameters(model)}
    split: List[Dict[str, Any]] = []
    for group in groups:
        for in_branch in (False, True):
            params = [p for p in group["params"] if (id(p) in branch) == in_branch]
            if not params:
                continue
            hyper = {k: v for k, v in group.items() if k != "params"}
            if in_branch:
                hyper["lr"] = hyper["lr"] * factor
                if decay >= 0:
                    hyper["weight_decay"] = decay
            split.append({"params": params, **hyper})
    return reduce_param_groups(split)


def _unfreezes_branch(cfg) -> bool:
    parts = list(cfg.MODEL.FREEZE.UNFREEZE_PARTS) if cfg.MODEL.FREEZE.UNFREEZE_ITER > 0 else []
    return BRANCH_PART in parts


def build_polar_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """SGD over :func:`optimizer_param_groups` with ``SOLVER.MOMENTUM`` / ``NESTEROV`` /
    ``WEIGHT_DECAY`` and ``SOLVER.CLIP_GRADIENTS``, as Detectron2's ``build_optimizer``."""
    groups = optimizer_param_groups(cfg, model)
    if cfg.MODEL.POLAR.LR_FACTOR != 1.0 or cfg.MODEL.POLAR.WEIGHT_DECAY >= 0:
        logger.info(
            "Polar branch: %d parameter tensors with LR x %g, weight decay %s",
            len(branch_parameters(model)), cfg.MODEL.POLAR.LR_FACTOR,
            cfg.MODEL.POLAR.WEIGHT_DECAY if cfg.MODEL.POLAR.WEIGHT_DECAY >= 0 else "as SOLVER.WEIGHT_DECAY",
        )
    return maybe_add_gradient_clipping(cfg, torch.optim.SGD)(
        groups,
        lr=cfg.SOLVER.BASE_LR,
        momentum=cfg.SOLVER.MOMENTUM,
        nesterov=cfg.SOLVER.NESTEROV,
        weight_decay=cfg.SOLVER.WEIGHT_DECAY,
    )


__all__ = ["branch_parameters", "build_polar_optimizer", "optimizer_param_groups"]
