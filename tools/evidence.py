#!/usr/bin/env python
"""The evidence: does the stack help, and where? One command that generates the data, trains every
variant with the same budget over several seeds and writes docs/RESULTS.md.

    .venv/bin/python tools/evidence.py                       # the default budget (CPU, see README)
    .venv/bin/python tools/evidence.py --seeds 0 1 2 --scale 4 --device cuda
    .venv/bin/python tools/evidence.py --preset scratch      # from scratch, informative vs unpaired stack
    make evidence                                            # EVIDENCE_ARGS="--preset scratch" for the latter

Steps (each skipped when its result exists with the same settings, so an interrupted run resumes):
 1. Data (datasets/prepare_polar_synth.py) under <output>/data:
      pretrain  objects visible in RGB (class colours, --signal rgb): where the "zoo" model learns
      stack     objects camouflaged in RGB, class signature in the polarization stack
      control   camouflaged in RGB and no signal in the stack (--signal none): the same question
                where the stack cannot help
      unpaired  (--datasets) objects in class colours in RGB (--signal rgb data), each image with the
                stack of a frame of another video: a stack that carries nothing about the image,
                where a polar model must do as well as RGB alone
 2. MODEL.POLAR.STACK_MEAN / STACK_STD of the stack and control training stacks (as
    tools/stack_stats.py computes them; DERIVED dolp_aolp_trig input).
 3. Pretrain: vanilla RGB Faster R-CNN (R18-FPN, GN) from scratch on "pretrain", like a user's
    model-zoo detector.
 4. Finetune every --variants from that checkpoint on "stack" and on "control", --iters iterations
    per run, every --seeds, evaluated with COCO AP on the dataset's val split:
      rgb_only        vanilla RGB; ResNet + FPN frozen, RPN and box head + predictor trained
      rgb_last_layer  vanilla RGB; only the box predictor (last layer) trained
      early_fusion    the stack as extra channels of the ResNet stem (stack weights start at 0);
                      everything trained
      branch_rpn      polar branch added to the features the RPN reads  } ResNet + FPN frozen;
      branch_roi      polar branch added to the features the ROI heads read } branch (zero-init last
      branch_both     polar branch added to both                        } conv), RPN, box head trained
    and, when asked for: branch_only (the notebook's strict setup: only the branch trains, both),
    from scratch (no pretraining, everything trained): rgb_scratch, polar_scratch (the library
    default branch), demo_scratch (the demo config's own branch), demo_random_init / demo_zero_init
    (the same with its last conv random, as the demo config shipped before issue 17, or at zero),
    demo_closed_gate (last conv random behind per-level gates that start closed,
    MODEL.POLAR.CLOSED_GATE), all three at MODEL.POLAR.LR_FACTOR 1.0; the branch's learning rate
    (--preset lr): polar_lr_1x / polar_lr_mid / polar_lr_low / polar_lr_zero (the library branch at 1,
    0.3, 0.1, 0x), polar_lr_low_decay (0.1x with weight decay 0.01), polar_rpn (the branch feeding the
    RPN only),
    demo_lr_low / demo_zero_lr_low (the demo branch at 0.1x, last conv random or at zero),
    branch_both_lr_1x / branch_both_lr_low (branch_both at 1 or 0.1x, --preset lr_finetune); and Mask
    R-CNN (--preset masks; box and mask AP): mask_rgb_only, mask_branch_both (as rgb_only /
    branch_both, with a mask head that trains from its random start).
 5. docs/RESULTS.md (--results): AP, AP50, AP75 as mean ± std over seeds per variant and dataset,
    the differences to rgb_only per seed, the machine, wall times and the commands.

--scale K multiplies the training and validation videos and all iterations (for a GPU). Runs are
PolarTrainer runs (in this process, or --jobs at a time in worker processes), seeded with SEED = the
seed, DATALOADER.NUM_WORKERS --workers. --preset names a plan (options after it override it) and
--section the part of --results it writes (the file's other sections are kept).
"""
import argparse
import concurrent.futures
import contextlib
import datetime
import hashlib
import json
import logging
import multiprocessing
import os
import platform
import shlex
import subprocess
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

def setup_cfg(config_file: str, opts: Sequence[str], freeze: bool = True):
    """:func:`polar_rcnn.engine.cli.setup_cfg`, imported on first use (``--help`` does not load polar_rcnn)."""
    from polar_rcnn.engine.cli import setup_cfg as polar_setup_cfg

    return polar_setup_cfg(config_file, opts, freeze)


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "configs")
DEMO = "faster_rcnn_R_18_FPN_demo_polar_synth.yaml"
RGB = "faster_rcnn_R_18_FPN_demo_rgb_only_polar_synth.yaml"
MASK_DEMO = "mask_rcnn_R_18_FPN_demo_polar_synth.yaml"
MASK_RGB = "mask_rcnn_R_18_FPN_demo_rgb_only_polar_synth.yaml"
POLAR_CONFIGS = (DEMO, MASK_DEMO)  # the configs whose variants read the stack (branch options apply)
SEGM = "segm/"  # prefix of the mask metrics in a run's metrics
logger = logging.getLogger("polar_rcnn.tools.evidence")

BACKBONE_FROZEN = ["MODEL.FREEZE.PARTS", '["image_bottom_up", "fpn"]']
BRANCH = ["MODEL.POLAR.ZERO_INIT", "True"] + BACKBONE_FROZEN


# the branch's shape and training keys (not the data's: IN_CHANNELS, STACK_MEAN/STD; not INJECT)
BRANCH_KEYS = ("NUM_STAGES", "HIDDEN_CHANNELS", "NORM", "PRE_KERNEL_SIZE", "POST_KERNEL_SIZE", "INPUT_STRIDE",
               "ZERO_INIT", "CLOSED_GATE", "FUSION", "LR_FACTOR", "WEIGHT_DECAY", "MODALITY_DROPOUT")


def default_branch_opts() -> List[str]:
    """The library's default branch (``add_polar_config``: shape, init, learning rate) as options:
    the evidence measures what a user gets by default, whatever the demo config tunes for its
    from-scratch run."""
    from detectron2.config import get_cfg
    from polar_rcnn.config import add_polar_config

    cfg = get_cfg()
    add_polar_config(cfg)
    return [x for k in BRANCH_KEYS for x in (f"MODEL.POLAR.{k}", str(cfg.MODEL.POLAR[k]))]


@dataclass(frozen=True)
class Variant:
    config: str  # file under configs/
    opts: Tuple[str, ...]  # on top of the common opts and (library_branch) the library default branch
    trains: str  # what trains, for the report
    pretrained: bool = True  # starts from the pretrained RGB detector
    library_branch: bool = True  # a polar variant runs the library's default branch (else its config's)


