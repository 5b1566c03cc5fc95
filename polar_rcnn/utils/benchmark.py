"""What the polar branch costs next to vanilla Detectron2: the measurements behind
``tools/benchmark.py`` and ``tools/branch_cost.py``.

Models: parameters, FLOPs (fvcore), train seconds per iteration on one cached batch (optimizer
step included), inference seconds per image and peak memory of named variants, all built from one
config (:data:`VARIANTS`; "vanilla" is Detectron2's ``GeneralizedRCNN`` + ``build_resnet_fpn_backbone``).
Polar variants get the vanilla model's weights, so with ``MODEL.POLAR.ZERO_INIT`` every variant
proposes the same boxes and does the same work outside the branch. Timed repetitions are
interleaved over the variants (one iteration each, in rotating order) and reported as medians.

Data: samples per second of Detectron2's ``DatasetMapper`` and
:class:`~polar_rcnn.data.PolarDatasetMapper` on synthetic files (:func:`write_synthetic_files`)
with 0..N DataLoader workers, and the resident memory of data-loader workers over a long run.
"""
import ctypes
import gc
import logging
import os
import re
import resource
import statistics
import time
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from detectron2.config import CfgNode
from detectron2.data import DatasetMapper, build_detection_train_loader
from detectron2.data.build import worker_init_reset_seed
from detectron2.modeling import build_model
from detectron2.solver import build_optimizer
from detectron2.structures import Boxes, BoxMode, Instances
from detectron2.utils.analysis import FlopCountAnalysis
from detectron2.utils.events import EventStorage

from ..data import PolarDatasetMapper
from ..engine.freezing import freeze_from_config
from .cli import setup_cfg

logger = logging.getLogger(__name__)

MB = 1024.0 * 1024.0


# ------------------------------------------------------------------------------------- variants
@dataclass(frozen=True)
class Variant:
    """A model to measure: config overrides (dotted keys) on top of the benchmark's config."""

    name: str
    label: str
    overrides: Mapping[str, Any] = field(default_factory=dict)


VANILLA = "vanilla"
_LIGHTEST = {"MODEL.POLAR.NUM_STAGES": 1, "MODEL.POLAR.PRE_KERNEL_SIZE": 1, "MODEL.POLAR.INPUT_STRIDE": 4}
_NOTEBOOK = {"MODEL.POLAR.HIDDEN_CHANNELS": 96, "MODEL.POLAR.PRE_KERNEL_SIZE": 3, "MODEL.POLAR.POST_KERNEL_SIZE": 3,
             "MODEL.POLAR.INPUT_STRIDE": 1}
VARIANTS: "OrderedDict[str, Variant]" = OrderedDict(
    (v.name, v)
    for v in (
        Variant(VANILLA, "vanilla Detectron2 (GeneralizedRCNN + build_resnet_fpn_backbone)",
                {"MODEL.META_ARCHITECTURE": "GeneralizedRCNN", "MODEL.BACKBONE.NAME": "build_resnet_fpn_backbone",
                 "INPUT.STACK.ENABLED": False}),
        Variant("default", "default"),  # the config's MODEL.POLAR: 2 stages, hidden 32, 1x1 then 3x3, INPUT_STRIDE 4
        Variant("inject_both", "default, INJECT both", {"MODEL.POLAR.INJECT": "both"}),
        Variant("concat", "default, FUSION concat", {"MODEL.POLAR.FUSION": "concat"}),
        Variant("gate", "default, FUSION gate", {"MODEL.POLAR.FUSION": "gate"}),
        Variant("channel_attention", "default, FUSION channel_attention",
                {"MODEL.POLAR.FUSION": "channel_attention"}),
        # the design steps from the research notebook's branch to the default
        Variant("notebook", "notebook: hidden 96, 3x3 convs, INPUT_STRIDE 1", _NOTEBOOK),
        Variant("notebook_stride4", "notebook at INPUT_STRIDE 4", {**_NOTEBOOK, "MODEL.POLAR.INPUT_STRIDE": 4}),
        Variant("notebook_hidden32", "notebook with hidden 32", {**_NOTEBOOK, "MODEL.POLAR.HIDDEN_CHANNELS": 32}),
        Variant("all_1x1", "default with 1x1 per-level convs", {"MODEL.POLAR.POST_KERNEL_SIZE": 1}),
        Variant("one_stage", "1 stage, 3x3, INPUT_STRIDE 1", {**_NOTEBOOK, "MODEL.POLAR.NUM_STAGES": 1}),
        Variant("lightest", "lightest: 1 stage, 1x1, INPUT_STRIDE 4", _LIGHTEST),
        Variant("early", "early fusion (stem)", {"MODEL.BACKBONE.NAME": "build_early_fusion_resnet_fpn_backbone"}),
    )
)
POLAR_VARIANTS = OrderedDict((k, v) for k, v in VARIANTS.items() if k != VANILLA)


