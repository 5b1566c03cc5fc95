"""The optimizer of polar models: Detectron2's param groups with the stack-reading layers in groups of
their own (``MODEL.POLAR.LR_FACTOR``, ``MODEL.POLAR.WEIGHT_DECAY``), optimized by SGD, Adam or AdamW
(``SOLVER.OPTIMIZER``), with Detectron2's gradient clipping or the norm of all gradients together
(``SOLVER.CLIP_GRADIENTS.CLIP_TYPE "full_model"``)."""
import logging
from typing import Any, Dict, List, Tuple, Type

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
    with the branch's hyper-parameters from :func:`split_branch_groups`."""
    groups = get_default_optimizer_params(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
        weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
    )
    return split_branch_groups(groups, model, cfg.MODEL.POLAR.LR_FACTOR, cfg.MODEL.POLAR.WEIGHT_DECAY)


def split_branch_groups(groups: List[Dict[str, Any]], model: nn.Module, lr_factor: float,
                        weight_decay: float) -> List[Dict[str, Any]]:
    """``groups`` with the branch's parameters (:func:`branch_parameters`) in groups of their own:
    learning rate times ``lr_factor`` (``MODEL.POLAR.LR_FACTOR``) and weight decay ``weight_decay``
    (``MODEL.POLAR.WEIGHT_DECAY``; < 0: as the group's). Used when the optimizer is built and when
    :class:`~polar_rcnn.engine.hooks.UnfreezeHook` adds the groups of parameters it unfreezes."""
    factor, decay = float(lr_factor), float(weight_decay)
    if factor < 0:
        raise ValueError(f"MODEL.POLAR.LR_FACTOR must be >= 0, got {factor}")
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


#: values of SOLVER.OPTIMIZER
OPTIMIZERS: Dict[str, Type[torch.optim.Optimizer]] = {
    "SGD": torch.optim.SGD,
    "Adam": torch.optim.Adam,
    "AdamW": torch.optim.AdamW,
}


def optimizer_type(cfg) -> Tuple[Type[torch.optim.Optimizer], Dict[str, Any]]:
    """The torch optimizer class named by ``SOLVER.OPTIMIZER`` and its defaults: ``lr`` =
    ``SOLVER.BASE_LR`` and ``weight_decay`` = ``SOLVER.WEIGHT_DECAY`` (param groups override both);
    SGD adds ``SOLVER.MOMENTUM`` / ``NESTEROV``; Adam and AdamW keep torch's betas and eps (AdamW's
    decay is decoupled from the gradient, Adam's is added to it)."""
    name = cfg.SOLVER.OPTIMIZER
    if name not in OPTIMIZERS:
        raise ValueError(f"SOLVER.OPTIMIZER must be one of {', '.join(map(repr, OPTIMIZERS))}, got {name!r}")
    defaults: Dict[str, Any] = {"lr": cfg.SOLVER.BASE_LR, "weight_decay": cfg.SOLVER.WEIGHT_DECAY}
    if name == "SGD":
        defaults.update(momentum=cfg.SOLVER.MOMENTUM, nesterov=cfg.SOLVER.NESTEROV)
    return OPTIMIZERS[name], defaults


#: SOLVER.CLIP_GRADIENTS.CLIP_TYPE that clips the norm of all gradients together (Detectron2's "value"
#: and "norm" clip each parameter tensor on its own)
FULL_MODEL_CLIP = "full_model"


def with_full_model_clipping(optimizer_class: Type[torch.optim.Optimizer], max_norm: float,
                             norm_type: float) -> Type[torch.optim.Optimizer]:
    """A subclass of ``optimizer_class`` whose ``step`` first scales all gradients of its param
    groups so that their joint ``norm_type``-norm is at most ``max_norm``
    (:func:`torch.nn.utils.clip_grad_norm_`). Under DDP the gradients are already averaged, so
    every process clips alike; under AMP the grad scaler unscales before ``step``."""
    if not max_norm > 0:
        raise ValueError(f"SOLVER.CLIP_GRADIENTS.CLIP_VALUE must be > 0 for CLIP_TYPE {FULL_MODEL_CLIP!r}, got {max_norm}")

    def step(self, closure=None):
        params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type=norm_type)
        return optimizer_class.step(self, closure)

    return type(optimizer_class.__name__ + "WithFullModelClipping", (optimizer_class,), {"step": step})


def build_polar_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """``SOLVER.OPTIMIZER`` (:func:`optimizer_type`) over :func:`optimizer_param_groups`, with
    ``SOLVER.CLIP_GRADIENTS`` (Detectron2's clip types, or :data:`FULL_MODEL_CLIP`); for "SGD" the
    same optimizer as Detectron2's ``build_optimizer``."""
    optimizer_class, defaults = optimizer_type(cfg)
    groups = optimizer_param_groups(cfg, model)
    if cfg.MODEL.POLAR.LR_FACTOR != 1.0 or cfg.MODEL.POLAR.WEIGHT_DECAY >= 0:
        logger.info(
            "Polar branch: %d parameter tensors with LR x %g, weight decay %s",
            len(branch_parameters(model)), cfg.MODEL.POLAR.LR_FACTOR,
            cfg.MODEL.POLAR.WEIGHT_DECAY if cfg.MODEL.POLAR.WEIGHT_DECAY >= 0 else "as SOLVER.WEIGHT_DECAY",
        )
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if clip.ENABLED and clip.CLIP_TYPE == FULL_MODEL_CLIP:
        return with_full_model_clipping(optimizer_class, float(clip.CLIP_VALUE), float(clip.NORM_TYPE))(
            groups, **defaults)
    return maybe_add_gradient_clipping(cfg, optimizer_class)(groups, **defaults)


__all__ = ["FULL_MODEL_CLIP", "OPTIMIZERS", "branch_parameters", "build_polar_optimizer", "optimizer_param_groups", "optimizer_type",
           "with_full_model_clipping"]
