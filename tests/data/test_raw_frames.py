"""Raw division-of-focal-plane polarization frames (INPUT.STACK.SOURCE "dofp"): the sensor patterns,
the demosaicing round trip, the named errors, and raw frames through the mapper, the image made
from the same frame, the dataset checker and derived inputs."""
import os

import cv2
import numpy as np
import pytest

from tests.common import get_polar_cfg
from polar_rcnn import polarization as P
from polar_rcnn.analysis.raw_frames import round_trip_errors
from polar_rcnn.data import PolarDatasetMapper, SampleReader, StackError, load_polar_coco_json
from polar_rcnn.data.dataset_checks import CheckOptions, check_record
from polar_rcnn.data.dofp import RawFormat, mosaic
from polar_rcnn.data.synthetic import RAW_JSON_KEY, SyntheticConfig, generate_split

H, W = 32, 40


def raw_cfg(pattern="mono", **overrides):
    """The test config reading raw ``pattern`` frames; ``overrides`` as in get_polar_cfg, applied last."""
    raw = dict(MODEL__POLAR__IN_CHANNELS=12 if pattern == "color" else 4, INPUT__STACK__SOURCE="dofp",
               INPUT__STACK__RAW__PATTERN=pattern, INPUT__STACK__POLARIZATION="angles",
               INPUT__STACK__RESOLUTION="full")  # full-resolution stacks: compared pixel by pixel
    return get_polar_cfg(**{**raw, **overrides})


@pytest.fixture(scope="module", params=["mono", "color"])
def raw_split(request, tmp_path_factory):
    """(pattern, records of a 2-frame split whose image *is* the raw frame, records with a separate RGB image)."""
    root = str(tmp_path_factory.mktemp(f"raw_{request.param}"))
    cfg = SyntheticConfig(image_size=(H, W), num_bands=1, num_videos=1, frames_per_video=2, object_size=(8, 14),
                          raw=request.param)
    json_file = generate_split(root, "train", cfg, progress=False)
    raw_dir = os.path.join(root, "train", "raw")
    same = load_polar_coco_json(json_file, raw_dir, raw_dir, stack_key=RAW_JSON_KEY)
    separate = load_polar_coco_json(json_file, os.path.join(root, "train", "images"), raw_dir, stack_key=RAW_JSON_KEY)
    return request.param, same, separate


# ----------------------------------------------------------------------------- patterns


@pytest.mark.parametrize("pattern", ["mono", "color"])
def test_sensor_layout(pattern):
    """A pixel behind the 0-degree polarizer (super-pixel (1, 1)) of the red filter (tile (0, 0))
    reads the 0-degree red channel; the demosaiced flat field gives every channel back."""
    fmt = RawFormat(pattern, 12)
    values = np.random.default_rng(0).uniform(0.1, 0.9, fmt.channels).astype(np.float32)
    raw = mosaic(np.broadcast_to(values, (16, 16, fmt.channels)).copy(), fmt)
    assert raw.dtype == np.uint16 and raw.shape == (16, 16)
    assert raw[1, 1] == round(values[0] * 4095)  # band 0 (mono; color: R), 0 degrees
    assert raw[0, 0] == round(values[2] * 4095)  # 90 degrees
    if pattern == "color":
        assert raw[3, 3] == round(values[4 * 2 + 0] * 4095)  # blue tile, 0 degrees
        assert raw[1, 3] == round(values[4 * 1 + 0] * 4095)  # green tile, 0 degrees
    out = fmt.demosaic(raw).astype(np.float32) / 4095
    np.testing.assert_allclose(out[4:-4, 4:-4], np.broadcast_to(values, (8, 8, fmt.channels)), atol=1.0 / 4095)
    permuted = fmt.demosaic(raw, angles_deg=(90, 0, 135, 45))  # channels in the order INPUT.STACK.ANGLES asks
    np.testing.assert_array_equal(permuted[..., 0], fmt.demosaic(raw)[..., 2])


