"""What kind of detector a config builds, answered once for the data, modeling, analysis and tools
(which must not import each other for it): a dense detector (RetinaNet: one head, its own class
count) or an R-CNN (RPN + ROI heads), and at which stride its backbone reads the stack."""
from detectron2.modeling import META_ARCH_REGISTRY, RetinaNet

from .config import STACK_RESOLUTIONS


def is_dense_detector(cfg) -> bool:
    """Whether ``MODEL.META_ARCHITECTURE`` is a RetinaNet (Detectron2's or a subclass, e.g.
    ``PolarRetinaNet``), by its registered class; an unregistered name by its spelling."""
    name = cfg.MODEL.META_ARCHITECTURE
    if name in META_ARCH_REGISTRY:
        arch = META_ARCH_REGISTRY.get(name)
        return isinstance(arch, type) and issubclass(arch, RetinaNet)
    return "RetinaNet" in name


def num_classes_key(cfg) -> str:
    """The config key of the model's class count: ``MODEL.RETINANET.NUM_CLASSES`` for dense
    detectors, else ``MODEL.ROI_HEADS.NUM_CLASSES``."""
    return "MODEL.RETINANET.NUM_CLASSES" if is_dense_detector(cfg) else "MODEL.ROI_HEADS.NUM_CLASSES"


def num_classes(cfg) -> int:
    """The model's class count (the value of :func:`num_classes_key`)."""
    node = cfg
    for part in num_classes_key(cfg).split("."):
        node = node[part]
    return int(node)


#: names of the backbone builders whose model reads the stack on the ``MODEL.POLAR.INPUT_STRIDE`` grid
_STRIDED_STACK_BACKBONES = set()


def reads_stack_at_input_stride(builder):
    """Decorator of a registered backbone builder whose model reads the stack on the
    ``MODEL.POLAR.INPUT_STRIDE`` grid (a polar branch): the loader may then deliver it there."""
    _STRIDED_STACK_BACKBONES.add(builder.__name__)
    return builder


def stack_input_stride(cfg) -> int:
    """The stride at which the model built from ``cfg`` reads the stack: ``MODEL.POLAR.INPUT_STRIDE``
    for backbones marked by :func:`reads_stack_at_input_stride`, else 1 (e.g. early fusion)."""
    if cfg.MODEL.BACKBONE.NAME in _STRIDED_STACK_BACKBONES:
        return int(cfg.MODEL.POLAR.INPUT_STRIDE)
    return 1


def stack_delivery_stride(cfg) -> int:
    """The stride of the stack the loader delivers (``INPUT.STACK.RESOLUTION``): the model's
    :func:`stack_input_stride` for "branch", 1 (the image's resolution) for "full"."""
    resolution = cfg.INPUT.STACK.RESOLUTION
    if resolution not in STACK_RESOLUTIONS:
        raise ValueError(f"INPUT.STACK.RESOLUTION must be one of {STACK_RESOLUTIONS}, got {resolution!r}")
    return stack_input_stride(cfg) if resolution == "branch" else 1
