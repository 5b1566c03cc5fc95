"""What kind of detector a config builds, answered once for the data, modeling, analysis and tools
(which must not import each other for it): a dense detector (RetinaNet: one head, its own class
count) or an R-CNN (RPN + ROI heads)."""
from detectron2.modeling import META_ARCH_REGISTRY, RetinaNet


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
