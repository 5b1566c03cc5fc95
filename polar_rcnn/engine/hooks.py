"""Training hooks: :class:`UnfreezeHook` (``MODEL.FREEZE.UNFREEZE_ITER`` / ``UNFREEZE_PARTS``) and
:class:`BestCheckpointer` (``TEST.BEST_CHECKPOINT_METRIC`` / ``_MODE``)."""
import json
import logging
import os
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch.nn.parallel import DistributedDataParallel

from detectron2.config import configurable
from detectron2.engine import HookBase, create_ddp_model, hooks
from detectron2.solver import get_default_optimizer_params

from ..utils.atomic import atomic_write_text
from .freezing import parameter_table, select_unfreeze_parameters, unfreeze_parameters, unwrap
from .optimizer import split_branch_groups

logger = logging.getLogger(__name__)


def add_param_groups(optimizer: torch.optim.Optimizer, scheduler: Optional[Any], groups: List[Dict[str, Any]]) -> None:
    """Append ``groups`` to ``optimizer`` and their base learning rates to ``scheduler.base_lrs``
    (Detectron2's ``LRMultiplier`` keeps one per group), so that they follow the schedule.

    A group's ``"lr"`` (default: the optimizer's) is its *base* learning rate; it starts at the
    schedule's current multiplier times that. ``scheduler.base_lrs`` that are already as long as
    the new group count (loaded from a checkpoint) are kept.
    """
    multiplier = 1.0
    if scheduler is not None and scheduler.base_lrs and scheduler.base_lrs[0]:
        multiplier = optimizer.param_groups[0]["lr"] / scheduler.base_lrs[0]
    for group in groups:
        base_lr = group.get("lr", optimizer.defaults["lr"])
        optimizer.add_param_group({**group, "lr": base_lr * multiplier, "initial_lr": base_lr})
        if scheduler is not None and len(scheduler.base_lrs) < len(optimizer.param_groups):
            scheduler.base_lrs.append(base_lr)
    if scheduler is not None and len(scheduler.base_lrs) != len(optimizer.param_groups):
        raise RuntimeError(
            f"the LR scheduler has {len(scheduler.base_lrs)} base learning rates for "
            f"{len(optimizer.param_groups)} optimizer param groups; was the checkpoint saved with another "
            "MODEL.FREEZE schedule?"
        )


