"""Exact resume: a run interrupted after a checkpoint and resumed equals the uninterrupted run
(weights and per-iteration losses bitwise, NUM_WORKERS 0); the loader resumes the same samples
with and without workers; old checkpoints still resume (not exactly, with a warning)."""
import json
import os

import numpy as np
import pytest
import torch

from tests.common import get_polar_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import HookBase

from polar_rcnn.data import TrainLoader, register_polar_coco_instances
from polar_rcnn.data.synthetic import SyntheticConfig, generate_split
from polar_rcnn.engine import PolarTrainer
from polar_rcnn.engine.training_state import drop_metrics_from

NUM_BANDS = 1  # 4 channels


@pytest.fixture(scope="module")
def train_set(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("resume_data"))
    cfg = SyntheticConfig(image_size=(48, 64), num_bands=NUM_BANDS, num_videos=2, frames_per_video=3,
                          object_size=(12, 24), seed=3)
    json_file = generate_split(root, "train", cfg, progress=False)
    name = "_test_resume_train"
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    register_polar_coco_instances(name, json_file, os.path.join(root, "train", "images"),
                                  os.path.join(root, "train", "stacks"))
    return name


def _cfg(output_dir, dataset, **overrides):
    cfg = get_polar_cfg(**overrides)
    cfg.MODEL.POLAR.IN_CHANNELS = 4 * NUM_BANDS
    cfg.MODEL.POLAR.MODALITY_DROPOUT = 0.3  # model-side randomness (main-process torch RNG)
    cfg.DATASETS.TRAIN = (dataset,)
    cfg.DATASETS.TEST = ()
    cfg.INPUT.MIN_SIZE_TRAIN = (40, 48, 56)  # random resize + flips: loader-side randomness
    cfg.INPUT.MAX_SIZE_TRAIN = 80
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.SOLVER.BASE_LR = 0.01
    cfg.SOLVER.MAX_ITER = 6
    cfg.SOLVER.WARMUP_ITERS = 4  # the resumed steps are still in warmup: the LR must be restored
    cfg.SOLVER.STEPS = (5,)
    cfg.SOLVER.CHECKPOINT_PERIOD = 3
    cfg.TEST.EVAL_PERIOD = 0
    cfg.SEED = 0
    cfg.OUTPUT_DIR = str(output_dir)
    return cfg


class _Record(HookBase):
    """Per-iteration total loss and learning rate."""

    def __init__(self):
        self.losses, self.lrs = {}, {}

    def after_step(self):
        self.losses[self.trainer.iter] = self.trainer.storage.history("total_loss").latest()
        self.lrs[self.trainer.iter] = self.trainer.optimizer.param_groups[0]["lr"]


class _Crash(HookBase):
    def __init__(self, at):
        self.at = at

    def before_step(self):
        if self.trainer.iter == self.at:
            raise KeyboardInterrupt("killed")


def _run(cfg, resume=False, crash_at=None):
    from polar_rcnn.engine.runs import seed_from_config

    seed_from_config(cfg)  # as train_net.py's default_setup
    trainer = PolarTrainer(cfg)
    trainer.resume_or_load(resume=resume)
    record = _Record()
    trainer.register_hooks([record] + ([_Crash(crash_at)] if crash_at is not None else []))
    try:
        trainer.train()
    except KeyboardInterrupt:
        pass
    return trainer, record


def _weights(trainer):
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize("unfreeze_iter, optimizer", [(0, "SGD"), (2, "SGD"), (4, "SGD"), (2, "Adam")],
                         ids=["plain", "unfrozen-before-checkpoint", "unfrozen-after", "adam-unfrozen-before-checkpoint"])
def test_interrupted_and_resumed_run_equals_the_uninterrupted_one(train_set, tmp_path, unfreeze_iter, optimizer):
    freeze = {} if not unfreeze_iter else {"MODEL__FREEZE__PARTS": ["rpn"], "MODEL__FREEZE__UNFREEZE_ITER": unfreeze_iter,
                                           "MODEL__FREEZE__UNFREEZE_PARTS": ["rpn"]}
    freeze["SOLVER__OPTIMIZER"] = optimizer  # Adam's moments (exp_avg, exp_avg_sq, step) must resume too
    full, full_record = _run(_cfg(tmp_path / "full", train_set, **freeze))

    cfg = _cfg(tmp_path / "killed", train_set, **freeze)
    _run(cfg, crash_at=4)  # checkpoint after iteration 2, killed during iteration 4
    assert open(tmp_path / "killed" / "last_checkpoint").read() == "model_0000002.pth"
    resumed, record = _run(cfg, resume=True)
    assert resumed.start_iter == 3
    assert sorted(record.losses) == [3, 4, 5]
    with open(tmp_path / "killed" / "metrics.json") as f:
        rows = [json.loads(line) for line in f]
    assert {"iteration": 3, "resumed_from": "model_0000002.pth"} in rows  # the resume, for plot_metrics.py
    for it in (3, 4, 5):
        assert record.lrs[it] == full_record.lrs[it], f"learning rate at iteration {it}"
        assert record.losses[it] == full_record.losses[it], f"loss at iteration {it}"
    a, b = _weights(full), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a), "final weights differ"


