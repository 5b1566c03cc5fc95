"""Tiny end to end: synthetic data -> PolarTrainer (train, checkpoint, COCO eval) -> train_net CLI."""
import json
import os
import subprocess
import sys

import pytest
import torch

from tests.common import REPO_ROOT, get_polar_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog

from polar_rcnn.data import register_polar_coco_instances
from polar_rcnn.data.synthetic import SyntheticConfig, generate_split
from polar_rcnn.engine import PolarTrainer

NUM_BANDS = 1  # 4 channels


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("polar_synth_tiny"))
    names = {}
    for split, seed in (("train", 0), ("val", 1000)):
        cfg = SyntheticConfig(image_size=(64, 80), num_bands=NUM_BANDS, num_videos=2, frames_per_video=3,
                              object_size=(16, 30), seed=seed)
        json_file = generate_split(root, split, cfg, progress=False)
        name = f"_test_e2e_{split}"
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        register_polar_coco_instances(name, json_file, os.path.join(root, split, "images"),
                                      os.path.join(root, split, "stacks"))
        names[split] = (name, json_file)
    return root, names


def _tiny_cfg(output_dir, names):
    cfg = get_polar_cfg()
    cfg.MODEL.POLAR.IN_CHANNELS = 4 * NUM_BANDS
    cfg.DATASETS.TRAIN = (names["train"][0],)
    cfg.DATASETS.TEST = (names["val"][0],)
    cfg.INPUT.MIN_SIZE_TRAIN = (64,)
    cfg.INPUT.MAX_SIZE_TRAIN = 96
    cfg.INPUT.MIN_SIZE_TEST = 64
    cfg.INPUT.MAX_SIZE_TEST = 96
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.SOLVER.MAX_ITER = 3
    cfg.SOLVER.WARMUP_ITERS = 1
    cfg.SOLVER.STEPS = ()
    cfg.SOLVER.CHECKPOINT_PERIOD = 2
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.TEST.EVAL_PERIOD = 0
    cfg.OUTPUT_DIR = str(output_dir)
    return cfg


def test_train_checkpoint_and_coco_eval(tiny_dataset, tmp_path):
    _, names = tiny_dataset
    cfg = _tiny_cfg(tmp_path, names)
    trainer = PolarTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()  # the final EvalHook runs COCO evaluation on the val split
    assert os.path.isfile(tmp_path / "model_final.pth")
    with open(tmp_path / "metrics.json") as f:
        metrics = [json.loads(line) for line in f]
    assert any("total_loss" in m for m in metrics)
    assert any("bbox/AP" in m for m in metrics), "no COCO evaluation results were logged"

    results = PolarTrainer.test(cfg, trainer.model)
    assert set(results["bbox"]) >= {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    detections = tmp_path / "inference" / names["val"][0] / "coco_instances_results.json"
    assert detections.is_file()


def _run_captured(cmd, **kwargs):
    """``subprocess.run`` with captured output; a failure shows the end of that output."""
    out = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert out.returncode == 0, f"exit {out.returncode}:\n{out.stdout[-3000:]}\n{out.stderr[-6000:]}"
    return out


def test_train_net_cli_ddp_resume_and_eval_only(tiny_dataset, tmp_path):
    root, names = tiny_dataset
    # the CLI registers datasets itself: point the built-in polar_synth_* names at the tiny data
    os.symlink(root, tmp_path / "polar_synth")
    env = dict(os.environ, POLAR_RCNN_DATASETS=str(tmp_path))
    opts = [
        # the demo config's derived inputs: DoLP, cos 2 AoLP, sin 2 AoLP per band
        "INPUT.STACK.CHANNELS", str(4 * NUM_BANDS), "MODEL.POLAR.IN_CHANNELS", str(3 * NUM_BANDS),
        "MODEL.POLAR.STACK_MEAN", "[0.0]", "MODEL.POLAR.STACK_STD", "[1.0]", "MODEL.RESNETS.DEPTH", "18",
        "MODEL.FPN.OUT_CHANNELS", "64", "MODEL.ROI_BOX_HEAD.FC_DIM", "64",
        "MODEL.POLAR.HIDDEN_CHANNELS", "8", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32",
        "MODEL.RPN.POST_NMS_TOPK_TRAIN", "64", "MODEL.RPN.POST_NMS_TOPK_TEST", "64",
        "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96", "INPUT.MIN_SIZE_TEST", "64",
        "INPUT.MAX_SIZE_TEST", "96", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.STEPS", "()",
        "SOLVER.WARMUP_ITERS", "1", "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", str(tmp_path / "out"),
    ]
    cmd = [sys.executable, os.path.join(REPO_ROOT, "train_net.py"), "--config-file",
           os.path.join(REPO_ROOT, "configs", "faster_rcnn_R_18_FPN_demo_polar_synth.yaml")]
    # two CPU processes through Detectron2's launch (DDP over gloo), one image each
    ddp = cmd + ["--num-gpus", "2"]
    subprocess.run(ddp + opts[:-1] + [str(tmp_path / "full"), "SOLVER.MAX_ITER", "3", "SOLVER.CHECKPOINT_PERIOD", "1"],
                   check=True, env=env, cwd=tmp_path)
    subprocess.run(ddp + opts + ["SOLVER.MAX_ITER", "2", "SOLVER.CHECKPOINT_PERIOD", "1"], check=True, env=env, cwd=tmp_path)
    state = torch.load(tmp_path / "out" / "model_final.pth", weights_only=True)["trainer"]
    assert len(state["resume"]["ranks"]) == 2 and "optimizer" in state["_trainer"]
    # --resume under DDP continues from the last checkpoint exactly as the uninterrupted run went on
    out = _run_captured(ddp + ["--resume"] + opts + ["SOLVER.MAX_ITER", "3"], env=env, cwd=tmp_path)
    assert "Starting training from iteration 2" in out.stdout + out.stderr
    full = torch.load(tmp_path / "full" / "model_final.pth", weights_only=True)["model"]
    resumed = torch.load(tmp_path / "out" / "model_final.pth", weights_only=True)["model"]
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    out = _run_captured(cmd + ["--eval-only"] + opts + ["MODEL.WEIGHTS", str(tmp_path / "out" / "model_final.pth")],
                        env=env, cwd=tmp_path)
    # pycocotools prints the standard 12-line summary
    assert out.stdout.count("Average Precision") == 6 and out.stdout.count("Average Recall") == 6
    with open(tmp_path / "out" / "metrics.json") as f:
        row = [json.loads(line) for line in f][-1]  # the numbers are recorded, with the weights they came from
    assert row["eval_only"].endswith("model_final.pth") and row["iteration"] == 2 and "bbox/AP" in row
    # without weights, evaluation refuses a random model
    out = subprocess.run(cmd + ["--eval-only"] + opts, env=env, cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode != 0 and "MODEL.WEIGHTS is empty" in out.stderr
