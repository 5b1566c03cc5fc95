"""COCO-format datasets whose image entries name a stack file; registration from the config.

Record format: a COCO instances JSON where every image entry also names its stack file under
``"stack_file"`` (the default of ``DATASETS.STACK_KEY``: users' files say ``"polar_file"``,
``"pol"``, ...; ``"file_name"`` when the image's own file is the stack source, e.g. a raw
polarization-sensor frame), a path relative to the dataset's stack root, and may have
``"video_id"`` / ``"frame_id"`` and a 3x3 ``"stack_homography"``. Datasets are
registered by name, from Python (:func:`register_polar_coco_instances`) or from the config
(``DATASETS.POLAR_COCO``, :func:`register_datasets_from_config`); the built-in
``polar_synth_train`` / ``polar_synth_val`` point at ``$POLAR_RCNN_DATASETS/polar_synth``.
"""
import json
import logging
import os
from typing import Dict, List, Optional, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from detectron2.utils.file_io import PathManager

from .errors import DatasetError
from .record_validation import STACK_FILE_KEY, UNKNOWN_CATEGORY

logger = logging.getLogger(__name__)

STACK_JSON_KEY = "stack_file"
"""Default key of a COCO image entry naming its stack file, relative to the dataset's stack root
(``DATASETS.STACK_KEY``)."""
VIDEO_KEYS = ("video_id", "frame_id")
"""Optional image-entry keys copied into dataset dicts (used by video-aware tools)."""
HOMOGRAPHY_KEY = "stack_homography"
"""Optional image-entry key (copied into the dataset dict): the 3x3 stack-to-image homography of a
two-sensor rig, row-major (a list of 3 rows or of 9 numbers)."""
_PATH_KEYS = ("json_file", "image_root", "stack_root", "stack_key")


def _read_coco_json(json_file: str) -> dict:
    if not PathManager.isfile(json_file):
        raise DatasetError(json_file, "annotation file not found", kind="missing")
    try:
        with PathManager.open(json_file) as f:
            coco = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise DatasetError(json_file, f"not a JSON file ({e})", kind="unreadable") from e
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco.get(key), list):
            raise DatasetError(json_file, f"COCO instances file needs a list '{key}'", kind="format")
    if not coco["categories"]:
        raise DatasetError(json_file, "'categories' is empty", kind="format")
    for image in coco["images"]:
        missing = [k for k in ("id", "file_name", "height", "width") if k not in image]
        if missing:
            raise DatasetError(json_file, f"image entry {image} lacks {missing}", kind="format")
    return coco


def load_polar_coco_json(
    json_file: str, image_root: str, stack_root: str, dataset_name: Optional[str] = None,
    stack_key: str = STACK_JSON_KEY,
) -> List[Dict]:
    """Detectron2 dataset dicts of a COCO instances JSON with stacks.

    Like :func:`detectron2.data.datasets.load_coco_json` (and it sets the same metadata when
    ``dataset_name`` is given: ``thing_classes``, ``thing_dataset_id_to_contiguous_id``), plus
    per record ``stack_file_name`` (``stack_root`` joined with the image entry's ``stack_key``) and
    ``video_id`` / ``frame_id`` / ``stack_homography`` when present; each annotation keeps its JSON ``id``.

    Problems of single records do not raise here, so that ``DATASETS.ON_BAD_SAMPLE: "skip"``
    can skip them: an image without ``stack_key`` gets no ``stack_file_name``, and an
    annotation whose category is not in ``categories`` gets ``category_id`` -1
    (:data:`~polar_rcnn.data.record_validation.UNKNOWN_CATEGORY`, JSON id in ``coco_category_id``);
    :func:`~polar_rcnn.data.validate_record` and the mapper report both.

    Raises:
        DatasetError: the JSON is missing, not JSON, or not a COCO instances file, or no image
            entry has ``stack_key`` (the message lists the keys the entries have).
    """
    coco = _read_coco_json(json_file)
    _check_stack_key(json_file, coco["images"], stack_key)
    try:  # dataset_name=None: load_coco_json would raise a bare KeyError on unknown categories
        dataset_dicts = load_coco_json(json_file, image_root, None, extra_annotation_keys=["id"])
    except (AssertionError, KeyError, ValueError, TypeError) as e:
        raise DatasetError(json_file, f"invalid COCO instances file ({type(e).__name__}: {e})", kind="format") from e

    categories = sorted(coco["categories"], key=lambda c: c["id"])
    id_map = {c["id"]: i for i, c in enumerate(categories)}
    if dataset_name is not None:
        meta = MetadataCatalog.get(dataset_name)
        meta.thing_classes = [c["name"] for c in categories]
        meta.thing_dataset_id_to_contiguous_id = id_map

    images = {image["id"]: image for image in coco["images"]}
    unknown = 0
    for record in dataset_dicts:
        image = images[record["image_id"]]
        if image.get(stack_key):
            record[STACK_FILE_KEY] = os.path.join(stack_root, image[stack_key])
        for key in VIDEO_KEYS + (HOMOGRAPHY_KEY,):
            if key in image:
                record[key] = image[key]
        for anno in record["annotations"]:
            cat = anno.get("category_id")
            if cat in id_map:
                anno["category_id"] = id_map[cat]
            else:
                anno["coco_category_id"] = cat
                anno["category_id"] = UNKNOWN_CATEGORY
                unknown += 1
    without_stack = sum(STACK_FILE_KEY not in r for r in dataset_dicts)
    if without_stack or unknown:
        logger.warning("%s: %d images without '%s', %d annotations with a category not in 'categories'",
                       json_file, without_stack, stack_key, unknown)
    return dataset_dicts


