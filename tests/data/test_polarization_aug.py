"""Flips mirror polarization angles (AoLP phi -> pi - phi) in every layout; derived inputs match the
formulas; the config is checked against MODEL.POLAR.IN_CHANNELS."""
import cv2
import numpy as np
import pytest
from fvcore.transforms.transform import TransformList

from detectron2.data import transforms as T
from detectron2.structures import BoxMode

from tests.common import get_polar_cfg
from polar_rcnn.data import (
    STACK_FILE_KEY,
    PolarDatasetMapper,
    PolarLayout,
    apply_geometric_transforms,
    derived_channels,
)
from polar_rcnn.polarization import dolp_aolp, dolp_aolp_from_stack, stokes_from_intensities
from polar_rcnn.data.synthetic import malus_stack

H, W, BANDS = 24, 32, 2


def scene():
    """Known S0 (H, W, BANDS), DoLP and AoLP fields, asymmetric left/right and up/down."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    phi = np.mod(0.1 + 2.5 * x / W + 0.6 * y / H, np.pi).astype(np.float32)
    dolp = (0.2 + 0.6 * x / W * (y / H)).astype(np.float32)
    s0 = np.stack([0.4 + 0.5 * x / W, 0.8 - 0.3 * y / H], axis=2).astype(np.float32)
    return s0, dolp, phi


def as_layout(polarization, s0, dolp, phi, angles=(0, 45, 90, 135)):
    """The scene as a band-major stack of the given layout."""
    if polarization == "angles":
        theta = np.deg2rad(np.asarray(angles, np.float32))
        i = s0[..., None] / 2 * (1 + dolp[..., None, None] * np.cos(2 * theta - 2 * phi[..., None, None]))
        return i.reshape(H, W, -1).astype(np.float32)
    if polarization == "stokes":
        s = np.stack([s0, s0 * (dolp * np.cos(2 * phi))[..., None], s0 * (dolp * np.sin(2 * phi))[..., None]], 3)
        return s.reshape(H, W, -1)
    return np.stack([np.repeat(dolp[..., None], BANDS, 2), np.repeat(phi[..., None], BANDS, 2)], 3).reshape(H, W, -1)


def aolp_of(polarization, stack, angles=(0, 45, 90, 135)):
    """AoLP (radians) of band 0, measured from the stack with the layout's own formulas."""
    if polarization == "angles":
        per_band = stack.reshape(H, W, BANDS, len(angles))[:, :, 0]
        s = stokes_from_intensities(per_band, angles)
        return dolp_aolp(s[..., 0], s[..., 1], s[..., 2])[1]
    if polarization == "stokes":
        s = stack.reshape(H, W, BANDS, 3)[:, :, 0]
        return dolp_aolp(s[..., 0], s[..., 1], s[..., 2])[1]
    return stack.reshape(H, W, BANDS, 2)[:, :, 0, 1]


def angle_error(a, b):
    """Largest difference of two axial angles (mod pi)."""
    d = np.mod(a - b, np.pi)
    return float(np.minimum(d, np.pi - d).max())


LAYOUTS = {"angles": 4, "stokes": 3, "dolp_aolp": 2}


def test_malus_helper_agrees_with_the_generator():
    s0, dolp, phi = scene()
    np.testing.assert_allclose(as_layout("angles", s0, dolp, phi), malus_stack(s0, dolp, phi), atol=1e-6)
    d, a = dolp_aolp_from_stack(malus_stack(s0[..., :1], dolp, phi))
    assert angle_error(a, phi) < 1e-4 and np.allclose(d, dolp, atol=1e-5)


@pytest.mark.parametrize("polarization", list(LAYOUTS))
@pytest.mark.parametrize("flip", ["h", "v", "hv"])
def test_flip_mirrors_the_angle_of_polarization(polarization, flip):
    s0, dolp, phi = scene()
    stack = as_layout(polarization, s0, dolp, phi)
    layout = PolarLayout(polarization, (0, 45, 90, 135), stack.shape[2])
    tfms = {"h": [T.HFlipTransform(W)], "v": [T.VFlipTransform(H)], "hv": [T.HFlipTransform(W), T.VFlipTransform(H)]}
    tfm = TransformList(tfms[flip])  # also exercises TransformList flattening
    out = apply_geometric_transforms(tfm, stack, polar_layout=layout)
    moved = phi[:, ::-1] if flip == "h" else phi[::-1] if flip == "v" else phi[::-1, ::-1]
    expected = moved if flip == "hv" else np.mod(np.pi - moved, np.pi)  # two mirrors = a rotation by 180
    assert angle_error(aolp_of(polarization, out), expected) < 1e-4
    if flip != "hv":  # without the layout the pixels move but the angles are wrong
        plain = apply_geometric_transforms(tfm, stack)
        assert angle_error(aolp_of(polarization, plain), expected) > 0.5
        assert angle_error(aolp_of(polarization, plain), moved) < 1e-4