def get_variants(names: Iterable[str]) -> List[Variant]:
    """The :data:`VARIANTS` called ``names`` (short names, or labels), vanilla first."""
    by_label = {v.label: v for v in VARIANTS.values()}
    out = []
    for name in names:
        variant = VARIANTS.get(name) or by_label.get(name)
        if variant is None:
            raise ValueError(f"unknown variant {name!r}; choose from {list(VARIANTS)}")
        if variant not in out:
            out.append(variant)
    return sorted(out, key=lambda v: v.name != VANILLA)


def base_config(config_file: str, opts: Sequence[str] = (), *, depth: Optional[int] = None,
                channels: Optional[int] = None, device: str = "cpu") -> CfgNode:
    """``config_file`` + ``opts`` for measuring: no weights to download, ``device``, and optionally
    another ResNet ``depth`` (18/34 get RES2_OUT_CHANNELS 64) or stack ``channels``."""
    cfg = setup_cfg(config_file, opts, freeze=False)
    cfg.MODEL.DEVICE = device
    cfg.MODEL.WEIGHTS = ""
    if depth:
        cfg.MODEL.RESNETS.DEPTH = depth
        if depth in (18, 34):
            cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    if channels:
        cfg.MODEL.POLAR.IN_CHANNELS = channels
    return cfg


def variant_config(base: CfgNode, overrides: Mapping[str, Any]) -> CfgNode:
    """A copy of ``base`` with ``overrides`` (dotted key -> value, set as given)."""
    cfg = base.clone()
    cfg.defrost()
    for key, value in overrides.items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = getattr(node, p)
        if leaf not in node:
            raise KeyError(f"unknown config key {key}")
        setattr(node, leaf, value)
    return cfg


def is_polar(cfg: CfgNode) -> bool:
    """Whether the configured model reads a stack (its backbone is not Detectron2's plain one)."""
    return cfg.MODEL.BACKBONE.NAME not in ("build_resnet_fpn_backbone", "build_retinanet_resnet_fpn_backbone")


def build_variant_model(cfg: CfgNode, vanilla_state: Optional[Mapping[str, torch.Tensor]] = None,
                        seed: int = 0) -> torch.nn.Module:
    """``build_model(cfg)`` (seeded) with ``MODEL.FREEZE`` applied like the trainer does; with
    ``vanilla_state`` the shared parameters are copied from the vanilla model."""
    torch.manual_seed(seed)
    model = freeze_from_config(cfg, build_model(cfg))
    if vanilla_state is not None:
        incompatible = model.load_state_dict(vanilla_state, strict=False)
        if incompatible.unexpected_keys:
            raise ValueError(f"the vanilla weights do not fit: unexpected keys {incompatible.unexpected_keys}")
    return model


def num_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(module: torch.nn.Module, inputs) -> float:
    """fvcore FLOPs of ``module(inputs)`` (1 multiply-add = 1 flop; element-wise ops not counted)."""
    flops = FlopCountAnalysis(module, inputs)
    flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    return float(flops.total())


# ------------------------------------------------------------------------------------- inputs
def parse_size(text: str) -> Tuple[int, int]:
    """``"800x1333"`` -> (800, 1333) (height x width)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m or min(int(m.group(1)), int(m.group(2))) < 32:
        raise ValueError(f"a size is HEIGHTxWIDTH with both >= 32, e.g. 800x1333; got {text!r}")
    return int(m.group(1)), int(m.group(2))


def random_batch(batch_size: int, height: int, width: int, stack_channels: int, *, num_classes: int,
                 boxes_per_image: int = 5, seed: int = 0) -> List[Dict[str, Any]]:
    """Model inputs like the mapper's: uint8 (3, H, W) image, float32 (C, H, W) stack in [0, 1],
    ``height``/``width`` and gt ``instances``, from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    batch = []
    for _ in range(batch_size):
        k = boxes_per_image
        x0 = torch.rand(k, generator=g) * width * 0.6
        y0 = torch.rand(k, generator=g) * height * 0.6
        x1 = (x0 + 16 + torch.rand(k, generator=g) * width * 0.3).clamp(max=width - 1)
        y1 = (y0 + 16 + torch.rand(k, generator=g) * height * 0.3).clamp(max=height - 1)
        instances = Instances((height, width))
        instances.gt_boxes = Boxes(torch.stack([x0, y0, x1, y1], dim=1))
        instances.gt_classes = torch.randint(0, num_classes, (k,), generator=g)
        batch.append({
            "image": torch.randint(0, 256, (3, height, width), generator=g, dtype=torch.uint8),
            "stack": torch.rand((stack_channels, height, width), generator=g),
            "height": height, "width": width, "instances": instances,
        })
    return batch


