#!/usr/bin/env python
"""What the polar branch costs next to vanilla Detectron2 Faster R-CNN, side by side in one run.

    python tools/benchmark.py --output output/bench/benchmark      # 23 min with --threads 1 on 2 shared cores
    python tools/benchmark.py --quick                               # ~1 min: 320x480, 3 variants
    python tools/benchmark.py --device cuda --iters 20 --warmup 5 --batch 2
    python tools/benchmark.py --profile default --sizes 800x1333    # where the branch's time goes
    python tools/benchmark.py --profile default --sizes 256x256 --batch 4 \\
        --config-file configs/faster_rcnn_R_18_FPN_demo_polar_synth.yaml
    python tools/benchmark.py --train-loader --variants vanilla default \\
        --config-file configs/faster_rcnn_R_18_FPN_demo_polar_synth.yaml   # fed by the config's loader
    python tools/benchmark.py --raw-frames --output output/bench/raw_frames  # raw polarization frames

Models (every variant built from --config-file; "vanilla" = GeneralizedRCNN +
build_resnet_fpn_backbone, the polar variants get its weights): parameters; fvcore FLOPs of one
image (1 multiply-add = 1 flop); train seconds per iteration on one cached batch of random images,
stacks and gt boxes (forward, backward, optimizer step; --lr 0 keeps the weights so every
repetition does the same work); inference seconds per image; the memory a train step needs above
what is resident (RSS peak on CPU, allocator peak on CUDA; --memory subprocess: absolute peak RSS of
a fresh process per variant). After --warmup iterations per variant, --iters rounds time one
iteration of every variant in rotating order (same process, same threads); medians are reported
with ratios to vanilla.

Data: samples per second of Detectron2's DatasetMapper (RGB) and PolarDatasetMapper (RGB + stack)
with 0, 1 and N DataLoader workers on PNG images + .npy stacks (float16, uint16) written to a temp
dir, and the memory (VmRSS, USS) of the train loader's workers over a long run.

Raw frames (--raw-frames, instead of the tables): seconds per frame of the reader on raw
polarization-sensor frames (16-bit PNG, 12 bits; read, checked, demosaiced; mono and color, each
interpolation) at --raw-size (the IMX250's 2048x2448 by default) next to the same demosaiced stack
as a ready uint16 .npy, each with the mapper's copy into a tensor; and the DoLP / AoLP errors of
the mosaic -> demosaic round trip on a synthetic Malus'-law scene (flat regions and edges).

Targets (ratios to vanilla in the same run): default <= +10% train and inference time, lightest
<= +3%, polar mapper <= 1.5x the RGB mapper's time per sample, worker memory flat.
Trailing KEY VALUE pairs override the config (before the variants' overrides).
"""
import argparse
import datetime
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(REPO, "configs", "faster_rcnn_R_50_FPN_1x_polar_synth.yaml")
DEFAULT_VARIANTS = ["vanilla", "default", "lightest", "concat", "gate", "channel_attention", "notebook", "early"]
QUICK_VARIANTS = ["vanilla", "default", "lightest"]
# the names of polar_rcnn.analysis.VARIANTS, here for --help without importing polar_rcnn (tests/tools/test_help.py
# checks that they match)
VARIANT_NAMES = ("vanilla", "default", "inject_both", "concat", "gate", "channel_attention", "notebook",
                 "notebook_stride4", "notebook_hidden32", "all_1x1", "one_stage", "lightest", "early")
LARGE_PIXELS = 500_000  # sizes with at least this many pixels: batch 1, fewer mapper samples
TRAIN_LIMITS = {"default": 1.10, "lightest": 1.03}  # time ratio to vanilla, train and inference
MAPPER_LIMIT = 1.5  # polar / RGB mapper time per sample
FLAT_LIMIT = 0.05  # worker memory: last quarter's median <= +5% of the second quarter's (USS, else VmRSS)