def test_angles_swap_45_and_135():
    stack = np.arange(8, dtype=np.float32).reshape(1, 1, 8)  # 2 bands x 0/45/90/135
    out = PolarLayout("angles", (0, 45, 90, 135), 8).mirror(stack)
    assert out.ravel().tolist() == [0, 3, 2, 1, 4, 7, 6, 5]


def test_other_angle_lists():
    s0, dolp, phi = scene()
    stack = as_layout("angles", s0, dolp, phi, angles=(0, 60, 120))
    layout = PolarLayout("angles", (0, 60, 120), stack.shape[2])
    out = apply_geometric_transforms(T.HFlipTransform(W), stack, polar_layout=layout)
    assert angle_error(aolp_of("angles", out, (0, 60, 120)), np.mod(np.pi - phi[:, ::-1], np.pi)) < 1e-4
    with pytest.raises(ValueError, match="150"):
        PolarLayout("angles", (0, 30, 90, 120), 8).check_mirror()


def test_unmirrorable_angles_rejected_at_mapper_construction():
    cfg = get_polar_cfg(MODEL__POLAR__IN_CHANNELS=8, INPUT__STACK__ANGLES=[0, 30, 90, 120])
    with pytest.raises(ValueError, match="INPUT.STACK.ANGLES"):
        PolarDatasetMapper(cfg, is_train=True)
    cfg.INPUT.RANDOM_FLIP = "none"
    PolarDatasetMapper(cfg, is_train=True)  # no flips: nothing to mirror


def test_rotation_of_a_polarization_stack_is_refused():
    stack = np.ones((H, W, 4), np.float32)
    with pytest.raises(ValueError, match="rotation"):
        apply_geometric_transforms(T.RotationTransform(H, W, 30), stack, polar_layout=PolarLayout("angles", channels=4))


# ------------------------------------------------------------------------------------ derived inputs
def test_derived_inputs_match_the_formulas():
    s0, dolp, phi = scene()
    dolp = dolp.copy()
    dolp[0, 0] = 0.0  # unpolarized pixel: the angle is undefined
    raw = as_layout("angles", s0, dolp, phi)
    layout = PolarLayout("angles", (0, 45, 90, 135), raw.shape[2])
    stokes = layout.derive(raw, "stokes").reshape(H, W, BANDS, 3)
    np.testing.assert_allclose(stokes[..., 0], s0, atol=1e-5)
    np.testing.assert_allclose(stokes[..., 1], s0 * (dolp * np.cos(2 * phi))[..., None], atol=1e-5)
    np.testing.assert_allclose(stokes[..., 2], s0 * (dolp * np.sin(2 * phi))[..., None], atol=1e-5)
    # the closed form for 0/45/90/135 agrees with the least-squares solution
    i = raw.reshape(H, W, BANDS, 4)
    np.testing.assert_allclose(stokes[..., 1], i[..., 0] - i[..., 2], atol=1e-5)
    np.testing.assert_allclose(stokes[..., 2], i[..., 1] - i[..., 3], atol=1e-5)

    trig = layout.derive(raw, "dolp_aolp_trig").reshape(H, W, BANDS, 3)
    np.testing.assert_allclose(trig[..., 0], np.repeat(dolp[..., None], BANDS, 2), atol=1e-5)
    polarized = dolp > 0
    np.testing.assert_allclose(trig[..., 1][polarized], np.repeat(np.cos(2 * phi)[..., None], BANDS, 2)[polarized],
                               atol=1e-4)
    np.testing.assert_allclose(trig[..., 2][polarized], np.repeat(np.sin(2 * phi)[..., None], BANDS, 2)[polarized],
                               atol=1e-4)
    assert np.abs(trig[0, 0, :, 1:]).max() < 1e-6
    # the same from a Stokes stack
    from_stokes = PolarLayout("stokes", channels=3 * BANDS).derive(as_layout("stokes", s0, dolp, phi), "dolp_aolp_trig")
    np.testing.assert_allclose(from_stokes, trig.reshape(H, W, -1), atol=1e-4)


