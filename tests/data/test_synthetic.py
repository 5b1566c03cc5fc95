"""Tests for polar_rcnn.data.synthetic and datasets/prepare_polar_synth.py (numpy/cv2 only)."""

import dataclasses
import filecmp
import json
import os
import subprocess
import sys
from collections import defaultdict

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from polar_rcnn.data.synthetic import (
    CATEGORIES,
    POLARIZER_ANGLES_DEG,
    VAL_SEED_OFFSET,
    SyntheticConfig,
    decode_stack,
    generate_split,
    mask_to_polygons,
    polarization_from_intensities,
    prepare_synthetic_dataset,
    render_video,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIG = {c["id"]: c for c in CATEGORIES}


def tiny_cfg(**kw):
    base = dict(image_size=(96, 128), num_bands=3, num_videos=2, frames_per_video=4,
                objects_per_frame=(2, 3), object_size=(18, 36), seed=7)
    base.update(kw)
    return SyntheticConfig(**base)


def region_polarization(stack, mask, band=None):
    """DoLP/AoLP of the region-averaged Stokes vector (unbiased by pixel noise)."""
    H, W, C = stack.shape
    i4 = stack.reshape(H, W, C // 4, 4)
    i4 = i4.mean(axis=2) if band is None else i4[:, :, band]
    s0, dolp, aolp = polarization_from_intensities(i4[mask].mean(axis=0))
    return float(dolp), float(aolp)


def ring(labels, idx, width=6):
    m = (labels == idx).astype(np.uint8)
    grown = cv2.dilate(m, np.ones((2 * width + 1, 2 * width + 1), np.uint8)).astype(bool)
    return grown & (labels < 0)


def angle_diff(a, b):
    d = abs(a - b) % 180.0
    return min(d, 180.0 - d)


@pytest.fixture(scope="module")
def split_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("synth"))
    return out, generate_split(out, "train", tiny_cfg(), progress=False)


def test_categories_well_separated():
    assert [c["id"] for c in CATEGORIES] == [1, 2, 3]
    for a in CATEGORIES:
        for b in CATEGORIES:
            if a is not b:
                assert angle_diff(a["aolp_deg"], b["aolp_deg"]) >= 45 or abs(a["dolp"] - b["dolp"]) > 0.3


def test_deterministic_bytes(tmp_path, split_dir):
    out1, _ = split_dir
    out2 = str(tmp_path / "again")
    generate_split(out2, "train", tiny_cfg(), progress=False)
    for rel in ["train.json"] + [os.path.join("train", d, f) for d in ("images", "stacks")
                                 for f in sorted(os.listdir(os.path.join(out1, "train", d)))]:
        assert filecmp.cmp(os.path.join(out1, rel), os.path.join(out2, rel), shallow=False), rel
    other = next(render_video(tiny_cfg(seed=8), 0))
    assert not np.array_equal(other.stack, next(render_video(tiny_cfg(), 0)).stack)


def test_coco_json(split_dir):
    out, json_path = split_dir
    cfg = tiny_cfg()
    coco = COCO(json_path)
    H, W = cfg.image_size
    assert len(coco.getImgIds()) == cfg.num_videos * cfg.frames_per_video
    assert sorted(coco.getCatIds()) == [1, 2, 3]
    assert len(coco.getAnnIds()) > 0
    info = coco.dataset["info"]
    assert info["signal"] == "stack" and info["num_bands"] == 3 and "channel_layout" in info
    for img in coco.dataset["images"]:
        assert (img["height"], img["width"]) == (H, W)
        png = cv2.imread(os.path.join(out, "train", "images", img["file_name"]))
        assert png.shape == (H, W, 3)
        stack = np.load(os.path.join(out, "train", "stacks", img["stack_file"]))
        assert stack.shape == (H, W, cfg.num_bands * 4) and stack.dtype == np.float16
    for ann in coco.dataset["annotations"]:
        x, y, w, h = ann["bbox"]
        assert w > 0 and h > 0 and ann["area"] > 0 and ann["iscrowd"] == 0
        assert x >= 0 and y >= 0 and x + w <= W and y + h <= H
        assert ann["area"] <= w * h


def test_instance_masks(split_dir):
    """Every annotation has COCO polygons that rasterize to the object's visible pixels: inside
    its box, spanning it, with the annotation's area."""
    out, json_path = split_dir
    coco = COCO(json_path)
    frames = {(f.video_id, f.frame_id): f for v in range(2) for f in render_video(tiny_cfg(), v)}
    checked = 0
    for ann in coco.dataset["annotations"]:
        img = coco.imgs[ann["image_id"]]
        polys = ann["segmentation"]
        assert isinstance(polys, list) and polys and all(len(p) >= 6 and len(p) % 2 == 0 for p in polys)
        pts = np.concatenate([np.reshape(p, (-1, 2)) for p in polys])
        x, y, w, h = ann["bbox"]
        assert pts[:, 0].min() == x and pts[:, 1].min() == y and pts[:, 0].max() == x + w and pts[:, 1].max() == y + h
        mask = coco.annToMask(ann).astype(bool)
        assert mask.sum() == ann["area"]
        frame = frames[(img["video_id"], img["frame_id"])]
        index = next(o["index"] for o in frame.objects if o["bbox"] == ann["bbox"])
        np.testing.assert_array_equal(mask, frame.labels == index)
        checked += 1
    assert checked == len(coco.dataset["annotations"]) > 0


def test_mask_to_polygons_holes_and_pieces():
    """Holes (an occluder inside an object) and separate pieces survive as polygons without holes."""
    from pycocotools import mask as mask_util
    mask = np.zeros((20, 30), bool)
    mask[2:18, 3:20] = True
    mask[6:10, 8:12] = False  # a hole
    mask[4:6, 24:27] = True  # a second piece
    mask[15, 26] = True  # a single pixel
    polys = mask_to_polygons(mask, offset=(5, 1))
    assert len(polys) >= 4 and all(len(p) >= 8 for p in polys)
    rle = mask_util.merge(mask_util.frPyObjects(polys, 25, 40))
    expected = np.zeros((25, 40), bool)
    expected[1:21, 5:35] = mask
    np.testing.assert_array_equal(mask_util.decode(rle).astype(bool), expected)
    assert mask_to_polygons(np.zeros((4, 4), bool)) == []


@pytest.mark.parametrize("dtype", ["float32", "uint16", "uint8"])
def test_stack_dtypes(tmp_path, dtype):
    cfg = tiny_cfg(stack_dtype=dtype, num_videos=1, frames_per_video=1, num_bands=2)
    json_path = generate_split(str(tmp_path), "val", cfg, progress=False)
    img = json.load(open(json_path))["images"][0]
    stack = np.load(os.path.join(str(tmp_path), "val", "stacks", img["stack_file"]))
    assert stack.shape == (96, 128, 8) and stack.dtype == np.dtype(dtype)
    ref = next(render_video(cfg, 0)).stack
    assert np.abs(decode_stack(stack) - ref).max() < 3e-3


def test_rgb_channel_order_and_stack_pairing(split_dir):
    """PNG decodes to the generated RGB; stack total intensity tracks the image."""
    out, json_path = split_dir
    cfg = tiny_cfg()
    frame = next(render_video(cfg, 0))
    img = json.load(open(json_path))["images"][0]
    rgb = cv2.imread(os.path.join(out, "train", "images", img["file_name"]))[..., ::-1] / 255.0
    assert np.abs(rgb - frame.rgb).max() <= 0.5 / 255 + 1e-6
    stack = np.load(os.path.join(out, "train", "stacks", img["stack_file"])).astype(np.float32)
    corr = np.corrcoef(rgb.mean(axis=2).ravel(), stack.sum(axis=2).ravel())[0, 1]
    assert corr > 0.9


def test_malus_law_exact():
    cfg = tiny_cfg(noise_std=0.0, num_videos=1, frames_per_video=2, stack_dtype="float32")
    H, W = cfg.image_size
    checked = 0
    for frame in render_video(cfg, 0):
        i4 = frame.stack.reshape(H, W, cfg.num_bands, 4)
        # I0 + I90 == I45 + I135 == S0 everywhere
        np.testing.assert_allclose(i4[..., 0] + i4[..., 2], i4[..., 1] + i4[..., 3], atol=1e-5)
        theta = np.deg2rad(np.array(POLARIZER_ANGLES_DEG))
        for obj in frame.objects:
            m = frame.labels == obj["index"]
            for band in range(cfg.num_bands):
                s0, dolp, aolp = polarization_from_intensities(i4[:, :, band][m])
                np.testing.assert_allclose(dolp, obj["dolp"], atol=1e-4)
                assert max(angle_diff(a, obj["aolp_deg"]) for a in aolp[:50]) < 0.05
                expect = s0[:, None] / 2 * (1 + obj["dolp"] * np.cos(2 * theta - 2 * np.deg2rad(obj["aolp_deg"])))
                np.testing.assert_allclose(i4[:, :, band][m], expect, atol=1e-5)
            checked += 1
    assert checked > 0


def test_malus_class_signature_noisy(split_dir):
    """Recover DoLP/AoLP of one band inside each object from the on-disk float16 stack."""
    out, json_path = split_dir
    cfg = tiny_cfg()
    n = 0
    for frame in render_video(cfg, 1):
        stack = np.load(os.path.join(out, "train", "stacks", f"v001_f{frame.frame_id:04d}.npy"))
        i4 = stack.astype(np.float32).reshape(*cfg.image_size, cfg.num_bands, 4)[:, :, 1]
        for obj in frame.objects:
            m = frame.labels == obj["index"]
            _, dolp, aolp = polarization_from_intensities(i4[m])
            sig = SIG[obj["category_id"]]
            assert abs(np.median(dolp) - sig["dolp"]) < 0.1
            c = np.exp(2j * np.deg2rad(aolp)).mean()  # circular mean of axial angles
            assert angle_diff(np.rad2deg(np.angle(c)) / 2, sig["aolp_deg"]) < 8.0
            n += 1
    assert n > 0


def _contrast_stats(signal):
    cfg = tiny_cfg(signal=signal, num_videos=2, frames_per_video=2)
    rgb_c, d_obj, d_bg = [], [], []
    for v in range(cfg.num_videos):
        for frame in render_video(cfg, v):
            for obj in frame.objects:
                m, r = frame.labels == obj["index"], ring(frame.labels, obj["index"])
                if r.sum() < 20:
                    continue
                bg = frame.rgb[r].mean(axis=0)  # relative colour difference object vs. surround
                rgb_c.append(np.linalg.norm(frame.rgb[m].mean(axis=0) - bg) / np.linalg.norm(bg))
                d_obj.append(region_polarization(frame.stack, m)[0])
                d_bg.append(region_polarization(frame.stack, r)[0])
    assert len(rgb_c) >= 3
    return np.array(rgb_c), np.array(d_obj), np.array(d_bg)


def test_signal_none_is_indistinguishable_in_stack():
    _, d_obj, d_bg = _contrast_stats("none")
    assert abs(d_obj.mean() - d_bg.mean()) < 0.02
    assert d_obj.max() < 0.15


def test_signal_rgb_stack_has_only_background():
    rgb_c, d_obj, d_bg = _contrast_stats("rgb")
    assert abs(d_obj.mean() - d_bg.mean()) < 0.02
    assert rgb_c.mean() > 0.3  # class colour visible


def test_signal_stack_camouflaged_rgb_high_dolp():
    rgb_c, d_obj, d_bg = _contrast_stats("stack")
    assert rgb_c.mean() < 0.1
    assert d_obj.min() > 0.45 and d_bg.max() < 0.15


def test_videos_and_motion(split_dir):
    _, json_path = split_dir
    data = json.load(open(json_path))
    by_video = defaultdict(list)
    for img in data["images"]:
        by_video[img["video_id"]].append(img)
        assert img["file_name"].startswith(f"v{img['video_id']:03d}_f{img['frame_id']:04d}")
    assert len(by_video) == 2
    boxes = defaultdict(dict)  # image_id -> track_id -> bbox
    for a in data["annotations"]:
        boxes[a["image_id"]][a["track_id"]] = a["bbox"]
    shifts = []
    for imgs in by_video.values():
        imgs.sort(key=lambda i: i["frame_id"])
        assert [i["frame_id"] for i in imgs] == list(range(4))
        for prev, cur in zip(imgs, imgs[1:]):
            for tid in set(boxes[prev["id"]]) & set(boxes[cur["id"]]):
                (x0, y0, w0, h0), (x1, y1, w1, h1) = boxes[prev["id"]][tid], boxes[cur["id"]][tid]
                shifts.append(np.hypot(x1 + w1 / 2 - x0 - w0 / 2, y1 + h1 / 2 - y0 - h0 / 2))
    shifts = np.array(shifts)
    assert len(shifts) > 0 and (shifts > 0).mean() > 0.8 and shifts.mean() > 1.0


def test_prepare_skips_and_regenerates(tmp_path):
    out = str(tmp_path / "ds")
    base = SyntheticConfig(image_size=(64, 64), num_bands=2, frames_per_video=2, object_size=(12, 24))
    cfgs = {"train": dataclasses.replace(base, num_videos=1, seed=3),
            "val": dataclasses.replace(base, num_videos=1, seed=3 + VAL_SEED_OFFSET)}
    assert prepare_synthetic_dataset(out, cfgs, progress=False)
    params = json.load(open(os.path.join(out, "generator.json")))
    assert params["splits"]["val"]["seed"] != params["splits"]["train"]["seed"]
    assert len(json.load(open(os.path.join(out, "val.json")))["images"]) == 2
    assert not prepare_synthetic_dataset(out, cfgs, progress=False)  # up to date
    params_path = os.path.join(out, "generator.json")
    stale = dict(params, generator_version=params["generator_version"] - 1)  # e.g. written without masks
    with open(params_path, "w") as fh:
        json.dump(stale, fh)
    assert prepare_synthetic_dataset(out, cfgs, progress=False)
    assert "segmentation" in json.load(open(os.path.join(out, "val.json")))["annotations"][0]
    assert prepare_synthetic_dataset(out, cfgs, force=True, progress=False)
    other = {**cfgs, "train": dataclasses.replace(cfgs["train"], seed=4)}
    assert prepare_synthetic_dataset(out, other, progress=False)  # other parameters: regenerated
    assert json.load(open(os.path.join(out, "generator.json")))["splits"]["train"]["seed"] == 4


def test_cli_runs_and_skips_when_up_to_date(tmp_path):
    cmd = [sys.executable, os.path.join(REPO, "datasets", "prepare_polar_synth.py"), "--output", str(tmp_path / "ds"),
           "--train-videos", "1", "--val-videos", "0", "--frames-per-video", "1", "--size", "48", "--num-bands", "1",
           "--object-size", "12", "20"]
    first = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert "train: ->" in first.stdout
    again = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert "skipping" in again.stdout


def test_config_validation():
    with pytest.raises(ValueError):
        SyntheticConfig(signal="polar")
    with pytest.raises(ValueError):
        SyntheticConfig(stack_dtype="int8")
    cfg = dataclasses.replace(SyntheticConfig(), image_size=[32, 48])
    assert cfg.image_size == (32, 48) and cfg.num_channels == 24


def test_video_trap_gives_each_video_one_class_and_its_own_grating():
    """The trap changes the classes and the background DoLP only: RGB (camouflaged), labels and
    boxes are drawn as without it; every object of a video has its class; the grating differs
    between videos and is the same in every frame of one (up to the camera jitter)."""
    plain, trap = tiny_cfg(num_videos=4, signal="none"), tiny_cfg(num_videos=4, signal="none", video_trap=0.3)
    themes, gratings = [], []
    for v in range(4):
        for a, b in zip(render_video(plain, v), render_video(trap, v)):
            np.testing.assert_array_equal(a.rgb, b.rgb)
            np.testing.assert_array_equal(a.labels, b.labels)
            assert [o["bbox"] for o in a.objects] == [o["bbox"] for o in b.objects]
            extra = b.dolp - a.dolp
            assert extra.min() >= 0 and extra.max() <= 0.3 + 1e-6 and extra.max() - extra.min() > 0.2
        themes.append({o["category_id"] for o in b.objects})
        gratings.append(extra)
    assert all(len(t) == 1 for t in themes)
    assert min(np.abs(g - h).mean() for i, g in enumerate(gratings) for h in gratings[i + 1:]) > 0.03


def test_video_trap_parameters_only_when_set(tmp_path):
    """Datasets without the trap keep the parameters they had before it existed."""
    prepare_synthetic_dataset(str(tmp_path / "plain"), {"train": tiny_cfg(num_videos=1)}, progress=False)
    prepare_synthetic_dataset(str(tmp_path / "trap"), {"train": tiny_cfg(num_videos=1, video_trap=0.2)},
                              progress=False)
    plain = json.load(open(tmp_path / "plain" / "generator.json"))
    trap = json.load(open(tmp_path / "trap" / "generator.json"))
    assert "video_trap" not in plain["splits"]["train"] and trap["splits"]["train"]["video_trap"] == 0.2
    assert "video_trap" not in json.load(open(tmp_path / "plain" / "train.json"))["info"]["config"]
    with pytest.raises(ValueError, match="video_trap"):
        tiny_cfg(video_trap=1.5)


def test_a_flip_turns_plastic_into_metal():
    """The signatures plastic (AoLP 60) and metal (120) are mirror images: through the library's flip
    (polar_rcnn.polarization.mirror_angle_permutation) a flipped plastic object reads as metal, glass
    stays glass. Why tools/demo.py trains without flips."""
    from polar_rcnn.polarization import mirror_angle_permutation

    cfg = tiny_cfg(noise_std=0.0, num_videos=1, frames_per_video=2, stack_dtype="float32")
    H, W = cfg.image_size
    perm = mirror_angle_permutation(POLARIZER_ANGLES_DEG)
    nearest = {}
    for frame in render_video(cfg, 0):
        i4 = frame.stack.reshape(H, W, cfg.num_bands, 4)[:, ::-1, :, perm]  # the mirror: pixels and angles
        labels = frame.labels[:, ::-1]
        for obj in frame.objects:
            _, _, aolp = polarization_from_intensities(i4[:, :, 0][labels == obj["index"]])
            mean = float(np.rad2deg(0.5 * np.angle(np.exp(2j * np.deg2rad(aolp)).mean())) % 180.0)
            nearest[obj["category_id"]] = min(SIG, key=lambda c: angle_diff(mean, SIG[c]["aolp_deg"]))
    name = {c["id"]: c["name"] for c in CATEGORIES}
    seen = {name[k]: name[v] for k, v in nearest.items()}
    assert seen and all(seen[a] == b for a, b in (("glass", "glass"), ("plastic", "metal"), ("metal", "plastic"))
                        if a in seen)
    assert {"plastic", "metal"} & set(seen)
