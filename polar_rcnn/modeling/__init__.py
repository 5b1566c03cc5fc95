"""Models: the polar branch, polar backbones and meta-architectures (registered on import)."""
from .backbone import PolarFPN, build_polar_resnet_fpn_backbone, fused_name
from .meta_arch import PolarRCNN
from .polar_branch import PolarBranch

__all__ = ["PolarBranch", "PolarFPN", "PolarRCNN", "build_polar_resnet_fpn_backbone", "fused_name"]