logger = logging.getLogger("polar_rcnn.tools.benchmark")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", default=DEFAULT_CONFIG, help="config of every variant (default: the R50 one)")
    p.add_argument("--quick", action="store_true",
                   help="short run: 320x480, vanilla/default/lightest, 1 warm-up + 2 timed iterations, few samples")
    p.add_argument("--sizes", nargs="+", help="HEIGHTxWIDTH inputs (default: 800x1333 320x480; quick: 320x480)")
    p.add_argument("--variants", nargs="+",
                   help=f"models to measure, vanilla always included; any of {list(VARIANT_NAMES)} "
                        f"(default: {' '.join(DEFAULT_VARIANTS)}; quick: {' '.join(QUICK_VARIANTS)})")
    p.add_argument("--batch", type=int, help="train images per iteration (default: 1 at >= 500k pixels, else 2)")
    p.add_argument("--warmup", type=int, help="untimed train + inference iterations per variant (default: 1)")
    p.add_argument("--iters", type=int,
                   help="timed rounds; each times one iteration per variant "
                        "(default: 2 at >= 500k pixels, else 3; quick: 2)")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default, all cores)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default: %(default)s)")
    p.add_argument("--lr", type=float, default=0.0, help="optimizer learning rate (0: same weights every iteration)")
    p.add_argument("--depth", type=int, help="override MODEL.RESNETS.DEPTH (e.g. 18)")
    p.add_argument("--channels", type=int, help="override MODEL.POLAR.IN_CHANNELS")
    p.add_argument("--memory", choices=("inprocess", "subprocess", "off"), default="inprocess",
                   help="CPU peak memory: RSS peak of a train step above the resident RSS, the peak RSS of a "
                        "fresh process per variant (absolute; slow at 800x1333), or none (default: %(default)s)")
    p.add_argument("--no-flops", action="store_true", help="skip the FLOP counts")
    p.add_argument("--mapper-workers", type=int, nargs="*",
                   help=f"DataLoader workers for the mapper throughput; empty = skip (default: 0 1 {os.cpu_count()})")
    p.add_argument("--mapper-samples", type=int,
                   help="samples per mapper measurement (default: 12 at >= 500k pixels, else 40; quick: 8)")
    p.add_argument("--mapper-repeats", type=int, help="interleaved mapper rounds (default: 3; quick: 1)")
    p.add_argument("--mapper-scales", type=float, nargs="+", default=[1.0, 0.8],
                   help="training resize of the mapper runs, as a factor of the image size (1: same size; "
                        "0.8: 800x1333 -> 640x1066, as multi-scale training does) (default: %(default)s)")
    p.add_argument("--stack-dtypes", nargs="+", default=["float16", "uint16"],
                   help="dtypes of the stack files (default: %(default)s)")
    p.add_argument("--derived", nargs="*", default=["stokes@model", "stokes@loader", "dolp_aolp_trig@model",
                                                    "dolp_aolp_trig@loader"],
                   help="extra polar mappers, INPUT.STACK.DERIVED@DERIVED_ON each (polarization-angle stacks only; "
                        "empty = none) (default: %(default)s)")
    p.add_argument("--worker-memory-samples", type=int,
                   help="samples of the long loader run (polar mapper, smallest size, a fresh process); 0 = skip "
                        "(default: 2000; quick: 200)")
    p.add_argument("--worker-memory-interval", type=int, help="samples between readings (default: samples / 20)")
    p.add_argument("--train-loader", action="store_true",
                   help="instead of the tables: train iterations fed by the config's own train loader "
                        "(DATASETS.TRAIN, its mapper and workers, SOLVER.IMS_PER_BATCH; --warmup, --iters)")
    p.add_argument("--raw-frames", action="store_true",
                   help="instead of the tables: reader cost per raw polarization frame next to a ready uint16 "
                        "stack, and the demosaicing round-trip errors")
    p.add_argument("--raw-size", default="2048x2448", help="HEIGHTxWIDTH of --raw-frames (default: %(default)s)")
    p.add_argument("--profile", metavar="VARIANT",
                   help="instead of the tables: torch.profiler of train steps of vanilla and VARIANT per size")
    p.add_argument("--profile-iters", type=int, default=2, help="profiled train steps per model (default: %(default)s)")
    p.add_argument("--top", type=int, default=15, help="rows of the profile tables (default: %(default)s)")
    p.add_argument("--output", help="write PREFIX.md and PREFIX.json")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="config overrides: KEY VALUE ...")
    args = p.parse_args(argv)
    try:
        _complete(args)
    except ValueError as e:
        p.error(str(e))
    return args


