"""UnfreezeHook: flips requires_grad and extends optimizer + LR scheduler at exactly UNFREEZE_ITER;
resume after the unfreeze; DDP (two gloo processes)."""
import itertools
import os

import pytest
import torch
from torch import nn

from detectron2.engine import HookBase, SimpleTrainer, hooks, launch
from detectron2.utils import comm

from tests.common import get_polar_cfg, random_inputs
from polar_rcnn.engine import PolarCheckpointer, PolarTrainer, UnfreezeHook, freeze_parameters, select_parameters
from polar_rcnn.engine.freezing import is_kept_in_eval

UNFREEZE_ITER = 2


class InMemoryTrainer(PolarTrainer):
    """PolarTrainer on two fixed random batches (no files)."""

    @classmethod
    def build_train_loader(cls, cfg):
        return itertools.cycle([random_inputs(1, (64, 64), seed=s) for s in range(2)])


class Recorder(HookBase):
    """Per iteration: rpn trainable?, optimizer groups, lrs, base_lrs and an rpn weight after the step."""

    def __init__(self):
        self.steps = {}

    def after_step(self):
        t = self.trainer
        self.steps[t.iter] = {
            "rpn_trainable": t.model.proposal_generator.rpn_head.conv.weight.requires_grad,
            "rpn_in_optimizer": any(p is t.model.proposal_generator.rpn_head.conv.weight
                                    for g in t.optimizer.param_groups for p in g["params"]),
            "groups": len(t.optimizer.param_groups),
            "lrs": [g["lr"] for g in t.optimizer.param_groups],
            "base_lrs": list(t.scheduler.base_lrs),
            "rpn_weight": t.model.proposal_generator.rpn_head.conv.weight.detach().clone(),
            "rpn_layer_in_eval": is_kept_in_eval(t.model.proposal_generator.rpn_head.objectness_logits),
            "rpn_losses": "loss_rpn_cls" in t.storage.latest(),
        }


def tiny_cfg(output_dir, max_iter):
    cfg = get_polar_cfg()
    cfg.MODEL.FREEZE.PARTS = ["image_bottom_up", "fpn", "rpn", "box_head"]
    cfg.MODEL.FREEZE.UNFREEZE_ITER = UNFREEZE_ITER
    cfg.MODEL.FREEZE.UNFREEZE_PARTS = ["rpn", "box_head"]
    cfg.DATASETS.TEST = ()
    cfg.SOLVER.IMS_PER_BATCH = 1
    cfg.SOLVER.BASE_LR = 0.01
    cfg.SOLVER.WEIGHT_DECAY_NORM = 0.0  # norm parameters get their own group
    cfg.SOLVER.WARMUP_ITERS = 10  # the lr changes every iteration
    cfg.SOLVER.STEPS = ()
    cfg.SOLVER.MAX_ITER = max_iter
    cfg.SOLVER.CHECKPOINT_PERIOD = 100
    cfg.TEST.EVAL_PERIOD = 0
    cfg.OUTPUT_DIR = str(output_dir)
    return cfg


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("unfreeze")
    cfg = tiny_cfg(out, max_iter=4)
    initial = {}

    class Initial(InMemoryTrainer):
        @classmethod
        def build_model(cls, cfg):
            model = super().build_model(cfg)
            initial.update({n: p.detach().clone() for n, p in model.named_parameters()})
            return model

    trainer = Initial(cfg)
    recorder = Recorder()
    trainer.register_hooks([recorder])
    trainer.resume_or_load(resume=False)
    trainer.train()
    return cfg, trainer, recorder.steps, initial


