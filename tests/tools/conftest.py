"""Fixtures of the dataset-tool tests (tiny synthetic datasets, registration)."""
import os
import shutil
import uuid

import pytest

from detectron2.data import DatasetCatalog, MetadataCatalog

from polar_rcnn.data import register_polar_coco_instances
from polar_rcnn.data.synthetic import SyntheticConfig, generate_split

@pytest.fixture(scope="session")
def tiny_split(tmp_path_factory):
    """A tiny synthetic split (3 videos x 4 frames, 48x64, 4 channels): (root, json_file)."""
    root = str(tmp_path_factory.mktemp("tools_tiny"))
    cfg = SyntheticConfig(image_size=(48, 64), num_bands=1, num_videos=3, frames_per_video=4,
                          object_size=(10, 20), seed=0)
    return root, generate_split(root, "train", cfg, progress=False)


@pytest.fixture()
def tiny_copy(tiny_split, tmp_path):
    """A private copy of :func:`tiny_split` to break: (root, json_file)."""
    root = str(tmp_path / "data")
    shutil.copytree(tiny_split[0], root)
    return root, os.path.join(root, "train.json")


@pytest.fixture()
def register():
    """``register(root, json_file) -> name``: a uniquely named dataset, removed after the test."""
    names = []

    def _register(root, json_file):
        name = f"_tools_test_{uuid.uuid4().hex[:8]}"
        register_polar_coco_instances(name, json_file, os.path.join(root, "train", "images"),
                                      os.path.join(root, "train", "stacks"))
        names.append(name)
        return name

    yield _register
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
