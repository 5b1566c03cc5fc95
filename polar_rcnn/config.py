"""Configuration keys of polar-rcnn, added to a Detectron2 config by :func:`add_polar_config`."""
from detectron2.config import CfgNode as CN


def add_polar_config(cfg: CN) -> None:
    """Add the ``MODEL.POLAR`` (branch) and ``INPUT.STACK`` (data) sections to ``cfg`` in place."""
    _C = cfg

    # ---------------------------------------------------------------- the polarization branch
    _C.MODEL.POLAR = CN()
    # Channels of the extra stack (e.g. 6 bands x 4 polarizer angles = 24).
    _C.MODEL.POLAR.IN_CHANNELS = 24
    # Channels after the first conv (the notebook's "conv 24->96").
    _C.MODEL.POLAR.HIDDEN_CHANNELS = 96
    # Kernel size of the first conv (stack -> hidden).
    _C.MODEL.POLAR.PRE_KERNEL_SIZE = 3
    # Kernel size of the per-level convs (hidden -> FPN channels).
    _C.MODEL.POLAR.POST_KERNEL_SIZE = 3
    # Stride at which the first conv runs: 1 = full input resolution, 4 = a quarter (avg-pooled).
    _C.MODEL.POLAR.INPUT_STRIDE = 1
    # Zero-initialise the per-level convs, so the untrained branch leaves the detector unchanged.
    _C.MODEL.POLAR.ZERO_INIT = True
    # Which features get the polar features added: "rpn", "roi" or "both"; the other consumer
    # keeps the image backbone's features untouched.
    _C.MODEL.POLAR.INJECT = "rpn"
    # Per-channel normalization of the stack, applied in the model like MODEL.PIXEL_MEAN/STD
    # (after INPUT.STACK scaling to float). One value broadcasts to every channel.
    _C.MODEL.POLAR.STACK_MEAN = [0.0]
    _C.MODEL.POLAR.STACK_STD = [1.0]

    # ---------------------------------------------------------------- loading the stack
    _C.INPUT.STACK = CN()
    # Load each image's stack (dataset key "stack_file_name"); False for RGB-only baselines.
    _C.INPUT.STACK.ENABLED = True
    # Axis order of the array on disk: "HWC" (channel-last) or "CHW" (channel-first).
    _C.INPUT.STACK.LAYOUT = "HWC"
    # Multiplier to float; 0 = by dtype (1/255 for uint8, 1/65535 for uint16, 1 for floats).
    _C.INPUT.STACK.SCALE = 0.0
