"""``MODEL.POLAR.INJECT`` decided in one place: which FPN levels the backbone fuses with the polar
features and which features each consumer (RPN, ROI heads, RetinaNet head) reads."""
from dataclasses import dataclass
from typing import Dict, List, Tuple

from ..architecture import is_dense_detector

FUSED_SUFFIX = "_fused"
INJECT_CHOICES = ("rpn", "roi", "both")


def fused_name(level: str) -> str:
    """Name of the fused (image + polar) version of an FPN level, e.g. ``"p2" -> "p2_fused"``."""
    return level + FUSED_SUFFIX


@dataclass(frozen=True)
class Injection:
    """For each consumer, by the config key of its ``IN_FEATURES``: its FPN levels and whether it
    reads their fused versions. The other consumers read the image's levels untouched."""

    consumers: Tuple[Tuple[str, Tuple[str, ...], bool], ...]

    @classmethod
    def from_config(cls, cfg) -> "Injection":
        """``MODEL.POLAR.INJECT`` for the configured meta-architecture (ValueError naming the fix
        for a value it does not have): "rpn", "roi" or "both" for R-CNNs; "rpn" or "both" fuse
        the one head of a RetinaNet."""
        inject = cfg.MODEL.POLAR.INJECT
        if inject not in INJECT_CHOICES:
            raise ValueError(f"MODEL.POLAR.INJECT must be one of {INJECT_CHOICES}, got {inject!r}")
        m = cfg.MODEL
        if is_dense_detector(cfg):
            if inject == "roi":
                raise ValueError(
                    f"MODEL.POLAR.INJECT 'roi' is invalid for {m.META_ARCHITECTURE}, which has no ROI heads; "
                    "set MODEL.POLAR.INJECT: 'rpn' (or 'both') to fuse into its head's features"
                )
            return cls((("MODEL.RETINANET.IN_FEATURES", tuple(m.RETINANET.IN_FEATURES), True),))
        return cls((
            ("MODEL.RPN.IN_FEATURES", tuple(m.RPN.IN_FEATURES), inject in ("rpn", "both")),
            ("MODEL.ROI_HEADS.IN_FEATURES", tuple(m.ROI_HEADS.IN_FEATURES), inject in ("roi", "both")),
        ))

    @property
    def fused_levels(self) -> List[str]:
        """The levels some consumer reads fused, in consumer order: what the backbone must fuse."""
        levels: List[str] = []
        for _, features, fused in self.consumers:
            levels += [f for f in features if fused and f not in levels]
        return levels

    def reads(self) -> Dict[str, List[str]]:
        """``IN_FEATURES`` key -> the feature names that consumer reads (fused names where fused)."""
        return {key: [fused_name(f) if fused else f for f in features] for key, features, fused in self.consumers}

    def heads_config(self, cfg):
        """A copy of ``cfg`` whose consumers' ``IN_FEATURES`` name the features they read (to build
        the heads with); ``cfg`` itself is not modified."""
        out = cfg.clone()
        out.defrost()
        for key, names in self.reads().items():
            node = out
            *parents, leaf = key.split(".")
            for p in parents:
                node = node[p]
            node[leaf] = names
        return out
