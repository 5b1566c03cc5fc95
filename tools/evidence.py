#!/usr/bin/env python
"""The evidence: does the stack help, and where? One command that generates the data, trains every
variant with the same budget over several seeds and writes docs/RESULTS.md.

    .venv/bin/python tools/evidence.py                       # the default budget (CPU, see README)
    .venv/bin/python tools/evidence.py --seeds 0 1 2 --scale 4 --device cuda
    make evidence

Steps (each skipped when its result exists with the same settings, so an interrupted run resumes):
 1. Data (datasets/prepare_polar_synth.py) under <output>/data:
      pretrain  objects visible in RGB (class colours, --signal rgb): where the "zoo" model learns
      stack     objects camouflaged in RGB, class signature in the polarization stack
      control   camouflaged in RGB and no signal in the stack (--signal none): the same question
                where the stack cannot help
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
    polar_scratch / rgb_scratch (from scratch, no pretraining, everything trained).
 5. docs/RESULTS.md (--results): AP, AP50, AP75 as mean ± std over seeds per variant and dataset,
    the differences to rgb_only per seed, the machine, wall times and the commands.

--scale K multiplies the training and validation videos and all iterations (for a GPU). Runs are
in-process (PolarTrainer), seeded with SEED = the seed, DATALOADER.NUM_WORKERS --workers.
"""
import argparse
import contextlib
import datetime
import hashlib
import importlib.util
import json
import logging
import os
import platform
import shlex
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.utils.logger import setup_logger

from polar_rcnn.config import add_polar_config
from polar_rcnn.data.stack_statistics import compute_stack_stats
from polar_rcnn.engine.runs import train_and_evaluate
from polar_rcnn.evaluation.report import METRICS, format_mean_std, markdown_table, paired_differences, \
    results_table, verdict
from polar_rcnn.utils.cli import HelpFormatter, setup_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "configs")
DEMO = "faster_rcnn_R_18_FPN_demo_polar_synth.yaml"
RGB = "faster_rcnn_R_18_FPN_demo_rgb_only_polar_synth.yaml"
logger = logging.getLogger("polar_rcnn.tools.evidence")

BACKBONE_FROZEN = ["MODEL.FREEZE.PARTS", '["image_bottom_up", "fpn"]']
BRANCH = ["MODEL.POLAR.ZERO_INIT", "True"] + BACKBONE_FROZEN


BRANCH_SHAPE_KEYS = ("NUM_STAGES", "HIDDEN_CHANNELS", "PRE_KERNEL_SIZE", "POST_KERNEL_SIZE", "INPUT_STRIDE")


def default_branch_opts() -> List[str]:
    """The library's default branch shape (``add_polar_config``) as options: the evidence measures
    what a user gets by default, whatever the demo config tunes for its from-scratch run."""
    cfg = get_cfg()
    add_polar_config(cfg)
    return [x for k in BRANCH_SHAPE_KEYS for x in (f"MODEL.POLAR.{k}", str(cfg.MODEL.POLAR[k]))]


@dataclass(frozen=True)
class Variant:
    config: str  # file under configs/
    opts: Tuple[str, ...]  # on top of the common opts
    trains: str  # what trains, for the report
    pretrained: bool = True  # starts from the pretrained RGB detector


