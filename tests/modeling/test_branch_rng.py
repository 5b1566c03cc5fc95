"""The stack-reading modules are initialised from a generator of their own: a polar model's other
weights equal those of the vanilla model built with the same seed, and the global RNG moves on as
if no branch had been built."""
import pytest
import torch

from detectron2.modeling import build_model

from tests.common import get_polar_cfg, random_inputs
from polar_rcnn.modeling.backbone import branch_rng


def _vanilla_cfg():
    return get_polar_cfg(MODEL__META_ARCHITECTURE="GeneralizedRCNN", MODEL__BACKBONE__NAME="build_resnet_fpn_backbone",
                         INPUT__STACK__ENABLED=False)


@pytest.mark.parametrize("zero_init", [True, False])
def test_polar_model_shares_the_vanilla_initialisation(zero_init):
    torch.manual_seed(7)
    vanilla = build_model(_vanilla_cfg())
    after_vanilla = torch.rand(3)
    torch.manual_seed(7)
    polar = build_model(get_polar_cfg(MODEL__POLAR__INJECT="both", MODEL__POLAR__ZERO_INIT=zero_init))
    assert torch.equal(torch.rand(3), after_vanilla)  # the branch drew nothing from the global RNG
    polar_state = polar.state_dict()
    shared = [k for k in vanilla.state_dict() if k in polar_state]
    assert len(shared) == len(vanilla.state_dict())
    for k, v in vanilla.state_dict().items():
        assert torch.equal(v, polar_state[k]), k
    # the branch itself is seeded: the same seed gives the same branch, another seed another one
    torch.manual_seed(7)
    again = build_model(get_polar_cfg(MODEL__POLAR__INJECT="both", MODEL__POLAR__ZERO_INIT=zero_init))
    torch.manual_seed(8)
    other = build_model(get_polar_cfg(MODEL__POLAR__INJECT="both", MODEL__POLAR__ZERO_INIT=zero_init))
    pre = "backbone.polar_branch.pre.weight"
    assert torch.equal(again.state_dict()[pre], polar_state[pre])
    assert not torch.equal(other.state_dict()[pre], polar_state[pre])


def test_zero_init_polar_model_predicts_as_the_same_seed_vanilla_model():
    torch.manual_seed(3)
    vanilla = build_model(_vanilla_cfg()).eval()
    torch.manual_seed(3)
    polar = build_model(get_polar_cfg(MODEL__POLAR__INJECT="both")).eval()
    inputs = random_inputs(2, (64, 64), seed=0)
    with torch.no_grad():
        a = vanilla([{k: v for k, v in x.items() if k != "stack"} for x in inputs])
        b = polar(inputs)
    for x, y in zip(a, b):
        assert torch.equal(x["instances"].pred_boxes.tensor, y["instances"].pred_boxes.tensor)
        assert torch.equal(x["instances"].scores, y["instances"].scores)


def test_branch_rng_restores_the_global_generator():
    torch.manual_seed(11)
    expected = torch.rand(4)
    torch.manual_seed(11)
    with branch_rng():
        inside = torch.rand(4)
    assert torch.equal(torch.rand(4), expected) and not torch.equal(inside, expected)
