"""MODEL.POLAR.CLOSED_GATE: a learned scalar per level, starting at zero, multiplies the branch's
output: a polar model with a random branch starts as the same-seed image-only model, the gates get
the first gradient and the branch convs train once the gates have opened."""
import pytest
import torch

from detectron2.modeling import build_model

from polar_rcnn.engine.optimizer import branch_parameters
from tests.common import get_polar_cfg, random_inputs
from tests.modeling.polar_test_utils import VANILLA, build, nonzero_grad, train_losses

GATED = {"MODEL__POLAR__INJECT": "both", "MODEL__POLAR__ZERO_INIT": False, "MODEL__POLAR__CLOSED_GATE": True}


def test_a_closed_gate_polar_model_predicts_as_the_same_seed_vanilla_model():
    vanilla = build(seed=3, **VANILLA, INPUT__STACK__ENABLED=False).eval()
    gated = build(seed=3, **GATED).eval()
    open_gate = build(seed=3, **{**GATED, "MODEL__POLAR__CLOSED_GATE": False}).eval()
    inputs = random_inputs(2, (64, 64), seed=0)
    with torch.no_grad():
        a = vanilla([{k: v for k, v in x.items() if k != "stack"} for x in inputs])
        b = gated(inputs)
        c = open_gate(inputs)
    assert all(len(x["instances"]) > 0 for x in a)
    for x, y in zip(a, b):
        assert torch.equal(x["instances"].pred_boxes.tensor, y["instances"].pred_boxes.tensor)
        assert torch.equal(x["instances"].scores, y["instances"].scores)
    # the same random branch without the gate changes the detections: the gate is what holds them
    assert any(x["instances"].scores.shape != y["instances"].scores.shape
               or not torch.allclose(x["instances"].scores, y["instances"].scores) for x, y in zip(a, c))


def test_the_gates_train_first_then_the_branch():
    model = build(seed=0, **GATED)
    branch = model.backbone.polar_branch
    assert sorted(branch.gate) == sorted(branch.level_names) and all(g.item() == 0.0 for g in branch.gate.values())
    inputs = random_inputs(2, (64, 64), seed=1)
    train_losses(model, inputs, steps=1)
    assert all(nonzero_grad(g) for g in branch.gate.values())
    assert not any(nonzero_grad(p) for n, p in branch.named_parameters() if not n.startswith("gate."))
    train_losses(model, inputs, steps=2)  # one SGD step opened the gates a little (those that were sampled)
    opened = [name for name, g in branch.gate.items() if g.item() != 0.0]
    assert "p2" in opened
    assert nonzero_grad(branch.pre.weight) and nonzero_grad(branch.post["p2"].weight)


def test_the_gates_are_branch_parameters_and_absent_by_default():
    gated = build_model(get_polar_cfg(**GATED))
    ids = {id(p) for p in branch_parameters(gated)}
    assert all(id(g) in ids for g in gated.backbone.polar_branch.gate.values())  # LR_FACTOR / WEIGHT_DECAY apply
    plain = build_model(get_polar_cfg(MODEL__POLAR__INJECT="both"))
    assert plain.backbone.polar_branch.gate is None
    assert not any(".gate." in k for k in plain.state_dict())  # checkpoints without the key are unchanged


def test_a_closed_gate_on_a_zero_init_branch_is_rejected():
    with pytest.raises(ValueError, match="MODEL.POLAR.ZERO_INIT: False"):
        build_model(get_polar_cfg(MODEL__POLAR__CLOSED_GATE=True, MODEL__POLAR__ZERO_INIT=True))
