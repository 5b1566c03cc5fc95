"""Helpers of the evaluation-tool tests: config options of a tiny model over a tiny dataset."""
import json
import os

from tests.tools.tool_test_utils import CHANNELS, TOOLS_DIR

REPO_ROOT = os.path.dirname(TOOLS_DIR)
DEMO_CONFIG = os.path.join(REPO_ROOT, "configs", "faster_rcnn_R_18_FPN_demo_polar_synth.yaml")


def tiny_opts(name="", root="", json_file="", size=(48, 64), max_iter=2):
    """Trailing config opts (strings, as on a command line): narrow R18-FPN, one-band stacks,
    ``size`` (min, max) px; with ``root`` / ``json_file`` also DATASETS.POLAR_COCO registering
    ``name`` (train split layout of the tools fixtures) as DATASETS.TRAIN and TEST."""
    opts = [
        "MODEL.DEVICE", "cpu", "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "32",
        "MODEL.POLAR.HIDDEN_CHANNELS", "8", "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "100", "MODEL.RPN.PRE_NMS_TOPK_TEST", "100",
        "MODEL.RPN.POST_NMS_TOPK_TRAIN", "50", "MODEL.RPN.POST_NMS_TOPK_TEST", "50",
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32", "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "32",
        "INPUT.STACK.DERIVED", "dolp_aolp_trig", "INPUT.STACK.POLARIZATION", "angles",
        "INPUT.STACK.CHANNELS", str(CHANNELS), "MODEL.POLAR.IN_CHANNELS", str(CHANNELS // 4 * 3),
        "MODEL.POLAR.STACK_MEAN", "[0.0]", "MODEL.POLAR.STACK_STD", "[1.0]",
        "INPUT.MIN_SIZE_TRAIN", f"({size[0]},)", "INPUT.MAX_SIZE_TRAIN", str(size[1]),
        "INPUT.MIN_SIZE_TEST", str(size[0]), "INPUT.MAX_SIZE_TEST", str(size[1]),
        "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", str(max_iter), "SOLVER.WARMUP_ITERS", "1",
        "SOLVER.STEPS", "()", "SOLVER.CHECKPOINT_PERIOD", "100000", "DATALOADER.NUM_WORKERS", "0",
        "MODEL.WEIGHTS", "", "TEST.ALLOW_RANDOM_WEIGHTS", "True", "SEED", "0",  # untrained models on purpose
    ]
    if json_file:
        entry = [[name, json_file, os.path.join(root, "train", "images"), os.path.join(root, "train", "stacks")]]
        opts += ["DATASETS.POLAR_COCO", json.dumps(entry), "DATASETS.TRAIN", f"('{name}',)",
                 "DATASETS.TEST", f"('{name}',)"]
    return opts
