"""tools/visualize.py: per-image PNGs and a grid of the expected size, from a dataset or files."""
import os
import shutil

import cv2
from tests.tools.eval_tool_utils import DEMO_CONFIG, tiny_opts

from polar_rcnn.evaluation.visualization import GAP
from tools import visualize

H, W = 48, 64  # the tiny split's images


def _read(path):
    image = cv2.imread(str(path))
    assert image is not None and image.std() > 0, path
    return image


def test_dataset_pictures_and_grid(tiny_split, register, tmp_path, capsys):
    root, json_file = tiny_split
    name = register(root, json_file)
    out = tmp_path / "pictures"
    code = visualize.main(["--config-file", DEMO_CONFIG, "--dataset", name, "--output", str(out), "--num-images", "2",
                           "--topk", "10", *tiny_opts()])
    assert code == 0
    pngs = sorted(p for p in os.listdir(out) if p != "grid.png")
    assert pngs == ["v000_f0000.png", "v000_f0001.png"]
    # ground truth | RPN top-10 | detections | DoLP | AoLP, each W wide, file name and captions above
    rows = [_read(out / p).shape for p in pngs]
    assert rows[0] == rows[1] and rows[0][1:] == (5 * W + 4 * GAP, 3) and rows[0][0] > H
    assert _read(out / "grid.png").shape == (2 * rows[0][0] + GAP, rows[0][1], 3)
    assert "grid:" in capsys.readouterr().out


def test_files_without_a_stack_and_chosen_channels(tiny_split, tmp_path):
    root, _ = tiny_split
    stacks = tmp_path / "stacks"
    shutil.copytree(os.path.join(root, "train", "stacks"), stacks)
    os.remove(stacks / "v000_f0000.npy")  # this image is predicted from the image alone
    out = tmp_path / "files"
    code = visualize.main(["--config-file", DEMO_CONFIG, "--input", os.path.join(root, "train", "images", "v000_f000*.png"),
                           "--stacks", str(stacks), "--output", str(out), "--num-images", "2", "--channels", "2",
                           *tiny_opts()])
    assert code == 0
    # no ground truth: RPN | detections (+ one stack channel when there is a stack)
    without, with_stack = _read(out / "v000_f0000.png").shape, _read(out / "v000_f0001.png").shape
    assert without[1] == 2 * W + GAP and with_stack[1] == 3 * W + 2 * GAP
    assert _read(out / "grid.png").shape == (without[0] + with_stack[0] + GAP, 3 * W + 2 * GAP, 3)


def test_usage_errors(tmp_path, capsys):
    assert visualize.main(["--config-file", DEMO_CONFIG, "--dataset", "_nope", "--output", str(tmp_path),
                           *tiny_opts()]) == 2
    assert "not registered" in capsys.readouterr().err
    assert visualize.main(["--config-file", DEMO_CONFIG, "--input", str(tmp_path / "*.png"), "--rgb-only",
                           *tiny_opts()]) == 2
    assert "matches no file" in capsys.readouterr().err


def test_a_stack_model_without_stacks_needs_rgb_only(tiny_split, tmp_path, capsys):
    root, _ = tiny_split
    out = tmp_path / "files"
    args = ["--config-file", DEMO_CONFIG, "--input", os.path.join(root, "train", "images", "v000_f0000.png"),
            "--output", str(out), "--num-images", "1"]
    assert visualize.main([*args, *tiny_opts()]) == 2
    assert "--rgb-only" in capsys.readouterr().err and not out.exists()
    missing = str(tmp_path / "no_such_stacks")
    assert visualize.main([*args, "--stacks", missing, *tiny_opts()]) == 2
    assert missing in capsys.readouterr().err and not out.exists()
    assert visualize.main([*args, "--rgb-only", *tiny_opts()]) == 0
    assert _read(out / "v000_f0000.png").shape[1] == 2 * W + GAP  # RPN | detections