def test_unfreeze_happens_at_exactly_unfreeze_iter(first_run):
    cfg, trainer, steps, initial = first_run
    assert isinstance(trainer.checkpointer, PolarCheckpointer)
    hook_types = [type(h) for h in trainer._hooks]
    assert hook_types.index(UnfreezeHook) < hook_types.index(hooks.LRScheduler)
    before, after = steps[UNFREEZE_ITER - 1], steps[UNFREEZE_ITER]
    w0 = initial["proposal_generator.rpn_head.conv.weight"]
    for it in range(UNFREEZE_ITER):
        assert not steps[it]["rpn_trainable"] and not steps[it]["rpn_in_optimizer"] and steps[it]["rpn_layer_in_eval"]
        assert steps[it]["rpn_losses"], "a frozen RPN still gives its losses"
        assert torch.equal(steps[it]["rpn_weight"], w0)
    assert after["rpn_trainable"] and after["rpn_in_optimizer"] and not after["rpn_layer_in_eval"]
    assert not torch.equal(after["rpn_weight"], w0), "the unfrozen rpn did not train at UNFREEZE_ITER"
    assert after["groups"] > before["groups"]
    # the scheduler knows every group, and the new groups follow the same (warmup) schedule
    for it, s in steps.items():
        assert len(s["base_lrs"]) == s["groups"], it
    ratios = {it: [lr / base for lr, base in zip(s["lrs"], s["base_lrs"])] for it, s in steps.items()}
    for it in range(UNFREEZE_ITER, cfg.SOLVER.MAX_ITER):
        assert max(ratios[it]) - min(ratios[it]) < 1e-9, ratios[it]
    assert ratios[UNFREEZE_ITER][0] != ratios[UNFREEZE_ITER + 1][0]  # warmup: the schedule moves
    # FREEZE.PARTS not listed in UNFREEZE_PARTS stay frozen
    model = trainer.model
    assert all(not p.requires_grad for p in model.backbone.bottom_up.parameters())
    assert all(p.requires_grad for p in model.roi_heads.box_head.parameters())
    for n, p in model.named_parameters():
        if n.startswith("backbone.bottom_up."):
            assert torch.equal(p, initial[n]), n


def test_resume_after_the_unfreeze(first_run):
    cfg, first, steps, _ = first_run
    cfg = cfg.clone()
    cfg.SOLVER.MAX_ITER = 6
    trainer = InMemoryTrainer(cfg)
    rpn = trainer.model.proposal_generator.rpn_head.conv.weight
    assert not rpn.requires_grad
    trainer.resume_or_load(resume=True)  # model_final.pth of the first run, iteration 3
    assert trainer.start_iter == 4
    assert rpn.requires_grad  # applied while loading, before the optimizer/scheduler states
    assert len(trainer.optimizer.param_groups) == len(first.optimizer.param_groups)
    assert [len(g["params"]) for g in trainer.optimizer.param_groups] == [
        len(g["params"]) for g in first.optimizer.param_groups
    ]
    assert trainer.scheduler.base_lrs == first.scheduler.base_lrs
    # an optimizer state saved after the unfreeze fits (newer Detectron2 checkpoints it)
    trainer.optimizer.load_state_dict(first.optimizer.state_dict())
    loaded = rpn.detach().clone()
    recorder = Recorder()
    trainer.register_hooks([recorder])
    trainer.train()
    assert sorted(recorder.steps) == [4, 5]
    assert not torch.equal(rpn, loaded)
    assert all(len(s["base_lrs"]) == s["groups"] for s in recorder.steps.values())


# ----------------------------------------------------------------------------------------- DDP
def _ddp_worker(out_dir):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 1))
    freeze_parameters(model, select_parameters(model, ["1"]))
    ddp = nn.parallel.DistributedDataParallel(model, broadcast_buffers=False)
    g = torch.Generator().manual_seed(100 + comm.get_rank())  # different data per process
    batches = [torch.randn(16, 4, generator=g) for _ in range(4)]

    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)

    class Step(SimpleTrainer):
        def run_step(self):
            x = next(self._data_loader_iter)
            loss = self.model(x).pow(2).mean()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()

    trainer = Step(ddp, itertools.cycle(batches), optimizer)
    trainer.register_hooks([UnfreezeHook(unfreeze_iter=2, parts=["1"])])
    trainer.train(0, 4)
    assert trainer.model is not ddp and isinstance(trainer.model, nn.parallel.DistributedDataParallel)
    params = {n: p.detach() for n, p in model.named_parameters()}
    torch.save(params, os.path.join(out_dir, f"rank{comm.get_rank()}.pth"))


def test_unfreeze_under_ddp_keeps_processes_in_sync(tmp_path):
    torch.manual_seed(0)
    initial = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 1)).state_dict()
    launch(_ddp_worker, 2, dist_url="auto", args=(str(tmp_path),))
    a, b = (torch.load(tmp_path / f"rank{r}.pth") for r in range(2))
    for name in a:
        assert torch.allclose(a[name], b[name]), f"{name} differs between processes"
    assert not torch.equal(a["1.weight"], initial["1.weight"]), "the unfrozen layer did not train"
