"""In-process training runs for tools that train many models (tuning, the evidence): seeded like
``train_net.py`` (``SEED``), one ``OUTPUT_DIR`` per run, the last COCO evaluation returned."""
import logging
import os
from typing import Dict

from detectron2.utils.env import seed_all_rng
from detectron2.utils.file_io import PathManager

from .trainer import PolarTrainer

logger = logging.getLogger(__name__)


def seed_from_config(cfg) -> None:
    """Seed Python, numpy and torch with ``SEED`` (< 0: a random seed), as Detectron2's
    ``default_setup`` does for ``train_net.py``; data order, augmentation, initialisation and
    modality dropout then repeat exactly with ``DATALOADER.NUM_WORKERS`` 0 (and with workers too,
    which are seeded from torch's generator)."""
    seed_all_rng(None if cfg.SEED < 0 else cfg.SEED)


def train_and_evaluate(cfg, resume: bool = False) -> Dict[str, Dict[str, float]]:
    """Train ``cfg`` with :class:`PolarTrainer` in ``cfg.OUTPUT_DIR`` (its config saved there as
    ``config.yaml``), evaluate on ``DATASETS.TEST`` at the end (and every ``TEST.EVAL_PERIOD``)
    and return the last evaluation ({} without test datasets), e.g. ``{"bbox": {"AP": ...}}``."""
    PathManager.mkdirs(cfg.OUTPUT_DIR)
    with PathManager.open(os.path.join(cfg.OUTPUT_DIR, "config.yaml"), "w") as f:
        f.write(cfg.dump())
    seed_from_config(cfg)
    trainer = PolarTrainer(cfg)
    trainer.resume_or_load(resume=resume)
    trainer.train()
    return trainer.last_eval_results
