"""MODEL.WEIGHTS from a vanilla Faster R-CNN (.pth from DetectionCheckpointer, model-zoo .pkl,
detectron2:// URL) into polar models: what loads, what starts fresh, and the logged summary."""
import logging
import pickle

import pytest
import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from detectron2.utils.file_io import PathManager

from tests.common import get_polar_cfg, random_inputs
from polar_rcnn.engine import PolarCheckpointer, PolarTrainer

LOGGER = "polar_rcnn.engine.checkpoint"
ZOO_URL = "detectron2://COCO-Detection/faster_rcnn_R_18_FPN_tiny/000/model_final_test.pkl"
ZOO_HTTPS = ZOO_URL.replace("detectron2://", "https://dl.fbaipublicfiles.com/detectron2/")


class InMemoryTrainer(PolarTrainer):
    @classmethod
    def build_train_loader(cls, cfg):
        return iter([random_inputs(1, (64, 64))])


def vanilla_cfg(**overrides):
    return get_polar_cfg(MODEL__META_ARCHITECTURE="GeneralizedRCNN", MODEL__BACKBONE__NAME="build_resnet_fpn_backbone",
                         INPUT__STACK__ENABLED=False, **overrides)


@pytest.fixture(scope="module")
def vanilla(tmp_path_factory):
    """A vanilla GeneralizedRCNN saved as a DetectionCheckpointer .pth and as a model-zoo .pkl."""
    out = tmp_path_factory.mktemp("weights")
    torch.manual_seed(123)
    model = build_model(vanilla_cfg())
    DetectionCheckpointer(model, save_dir=str(out)).save("vanilla")
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    with open(out / "vanilla_zoo.pkl", "wb") as f:
        pickle.dump({"model": {k: v.numpy() for k, v in state.items()}, "__author__": "Detectron2 Model Zoo"}, f)
    return {"pth": str(out / "vanilla.pth"), "pkl": str(out / "vanilla_zoo.pkl"), "state": state}


@pytest.fixture
def summary_log(caplog):
    logger = logging.getLogger(LOGGER)
    # caplog's handler directly on the logger, so that a setup_logger elsewhere cannot hide records
    logger.addHandler(caplog.handler)
    propagate, logger.propagate = logger.propagate, False
    caplog.set_level(logging.INFO, logger=LOGGER)
    yield lambda: [r.getMessage() for r in caplog.records if r.name == LOGGER]
    logger.removeHandler(caplog.handler)
    logger.propagate = propagate


def build_polar(seed=7, **overrides):
    torch.manual_seed(seed)
    model = build_model(get_polar_cfg(**overrides))
    return model, {k: v.detach().clone() for k, v in model.state_dict().items()}


def check_vanilla_loaded(model, init, vanilla_state, fresh_prefixes):
    state = model.state_dict()
    shared = [k for k in state if k in vanilla_state and not k.startswith(fresh_prefixes)]
    assert len(shared) > 50
    for k in shared:
        assert torch.equal(state[k], vanilla_state[k]), f"{k} was not loaded"
    fresh = [k for k in state if k.startswith(fresh_prefixes)]
    assert fresh
    for k in fresh:
        assert torch.equal(state[k], init[k]), f"{k} should keep its own initialisation"
    return shared, fresh


@pytest.mark.parametrize("kind", ["pth", "pkl"])
def test_vanilla_weights_load_into_the_polar_model(vanilla, summary_log, kind):
    model, init = build_polar(MODEL__POLAR__FUSION="concat", MODEL__POLAR__ZERO_INIT=False)
    PolarCheckpointer(model).load(vanilla[kind])
    shared, fresh = check_vanilla_loaded(model, init, vanilla["state"], ("backbone.polar_",))
    (line,) = [m for m in summary_log() if m.startswith("Loaded")]
    total = len(model.state_dict())
    assert line.startswith(f"Loaded {len(shared)} of {total} model tensors from {vanilla[kind]}")
    assert f"initialised fresh: polar_branch ({len(fresh)} not in the checkpoint)" in line
    assert "box_predictor" not in line


def test_num_classes_change_reinitialises_the_predictor(vanilla, summary_log):
    model, init = build_polar(MODEL__ROI_HEADS__NUM_CLASSES=5)
    PolarCheckpointer(model).load(vanilla["pth"])
    check_vanilla_loaded(model, init, vanilla["state"], ("backbone.polar_", "roi_heads.box_predictor."))
    (summary,) = [m for m in summary_log() if m.startswith("Loaded")]
    total = len(model.state_dict())
    fresh = len([k for k in model.state_dict() if k.startswith("backbone.polar_")])
    assert summary.startswith(f"Loaded {total - fresh - 4} of {total} model tensors")
    assert "box_predictor (4 of another shape, e.g. NUM_CLASSES)" in summary
    assert "box_predictor (4 not in the checkpoint)" not in summary
    assert "polar_branch (" in summary


def test_detectron2_url_is_resolved_through_the_path_manager(vanilla, summary_log, monkeypatch):
    requested = []
    original = PathManager.get_local_path

    def fake_download(path, **kwargs):  # the detectron2:// handler asks for the https URL
        if path.startswith("https://"):
            requested.append(path)
            return vanilla["pkl"]
        return original(path, **kwargs)

    monkeypatch.setattr(PathManager, "get_local_path", fake_download)
    model, init = build_polar()
    PolarCheckpointer(model).load(ZOO_URL)
    assert requested == [ZOO_HTTPS]
    shared, _ = check_vanilla_loaded(model, init, vanilla["state"], ("backbone.polar_",))
    total = len(model.state_dict())
    assert any(m.startswith(f"Loaded {len(shared)} of {total} model tensors from {ZOO_URL}") for m in summary_log())


def test_trainer_loads_model_weights_with_the_summary(vanilla, summary_log, tmp_path):
    cfg = get_polar_cfg(MODEL__WEIGHTS=vanilla["pkl"], OUTPUT_DIR=str(tmp_path))
    cfg.MODEL.FREEZE.PARTS = ["image_bottom_up", "fpn", "rpn", "box_head", "box_predictor"]
    cfg.DATASETS.TEST = ()
    trainer = InMemoryTrainer(cfg)
    trainer.resume_or_load(resume=False)
    assert trainer.checkpointer.last_load.loaded == trainer.checkpointer.last_load.total - len(
        trainer.checkpointer.last_load.missing["polar_branch"]
    )
    assert any("initialised fresh: polar_branch" in m for m in summary_log())
    assert torch.equal(trainer.model.roi_heads.box_predictor.cls_score.weight,
                       vanilla["state"]["roi_heads.box_predictor.cls_score.weight"])
