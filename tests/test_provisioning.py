"""The provisioned detectron2: self-check script, model-zoo configs, the LRScheduler compat patch."""
import os
import subprocess
import sys

import pytest
import torch

from common import REPO_ROOT

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