class UnfreezeHook(HookBase):
    """Before the step of iteration ``unfreeze_iter``, let ``parts`` (frozen by ``MODEL.FREEZE.PARTS``)
    train: ``requires_grad=True``, new optimizer param groups (with Detectron2's default per-parameter
    hyper-parameters, as :func:`detectron2.solver.build_optimizer` would have given them, and the
    branch's ``MODEL.POLAR.LR_FACTOR`` / ``WEIGHT_DECAY`` for the parameters that read the stack) and
    their base learning rates in the trainer's LR scheduler, so they follow the same schedule.

    Resuming: the hook's state (``{"unfrozen": bool}``) is checkpointed; loading a state saved after
    the unfreeze applies it at once, before the optimizer and scheduler states are loaded, so that
    their param groups match. Resuming later than ``unfreeze_iter`` from a checkpoint without that
    state also unfreezes before training starts.

    DDP: DistributedDataParallel only reduces parameters that required grad when it was built, so
    the hook re-wraps the model (on every process at the same iteration; custom DDP comm hooks are
    not carried over).
    """

    @configurable
    def __init__(
        self,
        *,
        unfreeze_iter: int,
        parts: Sequence[str],
        freeze_at: int = 0,
        optimizer_params: Optional[Dict[str, Any]] = None,
        branch_lr_factor: float = 1.0,
        branch_weight_decay: float = -1.0,
        ddp_kwargs: Optional[Dict[str, Any]] = None,
    ):
        """
        Args:
            unfreeze_iter: iteration (>= 1) whose step first trains ``parts``.
            parts: aliases or patterns, see :mod:`polar_rcnn.engine.freezing`.
            freeze_at: ``MODEL.BACKBONE.FREEZE_AT``; what it freezes stays frozen.
            optimizer_params: keyword arguments of :func:`get_default_optimizer_params` for the new
                groups (``base_lr``, ``weight_decay_norm``, ...); default: the optimizer's defaults.
            branch_lr_factor, branch_weight_decay: ``MODEL.POLAR.LR_FACTOR`` / ``WEIGHT_DECAY`` for the
                unfrozen parameters that read the stack, as when the optimizer is built
                (:func:`~polar_rcnn.engine.optimizer.split_branch_groups`).
            ddp_kwargs: arguments of :func:`create_ddp_model` when re-wrapping a DDP model
                (default: ``broadcast_buffers=False``, as :class:`DefaultTrainer`).
        """
        if unfreeze_iter < 1:
            raise ValueError(f"MODEL.FREEZE.UNFREEZE_ITER must be >= 1, got {unfreeze_iter}")
        if not parts:
            raise ValueError("MODEL.FREEZE.UNFREEZE_PARTS is empty: nothing to unfreeze")
        self.unfreeze_iter = unfreeze_iter
        self.parts = list(parts)
        self.freeze_at = freeze_at
        self.optimizer_params = dict(optimizer_params or {})
        self.branch_lr_factor, self.branch_weight_decay = float(branch_lr_factor), float(branch_weight_decay)
        self.ddp_kwargs = {"broadcast_buffers": False} if ddp_kwargs is None else dict(ddp_kwargs)
        self.unfrozen = False

    @classmethod
    def from_config(cls, cfg):
        return {
            "unfreeze_iter": cfg.MODEL.FREEZE.UNFREEZE_ITER,
            "parts": list(cfg.MODEL.FREEZE.UNFREEZE_PARTS),
            "freeze_at": cfg.MODEL.BACKBONE.FREEZE_AT,
            "optimizer_params": {  # as detectron2.solver.build_optimizer
                "base_lr": cfg.SOLVER.BASE_LR,
                "weight_decay_norm": cfg.SOLVER.WEIGHT_DECAY_NORM,
                "bias_lr_factor": cfg.SOLVER.BIAS_LR_FACTOR,
                "weight_decay_bias": cfg.SOLVER.WEIGHT_DECAY_BIAS,
            },
            "branch_lr_factor": cfg.MODEL.POLAR.LR_FACTOR,
            "branch_weight_decay": cfg.MODEL.POLAR.WEIGHT_DECAY,
        }

    def before_train(self):
        if self.unfreeze_iter >= self.trainer.max_iter:
            logger.warning(
                "MODEL.FREEZE.UNFREEZE_ITER=%d >= SOLVER.MAX_ITER=%d: %s will never train",
                self.unfreeze_iter, self.trainer.max_iter, self.parts,
            )
        if not self.unfrozen and self.trainer.iter > self.unfreeze_iter:
            self.unfreeze()

    def before_step(self):
        if not self.unfrozen and self.trainer.iter == self.unfreeze_iter:
            self.unfreeze()

    def state_dict(self):
        return {"unfrozen": self.unfrozen}

    def load_state_dict(self, state_dict):
        if state_dict.get("unfrozen", False) and not self.unfrozen:
            self.unfreeze()

    def unfreeze(self) -> None:
        """Unfreeze now (idempotent)."""
        if self.unfrozen:
            return
        trainer = self.trainer
        model = unwrap(trainer.model)
        names = select_unfreeze_parameters(model, self.parts, self.freeze_at)
        params = unfreeze_parameters(model, names)
        new = set(params)
        groups = []
        for group in get_default_optimizer_params(model, **self.optimizer_params):
            mine = [p for p in group["params"] if p in new]
            if mine:
                groups.append({**group, "params": mine})
        groups = split_branch_groups(groups, model, self.branch_lr_factor, self.branch_weight_decay)
        add_param_groups(trainer.optimizer, getattr(trainer, "scheduler", None), groups)
        if isinstance(trainer.model, DistributedDataParallel):
            trainer.model = create_ddp_model(model, **self.ddp_kwargs)
        self.unfrozen = True
        logger.info(
            "Iteration %d: unfroze %s (%d tensors, %s parameters) in %d new optimizer param groups; now:\n%s",
            trainer.iter, self.parts, len(params), f"{sum(p.numel() for p in params):,}", len(groups),
            parameter_table(model),
        )