@pytest.mark.parametrize("pattern", ["mono", "color"])
def test_round_trip_dolp_aolp(pattern):
    """Mosaic + demosaic of a noise-free Malus'-law scene: small DoLP / AoLP errors on flat regions,
    larger at edges (each pixel's neighbours saw other light), both measured against the truth."""
    e = round_trip_errors(pattern, size=(64, 64), frames=1)
    assert e["flat_dolp_pixels"] > 500 and e["edge_dolp_pixels"] > 50 and e["flat_aolp_pixels"] > 100
    assert e["flat_dolp_mean"] < 0.02 and e["flat_aolp_mean"] < 1.0
    assert e["edge_dolp_mean"] > 3 * e["flat_dolp_mean"] and e["edge_aolp_mean"] > 3 * e["flat_aolp_mean"]


# ----------------------------------------------------------------------------- errors


def test_config_errors():
    with pytest.raises(ValueError, match=r"INPUT.STACK.RAW.PATTERN must be one of \('mono', 'color'\).*'bayer'"):
        SampleReader.from_config(raw_cfg(INPUT__STACK__RAW__PATTERN="bayer"))
    with pytest.raises(ValueError, match="'vng' works on 8-bit frames only"):
        SampleReader.from_config(raw_cfg(INPUT__STACK__RAW__INTERPOLATION="vng"))
    with pytest.raises(ValueError, match="INPUT.STACK.SOURCE must be one of"):
        SampleReader.from_config(raw_cfg(INPUT__STACK__SOURCE="raw"))
    with pytest.raises(ValueError, match="set INPUT.STACK.POLARIZATION 'angles'"):
        SampleReader.from_config(raw_cfg(INPUT__STACK__POLARIZATION=""))
    with pytest.raises(ValueError, match="MODEL.POLAR.IN_CHANNELS 12"):
        SampleReader.from_config(raw_cfg("color", MODEL__POLAR__IN_CHANNELS=4))
    with pytest.raises(ValueError, match="INPUT.STACK.ANGLES.*0.0, 45.0, 90.0, 135.0"):
        SampleReader.from_config(raw_cfg(INPUT__STACK__ANGLES=[0.0, 60.0, 120.0, 90.0]))
    SampleReader.from_config(raw_cfg(INPUT__STACK__RAW__INTERPOLATION="vng", INPUT__STACK__RAW__BITS=8))


def _write(tmp_path, name, array):
    path = str(tmp_path / name)
    assert cv2.imwrite(path, array)
    return path


def test_frame_errors(tmp_path):
    reader = SampleReader.from_config(raw_cfg("color"))
    odd = _write(tmp_path, "odd.png", np.zeros((H, W + 2), np.uint16))  # whole 2x2, not whole 4x4 tiles
    with pytest.raises(StackError, match=r"raw frame size \(H, W\) \(32, 42\) is not made of whole 4x4") as info:
        reader.read_array(odd)
    assert info.value.path == odd and info.value.kind == "size"
    hot = np.zeros((H, W), np.uint16)
    hot[3, 5] = 4096
    hot_path = _write(tmp_path, "hot.png", hot)
    with pytest.raises(StackError, match=r"values up to 4096 > 2\^12 - 1 = 4095.*first at \(y, x\) = \(3, 5\)") as info:
        reader.read_array(hot_path)
    assert info.value.kind == "range"
    color = _write(tmp_path, "color.png", np.zeros((H, W, 3), np.uint8))
    with pytest.raises(StackError, match="one channel") as info:
        reader.read_array(color)
    assert info.value.kind == "format"
    with pytest.raises(StackError, match="not found"):
        reader.read_array(str(tmp_path / "nope.png"))


