"""tools/check_dataset.py and polar_rcnn.data.dataset_checks on tiny synthetic data with planted problems."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
from tests.tools.tool_test_utils import CHANNELS, TOOLS_DIR

from polar_rcnn.data.dataset_checks import PairItem, class_count_warning, pairing_problems
from polar_rcnn.engine.cli import setup_cfg
from tools import check_dataset

OPTS = ["MODEL.POLAR.IN_CHANNELS", str(CHANNELS), "MODEL.ROI_HEADS.NUM_CLASSES", "3"]  # the tiny split's 3 categories


def run(name, capsys, tmp_path, *extra, opts=()):
    """main() on dataset ``name``: (exit code, stdout, problems as {(kind, basename), ...});
    ``opts``: config overrides after :data:`OPTS`."""
    report = tmp_path / "report.json"
    code = check_dataset.main(["--dataset", name, "--no-progress", "--output", str(report), *extra, *OPTS, *opts])
    out = capsys.readouterr().out
    problems = json.loads(report.read_text())["problems"]
    return code, out, {(p["kind"], os.path.basename(p["file"])) for p in problems}


def stack_path(root, stem):
    return os.path.join(root, "train", "stacks", stem + ".npy")


def test_clean_data_passes(tiny_split, register, capsys, tmp_path):
    code, out, problems = run(register(*tiny_split), capsys, tmp_path)
    assert (code, problems) == (0, set()), out
    assert "OK: no problems in 12 images" in out and "warning" not in out


def test_class_count_other_than_the_categories(tiny_split, register, capsys, tmp_path):
    name = register(*tiny_split)
    code, out, problems = run(name, capsys, tmp_path, opts=["MODEL.ROI_HEADS.NUM_CLASSES", "5"])
    assert (code, problems) == (0, set()), out
    assert "OK" not in out and "1 warning" in out
    assert "MODEL.ROI_HEADS.NUM_CLASSES is 5 but the dataset has 3 categories" in out
    assert json.loads((tmp_path / "report.json").read_text())["warnings"]
    # fewer classes than categories: also the annotations of the classes beyond are problems
    code, out, problems = run(name, capsys, tmp_path, opts=["MODEL.ROI_HEADS.NUM_CLASSES", "2"])
    assert code == 1 and {kind for kind, _ in problems} == {"annotation_category"}, out
    assert "MODEL.ROI_HEADS.NUM_CLASSES is 2 but the dataset has 3 categories" in out


def test_class_count_key_of_retinanet():
    cfg = setup_cfg("", ["MODEL.META_ARCHITECTURE", "PolarRetinaNet", "MODEL.RETINANET.NUM_CLASSES", "3",
                         "MODEL.ROI_HEADS.NUM_CLASSES", "7"])
    assert class_count_warning(cfg, ["a", "b", "c"]) is None
    assert "MODEL.RETINANET.NUM_CLASSES is 3 but the dataset has 2" in class_count_warning(cfg, ["a", "b"])
    assert class_count_warning(cfg, None) is None


def test_stacks_swapped_between_videos(tiny_copy, register, capsys, tmp_path):
    root, json_file = tiny_copy
    a, b = stack_path(root, "v000_f0001"), stack_path(root, "v002_f0002")
    os.rename(a, a + ".tmp")
    os.rename(b, a)
    os.rename(a + ".tmp", b)
    code, out, problems = run(register(root, json_file), capsys, tmp_path)
    assert code == 1
    assert problems == {("pair_low_corr", "v000_f0001.npy"), ("pair_low_corr", "v002_f0002.npy")}, out
    assert "v000_f0001.npy" in out and "v002_f0002.npy" in out


def test_stack_of_another_frame_of_the_video(tiny_copy, register, capsys, tmp_path):
    """JSON entries of frames 0 and 3 of a video swapped: each matches its neighbour's image better."""
    root, json_file = tiny_copy
    coco = json.load(open(json_file))
    by_name = {im["file_name"]: im for im in coco["images"]}
    first, last = by_name["v001_f0000.png"], by_name["v001_f0003.png"]
    first["stack_file"], last["stack_file"] = last["stack_file"], first["stack_file"]
    json.dump(coco, open(json_file, "w"))
    name = register(root, json_file)
    code, out, problems = run(name, capsys, tmp_path)
    assert code == 1
    assert problems == {("pair_better_match", "v001_f0003.npy"), ("pair_better_match", "v001_f0000.npy")}, out
    assert "matches the image" in out and "v001_f0000.png" in out
    # frames of one video look alike: the own correlation alone (--neighbours 0) does not catch it
    code, out, problems = run(name, capsys, tmp_path, "--neighbours", "0")
    assert (code, problems) == (0, set()), out


def test_shifted_stack(tiny_copy, register, capsys, tmp_path):
    root, json_file = tiny_copy
    path = stack_path(root, "v001_f0002")
    np.save(path, np.roll(np.load(path), 6, axis=1))
    code, out, problems = run(register(root, json_file), capsys, tmp_path)
    assert (code, problems) == (1, {("pair_low_corr", "v001_f0002.npy")}), out


