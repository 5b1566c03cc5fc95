"""polar-rcnn: Detectron2 detection from RGB plus an aligned polarization / spectral stack.

``import polar_rcnn`` registers the backbones, meta-architectures and built-in datasets.
"""
from .config import add_polar_config
from . import data, modeling  # noqa: F401  (registration)

__all__ = ["add_polar_config"]
__version__ = "0.1.0"
