"""stack_settings_summary: the one line of stack settings, for each setting that changes it."""
import pytest

from tests.common import get_polar_cfg
from polar_rcnn.data.settings_summary import stack_settings_summary


def _angles_cfg(**overrides):
    """6 bands x 4 polarizer angles, DoLP/AoLP-trig model input."""
    settings = dict(INPUT__STACK__POLARIZATION="angles", INPUT__STACK__CHANNELS=24,
                    INPUT__STACK__DERIVED="dolp_aolp_trig", MODEL__POLAR__IN_CHANNELS=18)
    return get_polar_cfg(**{**settings, **overrides})


def test_library_defaults_on_a_plain_stack():
    line = stack_settings_summary(get_polar_cfg(INPUT__STACK__POLARIZATION=""))
    assert "\n" not in line
    for part in ("6 channels HWC", "scale by the files' dtype", "no polarization meaning",
                 "horizontal flips leave stack values as they are", "model input the raw 6 channels",
                 "normalization none (MODEL.POLAR.STACK_MEAN/STD defaults 0/1)", "photometric off",
                 "modality dropout 0"):
        assert part in line, (part, line)


def test_polarization_angles_derived_and_normalization():
    cfg = _angles_cfg(MODEL__POLAR__STACK_MEAN=[0.5] * 18, MODEL__POLAR__STACK_STD=[0.25] * 18,
                      INPUT__STACK__SCALE=0.001, INPUT__STACK__LAYOUT="CHW", INPUT__STACK__PHOTOMETRIC=True,
                      MODEL__POLAR__MODALITY_DROPOUT=0.2)
    line = stack_settings_summary(cfg)
    for part in ("24 channels CHW", "scale 0.001", "polarization angles [0, 45, 90, 135] deg x 6 bands",
                 "horizontal flips mirror the polarization angles", "model input dolp_aolp_trig (18 channels, computed on the model's device)",
                 "normalization from the config (MODEL.POLAR.STACK_MEAN [0.5, 0.5, 0.5, ... (18 values)], "
                 "STACK_STD [0.25, 0.25, 0.25, ... (18 values)])", "photometric on", "modality dropout 0.2"):
        assert part in line, (part, line)


def test_flips_off_stokes_and_stack_off():
    line = stack_settings_summary(get_polar_cfg(INPUT__RANDOM_FLIP="none", INPUT__STACK__POLARIZATION="stokes"))
    assert "no flips (INPUT.RANDOM_FLIP none)" in line and "polarization stokes x 2 bands" in line
    assert stack_settings_summary(get_polar_cfg(INPUT__STACK__ENABLED=False)).startswith("Stack: off")


def test_inconsistent_config_names_the_key():
    with pytest.raises(ValueError, match="MODEL.POLAR.IN_CHANNELS"):
        stack_settings_summary(_angles_cfg(MODEL__POLAR__IN_CHANNELS=24))