VARIANTS: "OrderedDict[str, Variant]" = OrderedDict([
    ("rgb_only", Variant(RGB, tuple(BACKBONE_FROZEN), "RPN, box head, box predictor")),
    ("rgb_last_layer", Variant("faster_rcnn_R_18_FPN_demo_rgb_predictor_only_polar_synth.yaml", (),
                               "box predictor")),
    ("early_fusion", Variant("faster_rcnn_R_18_FPN_demo_early_fusion_polar_synth.yaml",
                             ("MODEL.FREEZE.PARTS", "[]"), "everything (stem stack weights start at 0)")),
    ("branch_rpn", Variant(DEMO, ("MODEL.POLAR.INJECT", "rpn", *BRANCH), "branch, RPN, box head, box predictor")),
    ("branch_roi", Variant(DEMO, ("MODEL.POLAR.INJECT", "roi", *BRANCH), "branch, RPN, box head, box predictor")),
    ("branch_both", Variant(DEMO, ("MODEL.POLAR.INJECT", "both", *BRANCH), "branch, RPN, box head, box predictor")),
    ("branch_both_lr_1x", Variant(DEMO, ("MODEL.POLAR.INJECT", "both", *BRANCH, "MODEL.POLAR.LR_FACTOR", "1.0"),
                                  "branch at the learning rate of the rest, RPN, box head, box predictor")),
    ("branch_both_lr_low", Variant(DEMO, ("MODEL.POLAR.INJECT", "both", *BRANCH, "MODEL.POLAR.LR_FACTOR", "0.1"),
                                   "branch at 0.1x the learning rate, RPN, box head, box predictor")),
    ("branch_only", Variant(DEMO, ("MODEL.POLAR.INJECT", "both", "MODEL.POLAR.ZERO_INIT", "True", "MODEL.FREEZE.PARTS",
                                   '["image_bottom_up", "fpn", "rpn", "box_head", "box_predictor"]'), "branch only")),
    ("polar_scratch", Variant(DEMO, ("MODEL.POLAR.INJECT", "both"), "everything, from scratch", pretrained=False)),
    ("polar_rpn", Variant(DEMO, ("MODEL.POLAR.INJECT", "rpn"),
                          "everything, from scratch, the branch feeding the RPN only (the library's default INJECT)",
                          pretrained=False)),
    ("polar_adversary", Variant(DEMO, ("MODEL.POLAR.INJECT", "both", "MODEL.POLAR.VIDEO_ADVERSARY.WEIGHT", "0.1"),
                                "everything, from scratch, with a video-id classifier on the branch behind a "
                                "gradient reversal of 0.1", pretrained=False)),
    ("polar_small", Variant(DEMO, ("MODEL.POLAR.INJECT", "both", "MODEL.POLAR.NUM_STAGES", "1",
                                   "MODEL.POLAR.PRE_KERNEL_SIZE", "1"),
                            "everything, from scratch, with the smallest branch (one 1x1 conv to the FPN width)",
                            pretrained=False)),
    ("polar_decay", Variant(DEMO, ("MODEL.POLAR.INJECT", "both", "MODEL.POLAR.WEIGHT_DECAY", "0.01"),
                            "everything, from scratch; weight decay 0.01 on the branch (100x the others)",
                            pretrained=False)),
    ("polar_decay_strong", Variant(DEMO, ("MODEL.POLAR.INJECT", "both", "MODEL.POLAR.WEIGHT_DECAY", "0.1"),
                                   "everything, from scratch; weight decay 0.1 on the branch (1000x the others)",
                                   pretrained=False)),
    ("polar_lr_low", Variant(DEMO, ("MODEL.POLAR.INJECT", "both", "MODEL.POLAR.LR_FACTOR", "0.1"),
                             "everything, from scratch; the branch at 0.1x the learning rate", pretrained=False)),
    ("polar_lr_1x", Variant(DEMO, ("MODEL.POLAR.INJECT", "both", "MODEL.POLAR.LR_FACTOR", "1.0"),
                            "everything, from scratch; the branch at the learning rate of the rest", pretrained=False)),
    ("polar_lr_zero", Variant(DEMO, ("MODEL.POLAR.INJECT", "both", "MODEL.POLAR.LR_FACTOR", "0.0"),
                              "everything, from scratch; the branch never learns (LR 0: its zero last conv stays zero, "
                              "the control for what the branch's learning costs)", pretrained=False)),
    ("polar_lr_mid", Variant(DEMO, ("MODEL.POLAR.INJECT", "both", "MODEL.POLAR.LR_FACTOR", "0.3"),
                             "everything, from scratch; the branch at 0.3x the learning rate", pretrained=False)),
    ("polar_lr_low_decay", Variant(DEMO, ("MODEL.POLAR.INJECT", "both", "MODEL.POLAR.LR_FACTOR", "0.1",
                                          "MODEL.POLAR.WEIGHT_DECAY", "0.01"),
                                   "everything, from scratch; the branch at 0.1x the learning rate with weight decay "
                                   "0.01", pretrained=False)),
    ("polar_dropout_light", Variant(DEMO, ("MODEL.POLAR.INJECT", "both", "MODEL.POLAR.MODALITY_DROPOUT", "0.2"),
                                    "everything, from scratch; a fifth of the training inputs without their stack",
                                    pretrained=False)),
    ("polar_dropout", Variant(DEMO, ("MODEL.POLAR.INJECT", "both", "MODEL.POLAR.MODALITY_DROPOUT", "0.5"),
                              "everything, from scratch; half the training inputs without their stack",
                              pretrained=False)),
    ("polar_full", Variant(DEMO, ("MODEL.POLAR.INJECT", "both", "INPUT.STACK.RESOLUTION", "full"),
                           "everything, from scratch, the stack delivered at full resolution (the model pools it, "
                           "after DERIVED)", pretrained=False)),
    ("rgb_scratch", Variant(RGB, (), "everything, from scratch", pretrained=False)),
    ("demo_scratch", Variant(DEMO, (), "everything, from scratch (the demo config's own branch)", pretrained=False,
                             library_branch=False)),
    ("demo_random_init", Variant(DEMO, ("MODEL.POLAR.ZERO_INIT", "False", "MODEL.POLAR.CLOSED_GATE", "False",
                                        "MODEL.POLAR.LR_FACTOR", "1.0"),
                                 "everything, from scratch (the demo config's branch before issue 17: last conv "
                                 "random, no gate, the branch at the learning rate of the rest)", pretrained=False,
                                 library_branch=False)),
    ("demo_zero_init", Variant(DEMO, ("MODEL.POLAR.ZERO_INIT", "True", "MODEL.POLAR.CLOSED_GATE", "False",
                                      "MODEL.POLAR.LR_FACTOR", "1.0"),
                               "everything, from scratch (the demo config's branch, last conv at zero, no gate, at "
                               "the learning rate of the rest)",
                               pretrained=False, library_branch=False)),
    ("demo_closed_gate", Variant(DEMO, ("MODEL.POLAR.ZERO_INIT", "False", "MODEL.POLAR.CLOSED_GATE", "True",
                                        "MODEL.POLAR.LR_FACTOR", "1.0"),
                                 "everything, from scratch (the demo config's branch, last conv random, behind "
                                 "per-level gates that start closed)", pretrained=False, library_branch=False)),
    ("demo_lr_low", Variant(DEMO, ("MODEL.POLAR.ZERO_INIT", "False", "MODEL.POLAR.CLOSED_GATE", "False",
                                   "MODEL.POLAR.LR_FACTOR", "0.1"),
                            "everything, from scratch (the demo config's branch before issue 17, at 0.1x the "
                            "learning rate)", pretrained=False, library_branch=False)),
    ("demo_zero_lr_low", Variant(DEMO, ("MODEL.POLAR.ZERO_INIT", "True", "MODEL.POLAR.CLOSED_GATE", "False",
                                        "MODEL.POLAR.LR_FACTOR", "0.1"),
                                 "everything, from scratch (the demo config's branch, last conv at zero, at 0.1x the "
                                 "learning rate)", pretrained=False, library_branch=False)),
    ("demo_dropout", Variant(DEMO, ("MODEL.POLAR.ZERO_INIT", "False", "MODEL.POLAR.CLOSED_GATE", "False",
                                    "MODEL.POLAR.MODALITY_DROPOUT", "0.5", "MODEL.POLAR.LR_FACTOR", "1.0"),
                             "everything, from scratch (the demo config's branch before issue 17; half the training "
                             "inputs without their stack)", pretrained=False, library_branch=False)),
    ("mask_rgb_only", Variant(MASK_RGB, tuple(BACKBONE_FROZEN), "RPN, box head, box predictor, mask head")),
    ("mask_branch_both", Variant(MASK_DEMO, ("MODEL.POLAR.INJECT", "both", *BRANCH),
                                 "branch, RPN, box head, box predictor, mask head")),
])
DEFAULT_VARIANTS = ["rgb_only", "rgb_last_layer", "early_fusion", "branch_rpn", "branch_roi", "branch_both"]
# name -> prepare_polar_synth --signal. "rgb": objects in class colours in RGB, the stack's polarization is
# background only; "unpaired": the "rgb" images, each with the stack of a frame of another video (a real
# stack of the same statistics that carries nothing about the image)
DATASETS = OrderedDict([("stack", "stack"), ("control", "none"), ("rgb", "rgb"), ("unpaired", "rgb"),
                        ("partial", "stack")])