VARIANTS: "OrderedDict[str, Variant]" = OrderedDict([
    ("rgb_only", Variant(RGB, tuple(BACKBONE_FROZEN), "RPN, box head, box predictor")),
    ("rgb_last_layer", Variant("faster_rcnn_R_18_FPN_demo_rgb_predictor_only_polar_synth.yaml", (),
                               "box predictor")),
    ("early_fusion", Variant("faster_rcnn_R_18_FPN_demo_early_fusion_polar_synth.yaml",
                             ("MODEL.FREEZE.PARTS", "[]"), "everything (stem stack weights start at 0)")),
    ("branch_rpn", Variant(DEMO, ("MODEL.POLAR.INJECT", "rpn", *BRANCH), "branch, RPN, box head, box predictor")),
    ("branch_roi", Variant(DEMO, ("MODEL.POLAR.INJECT", "roi", *BRANCH), "branch, RPN, box head, box predictor")),
    ("branch_both", Variant(DEMO, ("MODEL.POLAR.INJECT", "both", *BRANCH), "branch, RPN, box head, box predictor")),
    ("branch_only", Variant(DEMO, ("MODEL.POLAR.INJECT", "both", "MODEL.POLAR.ZERO_INIT", "True", "MODEL.FREEZE.PARTS",
                                   '["image_bottom_up", "fpn", "rpn", "box_head", "box_predictor"]'), "branch only")),
    ("polar_scratch", Variant(DEMO, ("MODEL.POLAR.INJECT", "both"), "everything, from scratch", pretrained=False)),
    ("rgb_scratch", Variant(RGB, (), "everything, from scratch", pretrained=False)),
])
DEFAULT_VARIANTS = ["rgb_only", "rgb_last_layer", "early_fusion", "branch_rpn", "branch_roi", "branch_both"]
DATASETS = OrderedDict([("stack", "stack"), ("control", "none")])  # name -> prepare_polar_synth --signal
PRETRAIN_SIGNAL = "rgb"
PRETRAIN_DATA_SEED = 100  # other scenes than the finetuning data
STACK_CHANNELS, DERIVED_CHANNELS = 24, 18  # 6 bands x 4 angles -> dolp_aolp_trig


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--output", default="output/evidence", metavar="DIR", help="data, runs and logs")
    p.add_argument("--results", default="docs/RESULTS.md", metavar="FILE", help="the report")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], metavar="S", help="SEED of the finetuning runs")
    p.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS), metavar="NAME",
                   help=f"of {', '.join(VARIANTS)}")
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS), metavar="NAME",
                   help="stack and/or control")
    p.add_argument("--scale", type=float, default=1.0, metavar="K", help="multiply videos and iterations by K")
    p.add_argument("--iters", type=int, default=150, help="finetuning iterations per run")
    p.add_argument("--pretrain-iters", type=int, default=400, help="iterations of the RGB pretraining")
    p.add_argument("--lr", type=float, default=0.02, help="SOLVER.BASE_LR (pretraining and finetuning)")
    p.add_argument("--batch", type=int, default=4, help="SOLVER.IMS_PER_BATCH")
    p.add_argument("--size", type=int, default=128, metavar="PX", help="image size (square)")
    p.add_argument("--train-videos", type=int, default=8, help="training videos per dataset (x --scale)")
    p.add_argument("--val-videos", type=int, default=3, help="validation videos per dataset (x --scale)")
    p.add_argument("--frames-per-video", type=int, default=16, help="frames of each video")
    p.add_argument("--fpn-channels", type=int, default=64, help="MODEL.FPN.OUT_CHANNELS (a multiple of 32)")
    p.add_argument("--fc-dim", type=int, default=128, help="MODEL.ROI_BOX_HEAD.FC_DIM")
    p.add_argument("--workers", type=int, default=0, help="DATALOADER.NUM_WORKERS")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (0: torch's default). 1 by default: on a 2-core machine that other jobs "
                        "share, 2 threads measured 3-10x slower per iteration than 1")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="MODEL.DEVICE")
    p.add_argument("--verbose", action="store_true", help="training logs on the console too (always in <output>/log.txt)")
    p.add_argument("--polar-opts", nargs="+", default=[], metavar="KEY VALUE",
                   help="config overrides for the runs of the polar-branch variants (branch design ablations, "
                        "e.g. MODEL.POLAR.POST_KERNEL_SIZE 1); use another --output and --results")
    args = p.parse_args(argv)
    if args.scale <= 0 or min(args.iters, args.pretrain_iters, args.batch, args.size, args.train_videos,
                              args.val_videos, args.frames_per_video) < 1:
        p.error("--scale > 0 and positive sizes, iterations and counts required")
    if args.fpn_channels % 32:
        p.error("--fpn-channels must be a multiple of 32 (GroupNorm with 32 groups)")
    if args.threads < 0 or args.workers < 0:
        p.error("--threads and --workers must be >= 0")
    if len(args.polar_opts) % 2:
        p.error("--polar-opts takes KEY VALUE pairs")
    return args


