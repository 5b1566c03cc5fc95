"""The provisioned detectron2: self-check script, model-zoo configs, the compat patch's fixes."""
import os
import subprocess
import sys

import pytest
import torch

from tests.common import REPO_ROOT

VENV_PYTHON = os.path.join(REPO_ROOT, ".venv", "bin", "python")


def test_provision_check_only_passes():
    python = VENV_PYTHON if os.path.exists(VENV_PYTHON) else sys.executable
    result = subprocess.run(
        [python, os.path.join(REPO_ROOT, "tools", "provision_detectron2.py"), "--check-only"],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "self-check passed" in result.stdout


def test_model_zoo_configs_are_installed():
    from detectron2 import model_zoo

    path = model_zoo.get_config_file("COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml")
    assert os.path.isfile(path)
    with pytest.raises(RuntimeError):
        model_zoo.get_config_file("COCO-Detection/no_such_config.yaml")


def _step_lr(optimizer):
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.1)


def _detectron2_scheduler(optimizer):
    from detectron2.config import get_cfg
    from detectron2.solver import build_lr_scheduler

    cfg = get_cfg()
    cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS, cfg.SOLVER.WARMUP_ITERS = 10, (2,), 1
    return build_lr_scheduler(cfg, optimizer)


@pytest.mark.parametrize("make_scheduler", [_step_lr, _detectron2_scheduler], ids=["StepLR", "detectron2"])
def test_lr_scheduler_hook_state_dict_round_trip(make_scheduler):
    from detectron2.engine.hooks import LRScheduler

    def make():
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=1.0)
        return optimizer, make_scheduler(optimizer)

    optimizer, scheduler = make()
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    state = LRScheduler(optimizer, scheduler).state_dict()
    assert state, "the hook must save the scheduler's state"
    assert state["last_epoch"] == 3

    optimizer2, scheduler2 = make()
    assert scheduler2.last_epoch == 0
    LRScheduler(optimizer2, scheduler2).load_state_dict(state)
    assert scheduler2.last_epoch == 3
    # with the optimizer restored too (as the checkpointer does; StepLR is chainable, it scales
    # the optimizer's current lr), the restored scheduler continues exactly like the original
    optimizer2.load_state_dict(optimizer.state_dict())
    for _ in range(2):
        optimizer.step(), scheduler.step()
        optimizer2.step(), scheduler2.step()
        assert scheduler2.get_last_lr() == pytest.approx(scheduler.get_last_lr())
    assert scheduler.get_last_lr()[0] < 1.0


def test_patch_7_map_dataset_retries_after_a_skipped_sample():
    # the test loaders (and any Detectron2 MapDataset) draw another index when the map function
    # returns None; unpatched 0.6 raises TypeError (random.sample on a set) on Python >= 3.11
    from detectron2.data.common import MapDataset

    mapped = MapDataset(list(range(5)), lambda x: None if x == 0 else x)
    assert mapped[0] in {1, 2, 3, 4}


def test_patch_12_default_trainer_checkpoints_its_optimizer():
    # exact resume (polar_rcnn.engine.PolarTrainer) relies on the optimizer state in checkpoints
    from detectron2.engine import DefaultTrainer, SimpleTrainer

    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    trainer = DefaultTrainer.__new__(DefaultTrainer)
    super(DefaultTrainer, trainer).__init__()
    trainer._trainer = SimpleTrainer(model, [[torch.zeros(2)]], optimizer)
    model(torch.ones(2)).sum().backward()
    optimizer.step()
    state = trainer.state_dict()
    assert state["_trainer"]["optimizer"]["state"], "the momentum buffers must be saved"
    fresh = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    trainer._trainer.optimizer = fresh
    trainer.load_state_dict(state)
    assert fresh.param_groups[0]["lr"] == 0.1 and fresh.state


def test_patch_1_missing_compiled_ops_fail_clearly_when_used():
    from detectron2 import _compiled

    if _compiled.HAS_COMPILED_EXTENSION:
        pytest.skip("detectron2 has its compiled ops here")
    with pytest.raises(ImportError, match="deform_conv_forward needs detectron2's compiled"):
        _compiled._C.deform_conv_forward


def test_patch_14_retinanet_head_builds_and_trains_with_group_norm():
    # MODEL.RETINANET.NORM "GN": unpatched 0.6 probes the norm with 1 channel and raises ValueError
    from detectron2.layers import ShapeSpec
    from detectron2.modeling.meta_arch.retinanet import RetinaNetHead

    torch.manual_seed(0)
    head = RetinaNetHead(input_shape=[ShapeSpec(channels=64)] * 2, num_classes=3, num_anchors=9,
                         conv_dims=[64, 64], norm="GN")
    assert sum(isinstance(m, torch.nn.GroupNorm) for m in head.modules()) == 4  # 2 convs x 2 subnets
    features = [torch.rand(2, 64, 16, 16), torch.rand(2, 64, 8, 8)]
    logits, deltas = head(features)
    assert [t.shape for t in logits] == [(2, 27, 16, 16), (2, 27, 8, 8)]
    assert [t.shape for t in deltas] == [(2, 36, 16, 16), (2, 36, 8, 8)]
    (sum(t.sum() for t in logits) + sum(t.sum() for t in deltas)).backward()
    assert head.cls_subnet[1].weight.grad.abs().sum() > 0  # the GroupNorm's scale trains


def _report_process_group_at_exit(out_dir):
    # runs when the spawned worker's interpreter shuts down, after launch's worker function returned
    import multiprocessing.util

    import torch.distributed as dist
    from detectron2.utils import comm

    def report():
        with open(os.path.join(out_dir, str(os.getpid())), "w") as f:
            f.write(f"{dist.is_initialized()} {comm._LOCAL_PROCESS_GROUP is None}")

    multiprocessing.util.Finalize(None, report, exitpriority=100)


def test_patch_15_launch_tears_its_process_groups_down_before_the_workers_exit(tmp_path):
    # a live gloo group at interpreter exit can SIGABRT a worker that finished its work
    from detectron2.engine import launch

    launch(_report_process_group_at_exit, 2, dist_url="auto", args=(str(tmp_path),))
    reports = [p.read_text() for p in tmp_path.iterdir()]
    assert reports == ["False True"] * 2, reports
