"""Two-sensor rigs: a stack seen through a known homography is warped back onto its image's grid
(mapper, checker), the homography is recovered by the estimation tool and written into the JSON,
and bad homographies are named errors."""
import json
import os

import cv2
import numpy as np
import pytest

from detectron2.data import DatasetCatalog, MetadataCatalog

from tests.common import get_polar_cfg
from polar_rcnn.data import PolarDatasetMapper, SampleReader, StackError, load_polar_coco_json
from polar_rcnn.data.dataset_checks import CheckOptions, check_record, correlation
from polar_rcnn.data.homography import check_homography, estimate_homography, misalignment_px, parse_homography
from polar_rcnn.data.synthetic import SyntheticConfig, generate_split

H, W = 64, 80  # image
SH, SW = 56, 72  # stack camera
#: stack -> image: a slight scale, shear, rotation, shift and perspective
TRUE_H = np.array([[1.08, 0.03, 2.5], [-0.02, 1.1, 1.5], [2e-4, -1e-4, 1.0]])


def rig_cfg(**overrides):
    return get_polar_cfg(**{"MODEL__POLAR__IN_CHANNELS": 4, "INPUT__STACK__POLARIZATION": "angles",
                            "INPUT__RANDOM_FLIP": "none", "INPUT__MIN_SIZE_TRAIN": (H,), "INPUT__MAX_SIZE_TRAIN": W,
                            "INPUT__STACK__RESOLUTION": "full",
                            **overrides})


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    """(json_file, records, aligned stacks): a 3-frame split whose stacks were re-shot by a second
    camera of SH x SW seeing the image plane through TRUE_H (stack -> image)."""
    root = str(tmp_path_factory.mktemp("rig"))
    cfg = SyntheticConfig(image_size=(H, W), num_bands=1, num_videos=1, frames_per_video=3, object_size=(14, 30),
                          stack_dtype="float32", noise_std=0.0)
    json_file = generate_split(root, "train", cfg, progress=False)
    stack_dir = os.path.join(root, "train", "stacks")
    aligned = {}
    for name in sorted(os.listdir(stack_dir)):
        path = os.path.join(stack_dir, name)
        aligned[path] = np.load(path)
        seen = cv2.warpPerspective(aligned[path], np.linalg.inv(TRUE_H), (SW, SH), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REFLECT)
        np.save(path, seen.astype(np.float32))
    records = load_polar_coco_json(json_file, os.path.join(root, "train", "images"), stack_dir)
    return json_file, records, aligned


def test_mapper_warps_the_stack_onto_the_image(rig):
    _, records, aligned = rig
    record = dict(records[1], stack_homography=TRUE_H.tolist())
    out = PolarDatasetMapper(rig_cfg(), is_train=True)(record)
    stack = out["stack"].numpy().transpose(1, 2, 0)
    assert stack.shape == (H, W, 4) and out["image"].shape[1:] == (H, W)
    truth = aligned[record["stack_file_name"]]
    inner = (slice(8, H - 4), slice(8, W - 4))  # away from the interpolated borders
    assert np.abs(stack[inner] - truth[inner]).mean() < 0.01
    # without the homography the stack is of another size: the usual size error
    with pytest.raises(StackError, match="differs from its image's"):
        PolarDatasetMapper(rig_cfg(), is_train=True)(records[1])
    # the dataset's homography (config) applies to records without their own
    flat = [float(v) for v in TRUE_H.ravel()]
    out = PolarDatasetMapper(rig_cfg(INPUT__STACK__HOMOGRAPHY=flat), is_train=True)(records[1])
    np.testing.assert_allclose(out["stack"].numpy().transpose(1, 2, 0), stack, atol=1e-6)


