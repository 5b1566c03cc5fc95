"""Derived inputs computed in the model (INPUT.STACK.DERIVED_ON "model") equal the loader's numpy
ones (DERIVED_ON "loader"): per stack, and through mapper + preprocess_image after a flip."""
import cv2
import numpy as np
import pytest
import torch

from detectron2.data import transforms as T
from detectron2.modeling import build_model
from detectron2.structures import BoxMode

from tests.common import get_polar_cfg
from polar_rcnn.data import STACK_FILE_KEY, PolarDatasetMapper, PolarLayout
from polar_rcnn.modeling import StackDerivation, stack_derivation_from_config

BANDS = 3
#: float32 sums in another order (matmul vs weighted sums): differences of a few ulps of the values
TOLERANCE = dict(rtol=1e-5, atol=1e-5)


def angle_stack(h=16, w=20, bands=BANDS, angles=(0.0, 45.0, 90.0, 135.0), seed=0):
    """Random Malus'-law stacks with unpolarized patches (DoLP 0: trig inputs must be 0 there)."""
    rng = np.random.default_rng(seed)
    s0 = rng.uniform(0.1, 1.0, (h, w, bands, 1))
    dolp = rng.uniform(0.0, 1.0, (h, w, bands, 1))
    dolp[: h // 4, : w // 4] = 0.0
    phi = rng.uniform(0, np.pi, (h, w, bands, 1))
    theta = np.deg2rad(np.asarray(angles))
    i = s0 / 2 * (1 + dolp * np.cos(2 * theta - 2 * phi))
    return i.reshape(h, w, -1).astype(np.float32)


@pytest.mark.parametrize("derived", ["stokes", "dolp_aolp_trig"])
@pytest.mark.parametrize("angles", [(0.0, 45.0, 90.0, 135.0), (0.0, 60.0, 120.0)])
def test_model_derivation_equals_the_loaders(derived, angles):
    stack = angle_stack(angles=angles)
    layout = PolarLayout("angles", angles, stack.shape[2])
    expected = layout.derive(stack, derived)  # (H, W, bands * 3)
    module = StackDerivation(derived=derived, polarization="angles", bands=BANDS, angles_deg=angles)
    got = module(torch.from_numpy(stack.transpose(2, 0, 1).copy())).numpy().transpose(1, 2, 0)
    np.testing.assert_allclose(got, expected, **TOLERANCE)
    if derived == "dolp_aolp_trig":  # the unpolarized patch: cos and sin are exactly 0
        assert np.all(got[:4, :5, 1::3] == 0) and np.all(got[:4, :5, 2::3] == 0)


def test_stokes_stacks_derive_too():
    rng = np.random.default_rng(1)
    s = np.concatenate([rng.uniform(0.5, 1, (8, 8, 1)), rng.uniform(-0.4, 0.4, (8, 8, 2))], axis=2)
    s = np.tile(s, (1, 1, 2)).astype(np.float32)
    expected = PolarLayout("stokes", channels=6).derive(s, "dolp_aolp_trig")
    got = StackDerivation(derived="dolp_aolp_trig", polarization="stokes", bands=2)(
        torch.from_numpy(s.transpose(2, 0, 1).copy()))
    np.testing.assert_allclose(got.numpy().transpose(1, 2, 0), expected, **TOLERANCE)


def test_config_decides_where_and_rejects_nonsense():
    cfg = get_polar_cfg(MODEL__POLAR__IN_CHANNELS=3 * BANDS, INPUT__STACK__CHANNELS=4 * BANDS,
                        INPUT__STACK__POLARIZATION="angles", INPUT__STACK__DERIVED="stokes")
    assert stack_derivation_from_config(cfg).in_channels == 4 * BANDS
    cfg.INPUT.STACK.DERIVED_ON = "loader"
    assert stack_derivation_from_config(cfg) is None
    cfg.INPUT.STACK.DERIVED_ON = "gpu"
    with pytest.raises(ValueError, match="INPUT.STACK.DERIVED_ON"):
        stack_derivation_from_config(cfg)
    with pytest.raises(ValueError, match="INPUT.STACK.DERIVED_ON"):
        PolarDatasetMapper(cfg, is_train=True)
    cfg.INPUT.STACK.DERIVED_ON, cfg.INPUT.STACK.DERIVED = "model", "raw"
    assert stack_derivation_from_config(cfg) is None
    with pytest.raises(ValueError, match="POLARIZATION"):
        StackDerivation(derived="stokes", polarization="dolp_aolp", bands=2)


@pytest.mark.parametrize("derived", ["stokes", "dolp_aolp_trig"])
def test_model_inputs_are_the_same_either_way(tmp_path, derived):
    """A uint16 angle stack through mapper (hflip) + preprocess_image: the normalized batch the
    backbone gets is the same when the model derives (the loader then delivers uint16) as when
    the loader derives (float32)."""
    h, w = 96, 128
    stack = angle_stack(h, w)
    cv2.imwrite(str(tmp_path / "a.png"), np.full((h, w, 3), 100, np.uint8))
    np.save(tmp_path / "a.npy", (stack * 65535).round().astype(np.uint16))
    record = {"file_name": str(tmp_path / "a.png"), STACK_FILE_KEY: str(tmp_path / "a.npy"), "image_id": 1,
              "height": h, "width": w,
              "annotations": [{"bbox": [2, 2, 30, 30], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0}]}
    batches, stacks = {}, {}
    for where in ("loader", "model"):
        cfg = get_polar_cfg(MODEL__POLAR__IN_CHANNELS=3 * BANDS, INPUT__STACK__CHANNELS=4 * BANDS,
                            INPUT__STACK__POLARIZATION="angles", INPUT__STACK__DERIVED=derived,
                            INPUT__STACK__DERIVED_ON=where, MODEL__POLAR__STACK_MEAN=[0.2],
                            MODEL__POLAR__STACK_STD=[0.5])
        mapper = PolarDatasetMapper(cfg, is_train=True, augmentations=[T.RandomFlip(prob=1.0)])
        inputs = mapper(record)
        stacks[where] = inputs["stack"]
        batches[where] = build_model(cfg).preprocess_image([inputs]).tensor
    assert stacks["model"].dtype == torch.uint16 and stacks["model"].shape[0] == 4 * BANDS
    assert stacks["loader"].dtype == torch.float32 and stacks["loader"].shape[0] == 3 * BANDS
    np.testing.assert_allclose(batches["model"].numpy(), batches["loader"].numpy(), rtol=1e-4, atol=1e-4)


def test_mixed_precision_keeps_the_stack_input_in_float32():
    """Under bfloat16 autocast (CPU; CUDA AMP alike) the derived, normalized stack is computed in
    float32, exactly as without autocast, and a polar model trains a step."""
    from tests.common import random_inputs
    from tests.modeling.polar_test_utils import train_losses

    cfg = get_polar_cfg(MODEL__POLAR__IN_CHANNELS=3 * BANDS, INPUT__STACK__CHANNELS=4 * BANDS,
                        INPUT__STACK__POLARIZATION="angles", INPUT__STACK__DERIVED="dolp_aolp_trig")
    torch.manual_seed(0)
    model = build_model(cfg)
    inputs = random_inputs(2, (64, 96), channels=4 * BANDS, seed=3)
    plain = model.preprocess_image(inputs).tensor
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        mixed = model.preprocess_image(inputs).tensor
        losses = train_losses(model, inputs)
    assert mixed.dtype == torch.float32 and torch.equal(mixed, plain)
    assert set(losses) >= {"loss_rpn_cls", "loss_cls"}