# dataset -> extra prepare_polar_synth options; "partial": objects visible in RGB (an object/background
# contrast of +-30 % whatever the class), the class told by the stack only
DATASET_OPTIONS = {"partial": ("--rgb-contrast", "0.3")}
UNPAIRED = {"unpaired": "rgb"}  # dataset -> the dataset whose images and stacks it pairs anew
# dataset -> (pool, tools/split_dataset.py --group-by): its train and val splits are drawn from one
# generated pool of videos (train + val videos), by frame ("image": frames of a video on both sides)
# or by video; the pool -> its prepare_polar_synth --signal and extra options
SPLIT_FROM = {"trap_frames": ("trap", "image"), "trap_videos": ("trap", "video")}
POOLS = {"trap": ("stack", ("--video-trap", "0.3"))}
DATASETS.update((name, POOLS[pool][0]) for name, (pool, _) in SPLIT_FROM.items())
PRETRAIN_SIGNAL = "rgb"
PRETRAIN_DATA_SEED = 100  # other scenes than the finetuning data
STACK_CHANNELS, DERIVED_CHANNELS = 24, 18  # 6 bands x 4 angles -> dolp_aolp_trig


#: --preset NAME: options put before the command line's (which override them)
PRESETS = {
    # the demo config and the library default from scratch against RGB only, where the stack is informative
    # and where it carries nothing; its own section of the report. 600 iterations: at 300, RGB only
    # itself failed to take off on one seed of three (docs/RESULTS.md); 24 validation videos (384 frames, ~740
    # objects): on 3 (48 frames, 5 objects tracked through their videos) AP75 moved in steps of whole tracks;
    # the *_dropout variants: modality dropout as a remedy (it costs the informative stack, docs/RESULTS.md)
    "scratch": ["--variants", "rgb_scratch", "demo_random_init", "polar_scratch", "demo_dropout", "polar_dropout",
                "--datasets", "stack", "unpaired", "--iters", "600", "--val-videos", "24", "--section", "scratch",
                "--jobs", "2"],
    # does the branch ever hurt? the three regimes side by side: class in the stack only, objects visible in RGB
    # with the class in the stack, and a stack that carries nothing (shares its runs with "scratch")
    "regimes": ["--variants", "rgb_scratch", "demo_random_init", "polar_scratch", "--datasets", "stack", "partial",
                "unpaired", "--iters", "600", "--val-videos", "24", "--section", "regimes", "--jobs", "2"],
    # weight decay on the branch as a remedy for the uninformative stack's AP75 cost, against the informative
    # stack's gain (shares its runs with "regimes")
    "decay": ["--variants", "rgb_scratch", "demo_random_init", "polar_scratch", "polar_decay", "polar_decay_strong",
              "--datasets", "stack", "unpaired", "--iters", "600", "--val-videos", "24", "--section", "decay",
              "--jobs", "2"],
    # the regimes without flips: the synthetic plastic and metal are mirror images in AoLP, so a flip swaps them
    # (docs/RESULTS.md, "Flips and the synthetic classes"); the same runs otherwise
    "regimes_noflip": ["--variants", "rgb_scratch", "demo_random_init", "polar_scratch", "--datasets", "stack",
                       "partial", "unpaired", "--iters", "600", "--val-videos", "24", "--section", "regimes_noflip",
                       "--opts", "INPUT.RANDOM_FLIP", "none", "--jobs", "2"],
    # the stack on the branch's grid (INPUT.STACK.RESOLUTION "branch", the default) against full resolution
    # (the model pools it), where the stack is informative and where it carries nothing (shares its runs
    # with "regimes")
    "grid": ["--variants", "rgb_scratch", "polar_scratch", "polar_full", "--datasets", "stack", "unpaired",
             "--iters", "600", "--val-videos", "24", "--section", "grid", "--jobs", "2"],
    # remedies for the uninformative stack's cost against the informative stack's gain, every variant on one
    # machine: the branch at 0.1x the learning rate (library default and demo config), weight decay 0.01 on it,
    # modality dropout 0.2 (shares its runs with "regimes" and "decay")
    "remedies": ["--variants", "rgb_scratch", "demo_random_init", "polar_scratch", "polar_lr_low", "polar_decay",
                 "polar_dropout_light", "demo_lr_low", "--datasets", "stack", "unpaired", "--iters", "600",
                 "--val-videos", "24", "--section", "remedies", "--jobs", "2"],
    # the zero-started branch at a lower learning rate for the demo config (its own branch shape) and at 0.3x for
    # the library default, against the informative stack's gain (shares its runs with "remedies")
    "lr": ["--variants", "rgb_scratch", "polar_lr_1x", "polar_lr_low", "polar_lr_mid", "demo_random_init",
           "demo_zero_lr_low", "--datasets", "stack", "unpaired", "--iters", "600", "--val-videos", "24",
           "--section", "lr", "--jobs", "2"],
    # the same question finetuning from the pretrained RGB detector (ResNet + FPN frozen), as `make evidence` does
    "lr_finetune": ["--variants", "rgb_only", "branch_both_lr_1x", "branch_both_lr_low", "--datasets", "stack",
                    "unpaired", "--val-videos", "24", "--section", "lr_finetune", "--jobs", "2"],
    # the notes' video leakage: the same models on a frame split and a video split of one trap pool, and
    # the two remedies against it (the adversary, a smaller branch); 300 iterations keep it near 40 min
    "leakage": ["--variants", "rgb_scratch", "polar_scratch", "polar_adversary", "polar_small", "--datasets",
                "trap_frames", "trap_videos", "--iters", "300", "--section", "leakage", "--jobs", "2"],
    # Mask R-CNN with and without the stack, finetuned from the RGB detector (the mask head from its
    # random start): box and mask AP
    "masks": ["--variants", "mask_rgb_only", "mask_branch_both", "--datasets", "stack", "control",
              "--section", "masks", "--jobs", "2"],
}
SECTION_TITLES = {"main": "Results: does the stack help?",
                  "scratch": "From scratch: does the branch cost accuracy when the stack carries nothing?",
                  "masks": "Mask R-CNN: box and mask AP with and without the stack",
                  "leakage": "Video leakage: frame split against video split, and two remedies",
                  "regimes": "Does the branch ever hurt? Informative, partial and uninformative stacks",
                  "regimes_noflip": "The three regimes without flips (the synthetic classes as they are)",
                  "grid": "The stack on the branch's grid against full resolution",
                  "remedies": "Remedies for an uninformative stack, against the informative stack's gain",
                  "lr": "The branch's learning rate: the library default and the demo config, both regimes",
                  "lr_finetune": "The branch's learning rate when finetuning from the RGB detector, both regimes",
                  "decay": "Weight decay on the branch: the uninformative stack's AP75 against the informative gain"}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    preset = argparse.ArgumentParser(add_help=False)
    preset.add_argument("--preset", choices=list(PRESETS))
    known, _ = preset.parse_known_args(argv)
    if known.preset:
        argv = PRESETS[known.preset] + argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=list(PRESETS), help="a named plan: " + "; ".join(
        f"{k} = {' '.join(v)}" for k, v in PRESETS.items()) + " (options given after it override it)")
    p.add_argument("--section", default="main", metavar="NAME",
                   help="the report's section in --results; the file's other sections are kept (default: %(default)s)")
    p.add_argument("--output", default="output/evidence", metavar="DIR",
                   help="data, runs and logs (default: %(default)s)")
    p.add_argument("--results", default="docs/RESULTS.md", metavar="FILE", help="the report (default: %(default)s)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], metavar="S",
                   help="SEED of the finetuning runs (default: %(default)s)")
    p.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS), metavar="NAME",
                   help=f"of {', '.join(VARIANTS)} (default: %(default)s)")
    p.add_argument("--datasets", nargs="+", default=["stack", "control"], choices=list(DATASETS), metavar="NAME",
                   help="of " + ", ".join(DATASETS) + " (default: %(default)s)")
    p.add_argument("--scale", type=float, default=1.0, metavar="K",
                   help="multiply videos and iterations by K (default: %(default)s)")
    p.add_argument("--iters", type=int, default=150, help="finetuning iterations per run (default: %(default)s)")
    p.add_argument("--pretrain-iters", type=int, default=400,
                   help="iterations of the RGB pretraining (default: %(default)s)")
    p.add_argument("--lr", type=float, default=0.02,
                   help="SOLVER.BASE_LR (pretraining and finetuning) (default: %(default)s)")
    p.add_argument("--batch", type=int, default=4, help="SOLVER.IMS_PER_BATCH (default: %(default)s)")
    p.add_argument("--size", type=int, default=128, metavar="PX", help="image size (square) (default: %(default)s)")
    p.add_argument("--train-videos", type=int, default=8,
                   help="training videos per dataset (x --scale) (default: %(default)s)")
    p.add_argument("--val-videos", type=int, default=3,
                   help="validation videos per dataset (x --scale) (default: %(default)s)")
    p.add_argument("--frames-per-video", type=int, default=16, help="frames of each video (default: %(default)s)")
    p.add_argument("--fpn-channels", type=int, default=64,
                   help="MODEL.FPN.OUT_CHANNELS (a multiple of 32) (default: %(default)s)")
    p.add_argument("--fc-dim", type=int, default=128, help="MODEL.ROI_BOX_HEAD.FC_DIM (default: %(default)s)")
    p.add_argument("--workers", type=int, default=0, help="DATALOADER.NUM_WORKERS")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (0: torch's default). 1 by default: on a 2-core machine that other jobs "
                        "share, 2 threads measured 3-10x slower per iteration than 1")
    p.add_argument("--jobs", type=int, default=1,
                   help="training runs at a time, each in a process of its own with --threads threads (1: in this "
                        "process); the pretraining runs alone first (default: %(default)s)")
    p.add_argument("--device", default="", help="MODEL.DEVICE (default: cuda if torch sees a GPU, else cpu)")
    p.add_argument("--verbose", action="store_true", help="training logs on the console too (always in <output>/log.txt)")
    p.add_argument("--polar-opts", nargs="+", default=[], metavar="KEY VALUE",
                   help="config overrides for the runs of the polar-branch variants (branch design ablations, "
                        "e.g. MODEL.POLAR.POST_KERNEL_SIZE 1); use another --output and --results")
    p.add_argument("--opts", nargs="+", default=[], metavar="KEY VALUE",
                   help="config overrides for every run, the pretraining included, after its own options (e.g. "
                        "INPUT.RANDOM_FLIP none); use another --output and --results or --section")
    args = p.parse_args(argv)
    if args.scale <= 0 or min(args.iters, args.pretrain_iters, args.batch, args.size, args.train_videos,
                              args.val_videos, args.frames_per_video) < 1:
        p.error("--scale > 0 and positive sizes, iterations and counts required")
    if args.fpn_channels % 32:
        p.error("--fpn-channels must be a multiple of 32 (GroupNorm with 32 groups)")
    if args.threads < 0 or args.workers < 0 or args.jobs < 1:
        p.error("--threads and --workers must be >= 0, --jobs >= 1")
    if len(args.polar_opts) % 2 or len(args.opts) % 2:
        p.error("--polar-opts and --opts take KEY VALUE pairs")
    if not args.section.replace("_", "").isalnum():
        p.error("--section takes letters, digits and _")
    if not args.device:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    return args