def model_inputs(batch: List[Dict[str, Any]], polar: bool, train: bool) -> List[Dict[str, Any]]:
    """``batch`` without the keys this model does not read (stack for vanilla, instances for inference)."""
    drop = ({"stack"} if not polar else set()) | ({"instances"} if not train else set())
    return [{k: v for k, v in d.items() if k not in drop} for d in batch]


def num_classes_of(cfg: CfgNode) -> int:
    retinanet = "RetinaNet" in cfg.MODEL.META_ARCHITECTURE
    return cfg.MODEL.RETINANET.NUM_CLASSES if retinanet else cfg.MODEL.ROI_HEADS.NUM_CLASSES


# ------------------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class ModelRunner:
    """One model with its optimizer and cached inputs: :meth:`train_step` (forward, backward,
    optimizer step on the same batch every time) and :meth:`infer_step` (one image)."""

    def __init__(self, cfg: CfgNode, model: torch.nn.Module, batch: List[Dict[str, Any]], lr: float = 0.0):
        """
        Args:
            lr: learning rate of the optimizer (``SOLVER.*`` otherwise). 0 keeps the weights, and so
                the proposals and the work per iteration, the same in every repetition; the step's
                arithmetic (weight decay, momentum, update) runs all the same.
        """
        opt_cfg = cfg.clone()
        opt_cfg.defrost()
        opt_cfg.SOLVER.BASE_LR = float(lr)
        self.model = model
        self.device = torch.device(cfg.MODEL.DEVICE)
        self.optimizer = build_optimizer(opt_cfg, model)
        polar = is_polar(cfg)
        self.train_batch = model_inputs(batch, polar, train=True)
        self.infer_batch = model_inputs(batch[:1], polar, train=False)

    def train_step(self, batch: Optional[List[Dict[str, Any]]] = None) -> None:
        """One optimizer step on ``batch`` (default: the cached batch)."""
        self.model.train()
        losses = self.model(self.train_batch if batch is None else batch)
        loss = sum(losses.values())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    @torch.no_grad()
    def infer_step(self) -> None:
        self.model.eval()
        self.model(self.infer_batch)

    def timed(self, step: Callable[[], None]) -> float:
        _sync(self.device)
        t0 = time.perf_counter()
        step()
        _sync(self.device)
        return time.perf_counter() - t0


# ------------------------------------------------------------------------------------- memory
def _status_kb(key: str, pid: str = "self") -> Optional[int]:
    try:
        with open(f"/proc/{pid}/status") as f:
            m = re.search(rf"^{key}:\s+(\d+) kB", f.read(), re.M)
        return int(m.group(1)) if m else None
    except OSError:
        return None


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM, else ``ru_maxrss``) in MiB."""
    kb = _status_kb("VmHWM")
    return (kb if kb is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024.0


def _malloc_trim() -> None:
    """Return freed heap memory to the OS (glibc), so that RSS counts what is in use."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Memory a block needs on top of what was resident before it (MiB): on CUDA the allocator's
    peak minus its allocation at the start; on CPU this process's peak RSS (VmHWM, reset at the
    start where Linux allows; freed heap memory is returned to the OS first) minus its RSS at the
    start. Models, optimizer state and other variants resident before the block are not counted;
    activations, gradients and temporaries are."""

    def __init__(self, device: torch.device):
        self.device = device
        self.value_mb = 0.0
        self._start = 0.0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device) / MB
        else:
            gc.collect()
            _malloc_trim()
            self._reset = _reset_peak_rss()
            self._start = (_status_kb("VmRSS") or 0) / 1024.0
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.value_mb = torch.cuda.max_memory_allocated(self.device) / MB - self._start
        elif self._reset:
            self.value_mb = peak_rss_mb() - self._start
        else:
            self.value_mb = float("nan")
        return False


def peak_memory_in_fresh_process(config_file: str, opts: Sequence[str], overrides: Mapping[str, Any],
                                 size: Tuple[int, int], batch_size: int, *, depth: Optional[int] = None,
                                 channels: Optional[int] = None, threads: int = 1, train_steps: int = 2,
                                 seed: int = 0) -> Dict[str, float]:
    """Peak RSS (MiB) of a process that only builds this one model, runs one inference and
    ``train_steps`` train steps (run it in a fresh process: :func:`run_in_fresh_process`)."""
    logging.getLogger("detectron2").setLevel(logging.WARNING)
    logging.getLogger("polar_rcnn").setLevel(logging.WARNING)
    torch.set_num_threads(threads)
    cfg = variant_config(base_config(config_file, opts, depth=depth, channels=channels), overrides)
    model = build_variant_model(cfg, seed=seed)
    batch = random_batch(batch_size, *size, cfg.MODEL.POLAR.IN_CHANNELS, num_classes=num_classes_of(cfg), seed=seed)
    runner = ModelRunner(cfg, model, batch)
    built = _status_kb("VmRSS") / 1024.0
    runner.infer_step()
    infer_peak = peak_rss_mb()
    with EventStorage():
        for _ in range(train_steps):
            runner.train_step()
    return {"rss_built_mb": built, "peak_infer_mb": infer_peak, "peak_train_mb": peak_rss_mb()}


def run_in_fresh_process(fn: Callable, *args, **kwargs):
    """``fn(*args, **kwargs)`` in a new (spawned) Python process; returns its result."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn"), max_tasks_per_child=1) as ex:
        return ex.submit(fn, *args, **kwargs).result()


