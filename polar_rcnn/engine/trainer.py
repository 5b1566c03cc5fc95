"""The Detectron2 trainer for polar models: data loaders, evaluator, freezing and weight loading."""
import os
import weakref

from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer, hooks
from detectron2.evaluation import COCOEvaluator
from detectron2.utils import comm

from ..data import BadSampleReport, PolarDatasetMapper
from ..modeling.loss_weights import apply_loss_weights
from .checkpoint import PolarCheckpointer
from .freezing import freeze_from_config
from .hooks import BestCheckpointer, UnfreezeHook


class PolarTrainer(DefaultTrainer):
    """:class:`DefaultTrainer` with :class:`PolarDatasetMapper` loaders, COCO evaluation,
    ``MODEL.FREEZE`` (frozen parts, unfreeze schedule), ``MODEL.LOSS_WEIGHTS``, a :class:`PolarCheckpointer`
    and ``TEST.BEST_CHECKPOINT_METRIC`` (:class:`BestCheckpointer` after the EvalHook)."""

    @classmethod
    def build_model(cls, cfg):
        # frozen before the optimizer and DDP are built, so frozen parameters never reach them
        return freeze_from_config(cfg, apply_loss_weights(super().build_model(cfg), cfg))

    def build_hooks(self):
        # loading logs what was and was not loaded; saving is Detectron2's
        self.checkpointer = PolarCheckpointer(self.model, self.cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        ret = super().build_hooks()
        if self.cfg.MODEL.FREEZE.UNFREEZE_ITER > 0:
            # before the LR scheduler: new groups exist before its step and before its state loads
            at = next(i for i, h in enumerate(ret) if isinstance(h, hooks.LRScheduler))
            ret.insert(at, UnfreezeHook(self.cfg))
        if self.cfg.DATASETS.ON_BAD_SAMPLE == "skip":
            ret.append(BadSampleReport(self.cfg.OUTPUT_DIR))  # skips counted over all loader workers
        if self.cfg.TEST.BEST_CHECKPOINT_METRIC and comm.is_main_process():
            # right after the EvalHook, which puts the metric into the storage
            at = next(i for i, h in enumerate(ret) if isinstance(h, hooks.EvalHook))
            ret.insert(at + 1, BestCheckpointer(self.cfg, self.checkpointer))
        return ret

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=PolarDatasetMapper(cfg, is_train=True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name, mapper=PolarDatasetMapper(cfg, is_train=False))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        # pycocotools' official COCOeval is used automatically when detectron2 has no compiled ops
        return COCOEvaluator(dataset_name, output_dir=output_folder)