class _KeepLastCheckpointTag:
    """``save(name, **extra)`` through a :class:`PolarCheckpointer` without moving its
    ``last_checkpoint`` tag, so that ``--resume`` continues from the latest periodic checkpoint."""

    def __init__(self, checkpointer):
        self.checkpointer = checkpointer

    def save(self, name: str, **kwargs) -> None:
        self.checkpointer.save(name, tag=False, **kwargs)


class BestCheckpointer(hooks.BestCheckpointer):
    """Detectron2's :class:`~detectron2.engine.hooks.BestCheckpointer` configured by
    ``TEST.BEST_CHECKPOINT_METRIC`` / ``TEST.BEST_CHECKPOINT_MODE``: after each evaluation of the
    ``EvalHook`` placed before it (every ``TEST.EVAL_PERIOD`` iterations and at the end of training)
    it saves ``OUTPUT_DIR/model_best.pth`` (model + trainer state, ``"iteration"`` of the evaluation)
    when the metric improved. ``last_checkpoint`` keeps pointing at the latest periodic checkpoint.

    The best value so far is written beside it (``model_best.json``: metric, value, iteration) and
    read back when a run resumes, so that ``model_best.pth`` is only ever replaced by a better model.
    """

    @configurable
    def __init__(self, *, eval_period: int, checkpointer, val_metric: str, mode: str = "max",
                 file_prefix: str = "model_best"):
        """
        Args:
            eval_period: ``TEST.EVAL_PERIOD`` of the EvalHook that computes ``val_metric``.
            checkpointer: the trainer's checkpointer.
            val_metric: a key the EvalHook stores, e.g. ``"bbox/AP50"`` (``"<dataset>/bbox/AP50"``
                with several ``DATASETS.TEST``).
            mode: "max" or "min".
        """
        if not val_metric:
            raise ValueError("TEST.BEST_CHECKPOINT_METRIC is empty: set a metric such as 'bbox/AP50'")
        if mode not in ("max", "min"):
            raise ValueError(f"TEST.BEST_CHECKPOINT_MODE must be 'max' or 'min', got {mode!r}")
        super().__init__(eval_period, _KeepLastCheckpointTag(checkpointer), val_metric, mode, file_prefix)
        self._record = os.path.join(checkpointer.save_dir, f"{file_prefix}.json")

    def before_train(self):
        if self.trainer.start_iter == 0 or not os.path.isfile(self._record):
            return
        with open(self._record, encoding="utf-8") as f:
            record = json.load(f)
        if record.get("metric") == self._val_metric:
            self.best_metric, self.best_iter = float(record["value"]), int(record["iteration"])
            logger.info("Resuming with the best %s so far: %.5f @ iteration %d (%s)", self._val_metric,
                        self.best_metric, self.best_iter, self._record)

    def _best_checking(self):
        before = (self.best_metric, self.best_iter)
        super()._best_checking()
        if (self.best_metric, self.best_iter) != before:
            atomic_write_text(self._record, json.dumps(
                {"metric": self._val_metric, "value": float(self.best_metric), "iteration": int(self.best_iter)}
            ) + "\n")

    @classmethod
    def from_config(cls, cfg, checkpointer):
        return {
            "eval_period": cfg.TEST.EVAL_PERIOD,
            "checkpointer": checkpointer,
            "val_metric": cfg.TEST.BEST_CHECKPOINT_METRIC,
            "mode": cfg.TEST.BEST_CHECKPOINT_MODE,
        }
