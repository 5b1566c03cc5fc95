"""Checkpoints that survive kills and bad files: atomic saves (kill -9 mid-save), fallback to the
newest intact checkpoint, no code from weights files, finite weights only, no random model at
evaluation, and a divergence message that says where to resume from."""
import glob
import os
import pathlib
import pickle
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from torch import nn

from tests.common import REPO_ROOT, get_polar_cfg
from detectron2.modeling import build_model

from polar_rcnn.engine import PolarCheckpointer, load_for_inference


class _Payload:
    """Unpickling it creates ``marker`` (a stand-in for arbitrary code)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))


@pytest.mark.parametrize("suffix", [".pkl", ".pth"])
def test_a_crafted_weights_file_runs_no_code(tmp_path, suffix):
    marker = tmp_path / "pwned"
    path = tmp_path / f"evil{suffix}"
    payload = {"model": {"0.weight": _Payload(str(marker))}, "__author__": "x"}
    if suffix == ".pkl":
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path)
    with pytest.raises(RuntimeError) as e:
        PolarCheckpointer(_model()).load(str(path))
    assert str(path) in str(e.value)
    assert not marker.exists(), "the payload ran"


def test_a_truncated_checkpoint_is_an_error_naming_the_file(tmp_path):
    good = tmp_path / "good.pth"
    PolarCheckpointer(_model(), str(tmp_path)).save("good")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(good.read_bytes()[:100])
    with pytest.raises(RuntimeError, match="bad.pth"):
        PolarCheckpointer(_model()).load(str(bad))


def _zoo_pickle(model, path):
    """A Detectron2 model-zoo .pkl: numpy arrays in a dict, pickled by plain pickle."""
    weights = {k: v.numpy() for k, v in model.state_dict().items()}
    with open(path, "wb") as f:
        pickle.dump({"model": weights, "__author__": "Detectron2 Model Zoo", "matching_heuristics": True}, f, protocol=2)


def test_model_zoo_pkl_loads_through_a_detectron2_url(tmp_path, monkeypatch):
    # detectron2:// resolves to dl.fbaipublicfiles.com and is cached under $FVCORE_CACHE: a cached
    # file is read as the real download would be, without the network
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))
    cached = tmp_path / "cache" / "detectron2" / "Test" / "tiny.pkl"
    cached.parent.mkdir(parents=True)
    source = _model()
    _zoo_pickle(source, cached)
    target = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    checkpointer = PolarCheckpointer(target)
    checkpointer.load("detectron2://Test/tiny.pkl")
    assert checkpointer.last_load.loaded == checkpointer.last_load.total == 4
    assert torch.equal(target[0].weight, source[0].weight)


def test_numpy_values_in_a_pth_checkpoint_load(tmp_path):
    path = tmp_path / "np.pth"
    torch.save({"model": _model().state_dict(), "iteration": np.int64(3), "best": np.float64(0.5),
                "arr": np.arange(3)}, path)
    data = PolarCheckpointer(_model())._load_file(str(path))
    assert data["iteration"] == 3 and data["arr"].tolist() == [0, 1, 2]


def test_non_finite_weights_are_never_saved(tmp_path):
    model = _model()
    checkpointer = PolarCheckpointer(model, str(tmp_path))
    checkpointer.save("model_0000004", iteration=4)
    with torch.no_grad():
        model[1].weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError) as e:
        checkpointer.save("model_0000009", iteration=9)
    assert "iteration 9" in str(e.value) and "model_0000004.pth" in str(e.value)
    assert not (tmp_path / "model_0000009.pth").exists()
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000004.pth"


def test_resume_skips_a_corrupt_tagged_checkpoint(tmp_path, caplog):
    model = _model()
    checkpointer = PolarCheckpointer(model, str(tmp_path))
    checkpointer.save("model_0000004", iteration=4)
    checkpointer.save("model_final", iteration=9)
    (tmp_path / "model_final.pth").write_bytes(b"")  # as a kill during a non-atomic write left it
    loaded = PolarCheckpointer(_model(), str(tmp_path)).resume_or_load("", resume=True)
    assert loaded["iteration"] == 4
    assert "model_final.pth" in caplog.text and "newest intact" in caplog.text


_SAVER = textwrap.dedent("""
    import sys, torch
    from torch import nn
    from polar_rcnn.engine import PolarCheckpointer
    model = nn.Linear(8192, 8192, bias=False)  # 256 MB: a save takes a while
    checkpointer = PolarCheckpointer(model, sys.argv[1])
    checkpointer.save("model_final", iteration=1)
    print("saved once", flush=True)
    with torch.no_grad():
        model.weight.add_(1.0)
    checkpointer.save("model_final", iteration=2)
    print("saved twice", flush=True)
""")


def test_kill_during_a_save_leaves_the_previous_checkpoint_intact(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", _SAVER, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            cwd=REPO_ROOT)
    try:
        assert proc.stdout.readline().strip() == "saved once"
        before = (tmp_path / "model_final.pth").read_bytes()
        deadline = time.monotonic() + 120  # a loaded machine may take a while to start the second save
        while not glob.glob(str(tmp_path / ".model_final.pth.*.tmp")):  # until it is under way
            if proc.poll() is not None:
                pytest.fail("the second save finished before it could be killed")
            if time.monotonic() > deadline:
                pytest.fail("the second save never started")
            time.sleep(0.001)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert (tmp_path / "model_final.pth").read_bytes() == before
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    loaded = PolarCheckpointer(nn.Linear(8192, 8192, bias=False), str(tmp_path)).resume_or_load("", resume=True)
    assert loaded["iteration"] == 1


# ------------------------------------------------------------------------------ evaluation
def test_evaluating_a_random_model_is_an_error_unless_allowed(tmp_path):
    cfg = get_polar_cfg()
    with pytest.raises(ValueError, match="MODEL.WEIGHTS is empty"):
        load_for_inference(build_model(cfg), cfg)
    unrelated = tmp_path / "unrelated.pth"
    torch.save({"model": {"some.other.weight": torch.zeros(2)}}, unrelated)
    cfg.MODEL.WEIGHTS = str(unrelated)
    with pytest.raises(ValueError, match="matches none of the model's"):
        load_for_inference(build_model(cfg), cfg)
    cfg.TEST.ALLOW_RANDOM_WEIGHTS = True
    assert load_for_inference(build_model(cfg), cfg).loaded == 0
