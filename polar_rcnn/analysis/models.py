"""What a model costs: train seconds per iteration on one cached batch (optimizer step included),
inference seconds per image, peak memory and FLOPs of the variants, interleaved and reported as
medians with ratios to vanilla; op-level profiles of the difference."""
import logging
import re
import statistics
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from detectron2.config import CfgNode
from detectron2.solver import build_optimizer
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from ..architecture import num_classes, stack_delivery_stride
from ..data import loader_stack_channels
from .memory import PeakMemory, _status_kb, peak_rss_mb, run_in_fresh_process
from .variants import VANILLA, ModelVariant, build_variant_model, count_flops, base_config, is_polar, num_parameters, variant_config

logger = logging.getLogger(__name__)


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


def model_inputs(batch: List[Dict[str, Any]], polar: bool, train: bool, stack_stride: int = 1) -> List[Dict[str, Any]]:
    """``batch`` without the keys this model does not read (stack for vanilla, instances for
    inference); ``stack_stride`` s > 1: the stacks on the stride-s grid, as the loader delivers them
    (``INPUT.STACK.RESOLUTION`` "branch": the mean of each cell's pixels, ``"stack_stride"`` s)."""
    drop = ({"stack"} if not polar else set()) | ({"instances"} if not train else set())
    out = [{k: v for k, v in d.items() if k not in drop} for d in batch]
    if polar and stack_stride > 1:
        for d in out:
            d["stack"] = F.avg_pool2d(d["stack"][None].float(), stack_stride, ceil_mode=True)[0]
            d["stack_stride"] = stack_stride
    return out


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
        polar, stride = is_polar(cfg), stack_delivery_stride(cfg)
        self.train_batch = model_inputs(batch, polar, train=True, stack_stride=stride)
        self.infer_batch = model_inputs(batch[:1], polar, train=False, stack_stride=stride)

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
    batch = random_batch(batch_size, *size, loader_stack_channels(cfg), num_classes=num_classes(cfg), seed=seed)
    runner = ModelRunner(cfg, model, batch)
    built = _status_kb("VmRSS") / 1024.0
    runner.infer_step()
    infer_peak = peak_rss_mb()
    with EventStorage():
        for _ in range(train_steps):
            runner.train_step()
    return {"rss_built_mb": built, "peak_infer_mb": infer_peak, "peak_train_mb": peak_rss_mb()}

# ------------------------------------------------------------------------------------- models
def measure_models(base: CfgNode, variants: Sequence[ModelVariant], size: Tuple[int, int], batch_size: int, *,
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
    batch = random_batch(batch_size, *size, loader_stack_channels(base), num_classes=num_classes(base), seed=seed)
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