def test_every_problem_kind(tiny_copy, register, capsys, tmp_path):
    root, json_file = tiny_copy
    images = os.path.join(root, "train", "images")
    stack = np.load(stack_path(root, "v000_f0000"))
    # stack problems
    with open(stack_path(root, "v000_f0000"), "r+b") as f:
        f.truncate(os.path.getsize(f.name) // 2)
    nan = np.load(stack_path(root, "v000_f0001"))
    nan[5, 7, 2] = np.nan
    np.save(stack_path(root, "v000_f0001"), nan)
    np.save(stack_path(root, "v000_f0002"), stack[..., :3])
    np.save(stack_path(root, "v000_f0003"), stack[:40])
    os.remove(stack_path(root, "v001_f0000"))
    # image problems
    os.remove(os.path.join(images, "v001_f0001.png"))
    png = open(os.path.join(images, "v001_f0002.png"), "rb").read()
    open(os.path.join(images, "v001_f0002.png"), "wb").write(png[: len(png) // 2])
    cv2.imwrite(os.path.join(images, "v001_f0003.png"), np.zeros((48, 60, 3), np.uint8))
    # annotation problems
    coco = json.load(open(json_file))
    by_name = {im["file_name"]: im["id"] for im in coco["images"]}
    anns = {name: [a for a in coco["annotations"] if a["image_id"] == by_name[name]] for name in by_name}
    anns["v002_f0000.png"][0]["category_id"] = 99
    anns["v002_f0001.png"][0]["bbox"] = [50.0, 10.0, 30.0, 10.0]  # x1 = 80 > width 64
    anns["v002_f0002.png"][0]["bbox"] = [5.0, 5.0, 0.0, 10.0]
    json.dump(coco, open(json_file, "w"))

    name = register(root, json_file)
    code, out, problems = run(name, capsys, tmp_path)
    expected = {
        ("stack_truncated", "v000_f0000.npy"),
        ("stack_nonfinite", "v000_f0001.npy"),
        ("stack_channels", "v000_f0002.npy"),
        ("stack_size", "v000_f0003.npy"),
        ("stack_missing", "v001_f0000.npy"),
        ("image_missing", "v001_f0001.png"),
        ("image_truncated", "v001_f0002.png"),
        ("image_size", "v001_f0003.png"),
        ("annotation_category", "v002_f0000.png"),
        ("annotation_box_outside", "v002_f0001.png"),
        ("annotation_box_empty", "v002_f0002.png"),
    }
    assert code == 1
    assert problems == expected, out
    for kind, file in expected:
        assert any(kind in line and file in line for line in out.splitlines()), (kind, file)
    assert "| stack_truncated" in out and "count" in out  # the summary table

    # the same findings from a process pool
    code, out, pool_problems = run(name, capsys, tmp_path, "--workers", "2")
    assert (code, pool_problems) == (1, expected)


def test_unreadable_json_and_unknown_dataset(tmp_path, register, capsys):
    os.makedirs(tmp_path / "train" / "images")
    bad = tmp_path / "train.json"
    bad.write_text("{not json")
    code, out, problems = run(register(str(tmp_path), str(bad)), capsys, tmp_path)
    assert (code, problems) == (1, {("dataset_unreadable", "train.json")})
    assert check_dataset.main(["--dataset", "no_such_dataset", "--no-progress"]) == 2


def test_pairing_window_streams_within_groups():
    """The frame whose stack is another frame's is named, within the window and the group only."""
    rng = np.random.default_rng(0)
    maps = [m / np.linalg.norm(m) for m in rng.standard_normal((8, 6, 5)).astype(np.float32)]
    items = [PairItem(f"i{k}.png", f"s{k}.npy", k // 4, maps[k], maps[k]) for k in range(8)]
    assert list(pairing_problems(items, neighbours=2)) == []
    items[1].stack_map = maps[3]  # stack of frame 3, same group, 2 frames away
    items[5].stack_map = maps[2]  # stack of another group: only a low correlation
    found = {(p.kind, p.file): p.message for p in pairing_problems(items, neighbours=2)}
    assert set(found) == {("pair_better_match", "s1.npy"), ("pair_low_corr", "s5.npy")}
    assert "i3.png" in found[("pair_better_match", "s1.npy")]
    found = {(p.kind, p.file) for p in pairing_problems(items, neighbours=1)}  # frame 3 out of reach
    assert found == {("pair_low_corr", "s1.npy"), ("pair_low_corr", "s5.npy")}


def test_command_line_with_config_file(tiny_split, tmp_path):
    """Subprocess smoke test: datasets registered from the config's DATASETS.POLAR_COCO."""
    root, json_file = tiny_split
    config = tmp_path / "data.yaml"
    config.write_text(
        "DATASETS:\n"
        f"  POLAR_COCO: [['tiny_cli', '{json_file}', '{root}/train/images', '{root}/train/stacks']]\n"
        "  TRAIN: ('tiny_cli',)\n  TEST: ()\n"
    )
    cmd = [sys.executable, os.path.join(TOOLS_DIR, "check_dataset.py"), "--config-file", str(config),
           "--no-progress", *OPTS]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "OK: no problems in 12 images of tiny_cli" in out.stdout