# ------------------------------------------------------------------------------------- models
def measure_models(base: CfgNode, variants: Sequence[Variant], size: Tuple[int, int], batch_size: int, *,
                   warmup: int = 1, iters: int = 3, lr: float = 0.0, flops: bool = True,
                   memory: str = "inprocess", config_file: str = "", opts: Sequence[str] = (),
                   depth: Optional[int] = None, channels: Optional[int] = None, threads: int = 1,
                   seed: int = 0, progress: Callable[[str], None] = logger.info) -> List[Dict[str, Any]]:
    """One row per variant at ``size`` (H, W): params, GFLOPs, median train s/iter, median
    inference s/image, peak memory; vanilla (which must be among ``variants``) first.

    Args:
        memory: "inprocess" (:class:`PeakMemory` of the timed iterations; on CUDA always),
            "subprocess" (CPU: peak RSS of a fresh process that builds only this variant, needs
            ``config_file``, ``opts``, ``depth``, ``channels`` to rebuild the config there) or "off".
    """
    if not variants or variants[0].name != VANILLA:
        raise ValueError("measure_models needs the vanilla variant first (ratios are taken to it)")
    if memory not in ("subprocess", "inprocess", "off"):
        raise ValueError(f"memory must be 'subprocess', 'inprocess' or 'off', got {memory!r}")
    device = torch.device(base.MODEL.DEVICE)
    cfgs = [variant_config(base, v.overrides) for v in variants]
    batch = random_batch(batch_size, *size, base.MODEL.POLAR.IN_CHANNELS, num_classes=num_classes_of(base), seed=seed)
    rows, runners = [], []
    vanilla_state = None
    for v, cfg in zip(variants, cfgs):
        model = build_variant_model(cfg, vanilla_state, seed=seed)
        if vanilla_state is None:
            vanilla_state = {k: t.detach().clone() for k, t in model.state_dict().items()}
        runners.append(ModelRunner(cfg, model, batch, lr=lr))
        rows.append({"size": f"{size[0]}x{size[1]}", "batch": batch_size, "variant": v.name, "label": v.label,
                     "params": num_parameters(model), "train_s_all": [], "infer_s_all": [], "peak_mb": None})

    if flops:
        progress(f"{size[0]}x{size[1]}: counting FLOPs")
        _add_flops(rows, runners, cfgs, batch[:1])

    use_subprocess = memory == "subprocess" and device.type == "cpu"
    peaks = {"train": [0.0] * len(rows), "infer": [0.0] * len(rows)}
    with EventStorage():
        for i, r in enumerate(runners):
            progress(f"{size[0]}x{size[1]}: warm-up {rows[i]['variant']}")
            for _ in range(warmup):
                r.train_step()
                r.infer_step()
        order = list(range(len(runners)))
        for it in range(iters):
            progress(f"{size[0]}x{size[1]}: timed round {it + 1}/{iters}")
            shift = it % len(order)
            for i in order[shift:] + order[:shift]:  # rotate so no variant always runs first
                for kind, step in (("train", runners[i].train_step), ("infer", runners[i].infer_step)):
                    if memory == "off" or use_subprocess:
                        rows[i][f"{kind}_s_all"].append(runners[i].timed(step))
                        continue
                    with PeakMemory(device) as peak:
                        rows[i][f"{kind}_s_all"].append(runners[i].timed(step))
                    peaks[kind][i] = max(peaks[kind][i], peak.value_mb)
    for i, row in enumerate(rows):
        row["train_s"] = statistics.median(row["train_s_all"]) if row["train_s_all"] else None
        row["infer_s"] = statistics.median(row["infer_s_all"]) if row["infer_s_all"] else None  # batch of 1
        if memory != "off" and not use_subprocess:
            row["peak_mb"] = peaks["train"][i]
            row["peak_infer_mb"] = peaks["infer"][i]
            row["peak_kind"] = ("CUDA allocator" if device.type == "cuda" else "RSS") + (
                " peak during a train step above the memory resident before it (activations, gradients, "
                "temporaries; not the resident models and optimizer state)")
    del runners

    if use_subprocess:
        for v, row in zip(variants, rows):
            progress(f"{size[0]}x{size[1]}: peak memory of {v.name} in a fresh process")
            mem = run_in_fresh_process(peak_memory_in_fresh_process, config_file, list(opts), dict(v.overrides),
                                       tuple(size), batch_size, depth=depth, channels=channels, threads=threads,
                                       seed=seed)
            row["peak_mb"] = mem["peak_train_mb"]
            row["peak_infer_mb"] = mem["peak_infer_mb"]
            row["rss_built_mb"] = mem["rss_built_mb"]
            row["peak_kind"] = "peak RSS of a fresh process (build, 1 inference, 2 train steps)"
    add_ratios(rows, ("params", "gflops", "train_s", "infer_s", "peak_mb"), key="variant", base=VANILLA)
    return rows


