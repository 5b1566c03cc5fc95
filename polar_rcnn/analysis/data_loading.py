"""What the data path costs: samples per second of Detectron2's ``DatasetMapper`` and
:class:`~polar_rcnn.data.PolarDatasetMapper` on synthetic files with 0..N DataLoader workers,
training fed by the config's own loader, and the resident memory of loader workers over a long run."""
import logging
import os
import statistics
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from detectron2.config import CfgNode
from detectron2.data import DatasetMapper, build_detection_train_loader
from detectron2.data.build import worker_init_reset_seed
from detectron2.structures import BoxMode
from detectron2.utils.events import EventStorage

from ..architecture import stack_delivery_stride
from ..data import PolarDatasetMapper
from .memory import child_pids, process_memory_mb
from .models import ModelRunner, add_ratios
from .variants import VANILLA, ModelVariant, base_config, build_variant_model, variant_config

logger = logging.getLogger(__name__)


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


def derived_config(base: CfgNode, derived: str, derived_on: str = "model") -> CfgNode:
    """``base`` (raw stacks of ``MODEL.POLAR.IN_CHANNELS`` channels) with model input ``derived``
    (``INPUT.STACK.DERIVED``) computed ``derived_on`` the model or the loader."""
    cfg = base.clone()
    cfg.defrost()
    if derived != "raw":
        raw = int(cfg.INPUT.STACK.CHANNELS) or int(cfg.MODEL.POLAR.IN_CHANNELS)
        cfg.INPUT.STACK.CHANNELS = raw
        cfg.MODEL.POLAR.IN_CHANNELS = 3 * raw // len(cfg.INPUT.STACK.ANGLES)
        cfg.MODEL.POLAR.STACK_MEAN, cfg.MODEL.POLAR.STACK_STD = [0.0], [1.0]
    cfg.INPUT.STACK.DERIVED, cfg.INPUT.STACK.DERIVED_ON = derived, derived_on
    return cfg


#: the polar mapper with INPUT.STACK.RESOLUTION "full" in :func:`build_mappers`
FULL_RESOLUTION = "polar@full"


def mapper_name(derived: str = "raw", derived_on: str = "model") -> str:
    """The mapper column of :func:`measure_mappers`: "polar", or e.g. "polar stokes@loader"."""
    return "polar" if derived == "raw" else f"polar {derived}@{derived_on}"


def build_mappers(base: CfgNode, size: Tuple[int, int], scale: float = 1.0,
                  derived: Sequence[Tuple[str, str]] = ()) -> Dict[str, Callable]:
    """``{"rgb": Detectron2's DatasetMapper, "polar": PolarDatasetMapper}`` for training at ``size``
    resized by ``scale``, plus a polar mapper per ``(INPUT.STACK.DERIVED, DERIVED_ON)`` in
    ``derived`` (named by :func:`mapper_name`) and, when ``"polar"`` delivers the stack on the
    branch's grid, :data:`FULL_RESOLUTION` delivering it at the image's resolution."""
    cfg = mapper_config(base, size, scale)
    mappers = {"rgb": DatasetMapper(cfg, is_train=True), "polar": PolarDatasetMapper(cfg, is_train=True)}
    if stack_delivery_stride(cfg) > 1:
        full = cfg.clone()
        full.INPUT.STACK.RESOLUTION = "full"
        mappers[FULL_RESOLUTION] = PolarDatasetMapper(full, is_train=True)
    for mode, where in derived:
        if mode != "raw":
            mappers[mapper_name(mode, where)] = PolarDatasetMapper(derived_config(cfg, mode, where), is_train=True)
    return mappers


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
                    derived: Sequence[Tuple[str, str]] = (),
                    progress: Callable[[str], None] = logger.info) -> List[Dict[str, Any]]:
    """Rows (size, resize scale, mapper, stack dtype, workers, median samples/s and ms/sample, ratio
    of ms/sample to the RGB mapper's with the same scale and workers) for the RGB mapper, the polar
    one and one per ``(INPUT.STACK.DERIVED, DERIVED_ON)`` in ``derived`` (polarization-angle stacks).
    The RGB mapper reads the images of the first dtype's records; configurations are interleaved
    over ``repeats``."""
    dtypes = list(records)
    mappers = {scale: build_mappers(base, size, scale, derived) for scale in scales}
    polar = [name for name in mappers[scales[0]] if name != "rgb"]
    cases = [("rgb", dtypes[0], None)] + [(name, d, d) for name in polar for d in dtypes]
    size_text = f"{size[0]}x{size[1]}"
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

def measure_loader_training(base: CfgNode, variants: Sequence[ModelVariant], *, warmup: int = 2, iters: int = 10,
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
