"""A domain-adversarial video classifier on the polar branch (``MODEL.POLAR.VIDEO_ADVERSARY``).

The research notes saw the branch "learn the videos, not the images": near-identical frames of a
video let it memorize per-video nuisances of the stack. :class:`VideoAdversary` predicts each
training image's ``video_id`` from the branch's output, pooled over space and averaged over the
FPN levels, through a gradient-reversal layer (Ganin & Lempitsky, 2015): the classifier learns to
tell the videos apart, while the branch receives the classifier's gradient times ``-WEIGHT`` and so
learns features that do not tell them apart. Its loss, ``loss_video_adversary`` (cross-entropy,
weight 1 for the classifier), joins the detector's losses in training.

It is attached with forward hooks (as :mod:`.loss_weights` is), so it serves any polar
meta-architecture whose backbone has a ``polar_branch``: one captures the batch's video ids, one
the branch's output, one adds the loss. In inference the hooks return at once: no computation,
and a model built without the adversary loads the same weights (the classifier's parameters,
``video_adversary.*``, are then reported as unused). :class:`~polar_rcnn.engine.PolarTrainer`
attaches it when ``WEIGHT`` > 0; in a loop of your own call :func:`apply_video_adversary`.
"""
import logging
from typing import Dict, Hashable, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

LOSS_NAME = "loss_video_adversary"


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.scale * grad, None


def reverse_gradient(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Identity forward; the gradient times ``-scale`` backward."""
    return _ReverseGradient.apply(x, float(scale))


class VideoAdversary(nn.Module):
    """Video-id classifier over pooled polar features behind a gradient reversal of ``weight``.

    Args:
        channels: channels of the branch's per-level output (the FPN's width).
        video_ids: the training set's video ids (any hashable values); class i is the i-th.
        weight: the reversal factor: the branch gets the classifier's gradient times ``-weight``.
        hidden: width of the classifier's hidden layer.
    """

    def __init__(self, channels: int, video_ids: Sequence[Hashable], weight: float, hidden: int = 128):
        super().__init__()
        ids = list(dict.fromkeys(video_ids))
        if len(ids) < 2:
            raise ValueError(f"MODEL.POLAR.VIDEO_ADVERSARY needs at least 2 training videos, got {ids}")
        if not weight > 0:
            raise ValueError(f"MODEL.POLAR.VIDEO_ADVERSARY.WEIGHT must be > 0 to attach it, got {weight}")
        self.video_index: Dict[Hashable, int] = {v: i for i, v in enumerate(ids)}
        self.weight = float(weight)
        self.classifier = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, len(ids)))
        self._labels: Optional[torch.Tensor] = None
        self._features: Optional[torch.Tensor] = None

    @property
    def num_videos(self) -> int:
        return len(self.video_index)

    def labels(self, batched_inputs: List[dict]) -> torch.Tensor:
        """The class of each input's ``"video_id"``; KeyError naming the image when it has none or
        an id the classifier was not built with."""
        out = []
        for x in batched_inputs:
            video = x.get("video_id")
            if video not in self.video_index:
                raise KeyError(f"MODEL.POLAR.VIDEO_ADVERSARY: training image {x.get('file_name')!r} has video_id "
                               f"{video!r}, not one of the {self.num_videos} videos it was built with")
            out.append(self.video_index[video])
        return torch.tensor(out, dtype=torch.long)

    def pooled(self, polar: Dict[str, torch.Tensor]) -> torch.Tensor:
        """(N, channels): each level's output averaged over space, then over the levels."""
        return torch.stack([p.float().mean(dim=(2, 3)) for p in polar.values()]).mean(dim=0)

    def loss(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(reverse_gradient(features, self.weight))
        return F.cross_entropy(logits, labels.to(logits.device))

    # ------------------------------------------------------------------ hooks
    def _capture_labels(self, model: nn.Module, args) -> None:
        self._labels = self.labels(args[0]) if model.training else None
        self._features = None

    def _capture_features(self, branch: nn.Module, args, output) -> None:
        if self._labels is not None:
            self._features = self.pooled(output)

    def _add_loss(self, model: nn.Module, args, output):
        if not model.training or not isinstance(output, dict):
            return None
        if self._features is None:
            raise RuntimeError("MODEL.POLAR.VIDEO_ADVERSARY: the polar branch did not run in this training step")
        losses = dict(output)
        losses[LOSS_NAME] = self.loss(self._features, self._labels)
        self._labels = self._features = None
        return losses


def apply_video_adversary(model: nn.Module, video_ids: Sequence[Hashable], weight: float,
                          hidden: int = 128) -> nn.Module:
    """Attach a :class:`VideoAdversary` to ``model`` (a polar meta-architecture) as
    ``model.video_adversary``: its training losses get ``loss_video_adversary``. Returns ``model``."""
    branch = getattr(getattr(model, "backbone", None), "polar_branch", None)
    if branch is None:
        raise ValueError(f"MODEL.POLAR.VIDEO_ADVERSARY needs a late-fusion polar backbone (a polar_branch); "
                         f"{type(model).__name__} has {type(getattr(model, 'backbone', None)).__name__}")
    if hasattr(model, "video_adversary"):
        raise RuntimeError(f"{type(model).__name__} already has a video adversary")
    device = next(model.parameters()).device
    model.video_adversary = VideoAdversary(branch.out_channels, video_ids, weight, hidden).to(device)
    model.register_forward_pre_hook(model.video_adversary._capture_labels)
    branch.register_forward_hook(model.video_adversary._capture_features)
    model.register_forward_hook(model.video_adversary._add_loss)
    logger.info("Video adversary (MODEL.POLAR.VIDEO_ADVERSARY): %d training videos, reversal weight %g",
                model.video_adversary.num_videos, weight)
    return model


def training_video_ids(cfg) -> List[Hashable]:
    """The ``video_id`` of every training image of ``cfg.DATASETS.TRAIN``, first-seen order, without
    repeats; ValueError naming an image without one."""
    from detectron2.data import DatasetCatalog

    ids: Dict[Hashable, None] = {}
    for name in cfg.DATASETS.TRAIN:
        for record in DatasetCatalog.get(name):
            if record.get("video_id") is None:
                raise ValueError(f"MODEL.POLAR.VIDEO_ADVERSARY needs a video_id on every training image; "
                                 f"{record.get('file_name')!r} of {name!r} has none")
            ids.setdefault(record["video_id"], None)
    return list(ids)


def video_adversary_from_config(cfg, model: nn.Module) -> nn.Module:
    """:func:`apply_video_adversary` with ``MODEL.POLAR.VIDEO_ADVERSARY`` (nothing when WEIGHT is 0)."""
    weight = float(cfg.MODEL.POLAR.VIDEO_ADVERSARY.WEIGHT)
    if weight < 0:
        raise ValueError(f"MODEL.POLAR.VIDEO_ADVERSARY.WEIGHT must be >= 0, got {weight}")
    if weight == 0:
        return model
    return apply_video_adversary(model, training_video_ids(cfg), weight, int(cfg.MODEL.POLAR.VIDEO_ADVERSARY.HIDDEN))


__all__ = ["LOSS_NAME", "VideoAdversary", "apply_video_adversary", "reverse_gradient", "training_video_ids",
           "video_adversary_from_config"]