def test_bad_homographies_are_named_errors(rig):
    _, records, _ = rig
    path = records[0]["stack_file_name"]
    for value, message in [
        ([[1, 0], [0, 1]], "must be 3x3"),
        ([[1, 0, 0], [0, 1, 0], [0, 0, float("nan")]], "not finite"),
    ]:
        with pytest.raises(StackError, match=message) as info:
            parse_homography(value, path)
        assert info.value.kind == "homography" and info.value.path == path
    cases = [
        (np.array([[1.0, 2.0, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 1.0]]), "is singular"),
        (np.array([[1.0, 0.0, 500.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]),
         r"outside its \(64, 80\) image: it covers 0.0%"),
        (np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-0.02, 0.0, 1.0]]), "to infinity"),
    ]
    for h, message in cases:
        with pytest.raises(StackError, match=message) as info:
            check_homography(h, (SH, SW), (H, W), path)
        assert info.value.kind == "homography"
    record = dict(records[0], stack_homography=cases[1][0].tolist())
    with pytest.raises(StackError, match="HOMOGRAPHY_MIN_COVERAGE 0.5") as info:
        PolarDatasetMapper(rig_cfg(), is_train=True)(record)
    assert info.value.path == path
    problems = check_record(record, CheckOptions.from_config(rig_cfg(), num_classes=3)).problems
    assert [p.kind for p in problems] == ["stack_homography"]
    with pytest.raises(ValueError, match="INPUT.STACK.HOMOGRAPHY: homography must be 3x3"):
        SampleReader.from_config(rig_cfg(INPUT__STACK__HOMOGRAPHY=[1.0, 0.0, 0.0]))


def test_checker_pairs_through_the_homography(rig):
    _, records, _ = rig
    options = CheckOptions.from_config(rig_cfg(INPUT__STACK__RESIZE_MISMATCHED=True), num_classes=3)
    resized = check_record(records[0], options)  # stretched, not registered
    warped = check_record(dict(records[0], stack_homography=TRUE_H.tolist()), options)
    assert warped.problems == []
    ncc_resized = correlation(resized.image_map, resized.stack_map)
    ncc_warped = correlation(warped.image_map, warped.stack_map)
    assert ncc_warped > 0.9 and ncc_warped > ncc_resized + 0.2, (ncc_warped, ncc_resized)


def test_estimate_recovers_the_known_transform(rig):
    _, records, aligned = rig
    reader = SampleReader.from_config(rig_cfg())
    stack = reader.load_stack(records[0]["stack_file_name"]).mean(axis=2)
    gray = reader.read_image(records[0]["file_name"], "L")[..., 0].astype(np.float32)
    h, rho = estimate_homography(stack, gray)
    assert rho > 0.9 and misalignment_px(h, TRUE_H, (SH, SW)) < 0.5


def test_tool_writes_the_homography_into_the_json(rig, tmp_path, capsys):
    json_file, records, _ = rig
    from tools import estimate_homography

    copy = str(tmp_path / "rig.json")
    with open(json_file) as f:
        coco = json.load(f)
    for image in coco["images"]:
        image["camera_pair"] = "left"
    with open(copy, "w") as f:
        json.dump(coco, f)
    name = "_rig_tool"
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    entry = json.dumps([[name, copy, os.path.dirname(records[0]["file_name"]),
                         os.path.dirname(records[0]["stack_file_name"])]])
    opts = ["MODEL.POLAR.IN_CHANNELS", "4", "INPUT.STACK.POLARIZATION", "angles", "DATASETS.POLAR_COCO", entry]
    argv = ["--dataset", name, "--group-key", "camera_pair", "--frames", "2", "--write"] + opts
    code = estimate_homography.main(argv)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "[camera_pair = 'left'] homography from 2 frames" in out and "residual misalignment" in out
    assert "wrote stack_homography into 3 image entries" in out
    with open(copy) as f:
        written = json.load(f)["images"]
    for image in written:
        assert misalignment_px(np.array(image["stack_homography"]), TRUE_H, (SH, SW)) < 0.5
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)
    loaded = load_polar_coco_json(copy, os.path.dirname(records[0]["file_name"]),
                                  os.path.dirname(records[0]["stack_file_name"]))
    out = PolarDatasetMapper(rig_cfg(), is_train=True)(loaded[0])
    assert tuple(out["stack"].shape) == (4, H, W)
