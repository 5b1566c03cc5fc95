"""Datasets registered from the config (yaml or train_net.py command line), without Python."""
import json
import os

import pytest

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import default_argument_parser

from tests.common import DEMO_CONFIG, get_polar_cfg
from polar_rcnn.data import STACK_FILE_KEY, DatasetError, register_datasets_from_config
from polar_rcnn.data.synthetic import SyntheticConfig, generate_split


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("registration"))
    cfg = SyntheticConfig(image_size=(32, 40), num_bands=1, num_videos=1, frames_per_video=2, object_size=(8, 12))
    json_file = generate_split(root, "train", cfg, progress=False)
    return [json_file, os.path.join(root, "train", "images"), os.path.join(root, "train", "stacks")]


def _forget(*names):
    for name in names:
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


def test_register_from_config(split):
    _forget("_reg_a")
    cfg = get_polar_cfg()
    cfg.DATASETS.POLAR_COCO = [["_reg_a"] + split]
    cfg.DATASETS.TRAIN = ("_reg_a",)
    assert register_datasets_from_config(cfg) == ["_reg_a"]
    records = DatasetCatalog.get("_reg_a")
    assert len(records) == 2
    assert records[0][STACK_FILE_KEY] == os.path.join(split[2], "v000_f0000.npy")
    assert os.path.isfile(records[0][STACK_FILE_KEY])
    assert records[1]["video_id"] == 0 and records[1]["frame_id"] == 1
    meta = MetadataCatalog.get("_reg_a")
    assert meta.thing_classes == ["glass", "plastic", "metal"] and meta.stack_root == split[2]

    assert register_datasets_from_config(cfg) == ["_reg_a"]  # again, same paths: a no-op
    cfg.DATASETS.POLAR_COCO = [["_reg_a", split[0], split[1], "/other/stacks"]]
    with pytest.raises(ValueError, match="'_reg_a' is already registered"):
        register_datasets_from_config(cfg)


@pytest.mark.parametrize("entry", [["x", "a.json", "img"], "x:a.json:img:stk", ["x", "a.json", "img", 3]])
def test_malformed_entry(entry):
    cfg = get_polar_cfg()
    cfg.DATASETS.POLAR_COCO = [entry]
    with pytest.raises(ValueError, match=r"DATASETS.POLAR_COCO\[0\].*\[name, json_file, image_root, stack_root\]"):
        register_datasets_from_config(cfg)


def test_unknown_dataset_name_says_how_to_register():
    cfg = get_polar_cfg()
    cfg.DATASETS.TEST = ("_reg_nowhere",)
    with pytest.raises(ValueError, match=r"DATASETS.TEST names '_reg_nowhere'.*DATASETS.POLAR_COCO"):
        register_datasets_from_config(cfg)


def test_builtin_names_are_registered():
    register_datasets_from_config(get_polar_cfg())  # the demo config trains on polar_synth_*
    assert {"polar_synth_train", "polar_synth_val"} <= set(DatasetCatalog.list())


def test_train_net_setup_registers_from_the_command_line(split, tmp_path, monkeypatch):
    _forget("_reg_cli")
    import train_net  # the repository root is on sys.path (tests is a package under it)

    monkeypatch.setattr(train_net, "default_setup", lambda cfg, args: None)  # no global logging/seeding here
    entry = "[" + ", ".join(repr(v) for v in ["_reg_cli"] + split) + "]"
    args = default_argument_parser().parse_args([
        "--config-file", DEMO_CONFIG,
        "DATASETS.POLAR_COCO", f"[{entry}]",
        "DATASETS.TRAIN", "('_reg_cli',)", "DATASETS.TEST", "('_reg_cli',)",
        "OUTPUT_DIR", str(tmp_path),
    ])
    cfg = train_net.setup(args)
    assert cfg.DATASETS.TRAIN == ("_reg_cli",)
    assert len(DatasetCatalog.get("_reg_cli")) == 2
    assert MetadataCatalog.get("_reg_cli").json_file == split[0]


def _renamed_stack_key(split, tmp_path, key):
    """A copy of the split's JSON whose image entries name their stack under ``key``."""
    with open(split[0]) as f:
        coco = json.load(f)
    for image in coco["images"]:
        image[key] = image.pop("stack_file")
    path = str(tmp_path / f"{key}.json")
    with open(path, "w") as f:
        json.dump(coco, f)
    return path


def test_stack_key_from_config(split, tmp_path):
    _forget("_reg_key")
    json_file = _renamed_stack_key(split, tmp_path, "polar_file")
    cfg = get_polar_cfg()
    cfg.DATASETS.POLAR_COCO = [["_reg_key", json_file, split[1], split[2]]]
    cfg.DATASETS.STACK_KEY = "polar_file"
    register_datasets_from_config(cfg)
    records = DatasetCatalog.get("_reg_key")
    assert [r[STACK_FILE_KEY] for r in records] == [os.path.join(split[2], f"v000_f000{i}.npy") for i in range(2)]
    cfg.DATASETS.STACK_KEY = "pol"  # the same name with another key is another dataset
    with pytest.raises(ValueError, match="'_reg_key' is already registered"):
        register_datasets_from_config(cfg)


def test_stack_key_missing_everywhere_names_the_keys(split, tmp_path):
    _forget("_reg_nokey")
    json_file = _renamed_stack_key(split, tmp_path, "spectral")
    cfg = get_polar_cfg()
    cfg.DATASETS.POLAR_COCO = [["_reg_nokey", json_file, split[1], split[2]]]
    register_datasets_from_config(cfg)  # the default key, "stack_file"
    with pytest.raises(DatasetError) as info:
        DatasetCatalog.get("_reg_nokey")
    message = str(info.value)
    assert info.value.path == json_file and info.value.kind == "format"
    assert "'stack_file' (DATASETS.STACK_KEY)" in message and "'spectral'" in message and "'file_name'" in message
