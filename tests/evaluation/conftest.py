"""Fixtures of the evaluation tests: a tiny registered synthetic dataset."""
import os

import pytest

from detectron2.data import DatasetCatalog, MetadataCatalog

from polar_rcnn.data import register_polar_coco_instances
from polar_rcnn.data.synthetic import SyntheticConfig, generate_split
from tests.evaluation.eval_test_utils import NUM_BANDS


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """Train and val splits (2 videos x 3 frames, 64x80) registered as _eval_tiny_{train,val}:
    {"root": ..., "train": name, "val": name}."""
    root = str(tmp_path_factory.mktemp("eval_tiny"))
    names = {"root": root}
    for split, seed in (("train", 0), ("val", 1000)):
        cfg = SyntheticConfig(image_size=(64, 80), num_bands=NUM_BANDS, num_videos=2, frames_per_video=3,
                              object_size=(16, 30), seed=seed)
        json_file = generate_split(root, split, cfg, progress=False)
        name = f"_eval_tiny_{split}"
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        register_polar_coco_instances(name, json_file, os.path.join(root, split, "images"),
                                      os.path.join(root, split, "stacks"))
        names[split] = name
    return names
