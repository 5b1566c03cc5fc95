"""The Detectron2 trainer for polar models: only the data loaders and the evaluator change."""
import os

from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer
from detectron2.evaluation import COCOEvaluator

from ..data import PolarDatasetMapper


class PolarTrainer(DefaultTrainer):
    """:class:`DefaultTrainer` with :class:`PolarDatasetMapper` loaders and COCO evaluation."""

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
