"""The stack delivered on the branch's stride-s grid (INPUT.STACK.RESOLUTION "branch"): the first
conv's input equals the one the model pools from the full-resolution stack (RESOLUTION "full")."""
import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from detectron2.data import transforms as T
from detectron2.modeling import build_model
from detectron2.structures import BoxMode
from PIL import Image

from tests.common import get_polar_cfg
from polar_rcnn.architecture import stack_delivery_stride
from polar_rcnn.data import STACK_FILE_KEY, PolarDatasetMapper
from polar_rcnn.data.stack_grid import grid_geometry, grid_size, resample_to_grid

BANDS, ANGLES = 2, 4
STD = 0.5
#: uint16 cell means are rounded to the nearest stored value: half a step, in normalized units
UINT16_STEP = 0.5 / 65535 / STD + 1e-6


def pooled_mean(stack: np.ndarray, stride: int) -> np.ndarray:
    """(H, W, C) -> the mean over each stride x stride cell's pixels inside the image."""
    x = torch.from_numpy(np.ascontiguousarray(stack, dtype=np.float64)).permute(2, 0, 1)[None]
    return F.avg_pool2d(x, stride, ceil_mode=True)[0].permute(1, 2, 0).numpy()


# ------------------------------------------------------------------------------------ resampling
@pytest.mark.parametrize("size", [(48, 64), (50, 70), (3, 5)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("flips", [(False, False), (False, True), (True, True)], ids=["none", "h", "vh"])
@pytest.mark.parametrize("dtype", [np.uint16, np.uint8, np.float16, np.float32])
def test_grid_is_the_cell_mean_of_the_flipped_stack(size, flips, dtype):
    rng = np.random.default_rng(0)
    values = rng.random(size + (6,))
    stored = (values * 1000).astype(dtype) if dtype != np.uint8 else (values * 255).astype(dtype)
    geometry = grid_geometry(size, size, 4, flips)
    grid = resample_to_grid(stored, geometry)
    grid = grid[::-1 if flips[0] else 1, ::-1 if flips[1] else 1]
    expected = pooled_mean(stored[::-1 if flips[0] else 1, ::-1 if flips[1] else 1], 4)
    assert grid.shape[:2] == grid_size(size, 4) == expected.shape[:2]
    assert grid.dtype == (np.float32 if dtype == np.float16 else dtype)
    atol = 0.5 + 1e-9 if np.dtype(dtype).kind == "u" else 1e-3  # integer means are rounded
    np.testing.assert_allclose(grid.astype(np.float64), expected, atol=atol, rtol=1e-6)


@pytest.mark.parametrize("channel_first", [False, True], ids=["hwc", "chw"])
def test_float16_grid_is_made_band_by_band_exactly(tmp_path, channel_first):
    """float16 sources longer than one band of cells (here 150 rows: 2 full bands of 64 source rows
    and a partial one, then the partial last cell), memory-mapped read-only: each cell is the
    float32 mean of its float16 values."""
    values = np.random.default_rng(3).random((150, 37, 5)).astype(np.float16)
    path = tmp_path / "s.npy"
    np.save(path, values.transpose(2, 0, 1) if channel_first else values)
    stored = np.load(path, mmap_mode="r")
    stored = stored.transpose(1, 2, 0) if channel_first else stored
    grid = resample_to_grid(stored, grid_geometry((150, 37), (150, 37), 4))
    assert grid.dtype == np.float32 and grid.shape == (38, 10, 5)
    np.testing.assert_allclose(grid, pooled_mean(values, 4), atol=1e-6, rtol=0)


def test_grid_of_a_source_larger_than_the_image_is_its_area_mean():
    """A 0.8x resize at stride 4: every cell covers 5 x 5 source pixels; a non-integer ratio has no
    such geometry (the image's resize comes first)."""
    source = np.random.default_rng(1).random((50, 70, 3)).astype(np.float32)
    grid = resample_to_grid(source, grid_geometry((50, 70), (40, 56), 4))
    np.testing.assert_allclose(grid, pooled_mean(source, 5), atol=1e-6)
    assert grid_geometry((52, 68), (39, 51), 4) is None


def test_channel_first_memory_is_resampled_per_plane():
    chw = np.random.default_rng(2).integers(0, 65535, (5, 20, 30), dtype=np.uint16)
    hwc = chw.transpose(1, 2, 0)  # a CHW file as the reader returns it
    grid = resample_to_grid(hwc, grid_geometry((20, 30), (20, 30), 4))
    np.testing.assert_array_equal(grid, resample_to_grid(np.ascontiguousarray(hwc), grid_geometry((20, 30), (20, 30), 4)))


# ------------------------------------------------------------------------ mapper + model, end to end
def smooth_angle_stack(h, w, seed=0):
    """A smooth Malus'-law stack (BANDS bands x 4 angles) in [0, 1], asymmetric in x and y."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(BANDS):
        a, b, c = rng.uniform(0.5, 2.0, 3)
        s0 = 0.55 + 0.35 * np.sin(a * x / w * np.pi + 0.3) * np.cos(b * y / h * np.pi) + 0.05 * x / w
        dolp = 0.3 + 0.25 * np.sin(c * (x + 2 * y) / (w + h) * np.pi)
        phi = np.pi * ((x / w + 0.5 * y / h) % 1.0)
        for theta in np.deg2rad([0.0, 45.0, 90.0, 135.0]):
            out.append(s0 / 2 * (1 + dolp * np.cos(2 * theta - 2 * phi)))
    return np.clip(np.stack(out, axis=2), 0, 1)


def write_record(tmp_path, h, w, dtype=np.uint16):
    cv2.imwrite(str(tmp_path / "a.png"), np.full((h, w, 3), 100, np.uint8))
    stack = smooth_angle_stack(h, w)
    np.save(tmp_path / "a.npy", (stack * 65535).round().astype(dtype) if dtype == np.uint16 else stack.astype(dtype))
    return {"file_name": str(tmp_path / "a.png"), STACK_FILE_KEY: str(tmp_path / "a.npy"), "image_id": 1,
            "height": h, "width": w,
            "annotations": [{"bbox": [2, 2, 20, 20], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0}]}


def grid_config(resolution, derived="raw", **overrides):
    overrides.setdefault("MODEL__POLAR__INPUT_STRIDE", 4)  # the library default (the demo yaml has 2)
    channels = BANDS * (ANGLES if derived == "raw" else 3)
    return get_polar_cfg(MODEL__POLAR__IN_CHANNELS=channels, INPUT__STACK__CHANNELS=BANDS * ANGLES,
                         INPUT__STACK__POLARIZATION="angles", INPUT__STACK__DERIVED=derived,
                         INPUT__STACK__RESOLUTION=resolution, MODEL__POLAR__STACK_MEAN=[0.2],
                         MODEL__POLAR__STACK_STD=[STD], **overrides)


def first_conv_inputs(record, augmentations, derived="raw", **overrides):
    """The stack the branch's first conv reads, for RESOLUTION "full" (the model pools) and "branch"."""
    out = {}
    for resolution in ("full", "branch"):
        cfg = grid_config(resolution, derived, **overrides)
        inputs = PolarDatasetMapper(cfg, is_train=True, augmentations=list(augmentations))(record)
        model = build_model(cfg)
        _, stack, available = model.backbone.split_input(model.preprocess_image([inputs]).tensor)
        out[resolution] = (inputs, stack[0], available[0])
    return out


def hflip(w):
    return T.HFlipTransform(w)


GEOMETRIES = {  # image (h, w) -> deterministic transforms; all with cells covering whole source pixels
    "same size": ((48, 64), lambda: []),
    "partial cells": ((50, 70), lambda: []),
    "hflip": ((50, 70), lambda: [hflip(70)]),
    "vflip": ((50, 70), lambda: [T.VFlipTransform(50)]),
    "crop+hflip": ((50, 70), lambda: [T.CropTransform(3, 5, 41, 37), hflip(41)]),
    "resize 0.5 + hflip": ((50, 70), lambda: [T.ResizeTransform(50, 70, 25, 35, Image.BILINEAR), hflip(35)]),
    "resize non-integer + hflip": ((52, 68), lambda: [T.ResizeTransform(52, 68, 39, 51, Image.BILINEAR), hflip(51)]),
    "hflip + crop": ((50, 70), lambda: [hflip(70), T.CropTransform(6, 2, 45, 40)]),
    "resize + crop": ((52, 68), lambda: [T.ResizeTransform(52, 68, 41, 54, Image.BILINEAR),
                                         T.CropTransform(1, 2, 37, 33)]),
}


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_first_conv_input_matches_the_pooled_full_resolution_stack(tmp_path, name):
    """Exact (up to uint16 rounding of the cell means) where every cell covers whole source pixels
    or the image's own resize comes first; the angle swap of a flip happens on the grid."""
    (h, w), augmentations = GEOMETRIES[name]
    got = first_conv_inputs(write_record(tmp_path, h, w), augmentations())
    (full_inputs, full, full_available), (grid_inputs, grid, grid_available) = got["full"], got["branch"]
    image_hw = tuple(grid_inputs["image"].shape[1:])
    assert grid_inputs["stack_stride"] == 4 and "stack_stride" not in full_inputs
    assert tuple(grid_inputs["stack"].shape) == (BANDS * ANGLES,) + grid_size(image_hw, 4)
    assert grid_inputs["stack"].dtype == torch.uint16
    assert full.shape == grid.shape and torch.equal(full_available, grid_available)
    # a resize of the full-resolution stack rounds to uint16 once more
    atol = 2 * UINT16_STEP if name.startswith("resize") else UINT16_STEP
    torch.testing.assert_close(grid, full, atol=atol, rtol=0)


def test_area_resize_is_close_to_bilinear_then_pooled(tmp_path):
    """A 0.8x resize at stride 4 (5 x 5 source pixels per cell): the area mean of the source
    differs from the bilinear resize then 4 x 4 mean by a fraction of the stack's range."""
    augmentations = [T.ResizeTransform(50, 70, 40, 56, Image.BILINEAR), hflip(56)]
    got = first_conv_inputs(write_record(tmp_path, 50, 70), augmentations)
    diff = (got["branch"][1] - got["full"][1]).abs()
    assert diff.max() < 0.002 and diff.mean() < 3e-4  # normalized units


# Stokes: the uint16 rounding of 4 cell means through the Stokes map (<= 4 half steps / STD);
# trig: the bound for this smooth scene (docs/PERFORMANCE.md gives the differences)
@pytest.mark.parametrize("derived,atol", [("stokes", 4 * UINT16_STEP), ("dolp_aolp_trig", 0.08)])
def test_derived_on_the_grid(tmp_path, derived, atol):
    """Derived in the model after the pooling: Stokes (linear) as before; DoLP / cos 2AoLP /
    sin 2AoLP of the cell means differ from the cell means of DoLP / trig where AoLP varies
    inside a cell (here smoothly: below ``atol`` in normalized units, mean far below)."""
    augmentations = [hflip(70)]
    got = first_conv_inputs(write_record(tmp_path, 50, 70), augmentations, derived=derived)
    diff = (got["branch"][1] - got["full"][1]).abs()
    assert got["branch"][0]["stack"].shape[0] == BANDS * ANGLES
    assert diff.max() < atol and diff.mean() < atol / 6


def test_float16_files_give_float32_grids(tmp_path):
    got = first_conv_inputs(write_record(tmp_path, 50, 70, np.float16), [hflip(70)])
    assert got["branch"][0]["stack"].dtype == torch.float32
    torch.testing.assert_close(got["branch"][1], got["full"][1], atol=1e-5, rtol=0)


def test_brightness_gain_scales_the_grid(tmp_path):
    gain = T.BlendTransform(src_image=0.0, src_weight=0.4, dst_weight=0.6)
    got = first_conv_inputs(write_record(tmp_path, 48, 64), [gain, hflip(64)], INPUT__STACK__PHOTOMETRIC=True)
    assert got["branch"][0]["stack_scale"] == pytest.approx(0.6 / 65535)
    torch.testing.assert_close(got["branch"][1], got["full"][1], atol=UINT16_STEP, rtol=0)


def test_full_resolution_for_early_fusion_and_stride_one():
    assert stack_delivery_stride(grid_config("branch")) == 4
    assert stack_delivery_stride(grid_config("full")) == 1
    assert stack_delivery_stride(grid_config("branch", MODEL__POLAR__INPUT_STRIDE=1)) == 1
    assert stack_delivery_stride(grid_config("branch", MODEL__BACKBONE__NAME="build_early_fusion_resnet_fpn_backbone")) == 1
    with pytest.raises(ValueError, match="INPUT.STACK.RESOLUTION"):
        stack_delivery_stride(grid_config("half"))


def test_predictor_delivers_the_grid(tmp_path):
    """PolarPredictor (tools/predict.py, pictures) gives the model the stack on the grid, equal to
    the pooled full-resolution stack (its test resize comes first, as the image's)."""
    from polar_rcnn.engine import PolarPredictor

    stack = smooth_angle_stack(50, 70).astype(np.float32)
    image = np.full((50, 70, 3), 100, np.uint8)
    seen = {}
    for resolution in ("full", "branch"):
        cfg = grid_config(resolution, TEST__ALLOW_RANDOM_WEIGHTS=True)
        predictor = PolarPredictor(cfg)
        model = predictor.model
        original = model.preprocess_image

        def record(batched_inputs, original=original, resolution=resolution):
            images = original(batched_inputs)
            seen[resolution] = (batched_inputs[0].get("stack_stride"), model.backbone.split_input(images.tensor)[1])
            return images

        model.preprocess_image = record
        predictor(image, stack)
    assert seen["branch"][0] == 4 and seen["full"][0] is None
    torch.testing.assert_close(seen["branch"][1], seen["full"][1], atol=1e-5, rtol=0)
