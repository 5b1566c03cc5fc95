"""Weights of the four detection losses (``MODEL.LOSS_WEIGHTS``), for any Detectron2 meta-architecture.

A forward hook on the meta-architecture multiplies the entries of the training loss dict by name,
so the same mechanism serves :class:`~polar_rcnn.modeling.PolarRCNN`, the vanilla
``GeneralizedRCNN`` baselines and RetinaNet without another class:

======== =========================== =====================================================
key      loss dict entries           what
======== =========================== =====================================================
RPN_CLS  ``loss_rpn_cls``            RPN objectness
RPN_LOC  ``loss_rpn_loc``            RPN box regression
ROI_CLS  ``loss_cls*``               box classification (ROI box predictor, cascade stages,
                                     RetinaNet head)
ROI_LOC  ``loss_box_reg*``           box regression (same heads)
======== =========================== =====================================================

They multiply on top of Detectron2's own ``MODEL.RPN.LOSS_WEIGHT`` / ``BBOX_REG_LOSS_WEIGHT`` and
``MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT``; other losses (``loss_mask``, ...) are left alone.
:class:`~polar_rcnn.engine.PolarTrainer` applies them when it builds the model; in a training loop
of your own call :func:`apply_loss_weights` after ``build_model``. The logged losses are the
weighted ones.
"""
import logging
import math
from typing import Dict, Mapping

from torch import nn

from detectron2.config import CfgNode

logger = logging.getLogger(__name__)

#: config key -> prefix of the loss dict entries it weighs
LOSS_PREFIXES = {"RPN_CLS": "loss_rpn_cls", "RPN_LOC": "loss_rpn_loc", "ROI_CLS": "loss_cls", "ROI_LOC": "loss_box_reg"}


def loss_weights_from_config(cfg) -> Dict[str, float]:
    """``MODEL.LOSS_WEIGHTS`` as {key: weight}; ValueError for a negative or non-finite weight."""
    weights = {key: float(cfg.MODEL.LOSS_WEIGHTS[key]) for key in LOSS_PREFIXES}
    for key, value in weights.items():
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"MODEL.LOSS_WEIGHTS.{key} must be a finite number >= 0, got {value}")
    return weights


def weigh_losses(losses: Mapping, weights: Mapping[str, float]) -> Dict:
    """``losses`` with each entry multiplied by the weight of the key whose prefix it starts with."""
    out = {}
    for name, value in losses.items():
        weight = next((weights[k] for k, prefix in LOSS_PREFIXES.items() if name.startswith(prefix)), 1.0)
        out[name] = value if weight == 1.0 else value * weight
    return out


def _hook(module: nn.Module, inputs, output):
    # training forward of a Detectron2 meta-architecture returns the loss dict; inference is untouched
    if module.training and isinstance(output, dict):
        return weigh_losses(output, module.loss_weights)
    return None


def apply_loss_weights(model: nn.Module, weights) -> nn.Module:
    """Weigh the training losses of ``model`` (a meta-architecture) by ``weights``: a config (its
    ``MODEL.LOSS_WEIGHTS``) or {key: weight}. All weights 1 adds nothing. Returns ``model``."""
    if isinstance(weights, CfgNode):  # a CfgNode is a Mapping too: test it first
        weights = loss_weights_from_config(weights)
    unknown = set(weights) - set(LOSS_PREFIXES)
    if unknown:
        raise KeyError(f"unknown loss weights {sorted(unknown)}; the keys are {list(LOSS_PREFIXES)}")
    weights = {k: float(weights.get(k, 1.0)) for k in LOSS_PREFIXES}
    if getattr(model, "loss_weights", None) is not None:
        raise RuntimeError(f"{type(model).__name__} already has loss weights {model.loss_weights}")
    if all(w == 1.0 for w in weights.values()):
        return model
    model.loss_weights = weights
    model.register_forward_hook(_hook)
    logger.info("Loss weights (MODEL.LOSS_WEIGHTS): %s", ", ".join(f"{k} {v:g}" for k, v in weights.items()))
    return model