def test_frame_size_must_match_the_image(raw_split, tmp_path):
    pattern, _, separate = raw_split
    record = dict(separate[0])
    small = cv2.imread(record["stack_file_name"], cv2.IMREAD_UNCHANGED)[:H // 2]
    record["stack_file_name"] = _write(tmp_path, f"small_{pattern}.png", small)
    with pytest.raises(StackError, match=r"stack size \(16, 40\) \(H, W\) differs from its image's \(32, 40\)") as info:
        PolarDatasetMapper(raw_cfg(pattern), is_train=True)(record)
    assert info.value.kind == "size"


# ----------------------------------------------------------------------------- downstream


def test_image_made_from_the_raw_frame(raw_split):
    pattern, same, separate = raw_split
    cfg = raw_cfg(pattern, INPUT__RANDOM_FLIP="none", INPUT__MIN_SIZE_TRAIN=(H,), INPUT__MAX_SIZE_TRAIN=W,
                  INPUT__STACK__RESOLUTION="full")  # the demosaiced stack pixel by pixel, not its stride-s grid
    reader = SampleReader.from_config(cfg)
    assert reader.image_from_stack(same[0]) and not reader.image_from_stack(separate[0])
    out = PolarDatasetMapper(cfg, is_train=True)(same[0])
    stack = reader.read_array(same[0]["stack_file_name"]).astype(np.float32)
    assert out["stack"].dtype.is_floating_point is False and tuple(out["stack"].shape) == (stack.shape[2], H, W)
    assert out["stack_scale"] == pytest.approx(1 / 4095)
    mean = stack.reshape(H, W, -1, 4).mean(axis=3) * 255 / 4095  # S0 / 2 per band (R, G, B or gray)
    expected = np.repeat(mean, 3, axis=2) if pattern == "mono" else mean
    image_rgb = out["image"].numpy().transpose(1, 2, 0)[..., ::-1].astype(np.float32)  # BGR -> RGB
    assert np.abs(image_rgb - expected).max() <= 0.5 + 1e-3
    if pattern == "mono":
        assert (out["image"][0] == out["image"][1]).all() and (out["image"][1] == out["image"][2]).all()
    assert len(out["instances"]) == len(same[0]["annotations"])
    # the separate RGB image of the same frame is read from its own file
    other = PolarDatasetMapper(cfg, is_train=True)(separate[0])
    assert not np.array_equal(other["image"].numpy(), out["image"].numpy())
    np.testing.assert_array_equal(other["stack"].numpy(), out["stack"].numpy())


def test_flip_mirrors_the_demosaiced_angles(raw_split):
    pattern, same, _ = raw_split
    cfg = raw_cfg(pattern, INPUT__MIN_SIZE_TRAIN=(H,), INPUT__MAX_SIZE_TRAIN=W)
    cfg.INPUT.RANDOM_FLIP = "none"
    plain = PolarDatasetMapper(cfg, is_train=True)(same[0])["stack"].numpy()
    cfg.INPUT.RANDOM_FLIP = "horizontal"
    mapper = PolarDatasetMapper(cfg, is_train=True)
    mapper.augmentations.augs[-1].prob = 1.0  # always flip
    flipped = mapper(same[0])["stack"].numpy()
    # 45 <-> 135 swap places, 0 and 90 stay, pixels mirror
    bands = plain.shape[0] // 4
    for b in range(bands):
        for k, mirrored in enumerate((0, 3, 2, 1)):
            np.testing.assert_array_equal(flipped[4 * b + k], plain[4 * b + mirrored][:, ::-1])


def test_derived_inputs_and_checker(raw_split):
    pattern, same, _ = raw_split
    cfg = raw_cfg(pattern, MODEL__POLAR__IN_CHANNELS=3 if pattern == "mono" else 9,
                  INPUT__STACK__DERIVED="dolp_aolp_trig", INPUT__STACK__DERIVED_ON="loader")
    reader = SampleReader.from_config(cfg)
    stack = reader.load_stack(same[0]["stack_file_name"])
    derived = reader.derive(stack)
    assert derived.shape == (H, W, reader.polar_layout.bands * 3)
    s = P.stokes_from_intensities(stack.reshape(H, W, -1, 4)[..., 0, :])
    np.testing.assert_allclose(derived[..., 0], P.dolp_aolp(s[..., 0], s[..., 1], s[..., 2])[0], atol=1e-5)
    result = check_record(same[0], CheckOptions.from_config(cfg, num_classes=3))
    assert result.problems == [] and result.image_map is not None and result.stack_map is not None


def test_checker_reports_a_raw_frame_problem_once(raw_split, tmp_path):
    pattern, same, _ = raw_split
    record = dict(same[0])
    hot = cv2.imread(record["stack_file_name"], cv2.IMREAD_UNCHANGED)
    hot[0, 0] = 65535
    record["file_name"] = record["stack_file_name"] = _write(tmp_path, f"hot_{pattern}.png", hot)
    problems = check_record(record, CheckOptions.from_config(raw_cfg(pattern), num_classes=3)).problems
    assert [p.kind for p in problems] == ["stack_range"] and problems[0].file == record["file_name"]
