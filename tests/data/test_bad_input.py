"""Every bad input raises a named DataError naming the file; DATASETS.ON_BAD_SAMPLE "skip" skips,
logs and counts it (also across data-loader workers) and training goes on."""
import copy
import json
import logging
import os

import numpy as np
import pytest

from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_train_loader

from tests.common import get_polar_cfg
from polar_rcnn.data import (
    STACK_FILE_KEY,
    AnnotationError,
    BadSampleReport,
    DataError,
    DatasetError,
    EmptyTrainingSetError,
    ImageError,
    PolarDatasetMapper,
    StackError,
    load_polar_coco_json,
    read_bad_samples,
    register_polar_coco_instances,
    validate_record,
)
from polar_rcnn.data.synthetic import SyntheticConfig, generate_split
from polar_rcnn.engine import PolarTrainer

H, W, CHANNELS = 64, 80, 4  # one band x 0/45/90/135


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 6-frame synthetic split: (root, json_file, records)."""
    root = str(tmp_path_factory.mktemp("bad_input"))
    cfg = SyntheticConfig(image_size=(H, W), num_bands=1, num_videos=2, frames_per_video=3, object_size=(16, 30),
                          seed=3)
    json_file = generate_split(root, "train", cfg, progress=False)
    records = load_polar_coco_json(json_file, os.path.join(root, "train", "images"),
                                   os.path.join(root, "train", "stacks"))
    assert len(records) == 6 and all(r["annotations"] for r in records)
    return root, json_file, records


def mapper_cfg(**overrides):
    return get_polar_cfg(MODEL__POLAR__IN_CHANNELS=CHANNELS, **overrides)


def corrupt_copy(tmp_path, record, key, how):
    """A copy of ``record`` whose file ``key`` was copied to tmp_path and damaged by ``how``."""
    record = copy.deepcopy(record)
    src = record[key]
    dst = str(tmp_path / os.path.basename(src))
    with open(src, "rb") as f:
        data = f.read()
    if how == "truncate":
        data = data[: len(data) // 2]
    elif how == "garbage":
        data = b"this is not an image or a stack" * 8
    with open(dst, "wb") as f:
        f.write(data)
    record[key] = dst
    return record


def _stack(tmp_path, record, array):
    record = copy.deepcopy(record)
    record[STACK_FILE_KEY] = str(tmp_path / "bad_stack.npy")
    np.save(record[STACK_FILE_KEY], array)
    return record


def _box(record, bbox, category_id=0):
    record = copy.deepcopy(record)
    record["annotations"][0].update(bbox=bbox, category_id=category_id)
    return record


CASES = {
    "image missing": (ImageError, "missing", "file_name", lambda t, r: dict(r, file_name=str(t / "gone.png"))),
    "image unreadable": (ImageError, "unreadable", "file_name", lambda t, r: corrupt_copy(t, r, "file_name", "garbage")),
    "image truncated": (ImageError, None, "file_name", lambda t, r: corrupt_copy(t, r, "file_name", "truncate")),
    "image size": (ImageError, "size", "file_name", lambda t, r: dict(r, height=H + 1)),
    "stack missing": (StackError, "missing", STACK_FILE_KEY, lambda t, r: dict(r, **{STACK_FILE_KEY: str(t / "x.npy")})),
    "stack truncated": (StackError, "truncated", STACK_FILE_KEY,
                        lambda t, r: corrupt_copy(t, r, STACK_FILE_KEY, "truncate")),
    "stack unreadable": (StackError, "unreadable", STACK_FILE_KEY,
                         lambda t, r: corrupt_copy(t, r, STACK_FILE_KEY, "garbage")),
    "stack channels": (StackError, "channels", STACK_FILE_KEY,
                       lambda t, r: _stack(t, r, np.zeros((H, W, CHANNELS + 2), np.uint16))),
    "stack size": (StackError, "size", STACK_FILE_KEY, lambda t, r: _stack(t, r, np.zeros((H // 2, W, CHANNELS), np.uint16))),
    "stack nan": (StackError, "nonfinite", STACK_FILE_KEY,
                  lambda t, r: _stack(t, r, np.where(np.arange(H * W * CHANNELS).reshape(H, W, CHANNELS) == 77,
                                                     np.nan, 0.5).astype(np.float32))),
    "stack inf": (StackError, "nonfinite", STACK_FILE_KEY,
                  lambda t, r: _stack(t, r, np.full((H, W, CHANNELS), np.inf, np.float16))),
    "box outside": (AnnotationError, "box_outside", "file_name", lambda t, r: _box(r, [W - 5.0, 10.0, 20.0, 10.0])),
    "box zero area": (AnnotationError, "box_empty", "file_name", lambda t, r: _box(r, [10.0, 10.0, 0.0, 10.0])),
    "box negative": (AnnotationError, "box_empty", "file_name", lambda t, r: _box(r, [10.0, 10.0, 5.0, -3.0])),
    "category out of range": (AnnotationError, "category", "file_name", lambda t, r: _box(r, [10.0, 10.0, 5.0, 5.0], 7)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_raises_a_named_error(tiny, tmp_path, case):
    error_type, kind, path_key, make = CASES[case]
    record = make(tmp_path, tiny[2][0])
    mapper = PolarDatasetMapper(mapper_cfg(), is_train=True)
    with pytest.raises(error_type) as info:
        mapper(record)
    err = info.value
    assert isinstance(err, DataError) and isinstance(err, ValueError)
    assert err.path == record[path_key] and str(err).startswith(record[path_key])
    if kind:
        assert err.kind == kind, str(err)
    else:
        assert err.kind in ("truncated", "unreadable"), str(err)


def test_unknown_category_in_the_json(tiny, tmp_path):
    root, json_file, _ = tiny
    with open(json_file) as f:
        coco = json.load(f)
    coco["annotations"][0]["category_id"] = 99
    bad_json = str(tmp_path / "bad.json")
    with open(bad_json, "w") as f:
        json.dump(coco, f)
    records = load_polar_coco_json(bad_json, os.path.join(root, "train", "images"),
                                   os.path.join(root, "train", "stacks"))
    bad = next(r for r in records if r["image_id"] == coco["annotations"][0]["image_id"])
    with pytest.raises(AnnotationError, match="category_id 99 is not among the JSON's categories") as info:
        PolarDatasetMapper(mapper_cfg(), is_train=True)(bad)
    assert info.value.path == bad["file_name"] and info.value.kind == "category"
    assert f"annotation {coco['annotations'][0]['id']}" in str(info.value)
    problems = validate_record(bad)
    assert [p.kind for p in problems] == ["category"]


def test_validate_record_lists_every_problem(tiny, tmp_path):
    record = _box(tiny[2][0], [-30.0, 5.0, 10.0, 10.0])
    record["file_name"] = str(tmp_path / "nope.png")
    del record[STACK_FILE_KEY]
    problems = validate_record(record, MetadataCatalog.get("_unused_bad_input"), num_classes=3)
    assert sorted(p.kind for p in problems) == ["box_outside", "missing", "record"]
    assert {type(p) for p in problems} == {ImageError, StackError, AnnotationError}
    assert validate_record(tiny[2][1], num_classes=3) == []


@pytest.mark.parametrize("content,kind", [(None, "missing"), ("{not json", "unreadable"), ('{"images": []}', "format")])
def test_bad_json_raises_dataset_error(tmp_path, content, kind):
    path = str(tmp_path / "d.json")
    if content is not None:
        with open(path, "w") as f:
            f.write(content)
    with pytest.raises(DatasetError) as info:
        load_polar_coco_json(path, str(tmp_path), str(tmp_path))
    assert info.value.path == path and info.value.kind == kind


def test_errors_survive_pickling():
    import pickle

    err = pickle.loads(pickle.dumps(StackError("/a/b.npy", "broken", kind="truncated")))
    assert type(err) is StackError and err.kind == "truncated" and str(err) == "/a/b.npy: broken"


# ------------------------------------------------------------------------------------------ skipping
def test_skip_mode_returns_none_and_logs(tiny, tmp_path, caplog):
    record = CASES["stack nan"][3](tmp_path, tiny[2][0])
    cfg = mapper_cfg(DATASETS__ON_BAD_SAMPLE="skip", OUTPUT_DIR=str(tmp_path / "out"))
    mapper = PolarDatasetMapper(cfg, is_train=True)
    with caplog.at_level(logging.WARNING, logger="polar_rcnn.data.mapper"):
        assert mapper(record) is None
    assert mapper.num_skipped == 1
    assert record[STACK_FILE_KEY] in caplog.text and "NaN" in caplog.text
    (entry,) = read_bad_samples(str(tmp_path / "out"))
    assert entry["path"] == record[STACK_FILE_KEY] and entry["kind"] == "nonfinite"
    assert mapper(tiny[2][1]) is not None  # good samples still map
    with pytest.raises(StackError):  # evaluation never skips
        PolarDatasetMapper(cfg, is_train=False)(record)


def test_skip_mode_counts_across_workers_and_training_goes_on(tiny, tmp_path, caplog):
    """A tiny PolarTrainer run (2 data-loader workers) over a dataset with 2 bad samples of 6."""
    root, json_file, records = tiny
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    records = copy.deepcopy(records)
    records[1] = CASES["stack truncated"][3](bad_dir, records[1])
    records[4] = dict(records[4], file_name=str(bad_dir / "missing.png"))
    name = "_test_bad_input_skip"
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).thing_classes = ["glass", "plastic", "metal"]

    out = tmp_path / "out"
    cfg = mapper_cfg(DATASETS__ON_BAD_SAMPLE="skip", OUTPUT_DIR=str(out))
    cfg.DATASETS.TRAIN = (name,)
    cfg.DATASETS.TEST = ()
    cfg.DATALOADER.NUM_WORKERS = 2
    cfg.INPUT.MIN_SIZE_TRAIN = (64,)
    cfg.INPUT.MAX_SIZE_TRAIN = 96
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.SOLVER.MAX_ITER = 3
    cfg.SOLVER.WARMUP_ITERS = 1
    cfg.SOLVER.STEPS = ()
    cfg.SOLVER.CHECKPOINT_PERIOD = 1000
    os.makedirs(out, exist_ok=True)
    trainer = PolarTrainer(cfg)
    report = next(h for h in trainer._hooks if isinstance(h, BadSampleReport))
    try:
        with caplog.at_level(logging.WARNING, logger="polar_rcnn.data.bad_samples"):
            trainer.train()
    finally:
        trainer._trainer._data_loader_iter.close()  # stop the 2 loader workers now, not at exit
    assert trainer.iter == cfg.SOLVER.MAX_ITER  # training finished
    entries = read_bad_samples(str(out))
    assert report.count == len(entries) >= 2  # >= 6 samples drawn (a permutation of 6 first): both bad ones seen
    assert {e["path"] for e in entries} == {records[1][STACK_FILE_KEY], records[4]["file_name"]}
    assert {e["kind"] for e in entries} == {"truncated", "missing"}
    assert os.getpid() not in {e["pid"] for e in entries}  # written by the worker processes
    assert f"Skipped {len(entries)} bad training samples" in caplog.text
    with open(out / "metrics.json") as f:
        written = [json.loads(line) for line in f]
    assert written[-1]["data/bad_samples"] == len(entries)  # the count reaches metrics.json


def test_a_training_set_of_only_bad_samples_is_a_clear_error(tiny, tmp_path):
    _, _, records = tiny
    records = [dict(r, file_name=str(tmp_path / f"missing{i}.png")) for i, r in enumerate(records)]
    name = "_test_bad_input_all_bad"
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).thing_classes = ["glass", "plastic", "metal"]
    cfg = mapper_cfg(DATASETS__ON_BAD_SAMPLE="skip", OUTPUT_DIR=str(tmp_path / "out"))
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (name,), ()
    cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.MAX_ITER = 2, 3
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    with pytest.raises(EmptyTrainingSetError, match="nothing to train on"):
        PolarTrainer(cfg).train()


def test_raise_mode_in_a_data_loader(tiny, tmp_path):
    records = copy.deepcopy(tiny[2])
    records[0] = dict(records[0], file_name=str(tmp_path / "missing.png"))
    cfg = mapper_cfg(OUTPUT_DIR=str(tmp_path))
    cfg.SOLVER.IMS_PER_BATCH = 6
    loader = build_detection_train_loader(cfg, dataset=records, mapper=PolarDatasetMapper(cfg, is_train=True))
    with pytest.raises(ImageError, match="missing.png: image file not found"):
        next(iter(loader))


def test_registration_is_idempotent_but_rejects_other_paths(tiny):
    root, json_file, _ = tiny
    args = ("_test_bad_input_reg", json_file, os.path.join(root, "train", "images"), os.path.join(root, "train", "stacks"))
    register_polar_coco_instances(*args)
    register_polar_coco_instances(*args)  # same paths: nothing happens
    with pytest.raises(ValueError, match="already registered"):
        register_polar_coco_instances(args[0], json_file, "/elsewhere", args[3])
