"""Tiny training runs: SEED makes runs repeat exactly; per-category AP reaches metrics.json; the best
checkpoint hook keeps model_best.pth without moving last_checkpoint."""
import json
import os

import torch
from tests.evaluation.eval_test_utils import tiny_train_cfg

from polar_rcnn.engine.runs import train_and_evaluate


def _metrics(output_dir):
    with open(os.path.join(output_dir, "metrics.json")) as f:
        return [json.loads(line) for line in f]


def _losses(output_dir):
    return [{k: v for k, v in m.items() if k.startswith("loss_") or k == "total_loss"}
            for m in _metrics(output_dir) if "total_loss" in m]


def test_same_seed_same_losses_other_seed_other_losses(tiny_data, tmp_path):
    runs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        cfg = tiny_train_cfg(tiny_data, tmp_path / name, max_iter=1, SEED=seed)
        cfg.DATASETS.TEST = ()  # training only
        cfg.MODEL.POLAR.MODALITY_DROPOUT = 0.5  # also draws from the seeded RNG
        train_and_evaluate(cfg)
        runs[name] = _losses(tmp_path / name)
    assert runs["a"] and all(len(r) >= 4 for r in runs["a"])
    assert runs["a"] == runs["b"]
    assert runs["a"] != runs["c"]


def test_best_checkpoint_and_per_category_ap(tiny_data, tmp_path):
    cfg = tiny_train_cfg(tiny_data, tmp_path, max_iter=2)
    cfg.TEST.EVAL_PERIOD = 1  # after iteration 0 (before any periodic checkpoint) and at the end
    cfg.TEST.BEST_CHECKPOINT_METRIC = "bbox/AP50"
    cfg.TEST.BEST_CHECKPOINT_MODE = "max"
    results = train_and_evaluate(cfg)
    assert {"AP", "AP50", "AP75"} <= set(results["bbox"])

    evals = [m for m in _metrics(tmp_path) if "bbox/AP50" in m]
    assert len(evals) == 2 and evals[0]["iteration"] == 0  # every EVAL_PERIOD and at the end
    per_category = {k for m in evals for k in m if k.startswith("bbox/AP-")}
    assert per_category == {"bbox/AP-glass", "bbox/AP-plastic", "bbox/AP-metal"}

    best = tmp_path / "model_best.pth"
    assert best.is_file()
    saved = torch.load(best, map_location="cpu", weights_only=False)
    best_ap50 = max(m["bbox/AP50"] for m in evals)
    assert saved["iteration"] == next(m["iteration"] for m in evals if m["bbox/AP50"] == best_ap50)
    assert "model" in saved
    # --resume continues from the latest periodic checkpoint, not from the best one
    assert (tmp_path / "last_checkpoint").read_text().strip() == "model_final.pth"
