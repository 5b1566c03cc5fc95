"""Checkpoints of polar models: loading with a summary of what was and was not loaded, atomic
saves of finite weights only, and ``--resume`` that falls back to the newest intact checkpoint."""
import glob
import logging
import math
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils.file_io import PathManager

from ..utils.atomic import AtomicPathManager
from .freezing import part_of

logger = logging.getLogger(__name__)

# buffers that Detectron2 initialises from the config (MODEL.PIXEL_MEAN/STD), not from weights
_FROM_CONFIG = ("pixel_mean", "pixel_std")


@dataclass
class LoadSummary:
    """What one :meth:`PolarCheckpointer.load` did; ``missing``/``mismatched`` map part -> names."""

    source: str
    loaded: int
    total: int
    checkpoint_tensors: int
    unused: List[str] = field(default_factory=list)
    missing: Dict[str, List[str]] = field(default_factory=dict)
    mismatched: Dict[str, List[str]] = field(default_factory=dict)
    iteration: Optional[int] = None  # the checkpoint's training iteration, when it has one

    def message(self) -> str:
        text = f"Loaded {self.loaded} of {self.total} model tensors from {self.source}"
        fresh = [f"{part} ({len(keys)} not in the checkpoint)" for part, keys in self.missing.items()]
        fresh += [f"{part} ({len(keys)} of another shape, e.g. NUM_CLASSES)" for part, keys in self.mismatched.items()]
        text += "; initialised fresh: " + ", ".join(fresh) if fresh else "; nothing initialised fresh"
        if self.unused:
            text += f"; {len(self.unused)} of {self.checkpoint_tensors} checkpoint tensors unused"
        return text + "."


def _by_part(names) -> Dict[str, List[str]]:
    groups: Dict[str, List[str]] = OrderedDict()
    for name in names:
        groups.setdefault(part_of(name), []).append(name)
    return groups


def _iteration_of(path: str) -> Optional[int]:
    """The iteration after which ``model_<iteration>.pth`` was saved (None for other names)."""
    stem = os.path.basename(path)[len("model_"):-len(".pth")]
    return int(stem) if stem.isdigit() else None


def non_finite_tensors(state: dict, prefix: str = "") -> List[str]:
    """Names of the floating-point tensors in a (nested) state dict that hold NaN or Inf."""
    bad = []
    for key, value in state.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            bad += non_finite_tensors(value, name + ".")
        elif isinstance(value, (list, tuple)):
            bad += non_finite_tensors(dict(enumerate(value)), name + ".")
        elif torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all():
            bad.append(name)
        elif isinstance(value, float) and not math.isfinite(value):
            bad.append(name)
    return bad


