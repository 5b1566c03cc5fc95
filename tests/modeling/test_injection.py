"""MODEL.POLAR.INJECT in one place: the levels the backbone fuses and the features each consumer reads."""
import pytest

from tests.common import get_polar_cfg

from polar_rcnn.architecture import is_dense_detector, num_classes, num_classes_key
from polar_rcnn.modeling import Injection


@pytest.mark.parametrize("inject, rpn_fused, roi_fused", [("rpn", True, False), ("roi", False, True),
                                                           ("both", True, True)])
def test_rcnn_consumers(inject, rpn_fused, roi_fused):
    cfg = get_polar_cfg(MODEL__POLAR__INJECT=inject)
    cfg.MODEL.ROI_HEADS.IN_FEATURES = ["p2", "p3", "p4", "p5"]
    injection = Injection.from_config(cfg)
    reads = injection.reads()
    rpn, roi = reads["MODEL.RPN.IN_FEATURES"], reads["MODEL.ROI_HEADS.IN_FEATURES"]
    assert all(f.endswith("_fused") == rpn_fused for f in rpn)
    assert all(f.endswith("_fused") == roi_fused for f in roi)
    expected = (list(cfg.MODEL.RPN.IN_FEATURES) if rpn_fused else []) + [
        f for f in cfg.MODEL.ROI_HEADS.IN_FEATURES if roi_fused and not (rpn_fused and f in cfg.MODEL.RPN.IN_FEATURES)]
    assert injection.fused_levels == expected
    heads = injection.heads_config(cfg)
    assert list(heads.MODEL.RPN.IN_FEATURES) == rpn and list(heads.MODEL.ROI_HEADS.IN_FEATURES) == roi
    assert not any(f.endswith("_fused") for f in cfg.MODEL.RPN.IN_FEATURES)  # cfg itself unchanged


def test_retinanet_fuses_its_head_and_has_no_roi_injection():
    cfg = get_polar_cfg(MODEL__META_ARCHITECTURE="PolarRetinaNet")
    assert is_dense_detector(cfg) and num_classes_key(cfg) == "MODEL.RETINANET.NUM_CLASSES"
    cfg.MODEL.RETINANET.NUM_CLASSES = 5
    assert num_classes(cfg) == 5
    injection = Injection.from_config(cfg)
    assert injection.fused_levels == list(cfg.MODEL.RETINANET.IN_FEATURES)
    cfg.MODEL.POLAR.INJECT = "roi"
    with pytest.raises(ValueError, match="no ROI heads"):
        Injection.from_config(cfg)
    cfg.MODEL.POLAR.INJECT = "heads"
    with pytest.raises(ValueError, match="must be one of"):
        Injection.from_config(cfg)


def test_dense_detector_by_registered_class():
    assert is_dense_detector(get_polar_cfg(MODEL__META_ARCHITECTURE="RetinaNet"))
    assert not is_dense_detector(get_polar_cfg(MODEL__META_ARCHITECTURE="GeneralizedRCNN"))
    assert not is_dense_detector(get_polar_cfg())  # PolarRCNN