def test_derived_channels_and_the_in_channels_check():
    cfg = get_polar_cfg(MODEL__POLAR__IN_CHANNELS=24, INPUT__STACK__DERIVED="stokes")
    assert derived_channels(cfg) == 18
    with pytest.raises(ValueError, match="set MODEL.POLAR.IN_CHANNELS 18"):
        PolarDatasetMapper(cfg, is_train=True)
    cfg.MODEL.POLAR.IN_CHANNELS = 18
    with pytest.raises(ValueError, match="INPUT.STACK.CHANNELS"):  # 18 raw channels are not 4-angle bands
        PolarDatasetMapper(cfg, is_train=True)
    cfg.INPUT.STACK.CHANNELS = 24
    assert derived_channels(cfg) == 18
    PolarDatasetMapper(cfg, is_train=True)
    cfg.INPUT.STACK.POLARIZATION = ""
    with pytest.raises(ValueError, match="POLARIZATION"):
        derived_channels(cfg)


def test_mapper_flips_then_derives(tmp_path):
    """Through the mapper (DERIVED_ON "loader"): an hflip and DERIVED dolp_aolp_trig give cos 2phi' = cos 2phi,
    sin 2phi' = -sin 2phi at the mirrored pixel."""
    s0, dolp, phi = scene()
    raw = as_layout("angles", s0, dolp, phi)
    image = np.full((H, W, 3), 128, np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), image)
    np.save(tmp_path / "a.npy", (raw * 65535).round().astype(np.uint16))
    record = {"file_name": str(tmp_path / "a.png"), STACK_FILE_KEY: str(tmp_path / "a.npy"), "image_id": 1,
              "height": H, "width": W,
              "annotations": [{"bbox": [2, 2, 8, 8], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0}]}
    cfg = get_polar_cfg(MODEL__POLAR__IN_CHANNELS=3 * BANDS, INPUT__STACK__CHANNELS=4 * BANDS,
                        INPUT__STACK__DERIVED="dolp_aolp_trig", INPUT__STACK__POLARIZATION="angles",
                        INPUT__STACK__DERIVED_ON="loader", INPUT__STACK__RESOLUTION="full")
    mapper = PolarDatasetMapper(cfg, is_train=True, augmentations=[T.RandomFlip(prob=1.0)])
    out = mapper(record)["stack"].numpy().transpose(1, 2, 0).reshape(H, W, BANDS, 3)
    np.testing.assert_allclose(out[..., 0, 0], dolp[:, ::-1], atol=1e-3)
    np.testing.assert_allclose(out[..., 0, 1], np.cos(2 * phi)[:, ::-1], atol=2e-3)
    np.testing.assert_allclose(out[..., 0, 2], -np.sin(2 * phi)[:, ::-1], atol=2e-3)


# ------------------------------------------------------------------------------------- photometric
def test_photometric_gain_reaches_the_stack_only_when_configured():
    stack = np.full((H, W, 4), 0.5, np.float32)
    gain = T.BlendTransform(src_image=0.0, src_weight=0.25, dst_weight=0.75)  # what RandomBrightness makes
    assert np.array_equal(apply_geometric_transforms(gain, stack), stack)
    np.testing.assert_allclose(apply_geometric_transforms(gain, stack, photometric=True), 0.375)
    contrast = T.BlendTransform(src_image=120.0, src_weight=0.5, dst_weight=0.5)  # RGB mean: no stack meaning
    with pytest.raises(ValueError, match="PHOTOMETRIC"):
        apply_geometric_transforms(contrast, stack, photometric=True)
    cfg = get_polar_cfg(MODEL__POLAR__IN_CHANNELS=4, INPUT__STACK__POLARIZATION="dolp_aolp",
                        INPUT__STACK__PHOTOMETRIC=True)
    with pytest.raises(ValueError, match="PHOTOMETRIC"):
        PolarDatasetMapper(cfg, is_train=True)


def test_mirror_index_is_the_mirror_as_a_gather():
    """The loader composes flips as channel gathers; for angle stacks the gather equals mirror()."""
    stack = np.random.default_rng(0).random((3, 4, 8)).astype(np.float32)
    angles = PolarLayout("angles", (0, 45, 90, 135), 8)
    np.testing.assert_array_equal(stack[..., angles.mirror_index()], angles.mirror(stack))
    assert angles.mirror_index().tolist() == [0, 3, 2, 1, 4, 7, 6, 5]
    assert PolarLayout("", channels=5).mirror_index().tolist() == list(range(5))  # nothing to mirror
    assert PolarLayout("stokes", channels=6).mirror_index() is None  # needs arithmetic (S2 -> -S2)
    assert PolarLayout("dolp_aolp", channels=4).mirror_index() is None