def _complete(args: argparse.Namespace) -> None:
    """Fill the options left unset from the full or the --quick preset; parse sizes and variants."""
    import torch
    from polar_rcnn import analysis as B

    quick = args.quick
    args.threads = args.threads if args.threads > 0 else torch.get_num_threads()
    args.sizes = [B.parse_size(s) for s in (args.sizes or (["320x480"] if quick else ["800x1333", "320x480"]))]
    args.raw_size = B.parse_size(args.raw_size)
    names = args.variants or (QUICK_VARIANTS if quick else DEFAULT_VARIANTS)
    if args.profile:
        names = [B.VANILLA, args.profile]
    args.variants = B.get_variants([B.VANILLA] + list(names))
    args.warmup = 1 if args.warmup is None else args.warmup
    if args.mapper_workers is None:
        args.mapper_workers = [0, 1, os.cpu_count() or 1]
    args.mapper_workers = sorted(set(args.mapper_workers))
    derived = []
    for text in args.derived:
        mode, _, where = text.partition("@")
        if mode not in ("stokes", "dolp_aolp_trig") or where not in ("model", "loader"):
            raise ValueError(f"--derived takes DERIVED@WHERE with DERIVED stokes or dolp_aolp_trig and WHERE model "
                             f"or loader, got {text!r}")
        derived.append((mode, where))
    args.derived = derived
    args.mapper_repeats = (1 if quick else 3) if args.mapper_repeats is None else args.mapper_repeats
    if args.worker_memory_samples is None:
        args.worker_memory_samples = 200 if quick else 2000
    if args.worker_memory_interval is None:
        args.worker_memory_interval = max(1, args.worker_memory_samples // 20)
    for name in ("warmup", "threads", "mapper_repeats", "worker_memory_samples", "profile_iters"):
        if getattr(args, name) < (1 if name in ("threads", "mapper_repeats", "profile_iters") else 0):
            raise ValueError(f"--{name.replace('_', '-')} is too small: {getattr(args, name)}")
    if args.iters is not None and args.iters < 1:
        raise ValueError(f"--iters must be >= 1, got {args.iters}")
    if args.batch is not None and args.batch < 1:
        raise ValueError(f"--batch must be >= 1, got {args.batch}")
    if args.mapper_samples is not None and args.mapper_samples < 2:
        raise ValueError(f"--mapper-samples must be >= 2, got {args.mapper_samples}")
    if any(w < 0 for w in args.mapper_workers):
        raise ValueError(f"--mapper-workers must be >= 0, got {args.mapper_workers}")


def batch_for(args, size) -> int:
    return args.batch or (1 if size[0] * size[1] >= LARGE_PIXELS else 2)


def iters_for(args, size) -> int:
    return args.iters or (2 if args.quick or size[0] * size[1] >= LARGE_PIXELS else 3)


def derived_modes(base, derived):
    """The ``--derived`` mappers that apply to ``base``: derived inputs need polarization-angle stacks."""
    if base.INPUT.STACK.POLARIZATION != "angles" or not base.INPUT.STACK.ENABLED:
        return []
    return derived


def mapper_samples_for(args, size) -> int:
    if args.mapper_samples:
        return args.mapper_samples
    return 8 if args.quick else (12 if size[0] * size[1] >= LARGE_PIXELS else 40)


def _size_text(size) -> str:
    return f"{size[0]}x{size[1]}"


# ------------------------------------------------------------------------------------- machine
def machine_info(args) -> Dict[str, Any]:
    """What the numbers were measured on."""
    import cv2
    import detectron2
    import torch

    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout.splitlines()[:10]
    except (OSError, subprocess.SubprocessError):
        lscpu = []
    info = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "detectron2": detectron2.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "opencv_threads": cv2.getNumThreads(),
        "device": str(args.device),
        "lscpu": lscpu,
        "load_average_start": list(os.getloadavg()),
    }
    if torch.device(args.device).type == "cuda":
        info["cuda_device"] = torch.cuda.get_device_name(torch.device(args.device))
    return info