def test_metrics_json_has_each_iteration_once_after_a_resume(tmp_path):
    path = tmp_path / "metrics.json"
    rows = [{"iteration": i, "total_loss": float(i)} for i in (19, 39, 59)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"iteration": 6')  # torn last row
    assert drop_metrics_from(str(path), 40) == 2
    assert [json.loads(line)["iteration"] for line in path.read_text().splitlines()] == [19, 39]
    assert drop_metrics_from(str(tmp_path / "none.json"), 3) == 0


def test_checkpoint_without_resume_state_still_resumes_with_a_warning(train_set, tmp_path, caplog):
    cfg = _cfg(tmp_path, train_set)
    _run(cfg, crash_at=4)
    path = tmp_path / "model_0000002.pth"
    old = torch.load(path, weights_only=True)
    del old["trainer"]["resume"], old["trainer"]["_trainer"]  # as written before exact resume existed
    torch.save(old, path)
    resumed, record = _run(cfg, resume=True)
    assert resumed.start_iter == 3 and sorted(record.losses) == [3, 4, 5]
    assert "not exact" in caplog.text
    assert resumed.train_loader.state_dict()["next"] >= 6 * 2  # the stream moved on, not restarted


# ------------------------------------------------------------------------------- the loader
def _records(n):
    # mixed orientations: aspect-ratio grouping keeps samples waiting in buckets across batches
    return [{"file_name": f"img{i}", "width": 40 if i % 3 else 30, "height": 30 if i % 3 else 40, "image_id": i}
            for i in range(n)]


def _random_mapper(record):
    # augmentation-like randomness from all three global RNGs
    return {**record, "aug": (float(np.random.rand()), float(torch.rand(1)), __import__("random").random())}


def _loader(num_workers, grouping=True):
    from detectron2.data.samplers import TrainingSampler

    return TrainLoader(_records(7), mapper=_random_mapper, make_sampler=lambda seed: TrainingSampler(7, seed=seed),
                       batch_size=2, aspect_ratio_grouping=grouping, num_workers=num_workers, seed=5)


def _ids(batch):
    return [(d["image_id"], d["aug"]) for d in batch]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_loader_resumes_with_the_same_samples_and_augmentations(num_workers):
    reference = iter(_loader(0))
    expected = [_ids(next(reference)) for _ in range(9)]

    first = _loader(num_workers)
    it = iter(first)
    got = [_ids(next(it)) for _ in range(4)]
    state = first.state_dict()
    assert state["pending"], "the test should stop with a sample waiting in a bucket"
    second = _loader(num_workers)
    second.load_state_dict(state)
    it2 = iter(second)
    got += [_ids(next(it2)) for _ in range(5)]
    assert got == expected


def test_loader_leaves_the_callers_rng_alone():
    torch.manual_seed(1)
    np.random.seed(1)
    expected = (torch.rand(1), np.random.rand())
    torch.manual_seed(1)
    np.random.seed(1)
    next(iter(_loader(0)))
    assert (torch.rand(1), np.random.rand()) == expected


def test_divergence_names_the_iteration_and_the_checkpoint_to_resume_from(train_set, tmp_path):
    cfg = _cfg(tmp_path, train_set)
    cfg.SOLVER.BASE_LR, cfg.SOLVER.CHECKPOINT_PERIOD, cfg.SOLVER.MAX_ITER = 1e4, 1, 20
    cfg.MODEL.POLAR.MODALITY_DROPOUT = 0.0
    with pytest.raises(FloatingPointError) as e:
        _run(cfg)
    diverged_at = int(str(e.value).split("diverged at iteration ")[1].split(":")[0])
    assert 1 <= diverged_at < 20
    tagged = (tmp_path / "last_checkpoint").read_text() if (tmp_path / "last_checkpoint").exists() else None
    if tagged:  # the newest checkpoint whose weights still gave a finite loss
        assert f"{tmp_path / tagged}" in str(e.value) and int(tagged[6:13]) < diverged_at - 1
    else:
        assert "No checkpoint from before the divergence" in str(e.value)
    # the checkpoint whose weights gave the non-finite loss is set aside, never resumed from
    assert (tmp_path / f"model_{diverged_at - 1:07d}.pth.diverged").exists() or diverged_at - 1 < 0
    for path in tmp_path.glob("model_*.pth"):
        state = torch.load(path, weights_only=True)["model"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


@pytest.mark.parametrize("sampler", ["TrainingSampler", "RepeatFactorTrainingSampler", "RandomSubsetTrainingSampler"])
@pytest.mark.parametrize("grouping", [True, False])
def test_every_detectron2_sampler_resumes_from_the_config(train_set, tmp_path, sampler, grouping):
    from polar_rcnn.data import PolarDatasetMapper, build_train_loader

    cfg = _cfg(tmp_path, train_set)
    cfg.DATALOADER.SAMPLER_TRAIN = sampler
    cfg.DATALOADER.RANDOM_SUBSET_RATIO = 0.5
    cfg.DATALOADER.ASPECT_RATIO_GROUPING = grouping

    def stream(loader, n):
        it = iter(loader)
        return [[(d["image_id"], float(d["image"].float().sum())) for d in next(it)] for _ in range(n)]

    def loader(state=None):
        out = build_train_loader(cfg, mapper)
        out.load_state_dict(state or {**out.state_dict(), "seed": 7})  # each loader draws a seed: pin it
        return out

    mapper = PolarDatasetMapper(cfg, is_train=True)
    reference = stream(loader(), 5)
    interrupted = loader()
    got = stream(interrupted, 2)
    got += stream(loader(interrupted.state_dict()), 3)
    assert got == reference