def _load_script(path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
        root = self.data_dir(name)
        return [[f"evidence_{name}_{split}", os.path.join(root, f"{split}.json"), os.path.join(root, split, "images"),
                 os.path.join(root, split, "stacks")] for split in ("train", "val")]

    def prepare_data(self) -> None:
        a = self.args
        prepare = _load_script(os.path.join(REPO, "datasets", "prepare_polar_synth.py"), "_evidence_prepare")
        lo, hi = max(6, round(a.size * 24 / 256)), max(8, round(a.size * 80 / 256))
        for name, signal, seed in [("pretrain", PRETRAIN_SIGNAL, PRETRAIN_DATA_SEED)] + \
                [(d, DATASETS[d], 0) for d in a.datasets]:
            argv = ["--output", self.data_dir(name), "--train-videos", str(self.train_videos), "--val-videos",
                    str(self.val_videos), "--frames-per-video", str(a.frames_per_video), "--size", str(a.size),
                    "--signal", signal, "--seed", str(seed), "--object-size", str(lo), str(hi)]
            self.commands.append(" ".join(["python datasets/prepare_polar_synth.py"] + argv))
            with contextlib.redirect_stdout(sys.stderr):
                if prepare.main(argv) != 0:
                    raise RuntimeError(f"datasets/prepare_polar_synth.py {' '.join(argv)} failed")

    def compute_stack_stats(self) -> None:
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
            "SOLVER.WARMUP_ITERS", str(min(100, self.pretrain_iters // 4)), "SEED", "0",
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
                "SEED", seed, *v.opts, *(default_branch_opts() + self.args.polar_opts if v.config == DEMO else ()),
                "OUTPUT_DIR", os.path.join(self.out, "runs", dataset, variant, f"seed{seed}")]

    def data_fingerprint(self, name: str) -> str:
        """The generator parameters of a dataset (its generator.json), as a digest."""
        with open(os.path.join(self.data_dir(name), "generator.json")) as f:
            return hashlib.sha1(json.dumps(json.load(f), sort_keys=True).encode()).hexdigest()

    def run(self, config: str, opts: List[str], label: str, depends: Dict[str, str]) -> Tuple[Dict[str, float], float]:
        """Train + evaluate, or reuse a finished run with the same config, opts and ``depends`` (digests
        of its data and of the pretraining it starts from): (bbox metrics, seconds)."""
        cfg = setup_cfg(os.path.join(CONFIGS, config), opts)
        # the resolved config too: a changed default (e.g. in polar_rcnn/config.py) re-runs
        depends = {**depends, "config": hashlib.sha1(cfg.dump().encode()).hexdigest()}
        done_file = os.path.join(cfg.OUTPUT_DIR, "evidence_run.json")
        if os.path.isfile(done_file):
            with open(done_file) as f:
                done = json.load(f)
            # same config file and the same resolved config (in depends), however the options spell it
            if done.get("config") == config and done.get("depends") == depends:
                print(f"{label}: done before (AP {done['bbox'].get('AP', float('nan')):.1f}), reused", flush=True)
                self.reused += 1
                return done["bbox"], done["seconds"]
        start = time.perf_counter()
        log_file = os.path.join(self.out, "log.txt")
        with open(log_file, "a") as log, contextlib.redirect_stdout(sys.stdout if self.args.verbose else log):
            results = train_and_evaluate(cfg)  # pycocotools prints its summary to stdout
        seconds = time.perf_counter() - start
        bbox = {k: float(v) for k, v in results.get("bbox", {}).items()}
        with open(done_file, "w") as f:
            json.dump({"config": config, "opts": opts, "depends": depends, "bbox": bbox, "seconds": seconds}, f,
                      indent=1)
        print(f"{label}: AP {bbox.get('AP', float('nan')):.1f}  AP50 {bbox.get('AP50', float('nan')):.1f}  "
              f"({seconds:.0f} s)", flush=True)
        return bbox, seconds

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
            pretrain = hashlib.sha1(json.dumps([config, opts, depends]).encode()).hexdigest()
        self.timings["pretrain"] = time.perf_counter() - start

        start = time.perf_counter()
        total = len(a.datasets) * len(a.seeds) * len(a.variants)
        n = 0
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
                    bbox, seconds = self.run(config, opts, f"[{n}/{total}] {dataset} {variant} seed {seed}", depends)
                    self.results.setdefault((variant, dataset), {})[seed] = bbox
                    self.run_seconds[(variant, dataset, seed)] = seconds
        self.timings["finetune runs"] = time.perf_counter() - start


# ---------------------------------------------------------------------------------- report
def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    import detectron2

    text = (f"{platform.platform()}, {cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), detectron2 {detectron2.__version__}, Python {platform.python_version()}")
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name(0)}"
    return text


def write_report(ev: Evidence, path: str, argv: Sequence[str], wall: float) -> str:
    a = ev.args
    variants, datasets = list(a.variants), list(a.datasets)
    polar = setup_cfg(os.path.join(CONFIGS, DEMO), default_branch_opts() + list(a.polar_opts)).MODEL.POLAR
    lines = ["# Results: does the stack help?", "",
             f"Written by `tools/evidence.py` on {datetime.date.today().isoformat()}. Every number below was "
             "measured by that run; rerun the command at the end to reproduce it.", ""]
    lines += ["## Setup", "",
              f"- Data (`datasets/prepare_polar_synth.py`, {a.size}x{a.size} px, 24-channel stacks = 6 bands x "
              f"0/45/90/135 deg): {ev.train_videos} training and {ev.val_videos} validation videos of "
              f"{a.frames_per_video} frames per dataset. `pretrain`: objects visible in RGB (`--signal rgb`); "
              "`stack`: objects camouflaged in RGB, class signature in the stack (`--signal stack`); `control`: "
              "camouflaged and no signal in the stack (`--signal none`).",
              f"- Model: Faster R-CNN, ResNet-18-FPN with GroupNorm, FPN width {a.fpn_channels}, box head FC "
              f"{a.fc_dim}, polar branch {DERIVED_CHANNELS} -> {polar.HIDDEN_CHANNELS} -> {a.fpn_channels} channels "
              f"at input stride {polar.INPUT_STRIDE} (`configs/{DEMO}`).",
              f"- Pretraining: vanilla RGB Faster R-CNN from scratch on `pretrain`, {ev.pretrain_iters} iterations"
              + (f"; COCO AP on its own validation split {ev.pretrain_results.get('AP', float('nan')):.1f} "
                 f"(AP50 {ev.pretrain_results.get('AP50', float('nan')):.1f})." if ev.pretrain_results else "."),
              f"- Finetuning: every variant from the pretrained checkpoint (the `*_scratch` ones from nothing), "
              f"{ev.iters} iterations, batch {a.batch}, SGD base LR {a.lr:g} with {min(20, ev.iters // 4)}-iteration "
              f"warmup and cosine decay (`WarmupCosineLR`), seeds {', '.join(map(str, a.seeds))} (`SEED`; data order, augmentation "
              "and new layers differ per seed, the data and the pretrained model do not).",
              "- Stack input: `INPUT.STACK.DERIVED dolp_aolp_trig` (DoLP, cos 2 AoLP, sin 2 AoLP per band, 18 "
              "channels) normalized per channel with the training split's mean and std "
              "(`MODEL.POLAR.STACK_MEAN/STD`, as tools/stack_stats.py computes them, per dataset). The branch's "
              "last conv starts at zero (`MODEL.POLAR.ZERO_INIT True`), so each branch variant starts exactly "
              "from the pretrained detector; it trains with the same learning rate as the heads.", ""]
    lines += ["| variant | what trains | config |", "| --- | --- | --- |"]
    lines += [f"| {v} | {VARIANTS[v].trains} | `configs/{VARIANTS[v].config}` + "
              f"`{' '.join(VARIANTS[v].opts) or '-'}` |" for v in variants]
    lines += ["", f"## COCO box AP (%), mean ± std over {len(a.seeds)} seed(s)", "",
              results_table(ev.results, variants, datasets)]
    if "rgb_only" in variants and len(variants) > 1:
        lines += ["## Difference to rgb_only (AP, paired by seed)", "",
                  "'higher'/'lower' only when every seed agrees and the mean difference exceeds its standard "
                  "deviation; otherwise the runs do not tell the variants apart.", ""]
        rows = []
        for v in variants:
            if v == "rgb_only":
                continue
            row = [v]
            for d in datasets:
                diffs = paired_differences(ev.results, v, "rgb_only", d)
                row += [format_mean_std(diffs), verdict(diffs)]
            rows.append(row)
        lines.append(markdown_table(["variant"] + [x for d in datasets for x in (f"{d} ΔAP", f"{d} verdict")], rows))
    lines += ["## Machine and time", "", f"- Machine: {machine()}.",
              f"- Wall time of this invocation: {wall / 60:.1f} min; " + ", ".join(f"{k} {v:.0f} s" for k, v in ev.timings.items())
              + (f" ({ev.reused} runs reused from earlier invocations with the same resolved config)" if ev.reused else "")
              + ".", ""]
    if ev.run_seconds:
        per = sorted(ev.run_seconds.values())
        lines += [f"- Finetuning runs: {len(per)}, {np.median(per):.0f} s median each (training + evaluation), "
                  f"{sum(per) / 60:.1f} min together.", ""]
    lines += ["## Commands", "", "The whole evidence:", "", "```bash", "cd " + REPO + " && .venv/bin/python "
              + " ".join(shlex.quote(x) for x in ["tools/evidence.py"] + list(argv)), "```", "",
              "What it runs, as a bash script (the training runs are in-process PolarTrainer runs, identical to "
              "train_net.py with these options):", "", "```bash"] + ev.commands + ["```", ""]
    lines += ["## Every run", "", markdown_table(
        ["dataset", "variant", "seed"] + list(METRICS) + ["seconds"],
        [[d, v, s] + [f"{ev.results[(v, d)][s].get(m, float('nan')):.1f}" for m in METRICS]
         + [f"{ev.run_seconds[(v, d, s)]:.0f}"] for d in datasets for v in variants for s in a.seeds
         if s in ev.results.get((v, d), {})])]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


def _quiet_console(levels: Dict[str, int]) -> None:
    for name, level in levels.items():
        for handler in logging.getLogger(name).handlers:
            if type(handler) is logging.StreamHandler:  # not the FileHandler subclass
                handler.setLevel(level)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    os.makedirs(args.output, exist_ok=True)
    log_file = os.path.join(args.output, "log.txt")
    for name, abbrev in (("polar_rcnn", "polar"), ("detectron2", "d2"), ("fvcore", None)):
        setup_logger(log_file, name=name, abbrev_name=abbrev)
    if not args.verbose:
        # fvcore warns about every new branch parameter that the RGB checkpoint lacks: expected here
        _quiet_console({"polar_rcnn": logging.WARNING, "detectron2": logging.WARNING, "fvcore": logging.ERROR})
    ev = Evidence(args)
    n_runs = len(args.datasets) * len(args.seeds) * len(args.variants)
    print(f"Evidence: {n_runs} finetuning runs of {ev.iters} iterations (+ pretraining {ev.pretrain_iters}) on "
          f"{args.device}; log: {log_file}", flush=True)
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