class Evidence:
    """The plan and its state: paths, common opts, results of finished runs."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.out = os.path.abspath(args.output)
        self.k = args.scale
        self.iters = max(1, round(args.iters * self.k))
        self.pretrain_iters = max(1, round(args.pretrain_iters * self.k))
        self.train_videos = max(1, round(args.train_videos * self.k))
        self.val_videos = max(1, round(args.val_videos * self.k))
        self.timings: Dict[str, float] = OrderedDict()
        self.commands: List[str] = []
        self.stack_stats: Dict[str, Tuple[List[float], List[float]]] = {}
        self.results: Dict[Tuple[str, str], Dict[int, Dict[str, float]]] = {}
        self.reused = 0  # runs taken from an earlier invocation
        self.run_seconds: Dict[Tuple[str, str, int], float] = {}
        self.pretrain_results: Dict[str, float] = {}

    # ------------------------------------------------------------------------------ data
    def data_dir(self, name: str) -> str:
        return os.path.join(self.out, "data", name)

    def dataset_entries(self, name: str) -> List[List[str]]:
        if name in SPLIT_FROM:  # split JSONs of the pool's one generated split
            pool = os.path.join(self.data_dir(SPLIT_FROM[name][0]), "train")
            return [[f"evidence_{name}_{split}", os.path.join(self.data_dir(name), f"train_{split}.json"),
                     os.path.join(pool, "images"), os.path.join(pool, "stacks")] for split in ("train", "val")]
        root, files = self.data_dir(name), self.data_dir(UNPAIRED.get(name, name))
        return [[f"evidence_{name}_{split}", os.path.join(root, f"{split}.json"), os.path.join(files, split, "images"),
                 os.path.join(files, split, "stacks")] for split in ("train", "val")]

    def write_unpaired(self, name: str) -> None:
        """``name``'s JSONs: its source's images in (video, frame) order, image i with the stack of
        image i + N/2 (another video's frame whenever the split has two videos or more)."""
        from polar_rcnn.utils.atomic import atomic_write_text

        source, out = self.data_dir(UNPAIRED[name]), self.data_dir(name)
        os.makedirs(out, exist_ok=True)
        for split in ("train", "val"):
            with open(os.path.join(source, f"{split}.json")) as f:
                data = json.load(f)
            images = sorted(data["images"], key=lambda im: (im.get("video_id", 0), im.get("frame_id", 0), im["id"]))
            stacks = [im["stack_file"] for im in images]
            shift = len(images) // 2
            for i, im in enumerate(images):
                im["stack_file"] = stacks[(i + shift) % len(images)]
            atomic_write_text(os.path.join(out, f"{split}.json"), json.dumps(data))
        atomic_write_text(os.path.join(out, "generator.json"), json.dumps(
            {"source": self.data_fingerprint(UNPAIRED[name]), "pairing": "stack of image i + N/2"}))

    def split_from_pool(self, name: str) -> None:
        """``name``'s train / val JSONs: tools/split_dataset.py over its pool, as a user runs it,
        with the pool's train : val video ratio."""
        pool, group_by = SPLIT_FROM[name]
        argv = [os.path.join(self.data_dir(pool), "train.json"), "--image-root",
                os.path.join(self.data_dir(pool), "train", "images"), "--group-by", group_by, "--seed", "0",
                "--split", f"train={self.train_videos}", "--split", f"val={self.val_videos}",
                "--output-dir", self.data_dir(name), "--force", "--no-progress"]
        self.commands.append(" ".join(["python tools/split_dataset.py"] + [os.path.relpath(x, REPO) if os.path.isabs(x)
                                                                           else x for x in argv]))
        run = subprocess.run([sys.executable, os.path.join(REPO, "tools", "split_dataset.py")] + argv, cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        sys.stderr.write(run.stdout)
        if run.returncode != 0:
            raise RuntimeError(f"tools/split_dataset.py {' '.join(argv)} failed")
        from polar_rcnn.utils.atomic import atomic_write_text

        atomic_write_text(os.path.join(self.data_dir(name), "generator.json"), json.dumps(
            {"source": self.data_fingerprint(pool), "group_by": group_by,
             "videos": [self.train_videos, self.val_videos]}))

    def prepare_data(self) -> None:
        a = self.args
        prepare = [sys.executable, os.path.join(REPO, "datasets", "prepare_polar_synth.py")]
        lo, hi = max(6, round(a.size * 24 / 256)), max(8, round(a.size * 80 / 256))
        generated = [d for d in a.datasets if d not in UNPAIRED and d not in SPLIT_FROM]
        generated += [UNPAIRED[d] for d in a.datasets if d in UNPAIRED and UNPAIRED[d] not in generated]
        pools = list(dict.fromkeys(SPLIT_FROM[d][0] for d in a.datasets if d in SPLIT_FROM))
        pretrain = [("pretrain", PRETRAIN_SIGNAL, PRETRAIN_DATA_SEED)] if any(VARIANTS[v].pretrained
                                                                              for v in a.variants) else []
        for name, signal, seed in pretrain + [(d, DATASETS[d], 0) for d in generated] + [
                (p, POOLS[p][0], 0) for p in pools]:
            videos = (["--train-videos", str(self.train_videos + self.val_videos), "--val-videos", "0"]
                      if name in POOLS else
                      ["--train-videos", str(self.train_videos), "--val-videos", str(self.val_videos)])
            argv = ["--output", self.data_dir(name), *videos, "--frames-per-video", str(a.frames_per_video),
                    "--size", str(a.size), "--signal", signal, "--seed", str(seed), "--object-size", str(lo), str(hi),
                    *(POOLS[name][1] if name in POOLS else DATASET_OPTIONS.get(name, ()))]
            self.commands.append(" ".join(["python datasets/prepare_polar_synth.py"] + argv))
            # the script as a user runs it; its printout goes to stderr (stdout is the report's)
            run = subprocess.run(prepare + argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            sys.stderr.write(run.stdout)
            if run.returncode != 0:
                raise RuntimeError(f"datasets/prepare_polar_synth.py {' '.join(argv)} failed")
        for name in a.datasets:
            if name in SPLIT_FROM:
                self.split_from_pool(name)
            if name in UNPAIRED:
                self.write_unpaired(name)
                self.commands.append(f"# {name}: the {UNPAIRED[name]} images, image i of each split (in video, frame "
                                     "order) with the stack of image i + N/2 (Evidence.write_unpaired)")

    def compute_stack_stats(self) -> None:
        import numpy as np
        from detectron2.data import DatasetCatalog
        from polar_rcnn.data.stack_statistics import compute_stack_stats

        for name in self.args.datasets:
            cfg = setup_cfg(os.path.join(CONFIGS, DEMO), ["DATASETS.POLAR_COCO", json.dumps(self.dataset_entries(name))])
            records = DatasetCatalog.get(f"evidence_{name}_train")
            stats = compute_stack_stats(records, cfg, progress=False)
            std = np.where(stats.std < 1e-6, 1.0, stats.std)
            self.stack_stats[name] = ([round(float(v), 4) for v in stats.mean], [round(float(v), 4) for v in std])
            self.commands.append(self.shell(["python", "tools/stack_stats.py", "--config-file", f"configs/{DEMO}",
                                             "--dataset", f"evidence_{name}_train", "DATASETS.POLAR_COCO",
                                             json.dumps(self.dataset_entries(name))]))

    # ------------------------------------------------------------------------------ runs
    def common_opts(self) -> List[str]:
        """Options of every run: model widths, input size, solver."""
        a = self.args
        return [
            "MODEL.DEVICE", a.device,
            "MODEL.FPN.OUT_CHANNELS", str(a.fpn_channels),
            "MODEL.ROI_BOX_HEAD.FC_DIM", str(a.fc_dim),
            "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "1000", "MODEL.RPN.PRE_NMS_TOPK_TEST", "500",
            "MODEL.RPN.POST_NMS_TOPK_TRAIN", "256", "MODEL.RPN.POST_NMS_TOPK_TEST", "128",
            "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64",
            "INPUT.MIN_SIZE_TRAIN", f"({a.size},)", "INPUT.MAX_SIZE_TRAIN", str(a.size),
            "INPUT.MIN_SIZE_TEST", str(a.size), "INPUT.MAX_SIZE_TEST", str(a.size),
            "INPUT.STACK.CHANNELS", str(STACK_CHANNELS), "MODEL.POLAR.IN_CHANNELS", str(DERIVED_CHANNELS),
            "SOLVER.IMS_PER_BATCH", str(a.batch), "SOLVER.BASE_LR", repr(a.lr),
            "SOLVER.LR_SCHEDULER_NAME", "WarmupCosineLR", "SOLVER.STEPS", "()",
            "SOLVER.CHECKPOINT_PERIOD", "100000000", "TEST.EVAL_PERIOD", "0",
            "DATALOADER.NUM_WORKERS", str(a.workers),
        ]

    def dataset_opts(self, dataset: str) -> List[str]:
        """Options naming a dataset (and, for stack datasets, its stack statistics)."""
        entries = self.dataset_entries(dataset)
        opts = ["DATASETS.POLAR_COCO", json.dumps(entries),
                "DATASETS.TRAIN", f"('{entries[0][0]}',)", "DATASETS.TEST", f"('{entries[1][0]}',)"]
        if dataset in self.stack_stats:
            mean, std = self.stack_stats[dataset]
            opts += ["MODEL.POLAR.STACK_MEAN", repr(mean), "MODEL.POLAR.STACK_STD", repr(std)]
        return opts

    def pretrain_dir(self) -> str:
        return os.path.join(self.out, "runs", "pretrain")

    def pretrain_opts(self) -> Tuple[str, List[str]]:
        opts = self.common_opts() + self.dataset_opts("pretrain") + [
            "MODEL.WEIGHTS", "", "SOLVER.MAX_ITER", str(self.pretrain_iters),
            "SOLVER.WARMUP_ITERS", str(min(100, self.pretrain_iters // 4)), "SEED", "0", *self.args.opts,
            "OUTPUT_DIR", self.pretrain_dir()]
        return RGB, opts

    def finetune_opts(self, variant: str, dataset: str, seed: int) -> Tuple[str, List[str]]:
        return VARIANTS[variant].config, self.common_opts() + self.dataset_opts(dataset) + \
            self.run_opts(variant, dataset, str(seed))

    def run_opts(self, variant: str, dataset: str, seed: str) -> List[str]:
        """The options of one finetuning run after the common and dataset ones."""
        v = VARIANTS[variant]
        return ["MODEL.WEIGHTS", os.path.join(self.pretrain_dir(), "model_final.pth") if v.pretrained else "",
                "SOLVER.MAX_ITER", str(self.iters), "SOLVER.WARMUP_ITERS", str(min(20, self.iters // 4)),
                "SEED", seed, *(default_branch_opts() if v.config in POLAR_CONFIGS and v.library_branch else ()), *v.opts,
                *(self.args.polar_opts if v.config in POLAR_CONFIGS else ()), *self.args.opts,
                "OUTPUT_DIR", os.path.join(self.out, "runs", dataset, variant, f"seed{seed}")]

    def data_fingerprint(self, name: str) -> str:
        """The generator parameters of a dataset (its generator.json), as a digest."""
        with open(os.path.join(self.data_dir(name), "generator.json")) as f:
            return hashlib.sha1(json.dumps(json.load(f), sort_keys=True).encode()).hexdigest()

    def digest(self, text: str) -> str:
        """SHA-1 of ``text`` with the output folder and the repository as placeholders: a finished
        run is reused from a moved output folder or another checkout of the same code."""
        text = text.replace(self.out + os.sep, "<output>/").replace(REPO + os.sep, "<repo>/")
        return hashlib.sha1(text.encode()).hexdigest()

    def run(self, config: str, opts: List[str], label: str, depends: Dict[str, str]) -> Tuple[Dict[str, float], float]:
        """Train + evaluate, or reuse a finished run with the same config, opts and ``depends`` (digests
        of its data and of the pretraining it starts from): (bbox metrics, seconds)."""
        return self.run_all([(config, opts, label, depends)])[0]

    def run_all(self, runs: Sequence[Tuple[str, List[str], str, Dict[str, str]]]) -> List[Tuple[Dict[str, float], float]]:
        """:meth:`run` for each ``(config, opts, label, depends)``; the runs not done before train in
        ``--jobs`` processes at a time (in this process with 1)."""
        results: List[Optional[Tuple[Dict[str, float], float]]] = [None] * len(runs)
        pending = []
        for i, (config, opts, label, depends) in enumerate(runs):
            cfg = setup_cfg(os.path.join(CONFIGS, config), opts)
            # the resolved config too: a changed default (e.g. in polar_rcnn/config.py) re-runs
            full = {**depends, "config": self.digest(cfg.dump())}
            done_file = os.path.join(cfg.OUTPUT_DIR, "evidence_run.json")
            if os.path.isfile(done_file):
                with open(done_file) as f:
                    done = json.load(f)
                # same config file and the same resolved config (in depends), however the options spell it
                if done.get("config") == config and done.get("depends") == full:
                    print(f"{label}: done before (AP {done['bbox'].get('AP', float('nan')):.1f}), reused", flush=True)
                    self.reused += 1
                    results[i] = done["bbox"], done["seconds"]
                    continue
            pending.append((i, config, opts, label, full, done_file))
        log_file = os.path.join(self.out, "log.txt")
        jobs = min(self.args.jobs, len(pending))

        def finish(item, bbox: Dict[str, float], seconds: float) -> None:
            i, config, opts, label, full, done_file = item
            with open(done_file, "w") as f:
                json.dump({"config": config, "opts": opts, "depends": full, "bbox": bbox, "seconds": seconds}, f,
                          indent=1)
            print(f"{label}: AP {bbox.get('AP', float('nan')):.1f}  AP50 {bbox.get('AP50', float('nan')):.1f}  "
                  f"({seconds:.0f} s)", flush=True)
            results[i] = bbox, seconds

        if jobs <= 1:
            for item in pending:
                finish(item, *train_run(item[1], item[2], log_file, self.args.verbose))
        else:
            context = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker,
                                                        initargs=(log_file, self.args.threads)) as pool:
                futures = {pool.submit(train_run, item[1], item[2], log_file, False): item for item in pending}
                for future in concurrent.futures.as_completed(futures):
                    finish(futures[future], *future.result())
        return results

    @staticmethod
    def shell(words: Sequence[str]) -> str:
        return " ".join(x if x.startswith('"$') else f'"{x}"' if "$SEED" in x else shlex.quote(x) for x in words)

    def command(self, config: str, opts: Sequence[str]) -> str:
        return self.shell(["python", "train_net.py", "--config-file", f"configs/{config}", *opts])

    def execute(self) -> None:
        a = self.args
        start = time.perf_counter()
        self.prepare_data()
        self.timings["data"] = time.perf_counter() - start
        start = time.perf_counter()
        self.compute_stack_stats()
        self.timings["stack statistics"] = time.perf_counter() - start

        start = time.perf_counter()
        self.commands.append("COMMON=(" + self.shell(self.common_opts()) + ")")
        pretrain = ""
        if any(VARIANTS[v].pretrained for v in a.variants):
            config, opts = self.pretrain_opts()
            self.commands.append(self.command(config, ['"${COMMON[@]}"'] + opts[len(self.common_opts()):]))
            depends = {"data": self.data_fingerprint("pretrain")}
            self.pretrain_results, _ = self.run(config, opts, "pretrain (RGB, objects visible in RGB)", depends)
            pretrain = self.digest(json.dumps([config, opts, depends]))
        self.timings["pretrain"] = time.perf_counter() - start

        start = time.perf_counter()
        total = len(a.datasets) * len(a.seeds) * len(a.variants)
        n = 0
        planned = []
        for dataset in a.datasets:
            self.commands.append(f"{dataset.upper()}=(" + self.shell(self.dataset_opts(dataset)) + ")")
            self.commands.append(f"for SEED in {' '.join(map(str, a.seeds))}; do")
            for variant in a.variants:
                self.commands.append("  " + self.command(VARIANTS[variant].config, [
                    '"${COMMON[@]}"', f'"${{{dataset.upper()}[@]}}"', *self.run_opts(variant, dataset, "$SEED")]))
            self.commands.append("done")
            for seed in a.seeds:
                for variant in a.variants:
                    n += 1
                    config, opts = self.finetune_opts(variant, dataset, seed)
                    depends = {"data": self.data_fingerprint(dataset),
                               "pretrain": pretrain if VARIANTS[variant].pretrained else ""}
                    planned.append(((variant, dataset, seed), (config, opts, f"[{n}/{total}] {dataset} {variant} seed {seed}",
                                                               depends)))
        for (key, _), (bbox, seconds) in zip(planned, self.run_all([run for _, run in planned])):
            variant, dataset, seed = key
            self.results.setdefault((variant, dataset), {})[seed] = bbox
            self.run_seconds[key] = seconds
        self.timings["finetune runs"] = time.perf_counter() - start


def train_run(config: str, opts: Sequence[str], log_file: str, verbose: bool) -> Tuple[Dict[str, float], float]:
    """One training + evaluation run (in this process or a ``--jobs`` worker): (metrics, seconds). The
    metrics are the bbox ones, plus the mask ones as ``"segm/AP"``, ... for Mask R-CNN."""
    from polar_rcnn.engine.runs import train_and_evaluate

    cfg = setup_cfg(os.path.join(CONFIGS, config), list(opts))
    start = time.perf_counter()
    with open(log_file, "a") as log, contextlib.redirect_stdout(sys.stdout if verbose else log):
        results = train_and_evaluate(cfg)  # pycocotools prints its summary to stdout
    metrics = {k: float(v) for k, v in results.get("bbox", {}).items()}
    metrics.update({f"{SEGM}{k}": float(v) for k, v in results.get("segm", {}).items()})
    return metrics, time.perf_counter() - start


def _init_worker(log_file: str, threads: int) -> None:
    """A ``--jobs`` worker process: the main process's logging and thread count."""
    _setup_logging(log_file, verbose=False)
    if threads:
        import torch

        torch.set_num_threads(threads)


def _setup_logging(log_file: str, verbose: bool) -> None:
    from detectron2.utils.logger import setup_logger

    for name, abbrev in (("polar_rcnn", "polar"), ("detectron2", "d2"), ("fvcore", None)):
        setup_logger(log_file, name=name, abbrev_name=abbrev)
    if not verbose:
        # fvcore warns about every new branch parameter that the RGB checkpoint lacks: expected here
        _quiet_console({"polar_rcnn": logging.WARNING, "detectron2": logging.WARNING, "fvcore": logging.ERROR})


# ---------------------------------------------------------------------------------- report
def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    import detectron2
    import torch

    text = (f"{platform.platform()}, {cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), detectron2 {detectron2.__version__}, Python {platform.python_version()}")
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name(0)}"
    return text


DATASET_TEXT = {
    "stack": "objects camouflaged in RGB, class signature in the stack (`--signal stack`)",
    "control": "camouflaged and no signal in the stack (`--signal none`)",
    "rgb": "objects in class colours in RGB, background-only polarization in the stack (`--signal rgb`)",
    "unpaired": "the `rgb` images, each with the stack of a frame of another video (image i of a split, in video "
                "and frame order, with the stack of image i + N/2): a real stack with the data's statistics that "
                "carries nothing about the image",
    "partial": "objects visible in RGB by a +-30 % contrast to their background whatever their class, the "
               "class told by the stack only (`--signal stack --rgb-contrast 0.3`)",
    "trap_frames": "objects camouflaged in RGB, class signature in the stack, and the video-leakage trap "
                   "(`--video-trap 0.3`: one class per video and a per-video background DoLP grating), train and "
                   "val drawn frame by frame from one pool of videos (`tools/split_dataset.py --group-by image`): "
                   "frames of every video on both sides",
    "trap_videos": "the same pool split by video (`tools/split_dataset.py --group-by video`): validation videos "
                   "never seen in training",
}


def reference_variant(variants: Sequence[str]) -> Optional[str]:
    """The RGB-only variant the others are compared with: rgb_only, else rgb_scratch, else mask_rgb_only."""
    return next((v for v in ("rgb_only", "rgb_scratch", "mask_rgb_only") if v in variants), None)


def segm_results(results: Dict[Tuple[str, str], Dict[int, Dict[str, float]]]) -> Dict[Tuple[str, str], Dict[int, Dict[str, float]]]:
    """The mask metrics of the runs that have them, keyed like ``results`` ({"AP": ...} per seed)."""
    out: Dict[Tuple[str, str], Dict[int, Dict[str, float]]] = {}
    for key, runs in results.items():
        for seed, metrics in runs.items():
            segm = {k[len(SEGM):]: v for k, v in metrics.items() if k.startswith(SEGM)}
            if segm:
                out.setdefault(key, {})[seed] = segm
    return out


def branch_text(polar) -> str:
    return (f"{polar.NUM_STAGES}-stage, hidden {polar.HIDDEN_CHANNELS}, first conv {polar.PRE_KERNEL_SIZE}x"
            f"{polar.PRE_KERNEL_SIZE} at input stride {polar.INPUT_STRIDE}, ZERO_INIT {polar.ZERO_INIT}, "
            f"CLOSED_GATE {polar.CLOSED_GATE}, "
            f"LR_FACTOR {polar.LR_FACTOR:g}, WEIGHT_DECAY {polar.WEIGHT_DECAY:g}, MODALITY_DROPOUT "
            f"{polar.MODALITY_DROPOUT:g}")


def write_report(ev: Evidence, path: str, argv: Sequence[str], wall: float) -> str:
    import numpy as np
    from polar_rcnn.evaluation.report import (METRICS, format_mean_std, markdown_table, paired_differences,
                                              results_table, verdict)
    from polar_rcnn.utils.atomic import atomic_write_text

    a = ev.args
    variants, datasets = list(a.variants), list(a.datasets)
    polar = setup_cfg(os.path.join(CONFIGS, DEMO), default_branch_opts() + list(a.polar_opts)).MODEL.POLAR
    demo = setup_cfg(os.path.join(CONFIGS, DEMO), list(a.polar_opts)).MODEL.POLAR
    pretrained = any(VARIANTS[v].pretrained for v in variants)
    branch_variants = [v for v in variants if v.startswith("branch_") or "_branch_" in v]
    lines = [f"# {SECTION_TITLES.get(a.section, a.section)}", "",
             f"Written by `tools/evidence.py` on {datetime.date.today().isoformat()}. Every number below was "
             "measured by that run; rerun the command at the end to reproduce it.", ""]
    lines += ["## Setup", "",
              f"- Data (`datasets/prepare_polar_synth.py`, {a.size}x{a.size} px, 24-channel stacks = 6 bands x "
              f"0/45/90/135 deg): {ev.train_videos} training and {ev.val_videos} validation videos of "
              f"{a.frames_per_video} frames per dataset. "
              + ("`pretrain`: objects visible in RGB (`--signal rgb`); " if pretrained else "")
              + "; ".join(f"`{d}`: {DATASET_TEXT[d]}" for d in datasets) + ".",
              f"- Model: Faster R-CNN, ResNet-18-FPN with GroupNorm, FPN width {a.fpn_channels}, box head FC "
              f"{a.fc_dim} (`configs/{DEMO}`"
              + (f"; the `mask_*` variants: Mask R-CNN, the same with a GroupNorm mask head, `configs/{MASK_DEMO}`"
                 if any(VARIANTS[v].config in (MASK_DEMO, MASK_RGB) for v in variants) else "") + f"). Library default branch (`add_polar_config`): {branch_text(polar)}."
              + (f" The demo config's own branch (`demo_*` variants, with their options on top): {branch_text(demo)}."
                 if any(not VARIANTS[v].library_branch for v in variants) else "")]
    if pretrained:
        lines.append(
            f"- Pretraining: vanilla RGB Faster R-CNN from scratch on `pretrain`, {ev.pretrain_iters} iterations"
            + (f"; COCO AP on its own validation split {ev.pretrain_results.get('AP', float('nan')):.1f} "
               f"(AP50 {ev.pretrain_results.get('AP50', float('nan')):.1f})." if ev.pretrain_results else "."))
    lines += [f"- Training: " + ("every variant from the pretrained checkpoint (the `*_scratch` ones from nothing), "
                                 if pretrained else "every variant from scratch (no pretrained weights), ")
              + f"{ev.iters} iterations, batch {a.batch}, SGD base LR {a.lr:g} with {min(20, ev.iters // 4)}-iteration "
              f"warmup and cosine decay (`WarmupCosineLR`), seeds {', '.join(map(str, a.seeds))} (`SEED`; data order, "
              "augmentation and initialisation differ per seed, the data" + (" and the pretrained model" if pretrained
                                                                             else "") + " do not)."
              + (f" Every run also: `{' '.join(a.opts)}`." if a.opts else ""),
              "- Stack input: `INPUT.STACK.DERIVED dolp_aolp_trig` (DoLP, cos 2 AoLP, sin 2 AoLP per band, 18 "
              "channels) normalized per channel with the training split's mean and std "
              "(`MODEL.POLAR.STACK_MEAN/STD`, as tools/stack_stats.py computes them, per dataset)."
              + (" The `branch_*` variants run the library default branch, whose last conv starts at zero "
                 "(`MODEL.POLAR.ZERO_INIT True`), so each starts exactly from the pretrained detector."
                 if branch_variants else ""), ""]
    lines += ["| variant | what trains | config |", "| --- | --- | --- |"]
    lines += [f"| {v} | {VARIANTS[v].trains} | `configs/{VARIANTS[v].config}` + "
              f"`{' '.join(VARIANTS[v].opts) or '-'}`"
              + (" + the library default branch" if VARIANTS[v].config in POLAR_CONFIGS and VARIANTS[v].library_branch else "")
              + " |" for v in variants]
    lines += ["", f"## COCO box AP (%), mean ± std over {len(a.seeds)} seed(s)", "",
              results_table(ev.results, variants, datasets)]
    reference = reference_variant(variants)
    if reference and len(variants) > 1:
        lines += [f"## Difference to {reference} (AP and AP50, paired by seed)", "",
                  "'higher'/'lower' only when every seed agrees and the mean difference exceeds its standard "
                  "deviation; otherwise the runs do not tell the variants apart.", ""]
        rows = []
        for v in variants:
            if v == reference:
                continue
            row = [v]
            for d in datasets:
                for metric in ("AP", "AP50"):
                    diffs = paired_differences(ev.results, v, reference, d, metric)
                    row += [format_mean_std(diffs), verdict(diffs)]
            rows.append(row)
        lines.append(markdown_table(["variant"] + [x for d in datasets for m in ("AP", "AP50")
                                                   for x in (f"{d} Δ{m}", f"{d} {m} verdict")], rows))
    segm = segm_results(ev.results)
    mask_variants = [v for v in variants if any((v, d) in segm for d in datasets)]
    if mask_variants:
        lines += [f"## COCO mask AP (%), mean ± std over {len(a.seeds)} seed(s)", "",
                  results_table(segm, mask_variants, datasets)]
        if reference in mask_variants and len(mask_variants) > 1:
            lines += [f"Mask AP minus {reference}'s, paired by seed:", ""]
            lines.append(markdown_table(
                ["variant"] + [x for d in datasets for m in ("AP", "AP50") for x in (f"{d} Δ{m}", f"{d} {m} verdict")],
                [[v] + [x for d in datasets for m in ("AP", "AP50")
                        for diffs in [paired_differences(segm, v, reference, d, m)]
                        for x in (format_mean_std(diffs), verdict(diffs))]
                 for v in mask_variants if v != reference]))
    lines += ["## Machine and time", "", f"- Machine: {machine()}.",
              f"- Wall time of this invocation: {wall / 60:.1f} min; " + ", ".join(f"{k} {v:.0f} s" for k, v in ev.timings.items())
              + (f" ({ev.reused} runs reused from earlier invocations with the same resolved config)" if ev.reused else "")
              + ".", ""]
    if ev.run_seconds:
        per = sorted(ev.run_seconds.values())
        kind = "Finetuning runs" if any(VARIANTS[v].pretrained for v in variants) else "Training runs"
        lines += [f"- {kind}: {len(per)}, {np.median(per):.0f} s median each (training + evaluation"
                  + (f", {a.jobs} runs at a time sharing the CPU" if a.jobs > 1 else "")
                  + f"), {sum(per) / 60:.1f} min together.", ""]
    lines += ["## Commands", "", "The whole evidence (from the repository root):", "", "```bash", ".venv/bin/python "
              + " ".join(shlex.quote(x) for x in ["tools/evidence.py"] + list(argv)), "```", ""]
    if a.preset:
        lines += [f"(`--preset {a.preset}` = `{' '.join(PRESETS[a.preset])}`; options after it override it.)", ""]
    lines += ["What it runs, as a bash script (the training runs are PolarTrainer runs in "
              + ("this process" if a.jobs <= 1 else f"{a.jobs} worker processes") + ", identical to "
              "train_net.py with these options):", "", "```bash"] + ev.commands + ["```", ""]
    run_metrics = list(METRICS) + ([SEGM + m for m in METRICS] if mask_variants else [])
    lines += ["## Every run", "", markdown_table(
        ["dataset", "variant", "seed"] + [m.replace(SEGM, "segm ") for m in run_metrics] + ["seconds"],
        [[d, v, s] + [f"{ev.results[(v, d)][s].get(m, float('nan')):.1f}" for m in run_metrics]
         + [f"{ev.run_seconds[(v, d, s)]:.0f}"] for d in datasets for v in variants for s in a.seeds
         if s in ev.results.get((v, d), {})])]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    old = ""
    if os.path.isfile(path):
        with open(path) as f:
            old = f.read()
    # paths relative to the repository root: the report reads the same on every machine
    section = "\n".join(lines).replace(REPO + os.sep, "")
    atomic_write_text(path, replace_section(old, a.section, section))
    return path


def _markers(name: str) -> Tuple[str, str]:
    return f"<!-- evidence section {name}: written by tools/evidence.py --section {name} -->", \
        f"<!-- end of evidence section {name} -->"


def replace_section(text: str, name: str, body: str) -> str:
    """``text`` with section ``name`` (between its markers) replaced by ``body``, or with ``body``
    appended when it has none. A report without markers (written before sections existed) is
    section "main"."""
    if text.strip() and "<!-- evidence section " not in text:
        begin, end = _markers("main")
        text = f"{begin}\n{text.rstrip()}\n{end}\n"
    begin, end = _markers(name)
    block = f"{begin}\n{body.rstrip()}\n{end}\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        return head + block + rest.split(end, 1)[1]
    return (text.rstrip("\n") + "\n\n" if text.strip() else "") + block


def _quiet_console(levels: Dict[str, int]) -> None:
    for name, level in levels.items():
        for handler in logging.getLogger(name).handlers:
            if type(handler) is logging.StreamHandler:  # not the FileHandler subclass
                handler.setLevel(level)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    import torch
    from polar_rcnn.evaluation.report import results_table

    os.makedirs(args.output, exist_ok=True)
    log_file = os.path.join(args.output, "log.txt")
    _setup_logging(log_file, args.verbose)
    ev = Evidence(args)
    n_runs = len(args.datasets) * len(args.seeds) * len(args.variants)
    pretrain = f" (+ pretraining {ev.pretrain_iters})" if any(VARIANTS[v].pretrained for v in args.variants) else ""
    print(f"Evidence: {n_runs} runs of {ev.iters} iterations{pretrain} on {args.device}, {args.jobs} at a time; "
          f"log: {log_file}", flush=True)
    threads = torch.get_num_threads()
    start = time.perf_counter()
    try:
        torch.set_num_threads(args.threads or threads)
        ev.execute()
        wall = time.perf_counter() - start
        path = write_report(ev, args.results, argv, wall)
    finally:
        torch.set_num_threads(threads)
    with open(os.path.join(args.output, "results.json"), "w") as f:
        json.dump({"results": {f"{v}/{d}": runs for (v, d), runs in ev.results.items()},
                   "pretrain": ev.pretrain_results, "timings": ev.timings, "wall_seconds": wall}, f, indent=1)
    print(f"\n{results_table(ev.results, list(args.variants), list(args.datasets))}")
    print(f"Wrote {path} ({wall / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
