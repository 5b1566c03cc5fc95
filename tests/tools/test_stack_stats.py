"""tools/stack_stats.py: streaming per-channel statistics equal numpy's and paste into a config."""
import glob
import os
import shlex
import shutil

import numpy as np
import pytest
from tests.tools.tool_test_utils import CHANNELS

from detectron2.config import get_cfg

from polar_rcnn import add_polar_config
from polar_rcnn.data.stack_statistics import ChannelStats
from polar_rcnn.data.synthetic import SyntheticConfig, generate_split
from tools import stack_stats



@pytest.fixture(scope="module")
def uint16_split(tmp_path_factory):
    """Tiny split with uint16 stacks (scaled by 1/65535 when read): (root, json_file)."""
    root = str(tmp_path_factory.mktemp("tools_stats"))
    cfg = SyntheticConfig(image_size=(40, 56), num_bands=1, num_videos=2, frames_per_video=3, object_size=(10, 20),
                          stack_dtype="uint16", seed=5)
    return root, generate_split(root, "train", cfg, progress=False)


def _polar_cfg():
    cfg = get_cfg()
    add_polar_config(cfg)
    cfg.MODEL.POLAR.IN_CHANNELS = CHANNELS
    return cfg


def test_stats_match_numpy_and_merge_into_config(uint16_split, register, tmp_path, capsys):
    root, json_file = uint16_split
    name = register(root, json_file)
    yaml_file = tmp_path / "stats.yaml"
    code = stack_stats.main(["--dataset", name, "--output", str(yaml_file), "--no-progress",
                             "MODEL.POLAR.IN_CHANNELS", str(CHANNELS)])
    assert code == 0
    stacks = [np.load(p) for p in sorted(glob.glob(os.path.join(root, "train", "stacks", "*.npy")))]
    assert len(stacks) == 6 and stacks[0].dtype == np.uint16
    pixels = np.concatenate([s.reshape(-1, CHANNELS) for s in stacks]).astype(np.float64) / 65535.0
    mean, std = pixels.mean(axis=0), pixels.std(axis=0)

    cfg = _polar_cfg()
    cfg.merge_from_file(str(yaml_file))
    np.testing.assert_allclose(cfg.MODEL.POLAR.STACK_MEAN, mean, atol=1e-4)
    np.testing.assert_allclose(cfg.MODEL.POLAR.STACK_STD, std, atol=1e-4)
    assert np.ptp(mean) > 1e-4  # per channel, not one number repeated

    out = capsys.readouterr().out
    printed = stack_stats.config_lines(cfg.MODEL.POLAR.STACK_MEAN, cfg.MODEL.POLAR.STACK_STD)[0]
    assert printed in out and "_BASE_" not in yaml_file.read_text()  # no --config-file: no base
    opts_line = next(line for line in out.splitlines() if line.startswith("MODEL.POLAR.STACK_MEAN"))
    from_opts = _polar_cfg()
    from_opts.merge_from_list(shlex.split(opts_line))
    assert from_opts.MODEL.POLAR.STACK_MEAN == cfg.MODEL.POLAR.STACK_MEAN
    assert from_opts.MODEL.POLAR.STACK_STD == cfg.MODEL.POLAR.STACK_STD


def test_streaming_merge_equals_numpy_over_uneven_batches():
    rng = np.random.default_rng(0)
    batches = [rng.normal(1000.0, 0.01 * (k + 1), size=(n, 3)) for k, n in enumerate((1, 7, 300, 2))]
    stats = ChannelStats()
    for b in batches:
        stats.merge(*ChannelStats.of(b))
    every = np.concatenate(batches)
    assert stats.count == len(every)
    np.testing.assert_allclose(stats.mean, every.mean(axis=0), rtol=0, atol=1e-9)
    np.testing.assert_allclose(stats.std, every.std(axis=0), rtol=1e-9)


def test_bad_stack_is_named(uint16_split, register, tmp_path, capsys):
    root = str(tmp_path / "data")
    shutil.copytree(uint16_split[0], root)
    bad = os.path.join(root, "train", "stacks", "v001_f0002.npy")
    np.save(bad, np.load(bad)[..., :3])
    name = register(root, os.path.join(root, "train.json"))
    assert stack_stats.main(["--dataset", name, "--no-progress", "MODEL.POLAR.IN_CHANNELS", str(CHANNELS)]) == 2
    assert "v001_f0002.npy" in capsys.readouterr().err


def test_output_is_a_config_to_train_with(uint16_split, register, tmp_path, capsys):
    root, json_file = uint16_split
    name = register(root, json_file)
    (tmp_path / "configs").mkdir()
    base = tmp_path / "configs" / "base.yaml"
    base.write_text("SOLVER:\n  BASE_LR: 0.0123\nMODEL:\n  POLAR:\n    HIDDEN_CHANNELS: 7\n")
    output = tmp_path / "runs" / "stats.yaml"
    output.parent.mkdir()
    derived = ["INPUT.STACK.POLARIZATION", "angles", "INPUT.STACK.CHANNELS", str(CHANNELS),
               "INPUT.STACK.DERIVED", "dolp_aolp_trig", "MODEL.POLAR.IN_CHANNELS", "3"]
    assert stack_stats.main(["--config-file", str(base), "--dataset", name, "--output", str(output),
                             "--no-progress", *derived]) == 0
    assert f"train_net.py --config-file {output}" in capsys.readouterr().out
    text = output.read_text()
    assert "_BASE_: ../configs/base.yaml" in text
    assert os.listdir(output.parent) == ["stats.yaml"]  # no temporary file left

    moved = tmp_path / "moved"
    shutil.copytree(tmp_path / "configs", moved / "configs")
    shutil.copytree(tmp_path / "runs", moved / "runs")
    for path in (output, moved / "runs" / "stats.yaml"):  # the relative _BASE_ moves with both folders
        cfg = get_cfg()
        add_polar_config(cfg)
        cfg.merge_from_file(str(path))
        assert cfg.SOLVER.BASE_LR == 0.0123 and cfg.MODEL.POLAR.HIDDEN_CHANNELS == 7  # the base's keys
        assert (cfg.INPUT.STACK.DERIVED, cfg.INPUT.STACK.CHANNELS, cfg.MODEL.POLAR.IN_CHANNELS) == (
            "dolp_aolp_trig", CHANNELS, 3)  # the overrides that shaped the statistics
        assert len(cfg.MODEL.POLAR.STACK_MEAN) == len(cfg.MODEL.POLAR.STACK_STD) == 3
        assert 0 < cfg.MODEL.POLAR.STACK_MEAN[0] < 1 and cfg.MODEL.POLAR.STACK_STD[1] > 0  # DoLP, cos 2 AoLP


def test_base_path_relative_to_the_output_folder(tmp_path):
    assert stack_stats.base_path(str(tmp_path / "c" / "a.yaml"), str(tmp_path / "o" / "x" / "s.yaml")) == \
        os.path.join("..", "..", "c", "a.yaml")
    assert stack_stats.base_path(str(tmp_path / "a.yaml"), str(tmp_path / "s.yaml")) == "a.yaml"