def measure_loader_training(base: CfgNode, variants: Sequence[Variant], *, warmup: int = 2, iters: int = 10,
                            lr: float = 0.0, seed: int = 0, progress: Callable[[str], None] = logger.info
                            ) -> List[Dict[str, Any]]:
    """Train iterations fed by the config's own train loader (``DATASETS.TRAIN`` through
    :meth:`PolarTrainer.build_train_loader`: its mapper, ``DATALOADER.NUM_WORKERS``,
    ``SOLVER.IMS_PER_BATCH``), variants interleaved and seeded alike (same images in the same
    order): median seconds per iteration, of it waiting for the loader, and of the model step."""
    from ..engine.trainer import PolarTrainer

    if not variants or variants[0].name != VANILLA:
        raise ValueError("measure_loader_training needs the vanilla variant first (ratios are taken to it)")
    runners, loaders, rows = [], [], []
    state = None
    for v in variants:
        cfg = variant_config(base, v.overrides)
        model = build_variant_model(cfg, state, seed=seed)
        state = state or {k: t.detach().clone() for k, t in model.state_dict().items()}
        runners.append(ModelRunner(cfg, model, [], lr=lr))
        np.random.seed(seed)  # the sampler's order (shared random seed) and the workers' seeds
        torch.manual_seed(seed)
        loaders.append(iter(PolarTrainer.build_train_loader(cfg)))
        rows.append({"variant": v.name, "label": v.label, "batch": cfg.SOLVER.IMS_PER_BATCH,
                     "workers": cfg.DATALOADER.NUM_WORKERS, "datasets": list(cfg.DATASETS.TRAIN),
                     "iter_s_all": [], "data_s_all": [], "step_s_all": []})
    with EventStorage():
        for it in range(warmup + iters):
            progress(f"train loader: {'warm-up' if it < warmup else 'timed'} round {it + 1}/{warmup + iters}")
            shift = it % len(runners)
            for i in list(range(len(runners)))[shift:] + list(range(len(runners)))[:shift]:
                t0 = time.perf_counter()
                batch = next(loaders[i])
                data_s = time.perf_counter() - t0
                step_s = runners[i].timed(lambda: runners[i].train_step(batch))
                if it >= warmup:
                    rows[i]["data_s_all"].append(data_s)
                    rows[i]["step_s_all"].append(step_s)
                    rows[i]["iter_s_all"].append(data_s + step_s)
    del loaders
    for row in rows:
        for key in ("iter_s", "data_s", "step_s"):
            row[key] = statistics.median(row[f"{key}_all"])
    add_ratios(rows, ("iter_s", "step_s"), key="variant", base=VANILLA, group=())
    return rows


@torch.no_grad()
def _add_flops(rows, runners, cfgs, one_image) -> None:
    """GFLOPs of each model on one image: the vanilla model traced whole, and every variant as
    vanilla + (its backbone - the vanilla backbone). Variants differ from vanilla only in the
    backbone (and element-wise input handling), and heads fed the same proposals cost the same."""
    vanilla = runners[0].model
    vanilla.eval()
    total = count_flops(vanilla, model_inputs(one_image, False, train=False))
    backbone = {}
    for row, runner, cfg in zip(rows, runners, cfgs):
        model = runner.model.eval()
        x = model.preprocess_image(model_inputs(one_image, is_polar(cfg), train=False)).tensor
        backbone[row["variant"]] = count_flops(model.backbone, (x,))
        row["gflops"] = (total + backbone[row["variant"]] - backbone[VANILLA]) / 1e9


