"""PolarBranch / PolarFPN / PolarRCNN: shapes, zero-init equivalence, training, routing, stacks."""
import re

import pytest
import torch
from torch import nn

from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from tests.common import TEST_STACK_CHANNELS, get_polar_cfg, random_inputs, without
from polar_rcnn.modeling import PolarBranch, fused_name

INJECTS = ("rpn", "roi", "both")
LEVELS = ("p2", "p3", "p4", "p5", "p6")


def build(seed=0, **overrides):
    torch.manual_seed(seed)
    return build_model(get_polar_cfg(**overrides))


def predict(model, inputs):
    model.eval()
    with torch.no_grad():
        return [o["instances"] for o in model(inputs)]


def assert_same_detections(a, b, atol=1e-4):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert len(x) > 0, "no detections: the comparison would be vacuous"
        assert len(x) == len(y)
        assert torch.equal(x.pred_classes, y.pred_classes)
        assert (x.pred_boxes.tensor - y.pred_boxes.tensor).abs().max().item() < atol
        assert (x.scores - y.scores).abs().max().item() < atol


def detections_differ(a, b, atol=1e-4):
    for x, y in zip(a, b):
        if len(x) != len(y) or not torch.equal(x.pred_classes, y.pred_classes):
            return True
        if (x.pred_boxes.tensor - y.pred_boxes.tensor).abs().max() > atol or (x.scores - y.scores).abs().max() > atol:
            return True
    return False


def post_convs(model):
    return model.backbone.polar_branch.post