def _settings(args) -> Dict[str, Any]:
    return {
        "config_file": os.path.relpath(args.config_file, REPO) if args.config_file.startswith(REPO)
        else args.config_file,
        "opts": list(args.opts), "depth": args.depth, "channels": args.channels,
        "sizes": [_size_text(s) for s in args.sizes], "batch": {_size_text(s): batch_for(args, s) for s in args.sizes},
        "variants": {v.name: {"label": v.label, "overrides": dict(v.overrides)} for v in args.variants},
        "warmup": args.warmup, "iters": {_size_text(s): iters_for(args, s) for s in args.sizes}, "lr": args.lr,
        "threads": args.threads, "memory": args.memory,
        "mapper_workers": args.mapper_workers, "mapper_repeats": args.mapper_repeats,
        "mapper_samples": {_size_text(s): mapper_samples_for(args, s) for s in args.sizes},
        "stack_dtypes": args.stack_dtypes, "mapper_scales": args.mapper_scales,
        "worker_memory_samples": args.worker_memory_samples,
        "quick": args.quick, "seed": args.seed,
        "command": " ".join(["python tools/benchmark.py"] + list(getattr(args, "argv", None) or [])),
    }


# ------------------------------------------------------------------------------------- runs
def _progress(start: float):
    def report(message: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f}s] {message}", file=sys.stderr, flush=True)

    return report


def run(args: argparse.Namespace) -> Dict[str, Any]:
    """Measure everything the options ask for; returns the report (see :func:`to_markdown`)."""
    import torch
    from polar_rcnn import analysis as B
    from polar_rcnn.architecture import num_classes

    torch.set_num_threads(args.threads)
    progress = _progress(time.perf_counter())
    base = B.base_config(args.config_file, args.opts, depth=args.depth, channels=args.channels, device=args.device)
    report = {"machine": machine_info(args), "settings": _settings(args), "models": [], "mappers": [],
              "worker_memory": None, "profile": None}
    if args.profile:
        report["profile"] = [run_profile(args, base, size, progress) for size in args.sizes]
        report["machine"]["load_average_end"] = list(os.getloadavg())
        return report
    if args.raw_frames:
        report["raw_frames"] = run_raw_frames(args, progress)
        report["machine"]["load_average_end"] = list(os.getloadavg())
        return report
    if args.train_loader:
        report["loader_training"] = B.measure_loader_training(
            base, args.variants, warmup=args.warmup, iters=args.iters or 10, lr=args.lr, seed=args.seed,
            progress=progress)
        report["machine"]["load_average_end"] = list(os.getloadavg())
        return report

    for size in args.sizes:
        report["models"] += B.measure_models(
            base, args.variants, size, batch_for(args, size), warmup=args.warmup, iters=iters_for(args, size),
            lr=args.lr, flops=not args.no_flops, memory=args.memory, config_file=args.config_file, opts=args.opts,
            depth=args.depth, channels=args.channels, threads=args.threads, seed=args.seed, progress=progress)

    if args.mapper_workers or args.worker_memory_samples:
        stack_channels = base.INPUT.STACK.CHANNELS or base.MODEL.POLAR.IN_CHANNELS
        with tempfile.TemporaryDirectory(prefix="polar_bench_") as root:
            for size in args.sizes:
                files = max(4, max(args.mapper_workers or [0]))
                progress(f"{_size_text(size)}: writing {files} images + stacks ({', '.join(args.stack_dtypes)})")
                records = B.write_synthetic_files(os.path.join(root, _size_text(size)), files, size, stack_channels,
                                                  args.stack_dtypes, num_classes=num_classes(base), seed=args.seed)
                if args.mapper_workers:
                    report["mappers"] += B.measure_mappers(base, size, records, args.mapper_workers,
                                                           mapper_samples_for(args, size), args.mapper_repeats,
                                                           scales=args.mapper_scales, progress=progress,
                                                           derived=derived_modes(base, args.derived))
                if args.worker_memory_samples and size == min(args.sizes, key=lambda s: s[0] * s[1]):
                    dtype = "uint16" if "uint16" in records else list(records)[0]
                    workers = max(1, max(args.mapper_workers or [1]))
                    progress(f"{_size_text(size)}: worker memory over {args.worker_memory_samples} samples "
                             "(in a fresh process)")
                    mem = B.run_in_fresh_process(
                        B.worker_memory_in_fresh_process, args.config_file, list(args.opts), size, records[dtype],
                        workers, args.worker_memory_samples, args.worker_memory_interval, depth=args.depth,
                        channels=args.channels)
                    mem.update(size=_size_text(size), mapper="polar", stack_dtype=dtype,
                               process="a fresh process")
                    report["worker_memory"] = mem
    report["targets"] = evaluate_targets(report)
    report["machine"]["load_average_end"] = list(os.getloadavg())
    return report