def add_ratios(rows: List[Dict[str, Any]], fields: Sequence[str], *, key: str, base: str,
               group: Sequence[str] = ("size",)) -> None:
    """Add ``<field>_ratio`` = row / base row (same ``group`` values, ``row[key] == base``) in place."""
    bases = {tuple(r[g] for g in group): r for r in rows if r[key] == base}
    for r in rows:
        b = bases.get(tuple(r[g] for g in group))
        for f in fields:
            ok = b is not None and r.get(f) is not None and b.get(f)
            r[f"{f}_ratio"] = r[f] / b[f] if ok else None


# ------------------------------------------------------------------------------------- profiling
def profile_train_steps(runner: ModelRunner, iters: int = 2, warmup: int = 1):
    """torch.profiler (CPU, input shapes recorded) over ``iters`` train steps after ``warmup``."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if runner.device.type == "cuda" else [])
    with EventStorage():
        for _ in range(warmup):
            runner.train_step()
        with profile(activities=activities, record_shapes=True) as prof:
            for _ in range(iters):
                runner.train_step()
            _sync(runner.device)
    return prof


def op_times(prof, iters: int, by_shape: bool = False) -> Dict[Tuple[str, str], Dict[str, float]]:
    """(op name, input shapes or "") -> self CPU ms and calls per iteration."""
    out = {}
    for e in prof.key_averages(group_by_input_shape=by_shape):
        k = (e.key, str(e.input_shapes) if by_shape else "")
        out[k] = {"ms": e.self_cpu_time_total / 1000.0 / iters, "calls": e.count / iters}
    return out


def op_delta_rows(base: Mapping, other: Mapping, top: int) -> List[Dict[str, Any]]:
    """The ``top`` ops (keys of :func:`op_times`) with the largest extra time in ``other``."""
    rows = []
    for k in set(base) | set(other):
        b, o = base.get(k, {"ms": 0.0, "calls": 0.0}), other.get(k, {"ms": 0.0, "calls": 0.0})
        rows.append({"op": k[0], "shapes": k[1], "base_ms": b["ms"], "ms": o["ms"], "delta_ms": o["ms"] - b["ms"],
                     "base_calls": b["calls"], "calls": o["calls"]})
    rows.sort(key=lambda r: -r["delta_ms"])
    return rows[:top]


# ------------------------------------------------------------------------------------- data
def _smooth_noise(rng: np.random.Generator, height: int, width: int, channels: int) -> np.ndarray:
    """(H, W, C) float32 in [0, 1]: low-resolution noise upsampled (natural-image-like, compressible)."""
    low = rng.random((max(2, height // 32), max(2, width // 32), channels), dtype=np.float32)
    parts = [cv2.resize(low[..., i:i + 4], (width, height), interpolation=cv2.INTER_CUBIC)
             for i in range(0, channels, 4)]
    parts = [p[..., None] if p.ndim == 2 else p for p in parts]
    out = np.concatenate(parts, axis=2) + rng.normal(0, 0.01, (height, width, channels)).astype(np.float32)
    return np.clip(out, 0.0, 1.0)


def write_synthetic_files(root: str, num_files: int, size: Tuple[int, int], stack_channels: int,
                          dtypes: Sequence[str] = ("float16", "uint16"), *, num_classes: int = 3,
                          seed: int = 0) -> Dict[str, List[Dict[str, Any]]]:
    """Write ``num_files`` PNG images of ``size`` and, per dtype, their (H, W, C) ``.npy`` stacks
    under ``root``; returns dtype -> Detectron2 dataset dicts (with ``stack_file_name``)."""
    h, w = size
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    records = {d: [] for d in dtypes}
    for i in range(num_files):
        image_path = os.path.join(root, f"{h}x{w}_{i}.png")
        if not cv2.imwrite(image_path, (_smooth_noise(rng, h, w, 3) * 255).astype(np.uint8)):
            raise OSError(f"cv2.imwrite failed for {image_path}")
        stack = _smooth_noise(rng, h, w, stack_channels)
        annotations = []
        for _ in range(4):
            bw, bh = rng.uniform(0.1, 0.3) * w, rng.uniform(0.1, 0.3) * h
            x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            annotations.append({"bbox": [x, y, bw, bh], "bbox_mode": BoxMode.XYWH_ABS, "iscrowd": 0,
                                "category_id": int(rng.integers(num_classes))})
        for dtype in dtypes:
            if dtype == "uint16":
                array = np.round(stack * 65535).astype(np.uint16)
            elif dtype in ("float16", "float32"):
                array = stack.astype(dtype)
            else:
                raise ValueError(f"stack dtype must be float16, float32 or uint16, got {dtype!r}")
            stack_path = os.path.join(root, f"{h}x{w}_{i}_{dtype}.npy")
            np.save(stack_path, array)
            records[dtype].append({"file_name": image_path, "stack_file_name": stack_path, "height": h, "width": w,
                                   "image_id": i, "annotations": [dict(a) for a in annotations]})
    return records


def mapper_config(base: CfgNode, size: Tuple[int, int], scale: float = 1.0) -> CfgNode:
    """``base`` whose training resize takes ``size`` images to ``scale`` times their size (1: the
    same size; 0.8: e.g. 800x1333 -> 640x1066, as multi-scale training does)."""
    cfg = base.clone()
    cfg.defrost()
    cfg.INPUT.MIN_SIZE_TRAIN = (int(round(min(size) * scale)),)
    cfg.INPUT.MAX_SIZE_TRAIN = int(round(max(size) * scale))
    cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING = "choice"
    return cfg


def build_mappers(base: CfgNode, size: Tuple[int, int], scale: float = 1.0) -> Dict[str, Callable]:
    """``{"rgb": Detectron2's DatasetMapper, "polar": PolarDatasetMapper}`` for training at ``size``
    resized by ``scale``."""
    cfg = mapper_config(base, size, scale)
    return {"rgb": DatasetMapper(cfg, is_train=True), "polar": PolarDatasetMapper(cfg, is_train=True)}


class _MappedRecords(Dataset):
    """``length`` samples: ``mapper(records[i % len(records)])``."""

    def __init__(self, records: List[Dict[str, Any]], mapper: Callable, length: int):
        self.records, self.mapper, self.length = records, mapper, length

    def __len__(self):
        return self.length

    def __getitem__(self, i):
        return self.mapper(self.records[i % len(self.records)])


def _first(batch):
    return batch[0]


def mapper_throughput(mapper: Callable, records: List[Dict[str, Any]], num_workers: int, num_samples: int,
                      seed: int = 0) -> Dict[str, float]:
    """Samples per second of ``mapper`` through a DataLoader (batch 1) with ``num_workers``; the
    clock starts at the first sample, so worker start-up is not counted."""
    if num_samples < 2:
        raise ValueError(f"mapper_throughput needs at least 2 samples, got {num_samples}")
    np.random.seed(seed)
    torch.manual_seed(seed)  # worker seeds derive from it (worker_init_reset_seed)
    loader = DataLoader(_MappedRecords(records, mapper, num_samples), batch_size=1, num_workers=num_workers,
                        collate_fn=_first, worker_init_fn=worker_init_reset_seed if num_workers else None)
    it = iter(loader)
    if next(it) is None:
        raise RuntimeError("the mapper skipped a synthetic sample")
    t0 = time.perf_counter()
    n = sum(1 for _ in it)
    seconds = time.perf_counter() - t0
    del it
    return {"samples_per_s": n / seconds, "ms_per_sample": 1000.0 * seconds / n}


def measure_mappers(base: CfgNode, size: Tuple[int, int], records: Mapping[str, List[Dict[str, Any]]],
                    workers: Sequence[int], num_samples: int, repeats: int = 3, scales: Sequence[float] = (1.0,),
                    progress: Callable[[str], None] = logger.info) -> List[Dict[str, Any]]:
    """Rows (size, resize scale, mapper, stack dtype, workers, median samples/s and ms/sample, ratio
    of ms/sample to the RGB mapper's with the same scale and workers). The RGB mapper reads the
    images of the first dtype's records; configurations are interleaved over ``repeats``."""
    dtypes = list(records)
    cases = [("rgb", dtypes[0], None)] + [("polar", d, d) for d in dtypes]
    size_text = f"{size[0]}x{size[1]}"
    mappers = {scale: build_mappers(base, size, scale) for scale in scales}
    results = {(scale, c[0], c[2], w): [] for scale in scales for c in cases for w in workers}
    for rep in range(repeats):
        progress(f"{size_text}: mappers, round {rep + 1}/{repeats}")
        shift = rep % len(cases)
        for scale in scales:
            for name, records_key, dtype in cases[shift:] + cases[:shift]:
                for w in workers:
                    results[(scale, name, dtype, w)].append(
                        mapper_throughput(mappers[scale][name], records[records_key], w, num_samples, seed=rep))
    rows = []
    for (scale, name, dtype, w), runs in results.items():
        rows.append({"size": size_text, "resize": scale, "mapper": name, "stack_dtype": dtype or "-", "workers": w,
                     "samples_per_s": statistics.median(r["samples_per_s"] for r in runs),
                     "ms_per_sample": statistics.median(r["ms_per_sample"] for r in runs)})
    add_ratios(rows, ("ms_per_sample",), key="mapper", base="rgb", group=("size", "resize", "workers"))
    return rows


def _smaps_rollup_kb(pid: int) -> Dict[str, int]:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+):\s+(\d+) kB", f.read(), re.M)}
    except OSError:
        return {}


def child_pids(pid: Optional[int] = None) -> List[int]:
    """Live child processes of ``pid`` (default: this process), from /proc."""
    pid = os.getpid() if pid is None else pid
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(entry))
    return sorted(out)