def perturb_branch(model, seed=0):
    """Non-zero weights and biases everywhere in the branch, so even an all-zero stack gives
    non-zero polar features (with zero biases, a zero stack maps to zero features)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.backbone.polar_branch.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)


# ------------------------------------------------------------------------------------------ shapes
@pytest.mark.parametrize("input_stride", [1, 4])
@pytest.mark.parametrize("size", [(97, 131), (64, 64), (161, 75)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_fused_levels_match_fpn_levels(size, input_stride):
    model = build(MODEL__POLAR__INPUT_STRIDE=input_stride)
    model.eval()
    inputs = random_inputs(1, size, with_instances=False)
    with torch.no_grad():
        images = model.preprocess_image(inputs)
        features = model.backbone(images.tensor)
    assert images.tensor.shape[1] == model.backbone.input_channels
    _, stack, available = model.backbone.split_input(images.tensor)
    assert stack.shape[-2:] == available.shape[-2:] == tuple(s // input_stride for s in images.tensor.shape[-2:])
    for level in LEVELS:
        assert features[fused_name(level)].shape == features[level].shape, level
    shapes = model.backbone.output_shape()
    for level in LEVELS:
        assert shapes[fused_name(level)] == shapes[level]


@pytest.mark.parametrize("input_stride", [1, 4])
@pytest.mark.parametrize("size", [(97, 131), (64, 64), (161, 75)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_polar_branch_output_sizes_exact(size, input_stride):
    torch.manual_seed(0)
    branch = PolarBranch(in_channels=5, hidden_channels=8, out_channels=16, level_names=list(LEVELS),
                         input_stride=input_stride, zero_init=False)
    h, w = size
    sizes = {lvl: (-(-h // 2 ** k), -(-w // 2 ** k)) for k, lvl in enumerate(LEVELS, start=2)}
    sizes["p6"] = (3, 1)  # any size is honoured, not only the power-of-two ones
    out = branch(torch.rand(2, 5, h, w), sizes)
    assert set(out) == set(LEVELS)
    for lvl, (lh, lw) in sizes.items():
        assert out[lvl].shape == (2, 16, lh, lw), lvl
        assert out[lvl].abs().sum() > 0


def test_polar_branch_rejects_bad_arguments():
    with pytest.raises(ValueError, match="odd"):
        PolarBranch(in_channels=2, hidden_channels=4, out_channels=4, level_names=["p2"], pre_kernel_size=2)
    with pytest.raises(ValueError, match="INPUT_STRIDE"):
        PolarBranch(in_channels=2, hidden_channels=4, out_channels=4, level_names=["p2"], input_stride=0)
    branch = PolarBranch(in_channels=2, hidden_channels=4, out_channels=4, level_names=["p2"])
    with pytest.raises(ValueError, match="2 stack channels"):
        branch(torch.rand(1, 3, 8, 8), {"p2": (4, 4)})


# ------------------------------------------------------------------------------- zero-init equivalence
@pytest.mark.parametrize("inject", INJECTS)
def test_zero_init_equals_vanilla_generalized_rcnn(inject):
    vanilla = build(seed=1, MODEL__META_ARCHITECTURE="GeneralizedRCNN",
                    MODEL__BACKBONE__NAME="build_resnet_fpn_backbone")
    polar = build(seed=2, MODEL__POLAR__INJECT=inject, MODEL__POLAR__ZERO_INIT=True)
    incompatible = polar.load_state_dict(vanilla.state_dict(), strict=False)
    assert incompatible.unexpected_keys == []
    allowed = ("backbone.polar_branch.", "stack_mean", "stack_std")
    assert all(k.startswith(allowed) for k in incompatible.missing_keys), incompatible.missing_keys
    branch_keys = {"backbone.polar_branch." + k for k in polar.backbone.polar_branch.state_dict()}
    assert branch_keys <= set(incompatible.missing_keys)

    inputs = random_inputs(2, [(96, 128), (80, 112)], with_instances=False, seed=3)
    assert_same_detections(predict(polar, inputs), predict(vanilla, without(inputs, "stack")))


# ----------------------------------------------------------------------------------------- training
@pytest.mark.parametrize("inject", INJECTS)
def test_train_step_reaches_the_branch(inject):
    model = build(MODEL__POLAR__INJECT=inject)
    model.train()
    branch = model.backbone.polar_branch
    # The RPN reads every level it is given; the ROI pooler only the levels its boxes are assigned
    # to (canonical level p4 for 224 px boxes), which for these small images is p2.
    if inject in ("rpn", "both"):
        consumed = {f[: -len("_fused")] for f in model.proposal_generator.in_features}
        assert consumed == set(LEVELS)
    else:
        consumed = {"p2"}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02)
    inputs = random_inputs(2, (96, 128), seed=5)
    with EventStorage():
        losses = model(inputs)
        assert set(losses) >= {"loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"}
        assert all(torch.isfinite(v) for v in losses.values()), losses
        sum(losses.values()).backward()
        grads = {level: branch.post[level].weight.grad for level in consumed}
        assert all(g is not None for g in grads.values()), grads.keys()
        # a level's gradient is 0 when the RPN samples none of its anchors, so check the sum
        assert sum(g.abs().sum() for g in grads.values()) > 0
        # post convs are zero: nothing flows back into the first conv yet
        pre_grad = branch.pre.weight.grad
        assert pre_grad is None or pre_grad.abs().sum() == 0
        optimizer.step()
        optimizer.zero_grad()
        losses = model(inputs)
        assert all(torch.isfinite(v) for v in losses.values()), losses
        sum(losses.values()).backward()
    assert branch.pre.weight.grad is not None and branch.pre.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "inject",
    [
        "rpn",
        "roi",
        "both",
    ],
)
def test_every_parameter_gets_a_gradient(inject):
    # DistributedDataParallel (used by DefaultTrainer with >1 process) requires this
    model = build(MODEL__POLAR__INJECT=inject)
    model.train()
    with EventStorage():
        losses = model(random_inputs(2, (64, 96), seed=6))
        sum(losses.values()).backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == []


def test_every_parameter_gets_a_gradient_without_stacks():
    # a batch where no image has a stack (e.g. modality dropout) must not leave the branch unused
    model = build(MODEL__POLAR__INJECT="both")
    model.train()
    with EventStorage():
        losses = model(random_inputs(2, (64, 96), with_stack=False, seed=8))
        sum(losses.values()).backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == []


# ------------------------------------------------------------------------------------------ routing
@pytest.mark.parametrize("inject", INJECTS)
def test_inject_routes_fused_features(inject):
    cfg = get_polar_cfg(MODEL__POLAR__INJECT=inject)
    model = build_model(cfg)
    rpn_plain, roi_plain = list(cfg.MODEL.RPN.IN_FEATURES), list(cfg.MODEL.ROI_HEADS.IN_FEATURES)
    rpn_fused, roi_fused = [fused_name(f) for f in rpn_plain], [fused_name(f) for f in roi_plain]
    expected = {"rpn": (rpn_fused, roi_plain), "roi": (rpn_plain, roi_fused), "both": (rpn_fused, roi_fused)}
    assert (list(model.proposal_generator.in_features), list(model.roi_heads.in_features)) == expected[inject]
    # the config itself is not modified
    assert list(cfg.MODEL.RPN.IN_FEATURES) == rpn_plain and list(cfg.MODEL.ROI_HEADS.IN_FEATURES) == roi_plain


def test_invalid_inject_raises():
    with pytest.raises(ValueError, match="INJECT"):
        build_model(get_polar_cfg(MODEL__POLAR__INJECT="neck"))


# ------------------------------------------------------------------------------------ missing stacks
def test_missing_stack_gives_image_only_behaviour():
    model = build(MODEL__POLAR__INJECT="both")
    perturb_branch(model)
    inputs = random_inputs(2, [(96, 128), (64, 96)], with_instances=False, seed=7)
    no_stack = predict(model, without(inputs, "stack"))
    with_stack = predict(model, inputs)
    assert detections_differ(no_stack, with_stack), "a non-zero branch must change the detections"
    with torch.no_grad():
        for conv in post_convs(model).values():
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)
    image_only = predict(model, inputs)  # stack present, branch contributes zero
    assert_same_detections(no_stack, image_only, atol=1e-5)


def test_mixed_batch_only_fuses_images_with_a_stack():
    model = build(MODEL__POLAR__INJECT="both")
    perturb_branch(model)
    inputs = random_inputs(2, [(96, 128), (64, 96)], with_stack=[True, False], seed=8)
    model.eval()
    with torch.no_grad():
        features = model.backbone(model.preprocess_image(inputs).tensor)
    for level in LEVELS:
        assert not torch.allclose(features[fused_name(level)][0], features[level][0]), level
        assert torch.equal(features[fused_name(level)][1], features[level][1]), level

    model.train()
    with EventStorage():
        losses = model(inputs)
        assert all(torch.isfinite(v) for v in losses.values()), losses
        sum(losses.values()).backward()
    assert model.backbone.polar_branch.pre.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "stack_shape",
    [(TEST_STACK_CHANNELS + 1, 64, 96), (TEST_STACK_CHANNELS, 64, 95), (TEST_STACK_CHANNELS, 63, 96),
     (64, 96, TEST_STACK_CHANNELS)],
    ids=["channels", "width", "height", "hwc"],
)
def test_stack_with_wrong_shape_raises(stack_shape):
    model = build()
    (inputs,) = random_inputs(1, (64, 96), with_instances=False)
    inputs["stack"] = torch.rand(stack_shape)
    inputs["file_name"] = "some/image.png"
    expected = re.escape(f"({TEST_STACK_CHANNELS}, 64, 96)")
    model.eval()
    with pytest.raises(ValueError, match=expected) as info, torch.no_grad():
        model([inputs])
    assert "some/image.png" in str(info.value)


def test_stored_dtype_stacks_preprocess_like_float_stacks():
    """uint16 (channels-last, with ``stack_scale``) and float16 stacks from the loader give the
    same padded, normalized batch as the equivalent float32 stacks (at full resolution; on the
    stride-s grid: tests/modeling/test_grid_inputs.py)."""
    model = build(MODEL__POLAR__STACK_MEAN=[0.3], MODEL__POLAR__STACK_STD=[0.2], MODEL__POLAR__INPUT_STRIDE=1)
    inputs = random_inputs(2, sizes=((64, 80), (48, 96)))
    g = torch.Generator().manual_seed(0)
    raw = [torch.randint(0, 65536, (x["image"].shape[1], x["image"].shape[2], TEST_STACK_CHANNELS),
                         generator=g, dtype=torch.int32) for x in inputs]
    as_float = [dict(x, stack=(r.permute(2, 0, 1) / 65535.0).float()) for x, r in zip(inputs, raw)]
    as_uint16 = [dict(x, stack=r.to(torch.uint16).permute(2, 0, 1), stack_scale=1 / 65535) for x, r in zip(inputs, raw)]
    as_half = [dict(x, stack=s["stack"].half()) for x, s in zip(inputs, as_float)]
    expected = model.preprocess_image(as_float)
    for variant in (as_uint16, as_half):
        got = model.preprocess_image(variant)
        assert got.image_sizes == expected.image_sizes == [(64, 80), (48, 96)]
        atol = 1e-5 if variant is as_uint16 else 3e-3  # float16 keeps ~3 significant digits
        torch.testing.assert_close(got.tensor, expected.tensor, atol=atol, rtol=0)
    assert expected.tensor.shape[-2:] == (64, 96)  # padded to the largest, divisible by 32
    assert (expected.tensor[1, :, 48:] == 0).all() and (expected.tensor[0, -1, :64, :80] == 1).all()


def test_preprocess_zeroes_padding_and_missing_stacks():
    """The batch is allocated without zero-filling: padding and a missing stack must still be 0
    (full resolution; on the stride-s grid: tests/modeling/test_grid_inputs.py)."""
    model = build(MODEL__POLAR__STACK_MEAN=[0.5], MODEL__POLAR__STACK_STD=[0.25], MODEL__POLAR__INPUT_STRIDE=1)
    inputs = random_inputs(3, sizes=((64, 80), (48, 96), (70, 50)), with_stack=[True, False, True])
    for _ in range(3):  # reused allocator memory is not zero
        batch = model.preprocess_image(inputs).tensor
        assert batch.shape == (3, 3 + TEST_STACK_CHANNELS + 1, 96, 96) and torch.isfinite(batch).all()
        for i, (h, w) in enumerate(((64, 80), (48, 96), (70, 50))):
            assert (batch[i, :, h:] == 0).all() and (batch[i, :, :, w:] == 0).all()
            assert (batch[i, -1, :h, :w] == (0.0 if i == 1 else 1.0)).all()
        assert (batch[1, 3:] == 0).all()
        stack = (inputs[2]["stack"] - 0.5) / 0.25
        torch.testing.assert_close(batch[2, 3:-1, :70, :50], stack, atol=1e-5, rtol=0)


def test_one_stage_1x1_branch_resizes_the_input_like_the_output():
    """One-stage 1x1: conv(resize(x)) is computed, equal to resize(conv(x)) (both linear)."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    branch = PolarBranch(in_channels=4, hidden_channels=8, out_channels=16, level_names=["p2", "p3", "p4"],
                         num_stages=1, pre_kernel_size=1, input_stride=4, zero_init=False)
    stack = torch.rand(2, 4, 64, 96)
    sizes = {"p2": (16, 24), "p3": (8, 12), "p4": (4, 6)}
    out = branch(stack, sizes)
    full = branch.pre(F.avg_pool2d(stack, 4, ceil_mode=True))
    for name, size in sizes.items():
        expected = full if tuple(full.shape[-2:]) == size else F.interpolate(full, size=size, mode="bilinear",
                                                                             align_corners=False)
        torch.testing.assert_close(out[name], expected, atol=1e-5, rtol=1e-5)