class PolarCheckpointer(DetectionCheckpointer):
    """:class:`DetectionCheckpointer` (model-zoo ``detectron2://`` URLs, ``.pkl``, ``.pth``, loaded
    without running code from the file) that

    - logs one summary line per load: N of M model tensors loaded and which parts start from their
      own initialisation (e.g. the polar branch from a vanilla checkpoint, the box predictor when
      ``NUM_CLASSES`` differs); the last summary is kept as :attr:`last_load`;
    - writes checkpoints and the ``last_checkpoint`` tag atomically (temporary file, fsync, rename),
      so a kill during a save leaves the previous file intact;
    - refuses to save weights or optimizer state holding NaN/Inf (``FloatingPointError`` naming the
      iteration and the last good checkpoint);
    - on ``resume_or_load(..., resume=True)`` goes on from the newest intact checkpoint in
      ``save_dir`` (with a warning) when the tagged one cannot be read.
    """

    last_load: Optional[LoadSummary] = None
    _source = "?"

    def __init__(self, model, save_dir="", **kwargs):
        super().__init__(model, save_dir, **kwargs)
        self.path_manager = AtomicPathManager(PathManager)

    def load(self, path, *args, **kwargs):
        self._source = path  # as given (e.g. a detectron2:// URL), not the local cache path
        return super().load(path, *args, **kwargs)

    def save(self, name: str, *, tag: bool = True, **kwargs) -> None:
        """Save ``name``.pth (``kwargs``: extra entries, e.g. ``iteration``); ``tag``: and name it in
        ``last_checkpoint`` (False for files not to resume from, e.g. the best model)."""
        if not self.save_dir or not self.save_to_disk:
            return
        state = {"model": self.model.state_dict()}
        state.update({key: obj.state_dict() for key, obj in self.checkpointables.items()})
        bad = non_finite_tensors(state)
        if bad:
            last = self.get_checkpoint_file() if self.has_checkpoint() else None
            raise FloatingPointError(
                f"Not saving {name}.pth at iteration {kwargs.get('iteration', '?')}: {len(bad)} tensors hold NaN "
                f"or Inf (e.g. {', '.join(bad[:3])}); training diverged. "
                + (f"The last good checkpoint is {last}." if last else "No earlier checkpoint was saved.")
            )
        self._tag = tag
        try:
            super().save(name, **kwargs)
        finally:
            self._tag = True

    _tag = True

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        if self._tag:
            super().tag_last_checkpoint(last_filename_basename)

    def resume_candidates(self) -> List[str]:
        """Checkpoints to resume from, best first: the tagged one, then every other
        ``model_*.pth`` in ``save_dir`` (``model_best*`` excluded), newest first."""
        tagged = self.get_checkpoint_file() if self.has_checkpoint() else None
        others = [
            p for p in glob.glob(os.path.join(self.save_dir, "model_*.pth"))
            if not os.path.basename(p).startswith("model_best") and p != tagged
        ]
        others.sort(key=os.path.getmtime, reverse=True)
        return ([tagged] if tagged else []) + others

    def resume_or_load(self, path: str, *, resume: bool = True):
        if not resume:
            return super().resume_or_load(path, resume=False)
        candidates = self.resume_candidates()
        for i, candidate in enumerate(candidates):
            try:
                self._read_ahead = (candidate, self._load_file(candidate))  # nothing is changed yet
            except Exception as e:  # truncated, corrupt, refused
                logger.warning("Cannot resume from %s (%s); trying the next newest checkpoint", candidate, e)
                continue
            if i:
                logger.warning("Resuming from %s, the newest intact checkpoint", candidate)
            try:
                return self.load(candidate)
            finally:
                self._read_ahead = None
        if candidates:
            raise RuntimeError(
                f"--resume: none of the checkpoints in {self.save_dir} can be read ({', '.join(candidates)}); "
                "remove them to start afresh, or point MODEL.WEIGHTS at good weights and drop --resume"
            )
        return self.load(path, checkpointables=[])

    def has_checkpoint(self) -> bool:
        return bool(self.save_dir) and super().has_checkpoint()

    def set_aside_diverged(self, iteration: int) -> Optional[str]:
        """After the loss became non-finite at ``iteration``: a checkpoint saved after the step
        before (its weights gave that loss) is renamed ``*.pth.diverged`` and ``last_checkpoint``
        moves to the newest remaining one. Returns the checkpoint to resume from, or None."""
        good = None
        for path in self.resume_candidates():
            saved_after = _iteration_of(path)
            if saved_after is not None and saved_after >= iteration - 1:
                os.replace(path, path + ".diverged")
                logger.warning("Set aside %s (saved after iteration %d; the next loss was non-finite) as %s.diverged",
                               path, saved_after, path)
            elif good is None:
                good = path
        if good:
            self.tag_last_checkpoint(os.path.basename(good))
        elif self.has_checkpoint():
            PathManager.rm(os.path.join(self.save_dir, "last_checkpoint"))
        return good

    _read_ahead = None

    def _load_file(self, filename):
        if self._read_ahead is not None and self._read_ahead[0] == filename:
            return self._read_ahead[1]
        return super()._load_file(filename)

    def _load_model(self, checkpoint):
        checkpoint_tensors = len(checkpoint.get("model", {}))
        incompatible = super()._load_model(checkpoint)
        keys = [k for k in self.model.state_dict() if k.rpartition(".")[2] not in _FROM_CONFIG]
        mismatched = [k for k, _, _ in incompatible.incorrect_shapes]
        # fvcore drops tensors of another shape before loading, so they are "missing" too
        missing = [k for k in incompatible.missing_keys if k in keys and k not in mismatched]
        self.last_load = LoadSummary(
            source=self._source,
            loaded=len(keys) - len(missing) - len(mismatched),
            total=len(keys),
            checkpoint_tensors=checkpoint_tensors,
            unused=list(incompatible.unexpected_keys),
            missing=_by_part(missing),
            mismatched=_by_part(mismatched),
        )
        logger.info(self.last_load.message())
        return incompatible


def warn_if_nothing_loaded(summary: Optional[LoadSummary], weights: str) -> None:
    """Training from ``MODEL.WEIGHTS`` that match none of the model's tensors: a loud warning."""
    if weights and (summary is None or summary.loaded == 0):
        total = f" {summary.total}" if summary else ""
        logger.warning(
            "MODEL.WEIGHTS %s matches none of the model's%s tensors: the whole model trains from its random "
            "initialisation. Check that the weights belong to this architecture (MODEL.RESNETS.DEPTH, FPN, ...).",
            weights, total,
        )


def load_for_inference(model, cfg, *, save_dir: str = "", resume: bool = False) -> Optional[LoadSummary]:
    """Load ``MODEL.WEIGHTS`` (``resume``: the last checkpoint in ``save_dir`` if there is one) into
    ``model`` for evaluation or prediction. An empty ``MODEL.WEIGHTS`` or weights that match none of
    the model's tensors are an error (a random model is never what is meant), unless
    ``TEST.ALLOW_RANDOM_WEIGHTS``."""
    checkpointer = PolarCheckpointer(model, save_dir=save_dir)
    extra = checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=resume)
    summary = checkpointer.last_load
    if summary is not None and isinstance(extra.get("iteration"), int):
        summary.iteration = extra["iteration"]
    if summary is None or summary.loaded == 0:
        what = (f"MODEL.WEIGHTS {cfg.MODEL.WEIGHTS} matches none of the model's {summary.total} tensors"
                if summary is not None else "MODEL.WEIGHTS is empty (and no checkpoint was resumed)")
        if not cfg.TEST.ALLOW_RANDOM_WEIGHTS:
            raise ValueError(
                f"{what}: evaluating or predicting would use a randomly initialised model. Set MODEL.WEIGHTS to "
                "a trained model (e.g. OUTPUT_DIR/model_final.pth), or TEST.ALLOW_RANDOM_WEIGHTS True to do it anyway."
            )
        logger.warning("%s: using a randomly initialised model (TEST.ALLOW_RANDOM_WEIGHTS True)", what)
    return summary