def run_raw_frames(args, progress) -> Dict[str, Any]:
    """Reader seconds per raw frame vs a ready stack at --raw-size, and the round-trip errors."""
    from polar_rcnn.analysis.raw_frames import raw_read_cost, round_trip_errors

    out: Dict[str, Any] = {"size": _size_text(args.raw_size), "read": {}, "round_trip": []}
    with tempfile.TemporaryDirectory(prefix="polar_raw_") as root:
        progress(f"{_size_text(args.raw_size)}: raw frames vs ready stacks")
        out["read"] = raw_read_cost(root, tuple(args.raw_size), repeats=max(1, args.iters or 3))
    for pattern in ("mono", "color"):
        for interpolation in ("bilinear", "ea"):
            for noise in (0.0, 0.01):
                progress(f"round trip {pattern} {interpolation} noise {noise:g}")
                row = round_trip_errors(pattern, interpolation, noise_std=noise, seed=args.seed)
                out["round_trip"].append(dict(pattern=pattern, interpolation=interpolation, noise_std=noise, **row))
    return out


def _raw_frames_markdown(raw: Dict[str, Any]) -> List[str]:
    lines = ["", f"## Raw polarization frames ({raw['size']})", "",
             "Seconds per frame of `SampleReader.read_stack` + the mapper's tensor copy (median): a raw 12-bit "
             "16-bit PNG read, checked and demosaiced, next to the same stack as a ready uint16 `.npy`.", ""]
    rows = [[name, str(r["channels"]), _fmt(r["seconds"] * 1000, 1)] for name, r in raw["read"].items()]
    lines += _table(["pattern / source", "channels", "ms / frame"], rows)
    lines += ["", "DoLP / AoLP after mosaicing a synthetic 128x128 Malus'-law scene (2 frames) and demosaicing it: "
              "mean and 95th-percentile absolute error on flat regions and at edges (AoLP in degrees, where the "
              "true DoLP >= 0.3).", ""]
    rows = [[r["pattern"], r["interpolation"], f"{r['noise_std']:g}",
             _fmt(r["flat_dolp_mean"], 4), _fmt(r["flat_dolp_p95"], 4), _fmt(r["flat_aolp_mean"], 2),
             _fmt(r["flat_aolp_p95"], 2), _fmt(r["edge_dolp_mean"], 4), _fmt(r["edge_dolp_p95"], 4),
             _fmt(r["edge_aolp_mean"], 2), _fmt(r["edge_aolp_p95"], 2)] for r in raw["round_trip"]]
    lines += _table(["pattern", "interpolation", "noise", "flat DoLP", "p95", "flat AoLP", "p95", "edge DoLP", "p95",
                     "edge AoLP", "p95"], rows)
    return lines


def run_profile(args, base, size, progress) -> Dict[str, Any]:
    """torch.profiler over train steps of vanilla and one polar variant at ``size``: self CPU time
    per op (and per op and input shapes) of both, sorted by the polar model's extra time."""
    from detectron2.utils.events import EventStorage
    from polar_rcnn import analysis as B
    from polar_rcnn.architecture import num_classes

    vanilla_v, polar_v = args.variants
    batch = B.random_batch(batch_for(args, size), *size, base.MODEL.POLAR.IN_CHANNELS,
                           num_classes=num_classes(base), seed=args.seed)
    runners = []
    state = None
    for v in (vanilla_v, polar_v):
        cfg = B.variant_config(base, v.overrides)
        model = B.build_variant_model(cfg, state, seed=args.seed)
        state = state or {k: t.detach().clone() for k, t in model.state_dict().items()}
        runners.append(B.ModelRunner(cfg, model, batch, lr=args.lr))
    progress(f"{_size_text(size)}: timing {vanilla_v.name} and {polar_v.name} without the profiler")
    times = {vanilla_v.name: [], polar_v.name: []}
    with EventStorage():
        for r in runners:
            for _ in range(args.warmup):
                r.train_step()
        for i in range(iters_for(args, size)):
            for r, v in (list(zip(runners, (vanilla_v, polar_v))))[:: 1 if i % 2 == 0 else -1]:
                times[v.name].append(r.timed(r.train_step))
    profiles = {}
    for r, v in zip(runners, (vanilla_v, polar_v)):
        progress(f"{_size_text(size)}: profiling {args.profile_iters} train steps of {v.name}")
        prof = B.profile_train_steps(r, iters=args.profile_iters, warmup=0)
        profiles[v.name] = {"by_op": B.op_times(prof, args.profile_iters),
                            "by_shape": B.op_times(prof, args.profile_iters, by_shape=True)}
    pv, pp = profiles[vanilla_v.name], profiles[polar_v.name]
    only_polar = {k: t for k, t in pp["by_shape"].items() if k not in pv["by_shape"]}
    return {
        "size": _size_text(size), "batch": batch_for(args, size), "variant": polar_v.name,
        "train_s": {k: statistics.median(t) for k, t in times.items()}, "train_s_all": times,
        "self_cpu_ms": {vanilla_v.name: sum(t["ms"] for t in pv["by_op"].values()),
                        polar_v.name: sum(t["ms"] for t in pp["by_op"].values())},
        "polar_only_shapes_ms": sum(t["ms"] for t in only_polar.values()),
        "by_op": B.op_delta_rows(pv["by_op"], pp["by_op"], args.top),
        "by_shape": B.op_delta_rows(pv["by_shape"], pp["by_shape"], args.top),
        "polar_only_top": sorted(({"op": k[0], "shapes": k[1], **t} for k, t in only_polar.items()),
                                 key=lambda r: -r["ms"])[: args.top],
    }


