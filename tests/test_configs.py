"""Every shipped config loads and builds; add_polar_config only adds its own sections."""
import glob
import subprocess
import sys
import os

import pytest
import torch

from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model

from tests.common import CONFIG_DIR, REPO_ROOT
from polar_rcnn import add_polar_config
from polar_rcnn.data import loader_stack_channels
from detectron2.modeling import GeneralizedRCNN
from polar_rcnn.modeling import PolarBranch, PolarFPN, PolarRCNN, PolarRetinaNet

CONFIG_FILES = sorted(glob.glob(os.path.join(CONFIG_DIR, "*.yaml")))
R50_AS_IS = "faster_rcnn_R_50_FPN_1x_polar_synth.yaml"


def load_config(path):
    cfg = get_cfg()
    add_polar_config(cfg)
    cfg.merge_from_file(path)
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def test_config_files_found():
    names = {os.path.basename(p) for p in CONFIG_FILES}
    assert {"Base-PolarRCNN-FPN.yaml", "faster_rcnn_R_18_FPN_demo_polar_synth.yaml", R50_AS_IS} <= names


@pytest.mark.parametrize("path", CONFIG_FILES, ids=os.path.basename)
def test_config_builds_and_runs(path):
    cfg = load_config(path)
    name = os.path.basename(path)
    if cfg.MODEL.RESNETS.DEPTH >= 50 and name != R50_AS_IS:
        cfg.MODEL.RESNETS.DEPTH = 18  # speed; one R50 config is built as is
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    torch.manual_seed(0)
    model = build_model(cfg)
    is_polar = cfg.MODEL.META_ARCHITECTURE in ("PolarRCNN", "PolarRetinaNet")
    expected_arch = {"PolarRCNN": PolarRCNN, "PolarRetinaNet": PolarRetinaNet, "GeneralizedRCNN": GeneralizedRCNN}
    assert type(model) is expected_arch[cfg.MODEL.META_ARCHITECTURE]
    if is_polar:
        assert model.stack_channels == cfg.MODEL.POLAR.IN_CHANNELS
    if isinstance(model.backbone, PolarFPN):
        assert isinstance(model.backbone.polar_branch, PolarBranch)
    else:  # RGB-only baselines read no stack at all
        assert is_polar or not cfg.INPUT.STACK.ENABLED
    if name == R50_AS_IS:
        assert cfg.MODEL.RESNETS.DEPTH == 50
        assert len(model.backbone.bottom_up.res4) == 6  # R50: 3-4-6-3 blocks
    for ds in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST):
        assert ds in DatasetCatalog.list(), f"{name}: dataset {ds} is not registered"

    # the built model runs on an input with a stack as the loader delivers it
    g = torch.Generator().manual_seed(0)
    inputs = [{"image": torch.rand(3, 64, 80, generator=g) * 255}]
    if is_polar:
        inputs[0]["stack"] = torch.rand(loader_stack_channels(cfg), 64, 80, generator=g)
    model.eval()
    with torch.no_grad():
        (out,) = model(inputs)
    assert out["instances"].image_size == (64, 80)


def test_add_polar_config_adds_sections():
    cfg = get_cfg()
    add_polar_config(cfg)
    assert {"IN_CHANNELS", "HIDDEN_CHANNELS", "PRE_KERNEL_SIZE", "POST_KERNEL_SIZE", "INPUT_STRIDE",
            "ZERO_INIT", "INJECT", "STACK_MEAN", "STACK_STD"} <= set(cfg.MODEL.POLAR.keys())
    assert {"ENABLED", "LAYOUT", "SCALE"} <= set(cfg.INPUT.STACK.keys())
    assert cfg.MODEL.POLAR.INJECT in ("rpn", "roi", "both")
    assert cfg.INPUT.STACK.LAYOUT in ("HWC", "CHW")


def test_add_polar_config_changes_no_detectron2_default():
    before = get_cfg().dump()
    other = get_cfg()
    add_polar_config(other)
    other.merge_from_file(os.path.join(CONFIG_DIR, "faster_rcnn_R_18_FPN_demo_polar_synth.yaml"))
    # the global defaults are untouched
    assert get_cfg().dump() == before
    # and on the cfg it was called on, every Detectron2 key keeps its default; new keys are ours
    fresh, extended = _flatten(get_cfg()), _flatten(_with_polar_config())
    assert {k: extended[k] for k in fresh} == fresh
    assert all(k.startswith(POLAR_SECTIONS) for k in set(extended) - set(fresh)), set(extended) - set(fresh)


POLAR_SECTIONS = ("MODEL.POLAR.", "MODEL.FREEZE.", "INPUT.STACK.", "DATASETS.POLAR_COCO", "DATASETS.ON_BAD_SAMPLE",
                  "DATASETS.STACK_KEY",
                  "MODEL.LOSS_WEIGHTS.", "TEST.BEST_CHECKPOINT_", "TEST.ALLOW_RANDOM_WEIGHTS", "SOLVER.OPTIMIZER")


def _with_polar_config():
    cfg = get_cfg()
    add_polar_config(cfg)
    return cfg


def _flatten(node, prefix=""):
    out = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_every_polar_key_has_a_comment_and_shows_in_train_net_help():
    from polar_rcnn.config import polar_config_help, polar_key_comments

    added = set(_flatten(_with_polar_config())) - set(_flatten(get_cfg()))
    comments = polar_key_comments()
    assert set(comments) == added
    assert all(comments.values()), [k for k, c in comments.items() if not c]
    text = polar_config_help()
    assert all(f"  {key} = " in text for key in added)
    result = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "train_net.py"), "--help"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "MODEL.POLAR.INJECT = 'rpn'" in result.stdout
    assert "FutureWarning" not in result.stderr  # fvcore's torch.jit.script deprecation is filtered
