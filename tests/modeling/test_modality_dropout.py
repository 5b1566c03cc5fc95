"""MODEL.POLAR.MODALITY_DROPOUT: drops whole stacks of the expected fraction, seeded, in training only."""
import pytest
import torch

from tests.common import TEST_STACK_CHANNELS, random_inputs
from tests.modeling.polar_test_utils import build, train_losses

RATE = 0.25
NUM = 400


@pytest.fixture(scope="module")
def model():
    return build(MODEL__POLAR__MODALITY_DROPOUT=RATE)


@pytest.fixture(scope="module")
def inputs():
    return random_inputs(NUM, (8, 8), with_instances=False, seed=1)


def availability(model, inputs, seed):
    torch.manual_seed(seed)
    _, stacks, available = model.backbone.split_input(model.preprocess_image(inputs).tensor)
    assert stacks.shape[1] == TEST_STACK_CHANNELS
    return available[:, 0, 0], stacks


def test_drops_the_expected_fraction_seeded(model, inputs):
    model.train()
    available, stacks = availability(model, inputs, seed=0)
    dropped = available == 0
    # Binomial(400, 0.25): std 0.022; 0.07 is > 3 std
    assert abs(dropped.float().mean().item() - RATE) < 0.07
    assert torch.count_nonzero(stacks[dropped]) == 0
    assert (stacks[~dropped].flatten(1).abs().sum(1) > 0).all()
    again, _ = availability(model, inputs, seed=0)
    assert torch.equal(again, available)
    other, _ = availability(model, inputs, seed=1)
    assert not torch.equal(other, available)


def test_no_dropout_in_inference_and_no_rng_use(model, inputs):
    model.eval()
    state = torch.get_rng_state()
    with torch.no_grad():
        available, _ = availability(model, inputs, seed=0)
    assert (available == 1).all()
    torch.manual_seed(0)
    with torch.no_grad():
        model.preprocess_image(inputs[:4])
    assert torch.equal(torch.get_rng_state(), torch.manual_seed(0).get_state())
    torch.set_rng_state(state)


def test_zero_rate_uses_no_rng_in_training():
    model = build()
    assert model.modality_dropout == 0.0
    model.train()
    available, _ = availability(model, random_inputs(4, (8, 8), with_instances=False), seed=0)
    assert (available == 1).all()
    assert torch.equal(torch.get_rng_state(), torch.manual_seed(0).get_state())


def test_full_dropout_still_trains_every_parameter():
    model = build(MODEL__POLAR__MODALITY_DROPOUT=1.0, MODEL__POLAR__INJECT="both")
    train_losses(model, random_inputs(2, (64, 96), seed=2))
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == []


@pytest.mark.parametrize("rate", [-0.1, 1.5])
def test_rate_outside_unit_interval_raises(rate):
    with pytest.raises(ValueError, match="MODALITY_DROPOUT"):
        build(MODEL__POLAR__MODALITY_DROPOUT=rate)
