"""polar-rcnn: Detectron2 detection from RGB plus an aligned polarization / spectral stack.

``import polar_rcnn`` registers the backbones, meta-architectures and built-in datasets.
Detectron2 is not on PyPI under its own name, so ``setup.py`` cannot require it: ``make setup``
(``tools/provision_detectron2.py``) provides it, and importing polar-rcnn without it says so.
"""
try:
    import detectron2  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised only on a machine without detectron2
    raise ImportError(
        "polar-rcnn needs detectron2, which is not on PyPI under its own name: run `make setup` (or "
        "`python tools/provision_detectron2.py`) to build and install it, or install a detectron2 of your own"
    ) from e

from .config import add_polar_config  # noqa: E402
from . import data, modeling  # noqa: F401,E402  (registration)

__all__ = ["add_polar_config"]
__version__ = "0.1.0"
