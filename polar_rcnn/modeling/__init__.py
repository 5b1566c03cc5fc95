"""Models: the polar branch, fusions, polar backbones and meta-architectures (registered on import)."""
from .backbone import PolarFPN, build_polar_resnet_fpn_backbone, build_polar_retinanet_resnet_fpn_backbone
from .early_fusion import (
    EarlyFusionFPN,
    EarlyFusionStem,
    build_early_fusion_resnet_fpn_backbone,
    build_early_fusion_retinanet_resnet_fpn_backbone,
)
from .fusion import build_polar_fusion, fusion_names, register_fusion
from .injection import Injection, fused_name
from .meta_arch import PolarInputsMixin, PolarRCNN, PolarRetinaNet
from .polar_branch import PolarBranch
from .stack_derivation import StackDerivation, stack_derivation_from_config
from .video_adversary import VideoAdversary, apply_video_adversary

__all__ = [
    "EarlyFusionFPN",
    "EarlyFusionStem",
    "Injection",
    "PolarBranch",
    "PolarFPN",
    "PolarInputsMixin",
    "PolarRCNN",
    "PolarRetinaNet",
    "StackDerivation",
    "VideoAdversary",
    "apply_video_adversary",
    "build_early_fusion_resnet_fpn_backbone",
    "build_early_fusion_retinanet_resnet_fpn_backbone",
    "build_polar_fusion",
    "build_polar_resnet_fpn_backbone",
    "build_polar_retinanet_resnet_fpn_backbone",
    "fused_name",
    "fusion_names",
    "register_fusion",
    "stack_derivation_from_config",
]
