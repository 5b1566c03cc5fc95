"""COCO-format datasets whose image entries name a stack file; built-in synthetic datasets."""
import json
import logging
import os
from typing import Dict, List, Optional

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from detectron2.utils.file_io import PathManager

from .mapper import STACK_FILE_KEY

logger = logging.getLogger(__name__)

STACK_JSON_KEY = "stack_file"
"""Key of a COCO image entry naming its stack file, relative to the dataset's stack root."""
VIDEO_KEYS = ("video_id", "frame_id")
"""Optional image-entry keys copied into dataset dicts (used by video-aware tools)."""


def load_polar_coco_json(
    json_file: str, image_root: str, stack_root: str, dataset_name: Optional[str] = None
) -> List[Dict]:
    """Detectron2's :func:`load_coco_json` plus ``stack_file_name`` (and video keys) per image."""
    dataset_dicts = load_coco_json(json_file, image_root, dataset_name)
    with PathManager.open(json_file) as f:
        images = {image["id"]: image for image in json.load(f)["images"]}
    for record in dataset_dicts:
        image = images[record["image_id"]]
        if STACK_JSON_KEY not in image:
            raise ValueError(
                f"{json_file}: image id {image['id']} ({image.get('file_name')}) has no '{STACK_JSON_KEY}' entry"
            )
        record[STACK_FILE_KEY] = os.path.join(stack_root, image[STACK_JSON_KEY])
        for key in VIDEO_KEYS:
            if key in image:
                record[key] = image[key]
    return dataset_dicts


def register_polar_coco_instances(name: str, json_file: str, image_root: str, stack_root: str, metadata=None):
    """Register a COCO-instances dataset with stacks, like :func:`register_coco_instances`."""
    DatasetCatalog.register(name, lambda: load_polar_coco_json(json_file, image_root, stack_root, name))
    MetadataCatalog.get(name).set(
        json_file=json_file, image_root=image_root, stack_root=stack_root, evaluator_type="coco",
        **(metadata or {}),
    )


# Built-in synthetic splits, written by datasets/prepare_polar_synth.py under $POLAR_RCNN_DATASETS.
_BUILTIN_SPLITS = {
    "polar_synth_train": ("polar_synth", "train"),
    "polar_synth_val": ("polar_synth", "val"),
}


def register_builtin_datasets(root: str) -> None:
    for name, (folder, split) in _BUILTIN_SPLITS.items():
        if name in DatasetCatalog.list():
            continue
        base = os.path.join(root, folder)
        register_polar_coco_instances(
            name,
            os.path.join(base, f"{split}.json"),
            os.path.join(base, split, "images"),
            os.path.join(base, split, "stacks"),
        )


register_builtin_datasets(os.path.expanduser(os.getenv("POLAR_RCNN_DATASETS", "datasets")))
