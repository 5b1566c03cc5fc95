"""MODEL.POLAR.VIDEO_ADVERSARY: a video-id classifier on the branch behind a gradient reversal."""
import pytest
import torch

from tests.common import get_polar_cfg, random_inputs
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from polar_rcnn.engine import PolarTrainer
from polar_rcnn.modeling.video_adversary import (
    LOSS_NAME,
    apply_video_adversary,
    reverse_gradient,
    training_video_ids,
)


def test_reverse_gradient_is_identity_forward_and_negated_backward():
    x = torch.randn(3, 4, requires_grad=True)
    y = reverse_gradient(x, 0.25)
    assert torch.equal(y, x)
    (y * torch.arange(4.0)).sum().backward()
    assert torch.allclose(x.grad, -0.25 * torch.arange(4.0).expand(3, 4))


def _model(weight=0.5, **overrides):
    torch.manual_seed(0)
    cfg = get_polar_cfg(MODEL__POLAR__ZERO_INIT=False, **overrides)
    model = build_model(cfg)
    if weight:
        apply_video_adversary(model, ["a", "b", "c"], weight, hidden=8)
    return model


def _inputs(videos=("a", "c")):
    inputs = random_inputs(len(videos), (64, 80), seed=1)
    for x, v in zip(inputs, videos):
        x["video_id"] = v
    return inputs


def test_the_branch_gets_the_classifier_gradient_reversed_and_scaled():
    """The classifier learns from the plain cross-entropy; the branch gets its gradient times -WEIGHT."""
    model = _model(weight=0.5).train()
    captured = {}
    model.backbone.polar_branch.register_forward_hook(lambda m, a, out: captured.update(out=out))
    with EventStorage():
        losses = model(_inputs())
    adversary = model.video_adversary
    assert losses[LOSS_NAME].item() > 0 and adversary._features is None  # released after the step
    plain = torch.nn.functional.cross_entropy(adversary.classifier(adversary.pooled(captured["out"])),
                                              adversary.labels(_inputs()))
    assert plain.item() == pytest.approx(losses[LOSS_NAME].item(), rel=1e-6)
    branch, classifier = list(model.backbone.polar_branch.parameters()), list(adversary.classifier.parameters())
    got = torch.autograd.grad(losses[LOSS_NAME], branch + classifier, retain_graph=True, allow_unused=True)
    want = torch.autograd.grad(plain, branch + classifier, allow_unused=True)
    pairs = [(g, w) for g, w in zip(got, want) if w is not None]
    assert len(pairs) == len(branch) + len(classifier)
    for i, (g, w) in enumerate(pairs):
        torch.testing.assert_close(g, -0.5 * w if i < len(branch) else w, rtol=1e-4, atol=1e-8)


def test_inference_is_unchanged_and_skips_the_adversary():
    plain, adversarial = _model(weight=0).eval(), _model(weight=0.5).eval()
    adversarial.load_state_dict(plain.state_dict(), strict=False)
    calls = []
    adversarial.video_adversary.classifier.register_forward_hook(lambda *a: calls.append(1))
    inputs = [{k: v for k, v in x.items() if k != "instances"} for x in _inputs()]
    with torch.no_grad():
        a, b = plain(inputs), adversarial(inputs)
    assert not calls
    for x, y in zip(a, b):
        assert torch.equal(x["instances"].pred_boxes.tensor, y["instances"].pred_boxes.tensor)


def test_unknown_video_names_the_image():
    model = _model().train()
    inputs = _inputs(("a", "z"))
    inputs[1]["file_name"] = "frames/z_0001.png"
    with EventStorage(), pytest.raises(KeyError, match=r"z_0001.png.*'z'"):
        model(inputs)


def test_config_attaches_it_only_with_a_weight(tmp_path):
    records = [{"file_name": f"{i}.png", "video_id": i // 2, "height": 8, "width": 8, "image_id": i,
                "annotations": []} for i in range(6)]
    DatasetCatalog.register("adversary_test_train", lambda: records)
    try:
        cfg = get_polar_cfg()
        cfg.DATASETS.TRAIN = ("adversary_test_train",)
        assert training_video_ids(cfg) == [0, 1, 2]
        assert not hasattr(PolarTrainer.build_model(cfg), "video_adversary")
        cfg.MODEL.POLAR.VIDEO_ADVERSARY.WEIGHT = 0.1
        model = PolarTrainer.build_model(cfg)
        assert model.video_adversary.num_videos == 3 and model.video_adversary.weight == 0.1
        records[3]["video_id"] = None
        with pytest.raises(ValueError, match=r"'3.png' of 'adversary_test_train' has none"):
            PolarTrainer.build_model(cfg)
    finally:
        DatasetCatalog.remove("adversary_test_train")