def process_memory_mb(pid: int) -> Dict[str, Optional[float]]:
    """VmRSS and USS (private clean + dirty, from smaps_rollup; None where unavailable) in MiB."""
    rss = _status_kb("VmRSS", str(pid))
    roll = _smaps_rollup_kb(pid)
    uss = roll.get("Private_Clean", 0) + roll.get("Private_Dirty", 0) if roll else None
    return {"rss_mb": rss / 1024.0 if rss is not None else None, "uss_mb": uss / 1024.0 if uss is not None else None}


def worker_memory_run(mapper: Callable, records: List[Dict[str, Any]], num_workers: int, num_samples: int,
                      interval: int, batch_size: int = 2, progress: Callable[[str], None] = logger.info
                      ) -> Dict[str, Any]:
    """Iterate Detectron2's train loader (``build_detection_train_loader``: serialized dataset,
    infinite sampler, aspect-ratio grouping) with ``num_workers`` for ``num_samples`` samples and
    sample the workers' VmRSS and USS (summed over workers) every ``interval`` samples."""
    if num_workers < 1:
        raise ValueError("worker_memory_run needs at least one worker")
    torch.manual_seed(0)
    loader = build_detection_train_loader(records, mapper=mapper, total_batch_size=batch_size,
                                          num_workers=num_workers)
    series = []
    seen = 0
    others = set(child_pids())  # e.g. multiprocessing's resource tracker: not a loader worker
    t0 = time.perf_counter()
    it = iter(loader)
    try:
        while seen < num_samples:
            seen += len(next(it))
            if seen % interval < batch_size or seen >= num_samples:
                pids = [p for p in child_pids() if p not in others]
                mems = [process_memory_mb(p) for p in pids]
                series.append({"samples": seen, "seconds": time.perf_counter() - t0, "workers": len(pids),
                               "rss_mb": sum(m["rss_mb"] or 0.0 for m in mems),
                               "uss_mb": sum(m["uss_mb"] or 0.0 for m in mems) if all(
                                   m["uss_mb"] is not None for m in mems) else None})
                if len(series) % 5 == 0:
                    progress(f"worker memory: {seen}/{num_samples} samples, VmRSS {series[-1]['rss_mb']:.0f} MiB")
    finally:
        del it, loader
    first, last = series[0], series[-1]
    warm = next(s for s in series if s["samples"] >= num_samples // 4)  # after the loader has warmed up
    return {"workers": num_workers, "samples": seen, "interval": interval, "series": series,
            "first_rss_mb": first["rss_mb"], "warm_rss_mb": warm["rss_mb"], "last_rss_mb": last["rss_mb"],
            "max_rss_mb": max(s["rss_mb"] for s in series), "warm_samples": warm["samples"],
            "first_uss_mb": first["uss_mb"], "warm_uss_mb": warm["uss_mb"], "last_uss_mb": last["uss_mb"]}


def worker_memory_in_fresh_process(config_file: str, opts: Sequence[str], size: Tuple[int, int],
                                   records: List[Dict[str, Any]], num_workers: int, num_samples: int,
                                   interval: int, *, depth: Optional[int] = None,
                                   channels: Optional[int] = None) -> Dict[str, Any]:
    """:func:`worker_memory_run` of the polar mapper, for a process that holds nothing else (run it
    with :func:`run_in_fresh_process`): workers forked from a process full of freed model memory
    would turn its pages private (copy-on-write) and show growth that is not the loader's."""
    logging.getLogger("detectron2").setLevel(logging.WARNING)
    base = base_config(config_file, opts, depth=depth, channels=channels)
    mapper = build_mappers(base, size)["polar"]
    return worker_memory_run(mapper, records, num_workers, num_samples, interval, progress=lambda _: None)

