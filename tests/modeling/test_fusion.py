"""MODEL.POLAR.FUSION: each fusion is the identity at init, equals the vanilla model untrained, and trains."""
import pytest
import torch

from tests.common import get_polar_cfg, random_inputs, without
from polar_rcnn.modeling import build_polar_fusion, fusion_names
from polar_rcnn.modeling.fusion import ChannelAttentionFusion, ConcatFusion, SpatialGateFusion
from tests.modeling.polar_test_utils import VANILLA, build, max_detection_diff, nonzero_grad, predict, train_losses

FUSIONS = ("add", "concat", "gate", "channel_attention")
LEVELS = ("p2", "p3", "p4", "p5", "p6")


def test_registry_lists_the_fusions_and_rejects_unknown_names():
    assert set(FUSIONS) <= set(fusion_names())
    with pytest.raises(ValueError, match="MODEL.POLAR.FUSION"):
        build_polar_fusion(get_polar_cfg(MODEL__POLAR__FUSION="multiply"), channels=8)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_fusion_is_identity_for_zero_polar_features_and_uses_nonzero_ones(fusion):
    torch.manual_seed(0)
    module = build_polar_fusion(get_polar_cfg(MODEL__POLAR__FUSION=fusion), channels=8)
    image = torch.randn(2, 8, 7, 9)
    assert torch.equal(module(image, torch.zeros_like(image)), image)
    polar = torch.randn(2, 8, 7, 9)
    out = module(image, polar)
    assert out.shape == image.shape
    assert not torch.allclose(out, image)


def test_concat_starts_as_add_and_gates_are_in_range():
    torch.manual_seed(0)
    image, polar = torch.randn(2, 8, 5, 6), torch.randn(2, 8, 5, 6)
    assert torch.allclose(ConcatFusion(channels=8)(image, polar), image + polar, atol=1e-6)
    for cls in (SpatialGateFusion, ChannelAttentionFusion):
        gated = cls(channels=8)(image, polar) - image  # = gate * polar
        ratio = gated / polar
        assert ((ratio > 0) & (ratio < 1)).all(), cls.__name__


@pytest.fixture(scope="module")
def vanilla_and_inputs():
    torch.manual_seed(1)
    vanilla = build(seed=1, **VANILLA)
    inputs = random_inputs(2, [(96, 128), (80, 112)], with_instances=False, seed=3)
    return vanilla, inputs, predict(vanilla, without(inputs, "stack"))


@pytest.mark.parametrize("fusion, num_stages", [("add", 1), ("concat", 2), ("concat", 1), ("gate", 2),
                                                ("channel_attention", 1)])
def test_zero_init_equals_vanilla_for_every_fusion(vanilla_and_inputs, fusion, num_stages):
    vanilla, inputs, expected = vanilla_and_inputs
    polar = build(seed=2, MODEL__POLAR__FUSION=fusion, MODEL__POLAR__NUM_STAGES=num_stages,
                  MODEL__POLAR__INJECT="both", MODEL__POLAR__ZERO_INIT=True)
    incompatible = polar.load_state_dict(vanilla.state_dict(), strict=False)
    assert incompatible.unexpected_keys == []
    assert all(k.startswith(("backbone.polar_branch.", "backbone.polar_fusion.")) for k in incompatible.missing_keys)
    fusion_params = [n for n, _ in polar.backbone.polar_fusion.named_parameters()]
    assert (fusion == "add") == (fusion_params == [])
    # per-level modules under stable names: polar_fusion.<level>.<...>
    assert all(n.split(".")[0] in LEVELS for n in fusion_params)
    assert max_detection_diff(predict(polar, inputs), expected) < 1e-5


# "add" with every INJECT: tests/modeling/test_polar_model.py
@pytest.mark.parametrize("fusion, inject", [("concat", "roi"), ("gate", "both"), ("channel_attention", "rpn")])
def test_train_steps_reach_branch_and_fusion(fusion, inject):
    model = build(MODEL__POLAR__FUSION=fusion, MODEL__POLAR__INJECT=inject)
    backbone = model.backbone
    # p2 gets a gradient from both consumers (RPN: many sampled anchors; ROI pooler: with tiny
    # images every box maps to p2); coarse levels only when the RPN happens to sample their anchors
    levels = LEVELS if inject in ("rpn", "both") else ("p2", "p3", "p4", "p5")
    assert sorted(backbone.polar_fusion.keys()) == sorted(levels)
    # two steps: gates only get a gradient once the (zero-initialised) polar features are non-zero
    losses = train_losses(model, random_inputs(2, (64, 96), seed=5), steps=2)
    assert set(losses) >= {"loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"}
    assert nonzero_grad(backbone.polar_branch.pre.weight)
    assert nonzero_grad(backbone.polar_branch.post["p2"].weight)
    for name, p in backbone.polar_fusion["p2"].named_parameters():
        assert nonzero_grad(p), name
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == []  # DistributedDataParallel needs every parameter in the graph