# ------------------------------------------------------------------------------------- targets
def _find(rows: List[Dict[str, Any]], **match) -> Optional[Dict[str, Any]]:
    return next((r for r in rows if all(r.get(k) == v for k, v in match.items())), None)


def evaluate_targets(report: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The issue's targets with what this run measured and whether each is met (None: not measured)."""
    out = []
    sizes = list(dict.fromkeys(r["size"] for r in report["models"]))
    for size in sizes:
        for variant, limit in TRAIN_LIMITS.items():
            row = _find(report["models"], size=size, variant=variant)
            for metric, what in (("train_s", "train s/iter"), ("infer_s", "inference s/image")):
                ratio = row.get(f"{metric}_ratio") if row else None
                out.append({"target": f"{variant} {what} at {size} <= +{100 * (limit - 1):.0f}% of vanilla",
                            "measured": None if ratio is None else f"{ratio:.3f}x",
                            "met": None if ratio is None else ratio <= limit})
    from polar_rcnn.analysis import FULL_RESOLUTION  # a comparison, not the path the loader takes

    mapper_rows = report["mappers"]
    if mapper_rows:
        workers = min(r["workers"] for r in mapper_rows)
        for r in mapper_rows:
            if r["mapper"].startswith("polar") and r["mapper"] != FULL_RESOLUTION and r["workers"] == workers:
                ratio = r["ms_per_sample_ratio"]
                out.append({"target": f"{r['mapper']} mapper ({r['stack_dtype']}) at {r['size']}, resize "
                                      f"x{r.get('resize', 1.0):g}, {workers} workers: "
                                      f"time per sample <= {MAPPER_LIMIT}x RGB mapper",
                            "measured": f"{ratio:.2f}x", "met": ratio <= MAPPER_LIMIT})
    mem = report.get("worker_memory")
    if mem:
        key = "uss_mb" if mem.get("first_uss_mb") is not None else "rss_mb"
        what = "USS" if key == "uss_mb" else "VmRSS"
        second, last = quarter_median(mem, key, 2), quarter_median(mem, key, 4)
        growth = (last - second) / second if second else 0.0
        out.append({"target": f"loader worker memory flat over {mem['samples']} samples ({what} summed over "
                              f"workers: median of the last quarter of readings <= +{100 * FLAT_LIMIT:.0f}% of "
                              "the second quarter's)",
                    "measured": f"{mem[f'first_{key}']:.0f} (first reading); {second:.0f} -> {last:.0f} MiB "
                                f"({100 * growth:+.1f}%)",
                    "met": growth <= FLAT_LIMIT})
    return out


def quarter_median(mem: Dict[str, Any], key: str, quarter: int) -> float:
    """Median of the worker-memory readings ``key`` taken in the given quarter (1-4) of the run."""
    n = mem["samples"]
    values = [s[key] for s in mem["series"] if (quarter - 1) * n / 4 < s["samples"] <= quarter * n / 4]
    return statistics.median(values) if values else float("nan")


# ------------------------------------------------------------------------------------- output
def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows]


