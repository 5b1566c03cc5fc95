"""Configuration keys of polar-rcnn, added to a Detectron2 config by :func:`add_polar_config`."""
import inspect
import re
from typing import Dict

from detectron2.config import CfgNode as CN

#: values of INPUT.STACK.DERIVED_ON
DERIVED_ON_CHOICES = ("model", "loader")
#: values of INPUT.STACK.SOURCE
STACK_SOURCES = ("stack", "dofp")
#: values of INPUT.STACK.RESOLUTION
STACK_RESOLUTIONS = ("branch", "full")


def add_polar_config(cfg: CN) -> None:
    """Add the ``MODEL.POLAR`` (branch) and ``INPUT.STACK`` (data) sections to ``cfg`` in place."""
    _C = cfg

    # ---------------------------------------------------------------- the polarization branch
    _C.MODEL.POLAR = CN()
    # Channels of the extra stack (e.g. 6 bands x 4 polarizer angles = 24).
    _C.MODEL.POLAR.IN_CHANNELS = 24
    # Branch shape: 2 = conv C->HIDDEN, resize to each FPN level, per-level conv HIDDEN->FPN width
    # (convs per level see the hidden features); 1 = conv C->FPN width, resize to each level.
    _C.MODEL.POLAR.NUM_STAGES = 2
    # Channels after the first conv (NUM_STAGES 2); the per-level convs cost grows linearly with it.
    _C.MODEL.POLAR.HIDDEN_CHANNELS = 32
    # Norm after the first conv of the two-stage branch: "" (none), "GN", "BN", ... (get_norm names).
    _C.MODEL.POLAR.NORM = ""
    # Kernel size of the first conv (stack -> hidden); 3 costs 9x the FLOPs of 1 (docs/PERFORMANCE.md).
    _C.MODEL.POLAR.PRE_KERNEL_SIZE = 1
    # Kernel size of the per-level convs (hidden -> FPN channels); 1 vs 3: docs/PERFORMANCE.md.
    _C.MODEL.POLAR.POST_KERNEL_SIZE = 3
    # Stride at which the first conv runs: 1 = full input resolution, 4 = P2's (avg-pooled; default).
    _C.MODEL.POLAR.INPUT_STRIDE = 4
    # Zero-initialise the branch's last conv, so the untrained branch leaves the detector unchanged.
    _C.MODEL.POLAR.ZERO_INIT = True
    # Multiply the branch's output at each level by a learned scalar that starts at 0 (the detector
    # starts as the image-only one while the branch convs start random); needs ZERO_INIT False.
    _C.MODEL.POLAR.CLOSED_GATE = False
    # Per-level fusion of image and polar features: "add", "concat" (1x1 conv), "gate" (spatial
    # sigmoid gate on the polar features) or "channel_attention" (SE-style channel gate).
    _C.MODEL.POLAR.FUSION = "add"
    # Squeeze ratio of "channel_attention": hidden width = 2 * FPN width / FUSION_REDUCTION.
    _C.MODEL.POLAR.FUSION_REDUCTION = 16
    # Which features get the polar features added: "rpn", "roi" or "both"; the other consumer
    # keeps the image backbone's features untouched.
    _C.MODEL.POLAR.INJECT = "rpn"
    # Per-channel normalization of the stack, applied in the model like MODEL.PIXEL_MEAN/STD
    # (after INPUT.STACK scaling to float). One value broadcasts to every channel.
    _C.MODEL.POLAR.STACK_MEAN = [0.0]
    _C.MODEL.POLAR.STACK_STD = [1.0]
    # Probability that a training image's whole stack is dropped (treated as missing); 0 = never.
    _C.MODEL.POLAR.MODALITY_DROPOUT = 0.0
    # Learning rate of the stack-reading parameters (MODEL.FREEZE alias "polar_branch") / SOLVER.BASE_LR.
    _C.MODEL.POLAR.LR_FACTOR = 1.0
    # Weight decay of the stack-reading parameters; < 0 = as the others (SOLVER.WEIGHT_DECAY...).
    _C.MODEL.POLAR.WEIGHT_DECAY = -1.0

    # A video-id classifier on the branch's pooled output behind a gradient reversal, trained with
    # the detector and inactive in inference (polar_rcnn/modeling/video_adversary.py; needs a
    # video_id on every training image).
    _C.MODEL.POLAR.VIDEO_ADVERSARY = CN()
    # Reversal weight: the branch gets the classifier's gradient times -WEIGHT; 0 = no adversary.
    _C.MODEL.POLAR.VIDEO_ADVERSARY.WEIGHT = 0.0
    # Width of the classifier's hidden layer.
    _C.MODEL.POLAR.VIDEO_ADVERSARY.HIDDEN = 128

    # ---------------------------------------------------------------- freezing (polar_rcnn/engine/freezing.py)
    _C.MODEL.FREEZE = CN()
    # Parts frozen when the model is built (before the optimizer and DDP): aliases "image_bottom_up",
    # "fpn", "polar_branch", "rpn", "box_head", "box_predictor", "mask_head", "retinanet_head",
    # globs over parameter/module names ("roi_heads.box_head.fc1*") or "re:<regex>".
    # MODEL.BACKBONE.FREEZE_AT still applies on top.
    _C.MODEL.FREEZE.PARTS = []
    # Iteration at which MODEL.FREEZE.UNFREEZE_PARTS start training (before its step); 0 = never.
    _C.MODEL.FREEZE.UNFREEZE_ITER = 0
    # Parts frozen by MODEL.FREEZE.PARTS to train from UNFREEZE_ITER on (same names as PARTS).
    _C.MODEL.FREEZE.UNFREEZE_PARTS = []

    # ---------------------------------------------------------------- loading the stack
    _C.INPUT.STACK = CN()
    # Load each image's stack (dataset key "stack_file_name"); False for RGB-only baselines.
    _C.INPUT.STACK.ENABLED = True
    # Axis order of the array on disk: "HWC" (channel-last; .npy, multi-channel TIFF) or "CHW"
    # (channel-first; multi-page TIFF, one page per channel).
    _C.INPUT.STACK.LAYOUT = "HWC"
    # Multiplier to float; 0 = by dtype (1/255 for uint8, 1/65535 for uint16, 1 for floats).
    _C.INPUT.STACK.SCALE = 0.0
    # Name of the array inside .npz stack files; "" = the file's only array.
    _C.INPUT.STACK.NPZ_KEY = ""
    # Channels of the stack files; 0 = MODEL.POLAR.IN_CHANNELS (set it when DERIVED is not "raw").
    _C.INPUT.STACK.CHANNELS = 0
    # A stack whose H, W differ from its image's: True = resize it to the image (bilinear, counted
    # in the log), False = error.
    _C.INPUT.STACK.RESIZE_MISMATCHED = False
    # Meaning of the channels, band-major: "" (none: flips leave values alone), "angles" (one
    # image per INPUT.STACK.ANGLES polarizer angle per band), "stokes" (S0, S1, S2 per band) or
    # "dolp_aolp" (DoLP, AoLP in radians per band). Flips then mirror the angles (AoLP -> pi - AoLP).
    _C.INPUT.STACK.POLARIZATION = ""
    # Polarizer angles in degrees, in channel order within a band (POLARIZATION "angles").
    _C.INPUT.STACK.ANGLES = [0.0, 45.0, 90.0, 135.0]
    # Model input computed per band from "angles"/"stokes" stacks: "raw" (as stored), "stokes"
    # (S0, S1, S2) or "dolp_aolp_trig" (DoLP, cos 2AoLP, sin 2AoLP); sets MODEL.POLAR.IN_CHANNELS.
    _C.INPUT.STACK.DERIVED = "raw"
    # Where DERIVED is computed: "model" (on the model's device, from the stored stack the loader
    # delivers) or "loader" (float32 in the data-loader workers).
    _C.INPUT.STACK.DERIVED_ON = "model"
    # Resolution the loader delivers the stack at: "branch" = on the MODEL.POLAR.INPUT_STRIDE grid that
    # the branch's first conv reads (s x s means; the image's resolution where the model reads it there:
    # early fusion, INPUT_STRIDE 1), "full" = the image's resolution (the model pools it).
    _C.INPUT.STACK.RESOLUTION = "branch"
    # Photometric augmentations (brightness gains) also scale the stack; False = RGB only.
    _C.INPUT.STACK.PHOTOMETRIC = False
    # What the stack files are: "stack" (ready (H, W, C) arrays, as above) or "dofp" (raw frames of a
    # division-of-focal-plane polarization sensor, demosaiced on load into bands x 4 angles, INPUT.STACK.RAW).
    # With "dofp", a record whose image file is its stack file gets its RGB image made from the raw frame.
    _C.INPUT.STACK.SOURCE = "stack"
    _C.INPUT.STACK.RAW = CN()
    # Raw frames' sensor pattern: "mono" (IMX250MZR: 1 band x 4 angles) or "color" (IMX250MYR: R, G, B x 4 angles).
    _C.INPUT.STACK.RAW.PATTERN = "mono"
    # Significant bits of the raw values (8..16; 10 or 12 in a 16-bit PNG/TIFF): larger values are an
    # error, and values scale by 1 / (2^BITS - 1) unless INPUT.STACK.SCALE is set.
    _C.INPUT.STACK.RAW.BITS = 12
    # Demosaicing interpolation (polanalyser): "bilinear", "ea" (edge-aware) or "vng" (8-bit frames only).
    _C.INPUT.STACK.RAW.INTERPOLATION = "bilinear"
    # Two-sensor rigs: the 3x3 stack-to-image homography (9 numbers, row-major; pixel centres at integers) that
    # warps every stack onto its image's grid before augmentation, for records without their own
    # "stack_homography" in the JSON; [] = none (stacks are pixel-aligned, or per record). tools/estimate_homography.py
    _C.INPUT.STACK.HOMOGRAPHY = []
    # Smallest fraction of the image a homography-warped stack must cover; less is an error naming the file.
    _C.INPUT.STACK.HOMOGRAPHY_MIN_COVERAGE = 0.5

    # ---------------------------------------------------------------- datasets without code
    # COCO-instances datasets with stacks, registered by register_datasets_from_config(cfg):
    # a list of [name, json_file, image_root, stack_root]; refer to the names in DATASETS.TRAIN/TEST.
    _C.DATASETS.POLAR_COCO = []
    # Key of their JSON image entries naming the stack file (relative to stack_root), e.g. "polar_file";
    # "file_name" when the image's own file is the stack source (a raw polarization frame, INPUT.STACK.SOURCE).
    _C.DATASETS.STACK_KEY = "stack_file"
    # A bad training sample (unreadable/missing file, wrong shape, NaN, bad box or category):
    # "raise" an error naming the file, or "skip" it (logged, counted, reported after training).
    _C.DATASETS.ON_BAD_SAMPLE = "raise"

    # ---------------------------------------------------------------- optimizer (polar_rcnn/engine/optimizer.py)
    # "SGD" (SOLVER.MOMENTUM, NESTEROV), "Adam" or "AdamW" (torch's default betas (0.9, 0.999), eps 1e-8);
    # all use SOLVER.BASE_LR, the weight decay of their param groups and SOLVER.CLIP_GRADIENTS, whose
    # CLIP_TYPE also takes "full_model": the NORM_TYPE-norm of all gradients together clipped at CLIP_VALUE.
    _C.SOLVER.OPTIMIZER = "SGD"

    # ---------------------------------------------------------------- losses and evaluation
    # Multipliers of the four detection losses (polar_rcnn/modeling/loss_weights.py), applied by
    # PolarTrainer.build_model to any meta-architecture, on top of Detectron2's MODEL.RPN.LOSS_WEIGHT etc.
    _C.MODEL.LOSS_WEIGHTS = CN()
    _C.MODEL.LOSS_WEIGHTS.RPN_CLS = 1.0  # loss_rpn_cls: RPN objectness
    _C.MODEL.LOSS_WEIGHTS.RPN_LOC = 1.0  # loss_rpn_loc: RPN box regression
    _C.MODEL.LOSS_WEIGHTS.ROI_CLS = 1.0  # loss_cls*: box classification (ROI heads; RetinaNet head)
    _C.MODEL.LOSS_WEIGHTS.ROI_LOC = 1.0  # loss_box_reg*: box regression (ROI heads; RetinaNet head)
    # Keep OUTPUT_DIR/model_best.pth for the best value of this evaluation metric (e.g. "bbox/AP50"),
    # checked after every evaluation (TEST.EVAL_PERIOD and the end of training); "" = off.
    _C.TEST.BEST_CHECKPOINT_METRIC = ""
    # "max" (AP, AR) or "min" (a loss) for TEST.BEST_CHECKPOINT_METRIC.
    _C.TEST.BEST_CHECKPOINT_MODE = "max"
    # Evaluate / predict even when MODEL.WEIGHTS is empty or matches none of the model's tensors
    # (a randomly initialised model); False = that is an error.
    _C.TEST.ALLOW_RANDOM_WEIGHTS = False


