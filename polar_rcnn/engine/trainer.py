"""The Detectron2 trainer for polar models: data loaders, evaluator, freezing, weight loading and
exactly resumable training state."""
import json
import logging
import os
import weakref

from detectron2.data import build_detection_test_loader
from detectron2.engine import DefaultTrainer, hooks
from detectron2.evaluation import COCOEvaluator
from detectron2.evaluation.testing import flatten_results_dict
from detectron2.utils import comm

from ..data import BadSampleReport, PolarDatasetMapper, TrainLoader, build_train_loader
from ..data.settings_summary import stack_settings_summary
from ..modeling.loss_weights import apply_loss_weights
from ..modeling.video_adversary import video_adversary_from_config
from .checkpoint import PolarCheckpointer, load_for_inference, warn_if_nothing_loaded
from .freezing import freeze_from_config
from .hooks import BestCheckpointer, UnfreezeHook
from .optimizer import build_polar_optimizer
from .training_state import RESUME_STATE_VERSION, GatherResumeState, mark_resume, preserved_rng, restore_rng

logger = logging.getLogger(__name__)


class PolarTrainer(DefaultTrainer):
    """:class:`DefaultTrainer` with :class:`PolarDatasetMapper` loaders, COCO evaluation,
    ``MODEL.FREEZE`` (frozen parts, unfreeze schedule), ``MODEL.LOSS_WEIGHTS``, a :class:`PolarCheckpointer`
    and ``TEST.BEST_CHECKPOINT_METRIC`` (:class:`BestCheckpointer` after the EvalHook).

    Checkpoints hold the complete training state: model, optimizer, LR scheduler, iteration, hook
    states (unfreeze, best metric) and, per rank, the RNG states and the data loader's position
    (:class:`~polar_rcnn.data.TrainLoader`). ``--resume`` restores all of it, so that a resumed run
    continues exactly as the uninterrupted one (same ``SEED``; see README "Recovering a run").
    The optimizer state comes from ``DefaultTrainer.state_dict`` and the LR scheduler's from its
    hook: detectron2 patches #12 and #8 (third_party/detectron2/README.md, pinned by tests).
    Evaluation during training leaves the RNGs as they were.
    """

    @classmethod
    def build_model(cls, cfg):
        # frozen before the optimizer and DDP are built, so frozen parameters never reach them; the
        # video adversary (if any) before both, so the optimizer gets its parameters
        model = video_adversary_from_config(cfg, apply_loss_weights(super().build_model(cfg), cfg))
        return freeze_from_config(cfg, model)

    @classmethod
    def build_optimizer(cls, cfg, model):
        # SOLVER.OPTIMIZER over Detectron2's param groups; the branch's own LR / weight decay (MODEL.POLAR.*)
        return build_polar_optimizer(cfg, model)

    @property
    def last_eval_results(self) -> dict:
        """What the last evaluation during training returned ({} before any), e.g.
        ``{"bbox": {"AP": ...}}`` (``DefaultTrainer.train`` returns it only with TEST.EXPECTED_RESULTS)."""
        return dict(getattr(self, "_last_eval_results", None) or {})  # set by DefaultTrainer's EvalHook function

    @property
    def train_loader(self):
        """The training data loader (a :class:`~polar_rcnn.data.TrainLoader`)."""
        return self._trainer.data_loader

    def build_hooks(self):
        # loading logs what was and was not loaded; saving is atomic and refuses non-finite weights
        self.checkpointer = PolarCheckpointer(self.model, self.cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        ret = super().build_hooks()
        if self.cfg.MODEL.FREEZE.UNFREEZE_ITER > 0:
            # before the LR scheduler: new groups exist before its step and before its state loads
            at = next(i for i, h in enumerate(ret) if isinstance(h, hooks.LRScheduler))
            ret.insert(at, UnfreezeHook(self.cfg))
        # every rank's RNG and loader state, collected before any hook that saves a checkpoint
        self._resume_state = GatherResumeState(self._saves_after)
        at = next(i for i, h in enumerate(ret) if isinstance(h, (hooks.PeriodicCheckpointer, hooks.EvalHook)))
        ret.insert(at, self._resume_state)
        if self.cfg.TEST.BEST_CHECKPOINT_METRIC and comm.is_main_process():
            # right after the EvalHook, which puts the metric into the storage
            at = next(i for i, h in enumerate(ret) if isinstance(h, hooks.EvalHook))
            ret.insert(at + 1, BestCheckpointer(self.cfg, self.checkpointer))
        if self.cfg.DATASETS.ON_BAD_SAMPLE == "skip":
            # skips counted over all loader workers; before the writer, which writes the count
            writers = [i for i, h in enumerate(ret) if isinstance(h, hooks.PeriodicWriter)]
            ret.insert(writers[0] if writers else len(ret), BadSampleReport(self.cfg.OUTPUT_DIR))
        return ret

    def _saves_after(self, iteration: int) -> bool:
        """Whether a hook may save a checkpoint after the step of ``iteration``."""
        done = iteration + 1
        period, eval_period = self.cfg.SOLVER.CHECKPOINT_PERIOD, self.cfg.TEST.EVAL_PERIOD
        return (
            done >= self.max_iter
            or (period > 0 and done % period == 0)
            or (bool(self.cfg.TEST.BEST_CHECKPOINT_METRIC) and eval_period > 0 and done % eval_period == 0)
        )

    # --------------------------------------------------------------------------- resume state
    def state_dict(self):
        ret = super().state_dict()
        ranks = self._resume_state.states()
        ret["resume"] = {"version": RESUME_STATE_VERSION, "ranks": ranks} if ranks else None
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self._rng_to_restore = None
        resume = state_dict.get("resume")
        loader = self.train_loader if isinstance(self.train_loader, TrainLoader) else None
        if not resume or resume.get("version") != RESUME_STATE_VERSION:
            position = (state_dict["iteration"] + 1) * (loader.batch_size if loader else 0)
            logger.warning(
                "The checkpoint holds no RNG or data-loader state (written by an older version): resuming at "
                "iteration %d with the data stream moved on by %d samples per process, but not exactly as the "
                "uninterrupted run would have gone on.", state_dict["iteration"] + 1, position,
            )
            if loader:
                loader.skip_to(position)
            return
        ranks, rank, world_size = resume["ranks"], comm.get_rank(), comm.get_world_size()
        if len(ranks) != world_size:
            logger.warning(
                "The checkpoint was written by %d processes, this run has %d: each process goes on from process "
                "%d's data stream position with RNGs of its own, so the resume is not exact.",
                len(ranks), world_size, min(rank, len(ranks) - 1),
            )
        mine = ranks[min(rank, len(ranks) - 1)]
        if loader and "data_loader" in mine:
            loader.load_state_dict(mine["data_loader"])
        if len(ranks) == world_size:
            self._rng_to_restore = mine["rng"]

    def resume_or_load(self, resume=True):
        super().resume_or_load(resume=resume)
        if not resume:
            warn_if_nothing_loaded(self.checkpointer.last_load, self.cfg.MODEL.WEIGHTS)
        if self.start_iter > 0 and comm.is_main_process():
            source = os.path.basename(self.checkpointer.get_checkpoint_file())
            mark_resume(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json"), self.start_iter, source)

    def before_train(self):
        super().before_train()
        if getattr(self, "_rng_to_restore", None) is not None:
            restore_rng(self._rng_to_restore)  # last: nothing may draw between the restore and step 1
            self._rng_to_restore = None

    def train(self):
        try:
            return super().train()
        except FloatingPointError as e:
            last = self.checkpointer.set_aside_diverged(self.iter) if comm.is_main_process() else None
            raise FloatingPointError(
                f"Training diverged at iteration {self.iter}: {e}\n"
                + (f"The last checkpoint before the divergence is {last}: " if last else "No checkpoint from before the divergence: ")
                + "lower SOLVER.BASE_LR (or raise SOLVER.WARMUP_ITERS, set SOLVER.CLIP_GRADIENTS) and "
                + ("train with --resume to go on from it." if last else "train again.")
                + " See README.md, 'Recovering a run'."
            ) from e

    # ---------------------------------------------------------------------------------- data
    @classmethod
    def build_train_loader(cls, cfg):
        mapper = PolarDatasetMapper(cfg, is_train=True)  # validates the stack settings
        if cfg.INPUT.STACK.ENABLED:
            logger.info(stack_settings_summary(cfg))
        return build_train_loader(cfg, mapper)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name, mapper=PolarDatasetMapper(cfg, is_train=False))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        # pycocotools' official COCOeval is used automatically when detectron2 has no compiled ops
        return COCOEvaluator(dataset_name, output_dir=output_folder)

    @classmethod
    def evaluate_weights(cls, cfg, *, resume: bool = False):
        """``--eval-only``: build the model, load ``MODEL.WEIGHTS`` (``resume``: the last checkpoint
        in ``OUTPUT_DIR``; a random model is an error, see :func:`load_for_inference`), evaluate on
        ``DATASETS.TEST`` and append the numbers to ``OUTPUT_DIR/metrics.json`` as one row with
        ``"eval_only"`` (the weights) and the checkpoint's ``"iteration"``."""
        model = cls.build_model(cfg)
        summary = load_for_inference(model, cfg, save_dir=cfg.OUTPUT_DIR, resume=resume)
        results = cls.test(cfg, model)
        if results and comm.is_main_process():
            row = {"iteration": summary.iteration if summary and summary.iteration is not None else -1,
                   "eval_only": summary.source if summary else "", **flatten_results_dict(results)}
            os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
            with open(os.path.join(cfg.OUTPUT_DIR, "metrics.json"), "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
        return results

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        with preserved_rng():  # evaluating during training must not change the training's randomness
            return super().test(cfg, model, evaluators)
