"""The research notes' setups as shipped configs: RetinaNet at every ResNet depth with Adam, the
notebook's branch (shapes, stride, what trains) and its last-layer RGB-only baseline."""
import os

import pytest
import torch

from detectron2.modeling import GeneralizedRCNN
from detectron2.utils.events import EventStorage

from tests.common import CONFIG_DIR, random_inputs
from tests.test_configs import load_config
from polar_rcnn.engine import PolarTrainer
from polar_rcnn.modeling import PolarRCNN, PolarRetinaNet, fused_name

RETINANET_R50 = os.path.join(CONFIG_DIR, "retinanet_R_50_FPN_50ep_polar_synth.yaml")
NOTEBOOK_BRANCH = os.path.join(CONFIG_DIR, "faster_rcnn_R_50_FPN_notebook_branch_polar_synth.yaml")
NOTEBOOK_LAST_LAYER = os.path.join(CONFIG_DIR, "faster_rcnn_R_50_FPN_notebook_last_layer_rgb_only_polar_synth.yaml")
BLOCKS = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}


def _train_step(cfg, model, channels):
    """One optimizer step of the trainer's optimizer on two tiny random images; returns the losses."""
    optimizer = PolarTrainer.build_optimizer(cfg, model)
    model.train()
    inputs = random_inputs(2, (64, 64), channels=channels, with_stack=channels > 0, seed=1)
    with EventStorage():
        losses = model(inputs)
        assert losses and all(torch.isfinite(v) for v in losses.values()), losses
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    return optimizer


@pytest.mark.parametrize("depth", sorted(BLOCKS))
def test_retinanet_config_builds_and_trains_at_every_depth(depth):
    cfg = load_config(RETINANET_R50)
    cfg.MODEL.RESNETS.DEPTH = depth
    if depth < 50:
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    assert cfg.SOLVER.OPTIMIZER == "Adam" and cfg.SOLVER.BASE_LR == 1e-4 and cfg.SEED == 3407
    torch.manual_seed(0)
    model = PolarTrainer.build_model(cfg)
    assert isinstance(model, PolarRetinaNet)
    assert [len(s) for s in model.backbone.bottom_up.stages] == BLOCKS[depth]
    optimizer = _train_step(cfg, model, cfg.MODEL.POLAR.IN_CHANNELS)
    assert type(optimizer) is torch.optim.Adam
    assert all(optimizer.state[p]["step"] == 1 for g in optimizer.param_groups for p in g["params"]
               if p.grad is not None)


def test_retinanet_r101_config_is_the_r50_one_at_depth_101():
    cfg = load_config(os.path.join(CONFIG_DIR, "retinanet_R_101_FPN_50ep_polar_synth.yaml"))
    r50 = load_config(RETINANET_R50)
    assert cfg.MODEL.RESNETS.DEPTH == 101
    cfg.MODEL.RESNETS.DEPTH, cfg.OUTPUT_DIR = 50, r50.OUTPUT_DIR
    assert cfg.dump() == r50.dump()


def test_notebook_branch_config_builds_the_notebooks_branch():
    cfg = load_config(NOTEBOOK_BRANCH)
    torch.manual_seed(0)
    model = PolarTrainer.build_model(cfg)
    assert isinstance(model, PolarRCNN) and cfg.MODEL.RESNETS.DEPTH == 50
    branch = model.backbone.polar_branch
    assert branch.input_stride == 1 and branch.num_stages == 2
    assert tuple(branch.pre.weight.shape) == (96, 24, 3, 3)
    assert sorted(branch.post) == ["p2", "p3", "p4", "p5", "p6"]
    assert {tuple(conv.weight.shape) for conv in branch.post.values()} == {(256, 96, 3, 3)}
    # injected before the RPN only: the RPN reads the fused levels, the ROI heads the image's
    assert list(model.proposal_generator.in_features) == [fused_name(f) for f in ["p2", "p3", "p4", "p5", "p6"]]
    assert list(model.roi_heads.in_features) == ["p2", "p3", "p4", "p5"]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {n for n in trainable if n.startswith("backbone.")} == {
        f"backbone.polar_branch.{n}" for n, _ in branch.named_parameters()}
    assert {n.split(".")[0] for n in trainable} == {"backbone", "proposal_generator", "roi_heads"}
    # the image backbone (ResNet + FPN) is frozen and never reaches the optimizer
    optimizer = _train_step(cfg, model, 24)
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert in_optimizer == {id(p) for p in model.parameters() if p.requires_grad}
    assert all(p.grad is None for p in model.backbone.bottom_up.parameters())


def test_notebook_last_layer_baseline_trains_only_the_box_predictor():
    cfg = load_config(NOTEBOOK_LAST_LAYER)
    assert cfg.MODEL.WEIGHTS == "" and not cfg.INPUT.STACK.ENABLED  # load_config clears the weights
    torch.manual_seed(0)
    model = PolarTrainer.build_model(cfg)
    assert type(model) is GeneralizedRCNN
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if n.startswith("roi_heads.box_predictor.")}
    _train_step(cfg, model, 0)


def test_notebook_configs_finetune_the_same_model_zoo_detector():
    from detectron2.config import get_cfg
    from polar_rcnn import add_polar_config

    weights = set()
    for path in (NOTEBOOK_BRANCH, NOTEBOOK_LAST_LAYER):
        cfg = get_cfg()
        add_polar_config(cfg)
        cfg.merge_from_file(path)
        weights.add(cfg.MODEL.WEIGHTS)
    assert weights == {"detectron2://COCO-Detection/faster_rcnn_R_50_FPN_3x/137849458/model_final_280758.pkl"}


def test_plan_config_has_every_piece_of_the_plan():
    cfg = load_config(os.path.join(CONFIG_DIR, "faster_rcnn_R_18_FPN_demo_plan_polar_synth.yaml"))
    assert cfg.SOLVER.LR_SCHEDULER_NAME == "WarmupCosineLR" and cfg.SOLVER.WARMUP_ITERS > 0
    assert cfg.SOLVER.CLIP_GRADIENTS.ENABLED and cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE == "full_model"
    assert cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE == 1.0
    assert set(cfg.MODEL.LOSS_WEIGHTS) == {"RPN_CLS", "RPN_LOC", "ROI_CLS", "ROI_LOC"}
    torch.manual_seed(0)
    model = PolarTrainer.build_model(cfg)
    trainable = {n.split(".")[0] + ("." + n.split(".")[1] if n.startswith("backbone.") else "")
                 for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"backbone.polar_branch", "proposal_generator", "roi_heads"}
