"""PolarBranch shapes: one- and two-stage, kernel sizes, input strides, norm; exact level sizes."""
import pytest
import torch

from tests.common import TEST_STACK_CHANNELS, random_inputs
from polar_rcnn.modeling import PolarBranch, fused_name
from tests.modeling.polar_test_utils import build, nonzero_grad, train_losses

LEVELS = ("p2", "p3", "p4", "p5", "p6")
SIZES = [(97, 131), (161, 75)]
# (num_stages, pre kernel, post kernel, input stride, norm)
SHAPES = [(2, 3, 3, 1, ""), (2, 1, 5, 4, ""), (2, 3, 1, 2, "GN"), (1, 3, 3, 1, ""), (1, 1, 1, 4, "")]


def level_sizes(h, w):
    """FPN level sizes of an (h, w) image padded to 32 (as ImageList does for the FPN)."""
    ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
    return {lvl: (ph // 2 ** k, pw // 2 ** k) for k, lvl in enumerate(LEVELS, start=2)}


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "stages{}_k{}x{}_s{}_{}".format(*s[:4], s[4] or "nonorm"))
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_branch_output_matches_every_level(shape, size):
    num_stages, pre_k, post_k, stride, norm = shape
    torch.manual_seed(0)
    branch = PolarBranch(in_channels=5, hidden_channels=32, out_channels=16, level_names=list(LEVELS),
                         num_stages=num_stages, pre_kernel_size=pre_k, post_kernel_size=post_k,
                         input_stride=stride, norm=norm, zero_init=False)
    sizes = level_sizes(*size)
    out = branch(torch.rand(2, 5, *size), sizes)
    assert set(out) == set(LEVELS)
    for lvl, (h, w) in sizes.items():
        assert out[lvl].shape == (2, 16, h, w), lvl
        assert out[lvl].abs().sum() > 0, lvl
    names = {n.split(".")[0] for n, _ in branch.named_parameters()}
    assert names == ({"pre"} if num_stages == 1 else {"pre", "post"})
    if norm:
        assert branch.pre.norm is not None and branch.pre.bias is None


@pytest.mark.parametrize("num_stages", [1, 2])
def test_zero_init_branch_outputs_zeros(num_stages):
    branch = PolarBranch(in_channels=3, hidden_channels=8, out_channels=4, level_names=["p2", "p3"],
                         num_stages=num_stages, zero_init=True)
    out = branch(torch.rand(1, 3, 33, 47), {"p2": (9, 12), "p3": (5, 6)})
    assert all(torch.count_nonzero(v) == 0 for v in out.values())


def test_one_stage_model_fuses_every_level_and_trains():
    model = build(MODEL__POLAR__NUM_STAGES=1, MODEL__POLAR__INJECT="both", MODEL__POLAR__INPUT_STRIDE=2)
    branch = model.backbone.polar_branch
    assert not hasattr(branch, "post") and branch.pre.weight.shape[0] == model.backbone.output_shape()["p2"].channels
    model.eval()
    with torch.no_grad():
        images = model.preprocess_image(random_inputs(1, (97, 131), with_instances=False))
        features = model.backbone(images.tensor)
    for level in LEVELS:
        assert features[fused_name(level)].shape == features[level].shape, level
    # the zero-initialised single conv is the branch's last layer: it gets a gradient at once
    train_losses(model, random_inputs(2, (64, 96), seed=4))
    assert nonzero_grad(branch.pre.weight)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_stages": 3}, "NUM_STAGES"),
        ({"num_stages": 1, "norm": "GN", "hidden_channels": 32}, "NORM"),
        ({"norm": "GN", "hidden_channels": 48}, "multiple of 32"),
        ({"hidden_channels": 0}, "HIDDEN_CHANNELS"),
        ({"post_kernel_size": 4}, "POST_KERNEL_SIZE"),
        ({"input_stride": 0}, "INPUT_STRIDE"),
    ],
)
def test_branch_rejects_impossible_settings(kwargs, match):
    args = dict(in_channels=TEST_STACK_CHANNELS, hidden_channels=8, out_channels=8, level_names=["p2"])
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        PolarBranch(**args)