def polar_key_comments() -> Dict[str, str]:
    """``{"MODEL.POLAR.IN_CHANNELS": "<its comment>", ...}``: the comment written above (or beside)
    each key in :func:`add_polar_config`, in the order the keys are added."""
    comments, pending, previous = {}, [], ""
    for line in inspect.getsource(add_polar_config).splitlines():
        line = line.strip()
        key = re.match(r"_C\.([A-Z0-9_.]+) = (?!CN\(\))[^#]*(?:#\s*(.*))?$", line)
        if key:
            text = " ".join(pending + ([key.group(2)] if key.group(2) else []))
            comments[key.group(1)] = previous = text or previous  # keys right below one comment share it
            pending = []
        elif line.startswith("#") and not line.startswith("# ---"):
            pending.append(line.lstrip("# "))
        else:
            pending, previous = [], ""
    return comments


def polar_config_help() -> str:
    """Every polar-rcnn config key with its default and comment, for ``train_net.py --help``."""
    cfg = CN()
    cfg.MODEL, cfg.INPUT, cfg.DATASETS, cfg.SOLVER, cfg.TEST = CN(), CN(), CN(), CN(), CN()
    add_polar_config(cfg)
    lines = ["polar-rcnn config keys (set them in the yaml or as trailing KEY VALUE pairs):"]
    for key, comment in polar_key_comments().items():
        value = cfg
        for part in key.split("."):
            value = value[part]
        lines.append(f"  {key} = {value!r}\n      {comment}")
    return "\n".join(lines)