def _check_stack_key(json_file: str, images: List[Dict], stack_key: str) -> None:
    """DatasetError when no image entry names a stack under ``stack_key`` (a few may lack it:
    those are bad samples, reported per record)."""
    if not images or any(image.get(stack_key) for image in images):
        return
    found = sorted({key for image in images for key in image})
    raise DatasetError(json_file, f"no image entry names a stack under the key {stack_key!r} (DATASETS.STACK_KEY); "
                                  f"the image entries have the keys {found}: set DATASETS.STACK_KEY to the one "
                                  "naming the stack files", kind="format")


def _same_paths(meta, paths: Dict[str, str]) -> bool:
    def same(key, value):
        known = getattr(meta, key, None)
        if known is None:
            return False
        return known == value if key == "stack_key" else os.path.abspath(known) == os.path.abspath(value)

    return all(same(k, v) for k, v in paths.items())


def register_polar_coco_instances(name: str, json_file: str, image_root: str, stack_root: str, metadata=None,
                                  stack_key: str = STACK_JSON_KEY) -> None:
    """Register a COCO-instances dataset with stacks, like :func:`register_coco_instances`;
    ``stack_key`` is the image-entry key naming the stack file (``DATASETS.STACK_KEY``).

    Registering a name again with the same paths and key does nothing; with other ones (or a
    name that other code registered) it raises ``ValueError``.
    """
    for key, value in (("name", name), ("json_file", json_file), ("image_root", image_root),
                       ("stack_root", stack_root), ("stack_key", stack_key)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"register_polar_coco_instances: {key} must be a non-empty string, got {value!r}")
    paths = dict(json_file=json_file, image_root=image_root, stack_root=stack_root, stack_key=stack_key)
    if name in DatasetCatalog.list():
        meta = MetadataCatalog.get(name)
        if _same_paths(meta, paths):
            return
        registered = {k: getattr(meta, k, None) for k in _PATH_KEYS}
        raise ValueError(f"dataset {name!r} is already registered with {registered}, not {paths}: "
                         "use another name")
    DatasetCatalog.register(name, lambda: load_polar_coco_json(json_file, image_root, stack_root, name, stack_key))
    MetadataCatalog.get(name).set(evaluator_type="coco", **paths, **(metadata or {}))


def _parse_entry(entry, index: int) -> Sequence[str]:
    if isinstance(entry, (list, tuple)) and len(entry) == 4 and all(isinstance(v, str) for v in entry):
        return entry
    raise ValueError(
        f"DATASETS.POLAR_COCO[{index}] is {entry!r}; each entry must be [name, json_file, image_root, stack_root], "
        "e.g. DATASETS.POLAR_COCO \"[['my_train', 'data/train.json', 'data/images', 'data/stacks']]\""
    )


def register_datasets_from_config(cfg) -> List[str]:
    """Register every ``DATASETS.POLAR_COCO`` entry ``[name, json_file, image_root, stack_root]``
    (stacks named by ``DATASETS.STACK_KEY``) and check that all names in ``DATASETS.TRAIN`` / ``DATASETS.TEST`` are registered.

    Idempotent: safe to call in every process (train_net.py's ``setup``, predictors, tools).
    Returns the names registered from the config. Raises ``ValueError`` on a malformed entry,
    a name clash (see :func:`register_polar_coco_instances`) or an unknown dataset name.
    """
    names = []
    for i, entry in enumerate(cfg.DATASETS.POLAR_COCO):
        name, json_file, image_root, stack_root = _parse_entry(entry, i)
        register_polar_coco_instances(name, json_file, image_root, stack_root, stack_key=cfg.DATASETS.STACK_KEY)
        names.append(name)
    registered = set(DatasetCatalog.list())
    for key in ("TRAIN", "TEST"):
        for name in cfg.DATASETS.get(key, ()):
            if name not in registered:
                raise ValueError(
                    f"DATASETS.{key} names {name!r}, which is not a registered dataset: add "
                    f"['{name}', JSON_FILE, IMAGE_ROOT, STACK_ROOT] to DATASETS.POLAR_COCO"
                )
    return names


# Built-in synthetic splits, written by datasets/prepare_polar_synth.py under $POLAR_RCNN_DATASETS.
_BUILTIN_SPLITS = {
    "polar_synth_train": ("polar_synth", "train"),
    "polar_synth_val": ("polar_synth", "val"),
}


def register_builtin_datasets(root: str) -> None:
    """Register ``polar_synth_train`` / ``polar_synth_val`` under ``root`` (if not registered yet)."""
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
