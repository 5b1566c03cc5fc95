"""A model whose branch reads the stack at INPUT_STRIDE s > 1 builds the stack on the stride-s grid:
equal to the average pooling of the full-resolution batch, from full-resolution or grid inputs."""
import pytest
import torch
import torch.nn.functional as F

from tests.common import TEST_STACK_CHANNELS, random_inputs
from tests.modeling.polar_test_utils import build, train_losses
from polar_rcnn.modeling.grid_inputs import pack_grid, packed_channels, unpack_grid

SIZES = ((64, 80), (50, 93), (70, 50))  # 50 x 93 and 70 x 50: cells cut by the image's edge
NORM = dict(MODEL__POLAR__STACK_MEAN=[0.5], MODEL__POLAR__STACK_STD=[0.25])


def stride_one_pooled(inputs, stride=4):
    """Today's first-conv input: the stride-1 model's normalized, padded batch, average-pooled."""
    batch = build(MODEL__POLAR__INPUT_STRIDE=1, **NORM).preprocess_image(inputs).tensor
    stack = batch[:, 3 : 3 + TEST_STACK_CHANNELS]
    return F.avg_pool2d(stack, stride, ceil_mode=True), batch[:, -1, ::stride, ::stride]


def grid_stacks(model, inputs):
    _, stack, available = model.backbone.split_input(model.preprocess_image(inputs).tensor)
    return stack, available


def on_grid(inputs, stride=4):
    """The inputs with their stacks delivered on the grid: each cell's mean over the image's pixels."""
    out = []
    for x in inputs:
        x = dict(x)
        if "stack" in x:
            x["stack"] = F.avg_pool2d(x["stack"][None], stride, ceil_mode=True)[0]
            x["stack_stride"] = stride
        out.append(x)
    return out


@pytest.mark.parametrize("delivered", ["full", "grid"])
def test_grid_equals_the_pooled_full_resolution_batch(delivered):
    inputs = random_inputs(3, sizes=SIZES, with_stack=[True, False, True], with_instances=False)
    expected, expected_available = stride_one_pooled(inputs)
    model = build(MODEL__POLAR__INPUT_STRIDE=4, **NORM)
    for _ in range(2):  # reused allocator memory is not zero
        stack, available = grid_stacks(model, inputs if delivered == "full" else on_grid(inputs))
        assert stack.shape == expected.shape == (3, TEST_STACK_CHANNELS, 24, 24)
        torch.testing.assert_close(stack, expected, atol=1e-5, rtol=0)
        assert torch.equal(available > 0, expected_available > 0)
    assert model.backbone.input_channels == 3 + packed_channels(TEST_STACK_CHANNELS + 1, 4) == 4


def test_mixed_full_and_grid_inputs_in_one_batch():
    inputs = random_inputs(2, sizes=SIZES[:2], with_instances=False)
    mixed = [inputs[0], on_grid(inputs[1:])[0]]
    model = build(MODEL__POLAR__INPUT_STRIDE=4, **NORM)
    torch.testing.assert_close(grid_stacks(model, mixed)[0], stride_one_pooled(inputs)[0], atol=1e-5, rtol=0)


def test_grid_of_another_stride_or_shape_is_an_error():
    (x,) = on_grid(random_inputs(1, (64, 80), with_instances=False), stride=2)
    x["file_name"] = "some/image.png"
    with pytest.raises(ValueError, match="stride-2 grid.*INPUT.STACK.RESOLUTION"):
        build(MODEL__POLAR__INPUT_STRIDE=4).preprocess_image([x])
    x["stack_stride"] = 4
    with pytest.raises(ValueError, match=r"some/image.png.*\(6, 16, 20\) on the stride-4 grid"):
        build(MODEL__POLAR__INPUT_STRIDE=4).preprocess_image([x])
    with pytest.raises(ValueError, match="stride-4 grid"):
        build(MODEL__BACKBONE__NAME="build_early_fusion_resnet_fpn_backbone").preprocess_image(
            on_grid(random_inputs(1, (64, 80), with_instances=False)))


def test_pack_unpack_round_trip():
    grid = torch.rand(2, 7, 5, 6)
    packed = pack_grid(grid, 4)
    assert packed.shape == (2, 1, 20, 24)
    assert torch.equal(unpack_grid(packed, 7, 4), grid)


def test_model_trains_and_predicts_from_grid_inputs():
    """A train step (every parameter gets a gradient) and inference from stride-4 grid inputs; the
    detections equal those from full-resolution inputs (pooled by the model)."""
    model = build(MODEL__POLAR__INPUT_STRIDE=4, MODEL__POLAR__ZERO_INIT=False, MODEL__POLAR__INJECT="both")
    inputs = random_inputs(2, sizes=SIZES[:2], seed=4)
    train_losses(model, on_grid(inputs))
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == []
    model.eval()
    with torch.no_grad():
        full = model(random_inputs(1, (64, 80), with_instances=False, seed=5))[0]["instances"]
        grid = model(on_grid(random_inputs(1, (64, 80), with_instances=False, seed=5)))[0]["instances"]
    assert len(full) > 0 and len(full) == len(grid)
    torch.testing.assert_close(grid.pred_boxes.tensor, full.pred_boxes.tensor, atol=1e-3, rtol=0)