def to_markdown(report: Dict[str, Any]) -> str:
    """The report as markdown: machine, settings, model table, mapper table, worker memory, targets
    (or the profile tables)."""
    m, s = report["machine"], report["settings"]
    load_end = m.get("load_average_end")
    lines = [
        "# polar-rcnn benchmark", "",
        f"- command: `{s['command']}`",
        f"- machine: {m['platform']}, {m['cpu_count']} CPUs, device {m['device']}"
        + (f" ({m['cuda_device']})" if m.get("cuda_device") else ""),
        f"- torch {m['torch']} ({m['torch_threads']} threads, {m['torch_interop_threads']} inter-op), "
        f"detectron2 {m['detectron2']}, Python {m['python']}, OpenCV threads {m['opencv_threads']}",
        f"- load average (1, 5, 15 min) at start {_loads(m['load_average_start'])}"
        + (f", at end {_loads(load_end)}" if load_end else ""),
        f"- config `{s['config_file']}`" + (f" + `{' '.join(s['opts'])}`" if s["opts"] else "")
        + (f", ResNet depth {s['depth']}" if s["depth"] else "")
        + (f", {s['channels']} stack channels" if s["channels"] else ""),
        f"- batch per size {s['batch']}, timed iterations per size {s['iters']} after {s['warmup']} warm-up "
        f"per variant (interleaved, medians), lr {s['lr']}, {m['date']}",
    ]
    if m.get("lscpu"):
        lines += ["", "```", *m["lscpu"], "```"]
    if report.get("profile"):
        lines += _profile_markdown(report["profile"])
        return "\n".join(lines) + "\n"
    if report.get("raw_frames"):
        return "\n".join(lines + _raw_frames_markdown(report["raw_frames"])) + "\n"
    if report.get("loader_training"):
        rows = report["loader_training"]
        lines += ["", f"## Train iterations fed by the config's train loader ({', '.join(rows[0]['datasets'])})", "",
                  "Medians over the timed iterations (variants interleaved, same images in the same order); "
                  "data = waiting for the loader, step = forward + backward + optimizer step.", ""]
        table = [[r["variant"], str(r["batch"]), str(r["workers"]), _fmt(r["iter_s"]), _fmt(r["data_s"]),
                  _fmt(r["step_s"]), _fmt(r.get("iter_s_ratio")), _fmt(r.get("step_s_ratio"))] for r in rows]
        lines += _table(["variant", "batch", "workers", "s/iter", "data s", "step s", "iter x", "step x"], table)
        return "\n".join(lines) + "\n"

    lines += ["", "## Models", "",
              "Absolute numbers, then ratios to vanilla at the same size. GFLOPs: fvcore, one image, inference. "
              "Peak memory: " + (report["models"][0].get("peak_kind", "-") if report["models"] else "-") + ".", ""]
    header = ["size", "batch", "variant", "params (M)", "GFLOPs", "train s/iter", "infer s/img", "peak MiB",
              "params x", "GFLOPs x", "train x", "infer x", "peak x"]
    rows = [[r["size"], str(r["batch"]), r["variant"], _fmt(r["params"] / 1e6, 2), _fmt(r.get("gflops"), 1),
             _fmt(r["train_s"]), _fmt(r["infer_s"]), _fmt(r.get("peak_mb"), 0),
             _fmt(r.get("params_ratio")), _fmt(r.get("gflops_ratio")), _fmt(r.get("train_s_ratio")),
             _fmt(r.get("infer_s_ratio")), _fmt(r.get("peak_mb_ratio"))] for r in report["models"]]
    lines += _table(header, rows)
    lines += [""] + [f"- `{k}`: {v}" for k, v in _variant_notes(report).items()]

    if report["mappers"]:
        lines += ["", "## Data mappers", "",
                  "Training mappers through a DataLoader (batch 1), median of interleaved rounds; `x` = polar "
                  "mapper time per sample / RGB mapper's with the same workers.", ""]
        header = ["size", "resize", "mapper", "stack dtype", "workers", "samples/s", "ms/sample", "x RGB"]
        rows = [[r["size"], f"x{r.get('resize', 1.0):g}", r["mapper"], r["stack_dtype"], str(r["workers"]),
                 _fmt(r["samples_per_s"], 1),
                 _fmt(r["ms_per_sample"], 1), _fmt(r.get("ms_per_sample_ratio"), 2)] for r in report["mappers"]]
        lines += _table(header, rows)

    mem = report.get("worker_memory")
    if mem:
        lines += ["", "## Data-loader worker memory", "",
                  f"`build_detection_train_loader` with the polar mapper ({mem['stack_dtype']} stacks, {mem['size']}) "
                  f"in {mem.get('process', 'the benchmark process')}, {mem['workers']} workers, {mem['samples']} "
                  f"samples; memory summed over the workers, read from /proc every {mem['interval']} samples "
                  "(USS: private pages, from smaps_rollup).",
                  ""]
        series = mem["series"]
        picks = sorted({0, len(series) // 4, len(series) // 2, 3 * len(series) // 4, len(series) - 1})
        rows = [[str(series[i]["samples"]), _fmt(series[i]["seconds"], 1), str(series[i]["workers"]),
                 _fmt(series[i]["rss_mb"], 1), _fmt(series[i]["uss_mb"], 1)] for i in picks]
        lines += _table(["samples", "seconds", "workers", "VmRSS MiB", "USS MiB"], rows)

    if report.get("targets"):
        lines += ["", "## Targets", ""]
        rows = [[t["target"], t["measured"] or "-", {True: "yes", False: "**no**", None: "-"}[t["met"]]]
                for t in report["targets"]]
        lines += _table(["target", "measured", "met"], rows)
    return "\n".join(lines) + "\n"


def _variant_notes(report: Dict[str, Any]) -> Dict[str, str]:
    """variant -> its label and config overrides, for the lines under the model table."""
    described = report["settings"].get("variants", {})
    notes = {}
    for r in report["models"]:
        overrides = described.get(r["variant"], {}).get("overrides", {})
        extra = ", ".join(f"{k} {v!r}" for k, v in overrides.items()) if overrides else "no overrides"
        notes[r["variant"]] = f"{r['label']} ({extra})"
    return notes


def _loads(values) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def _profile_markdown(profiles: List[Dict[str, Any]]) -> List[str]:
    from polar_rcnn import analysis as B

    lines = []
    for p in profiles:
        v = p["variant"]
        (van_s, pol_s) = (p["train_s"][B.VANILLA], p["train_s"][v])
        lines += ["", f"## Profile at {p['size']}, batch {p['batch']}: vanilla vs {v}", "",
                  f"Train step without the profiler (median): vanilla {van_s:.3f} s, {v} {pol_s:.3f} s "
                  f"({pol_s / van_s:.3f}x). Self CPU time per step under the profiler: vanilla "
                  f"{p['self_cpu_ms'][B.VANILLA]:.0f} ms, {v} {p['self_cpu_ms'][v]:.0f} ms; ops whose input shapes "
                  f"occur only in {v}: {p['polar_only_shapes_ms']:.0f} ms.", "",
                  "### Ops with the most extra self CPU time (per train step)", ""]
        rows = [[r["op"], _fmt(r["base_ms"], 1), _fmt(r["ms"], 1), _fmt(r["delta_ms"], 1), _fmt(r["calls"], 0)]
                for r in p["by_op"]]
        lines += _table(["op", "vanilla ms", f"{v} ms", "extra ms", "calls"], rows)
        lines += ["", "### Same, by op and input shapes", ""]
        rows = [[r["op"], r["shapes"][:90], _fmt(r["base_ms"], 1), _fmt(r["ms"], 1), _fmt(r["delta_ms"], 1),
                 _fmt(r["calls"], 0)] for r in p["by_shape"]]
        lines += _table(["op", "input shapes", "vanilla ms", f"{v} ms", "extra ms", "calls"], rows)
    return lines


def write_outputs(report: Dict[str, Any], prefix: str) -> List[str]:
    """Write ``prefix``.md and ``prefix``.json (a trailing .md / .json on ``prefix`` is dropped)."""
    root, ext = os.path.splitext(prefix)
    prefix = root if ext in (".md", ".json") else prefix
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    with open(prefix + ".md", "w") as f:
        f.write(to_markdown(report))
    with open(prefix + ".json", "w") as f:
        json.dump(report, f, indent=1, default=str)
    return [prefix + ".md", prefix + ".json"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    args.argv = argv
    logging.basicConfig(level=logging.WARNING)
    report = run(args)
    text = to_markdown(report)
    print(text)
    if args.output:
        for path in write_outputs(report, args.output):
            print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
