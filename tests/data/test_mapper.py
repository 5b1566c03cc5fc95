"""PolarDatasetMapper: the stack is read, scaled, validated and transformed exactly like the image."""
import numpy as np
import pytest
import torch

from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BoxMode

from tests.common import get_polar_cfg
from polar_rcnn.data import STACK_FILE_KEY, PolarDatasetMapper, StackError, stack_values

H, W = 48, 64
C = 4  # x, y, gray, 1 - gray


def gray_pattern(h=H, w=W):
    """A smooth, left/right- and up/down-asymmetric gray image in [20, 235]."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    g = 0.5 + 0.3 * np.sin(2 * np.pi * (x / w) * 1.3 + 0.4) * np.cos(2 * np.pi * y / h * 0.7) + 0.15 * x / w
    return 20 + 215 * (g - g.min()) / (g.max() - g.min())


def write_sample(tmp_path, stack=None, name="sample", layout="HWC"):
    """Write ``name.png`` (BGR, gray pattern) and ``name.npy`` (position + gray channels by default)."""
    import cv2

    gray = gray_pattern()
    image = np.clip(np.round(gray[..., None] + np.array([-10.0, 0.0, 10.0])), 0, 255).astype(np.uint8)
    image_path = str(tmp_path / f"{name}.png")
    assert cv2.imwrite(image_path, image)
    if stack is None:
        y, x = np.mgrid[0:H, 0:W].astype(np.float32)
        g = image.astype(np.float32).mean(axis=2) / 255
        stack = np.stack([x / (W - 1), y / (H - 1), g, 1 - g], axis=2).astype(np.float32)
        if layout == "CHW":
            stack = stack.transpose(2, 0, 1)
    stack_path = str(tmp_path / f"{name}.npy")
    np.save(stack_path, stack)
    record = {
        "file_name": image_path, "image_id": 0, "height": H, "width": W, STACK_FILE_KEY: stack_path,
        "annotations": [{"bbox": [4, 6, 20, 16], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 1}],
    }
    return record, image, stack


def make_mapper(is_train=True, augmentations=(), channels=C, **cfg_overrides):
    # the pattern stack has no polarization meaning (the demo config declares "angles")
    cfg_overrides.setdefault("INPUT__STACK__POLARIZATION", "")
    # the stack at the image's resolution, pixel by pixel (the stride-s grid: tests/data/test_stack_grid.py)
    cfg_overrides.setdefault("INPUT__STACK__RESOLUTION", "full")
    cfg = get_polar_cfg(MODEL__POLAR__IN_CHANNELS=channels, **cfg_overrides)
    return PolarDatasetMapper(cfg, is_train=is_train, augmentations=list(augmentations))


def corr(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


# ------------------------------------------------------------------------------------------ geometry
@pytest.mark.parametrize("flip", [True, False], ids=["hflip+resize", "resize"])
def test_stack_follows_geometric_transforms(tmp_path, flip):
    record, _, _ = write_sample(tmp_path)
    augs = ([T.RandomFlip(prob=1.0, horizontal=True)] if flip else []) + [T.ResizeShortestEdge(72, 1000)]
    out = make_mapper(augmentations=augs)(record)

    image, stack = out["image"].numpy().astype(np.float64), stack_values(out).numpy()
    assert image.shape == (3, 72, 96)
    assert stack.shape == (C,) + image.shape[1:]
    assert out["stack"].dtype == torch.float32  # the file's dtype is kept

    gray = image.mean(axis=0) / 255
    assert corr(gray, stack[2]) > 0.99
    assert corr(gray, stack[3]) < -0.99
    assert np.abs(gray - stack[2]).mean() < 0.01
    # the un-/flipped counterpart of the stack does not match: the check above is sensitive to flips
    assert corr(gray, stack[2][:, ::-1]) < 0.9

    x, y = stack[0].astype(np.float64), stack[1].astype(np.float64)
    dx = np.diff(x, axis=1)
    if flip:
        assert (dx <= 1e-6).all() and x[:, 0].min() > 0.95 and x[:, -1].max() < 0.05
    else:
        assert (dx >= -1e-6).all() and x[:, 0].max() < 0.05 and x[:, -1].min() > 0.95
    assert (np.diff(y, axis=0) >= -1e-6).all() and y[0].max() < 0.05 and y[-1].min() > 0.95
    assert np.allclose(x, x[:1], atol=1e-6) and np.allclose(y, y[:, :1], atol=1e-6)

    boxes = out["instances"].gt_boxes.tensor.numpy()
    expected = np.array([[W - 24, 6, W - 4, 22]] if flip else [[4, 6, 24, 22]], np.float32) * 1.5
    assert np.allclose(boxes, expected, atol=1e-4)


@pytest.mark.parametrize("random", [False, True], ids=["fixed", "random"])
def test_stack_follows_crop_and_vflip(tmp_path, random):
    record, _, stack = write_sample(tmp_path)
    if random:  # random crop: the offset is read back from the stack's position channels
        np.random.seed(1)
        augs = [T.RandomCrop("absolute", (32, 40)), T.RandomFlip(prob=1.0, horizontal=False, vertical=True)]
    else:
        augs = [T.CropTransform(8, 4, 40, 32), T.VFlipTransform(32)]
    out = make_mapper(augmentations=augs)(record)
    image, got = out["image"].numpy().astype(np.float64), out["stack"].numpy()
    assert image.shape == (3, 32, 40) and got.shape == (C, 32, 40)
    x0 = int(round(got[0, 0, 0] * (W - 1)))
    y0 = int(round(got[1, -1, 0] * (H - 1)))  # vertically flipped: the crop's top row is now the last
    if not random:
        assert (x0, y0) == (8, 4)
    expected = stack[y0:y0 + 32, x0:x0 + 40][::-1].transpose(2, 0, 1)
    np.testing.assert_array_equal(got, expected)
    gray = image.mean(axis=0) / 255
    assert corr(gray, got[2]) > 0.99 and corr(gray, got[2][::-1]) < 0.9
    # the box (x 4..24, y 6..22) follows: crop offset, clipped to the crop, then the vertical flip
    box = out["instances"].gt_boxes.tensor.numpy()[0]
    bx0, bx1 = np.clip([4 - x0, 24 - x0], 0, 40)
    by0, by1 = np.clip([6 - y0, 22 - y0], 0, 32)
    np.testing.assert_allclose(box, [bx0, 32 - by1, bx1, 32 - by0], atol=1e-4)


def test_photometric_augmentation_leaves_the_stack_alone(tmp_path):
    record, _, stack = write_sample(tmp_path)
    raw = utils.read_image(record["file_name"], format="BGR")
    np.random.seed(0)
    out = make_mapper(augmentations=[T.RandomFlip(prob=1.0), T.RandomBrightness(0.5, 1.5),
                                     T.RandomContrast(0.5, 1.5), T.RandomLighting(1.0)])(record)
    image = out["image"].numpy().transpose(1, 2, 0)
    assert np.abs(image.astype(np.float64) - raw[:, ::-1]).mean() > 5  # photometric change happened
    np.testing.assert_array_equal(out["stack"].numpy(), stack[:, ::-1].transpose(2, 0, 1))


def test_eval_mode_resizes_stack_with_image_and_drops_annotations(tmp_path):
    record, _, _ = write_sample(tmp_path)
    cfg = get_polar_cfg(MODEL__POLAR__IN_CHANNELS=C, INPUT__STACK__RESOLUTION="full")
    out = PolarDatasetMapper(cfg, is_train=False)(record)
    assert out["image"].shape[1:] == out["stack"].shape[1:] == (96, 128)
    assert "annotations" not in out and "instances" not in out


# ------------------------------------------------------------------------------ dtypes and layouts
@pytest.mark.parametrize(
    "dtype,scale",
    [(np.uint8, 1 / 255), (np.uint16, 1 / 65535), (np.float16, 1.0), (np.float32, 1.0)],
    ids=["uint8", "uint16", "float16", "float32"],
)
@pytest.mark.parametrize("layout", ["HWC", "CHW"])
def test_stack_dtypes_are_scaled_to_float(tmp_path, dtype, scale, layout):
    rng = np.random.default_rng(0)
    if np.issubdtype(dtype, np.integer):
        hwc = rng.integers(0, np.iinfo(dtype).max, (H, W, C), endpoint=True).astype(dtype)
        hwc[0, 0, 0] = np.iinfo(dtype).max
    else:
        hwc = (rng.standard_normal((H, W, C)) * 3).astype(dtype)
    on_disk = hwc if layout == "HWC" else np.ascontiguousarray(hwc.transpose(2, 0, 1))
    record, _, _ = write_sample(tmp_path, stack=on_disk)
    out = make_mapper(INPUT__STACK__LAYOUT=layout)(record)
    assert out["stack"].dtype == torch.from_numpy(np.zeros(1, dtype)).dtype  # stored dtype, converted in the model
    assert out.get("stack_scale", 1.0) == pytest.approx(scale)
    stack = stack_values(out)
    assert stack.dtype == torch.float32 and tuple(stack.shape) == (C, H, W)
    expected = hwc.astype(np.float32).transpose(2, 0, 1) * np.float32(scale)
    np.testing.assert_allclose(stack.numpy(), expected, rtol=1e-6, atol=0)
    if np.issubdtype(dtype, np.integer):
        assert stack.max().item() == pytest.approx(1.0) and stack.min().item() >= 0


def test_chw_layout_with_flip(tmp_path):
    record, _, chw = write_sample(tmp_path, layout="CHW")
    out = make_mapper(augmentations=[T.RandomFlip(prob=1.0)], INPUT__STACK__LAYOUT="CHW")(record)
    np.testing.assert_array_equal(out["stack"].numpy(), chw[:, :, ::-1])


def test_explicit_scale_overrides_dtype_scale(tmp_path):
    hwc = np.full((H, W, C), 1000, np.uint16)
    record, _, _ = write_sample(tmp_path, stack=hwc)
    out = make_mapper(INPUT__STACK__SCALE=0.5)(record)
    assert out["stack_scale"] == 0.5 and torch.all(stack_values(out) == 500.0)


def test_output_stack_does_not_alias_the_file(tmp_path):
    chw = np.random.default_rng(0).random((C, H, W), dtype=np.float32)
    record, _, _ = write_sample(tmp_path, stack=chw)
    out = make_mapper(INPUT__STACK__LAYOUT="CHW")(record)
    before = out["stack"].clone()
    on_disk = np.load(record[STACK_FILE_KEY], mmap_mode="r+")  # change the file behind the mapper's back
    on_disk[...] = -1.0
    on_disk.flush()
    del on_disk
    assert torch.equal(out["stack"], before)


# ------------------------------------------------------------------------------------------- errors
def _missing(tmp_path, record):
    record[STACK_FILE_KEY] = str(tmp_path / "nowhere" / "missing.npy")


def _channels(tmp_path, record):
    np.save(record[STACK_FILE_KEY], np.zeros((H, W, C + 1), np.float32))


def _size(tmp_path, record):
    np.save(record[STACK_FILE_KEY], np.zeros((H, W + 1, C), np.float32))


def _nan(tmp_path, record):
    stack = np.zeros((H, W, C), np.float32)
    stack[3, 5, 1] = np.nan
    np.save(record[STACK_FILE_KEY], stack)


def _truncated(tmp_path, record):
    path = record[STACK_FILE_KEY]
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])


def _two_dims(tmp_path, record):
    np.save(record[STACK_FILE_KEY], np.zeros((H, W), np.float32))


def _format(tmp_path, record):
    path = str(tmp_path / "stack.tiff")
    with open(path, "wb") as f:
        f.write(b"\0" * 16)
    record[STACK_FILE_KEY] = path


@pytest.mark.parametrize(
    "corrupt", [_missing, _channels, _size, _nan, _truncated, _two_dims, _format],
    ids=["missing", "channels", "size", "nan", "truncated", "2d", "format"],
)
def test_bad_stack_raises_stack_error_naming_the_file(tmp_path, corrupt):
    record, _, _ = write_sample(tmp_path)
    corrupt(tmp_path, record)
    with pytest.raises(StackError) as info:
        make_mapper()(record)
    assert isinstance(info.value, ValueError)
    assert record[STACK_FILE_KEY] in str(info.value)


def test_record_without_stack_file_raises(tmp_path):
    record, _, _ = write_sample(tmp_path)
    del record[STACK_FILE_KEY]
    with pytest.raises(StackError, match=STACK_FILE_KEY) as info:
        make_mapper()(record)
    assert record["file_name"] in str(info.value) and info.value.kind == "record"


def test_stack_disabled_gives_plain_inputs(tmp_path):
    record, _, _ = write_sample(tmp_path)
    del record[STACK_FILE_KEY]  # not needed either
    out = make_mapper(INPUT__STACK__ENABLED=False)(record)
    assert "stack" not in out
    assert out["image"].shape == (3, H, W) and len(out["instances"]) == 1


# -------------------------------------------------------------------------------------- integration
def test_mapper_output_feeds_the_model(tmp_path):
    from detectron2.modeling import build_model
    from detectron2.utils.events import EventStorage

    record, _, _ = write_sample(tmp_path)
    out = make_mapper(augmentations=[T.RandomFlip(prob=1.0)])(record)
    torch.manual_seed(0)
    model = build_model(get_polar_cfg(MODEL__POLAR__IN_CHANNELS=C))
    model.train()
    with EventStorage():
        losses = model([out])
    assert all(torch.isfinite(v) for v in losses.values())


# ------------------------------------------------------------------------- the fast (stored-dtype) path
@pytest.mark.parametrize("layout", ["HWC", "CHW"])
def test_stack_tensor_keeps_the_file_memory_order(tmp_path, layout):
    """One copy in the file's order: HWC files give a channels-last (C, H, W) tensor, CHW files a
    contiguous one; values are the same either way."""
    hwc = np.random.default_rng(0).integers(0, 65535, (H, W, C), endpoint=True).astype(np.uint16)
    on_disk = hwc if layout == "HWC" else np.ascontiguousarray(hwc.transpose(2, 0, 1))
    record, _, _ = write_sample(tmp_path, stack=on_disk)
    out = make_mapper(INPUT__STACK__LAYOUT=layout)(record)
    stack = out["stack"]
    assert stack.dtype == torch.uint16 and tuple(stack.shape) == (C, H, W)
    assert stack.stride() == ((1, W * C, C) if layout == "HWC" else (H * W, W, 1))
    np.testing.assert_array_equal(stack.numpy(), hwc.transpose(2, 0, 1))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float16, np.float32])
def test_flips_and_resize_in_stored_dtype_match_the_float_path(tmp_path, dtype):
    """The angle swap of a flip is gathered in the final copy; a resize runs in the stored dtype:
    the result equals the same transforms applied eagerly to the float32 stack."""
    from polar_rcnn.data import PolarLayout, apply_geometric_transforms

    rng = np.random.default_rng(1)
    stack = rng.random((H, W, 8), dtype=np.float32)
    top = {np.uint8: 255, np.uint16: 65535}.get(dtype)
    stored = np.round(stack * top).astype(dtype) if top else stack.astype(dtype)
    record, _, _ = write_sample(tmp_path, stack=stored)
    augs = [T.HFlipTransform(W), T.ResizeTransform(H, W, 36, 48), T.VFlipTransform(36), T.HFlipTransform(48)]
    out = make_mapper(augmentations=augs, channels=8, INPUT__STACK__POLARIZATION="angles")(record)
    assert out["stack"].dtype == torch.from_numpy(np.zeros(1, dtype)).dtype or dtype == np.float16
    scale = 1 / top if top else 1.0
    reference = apply_geometric_transforms(T.TransformList(augs), stored.astype(np.float32) * np.float32(scale),
                                           polar_layout=PolarLayout("angles", (0, 45, 90, 135), 8))
    atol = 1.5 / top if top else 1e-6  # an integer resize rounds to the nearest level
    np.testing.assert_allclose(stack_values(out).numpy(), reference.transpose(2, 0, 1), atol=atol, rtol=0)


def test_float16_nan_is_found_without_float_conversion(tmp_path):
    stack = np.random.default_rng(0).random((H, W, C)).astype(np.float16)
    stack[7, 9, 2] = np.inf
    record, _, _ = write_sample(tmp_path, stack=stack)
    with pytest.raises(StackError, match=r"NaN or Inf.*\(7, 9, 2\)") as e:
        make_mapper()(record)
    assert record[STACK_FILE_KEY] in str(e.value)


# ------------------------------------------------------------------------------------------ masks
@pytest.mark.parametrize("mask_format", ["polygon", "bitmask"])
@pytest.mark.parametrize("flip", [True, False], ids=["hflip+resize", "resize"])
def test_instance_masks_follow_flip_and_resize(tmp_path, flip, mask_format):
    """MODEL.MASK_ON: an L-shaped polygon becomes gt_masks that move with the image."""
    record, _, _ = write_sample(tmp_path)
    # an L inside the box [4, 6, 24, 22]: the left column full height, the bottom row full width
    record["annotations"][0]["segmentation"] = [[4, 6, 10, 6, 10, 16, 24, 16, 24, 22, 4, 22]]
    augs = ([T.RandomFlip(prob=1.0, horizontal=True)] if flip else []) + [T.ResizeShortestEdge(96, 1000)]
    out = make_mapper(augmentations=augs, MODEL__MASK_ON=True, INPUT__MASK_FORMAT=mask_format)(record)
    inst = out["instances"]
    assert inst.image_size == (96, 128) and inst.has("gt_masks")
    if mask_format == "polygon":
        masks = inst.gt_masks.polygons
        assert len(masks) == 1
        from pycocotools import mask as mask_util
        mask = mask_util.decode(mask_util.merge(mask_util.frPyObjects([p.tolist() for p in masks[0]], 96, 128)))
    else:
        mask = inst.gt_masks.tensor[0].numpy()
    expected = np.zeros((H, W), np.uint8)
    expected[6:22, 4:10] = 1
    expected[16:22, 4:24] = 1
    if flip:
        expected = expected[:, ::-1]
    expected = np.kron(expected, np.ones((2, 2), np.uint8))  # resized 2x
    assert mask.shape == expected.shape
    iou = (mask & expected).sum() / (mask | expected).sum()
    assert iou > 0.97, iou
    # the mirrored L does not match: the check above is sensitive to the flip
    assert (mask & expected[:, ::-1]).sum() / (mask | expected[:, ::-1]).sum() < 0.5
    if not flip:
        assert inst.gt_boxes.tensor.tolist() == [[8.0, 12.0, 48.0, 44.0]]


def test_masks_dropped_without_mask_on(tmp_path):
    record, _, _ = write_sample(tmp_path)
    record["annotations"][0]["segmentation"] = [[4, 6, 24, 6, 24, 22, 4, 22]]
    out = make_mapper(augmentations=[T.ResizeShortestEdge(48, 1000)])(record)
    assert not out["instances"].has("gt_masks")
