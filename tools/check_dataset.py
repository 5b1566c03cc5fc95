#!/usr/bin/env python
"""Check registered datasets for problems without training, and pairing of stacks with images.

    .venv/bin/python tools/check_dataset.py --config-file configs/faster_rcnn_R_18_FPN_demo_polar_synth.yaml
    .venv/bin/python tools/check_dataset.py --dataset polar_synth_val --max-images 50 --workers 2
    .venv/bin/python tools/check_dataset.py --config-file CONFIG MODEL.POLAR.IN_CHANNELS 12

Datasets: every --dataset NAME, else the config's DATASETS.TRAIN + DATASETS.TEST (built-in names
and those the config's DATASETS.POLAR_COCO registers). Every record is read the way training reads
it (INPUT.STACK.* of the config) and checked for: missing, truncated or unreadable images and
stacks; stack channels vs INPUT.STACK.CHANNELS (else MODEL.POLAR.IN_CHANNELS); image size vs the
record's height/width, stack size vs the image (or, for two-sensor rigs, the stack-to-image
homography: INPUT.STACK.HOMOGRAPHY or the record's "stack_homography", see
tools/estimate_homography.py); raw polarization frames (INPUT.STACK.SOURCE "dofp") read and
demosaiced, their values within INPUT.STACK.RAW.BITS; NaN/Inf stack values; unknown categories (or
>= MODEL.ROI_HEADS.NUM_CLASSES); boxes outside the image or of zero area. A model class count
(MODEL.ROI_HEADS.NUM_CLASSES; RetinaNet: MODEL.RETINANET.NUM_CLASSES) other than the dataset's
number of categories is a warning. Pairing: the stack's
intensity (mean over channels; warped onto the image through the homography, compared where it
covers the image) must correlate with its image's gray level (NCC of band-passed maps
downsampled to --pair-size px: >= --min-pair-corr) and must not match the image of one of the
--neighbours frames before or after it (same video_id, else file order) clearly better (by more
than --pair-margin). Every problem is printed as "kind: file: what", then a summary table.

Exit status: 0 when nothing is wrong (warnings allowed), 1 when problems were found, 2 on usage errors.
"""
from __future__ import annotations  # the annotations name polar_rcnn types, imported where used

import argparse
import dataclasses
import json
import logging
import sys
import time
from collections import Counter, defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

logger = logging.getLogger("polar_rcnn.tools.check_dataset")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", default="", metavar="FILE",
                   help="config yaml (default: Detectron2 + polar-rcnn defaults)")
    p.add_argument("--dataset", action="append", default=[], metavar="NAME",
                   help="registered dataset to check (repeatable); default: DATASETS.TRAIN + DATASETS.TEST")
    p.add_argument("--max-images", type=int, default=0, metavar="N",
                   help="check a seeded random sample of N images per dataset (0: all); pairing then "
                   "compares sampled neighbours")
    p.add_argument("--seed", type=int, default=0, help="seed of the --max-images sample")
    p.add_argument("--workers", type=int, default=0, help="worker processes reading files (0: in this process)")
    p.add_argument("--min-pair-corr", type=float, default=0.5,
                   help="flag a stack whose structure NCC with its image is below this (synthetic demo data: "
                   ">= 0.98 when paired, < 0.06 for another video's image); -1 disables (default: %(default)s)")
    p.add_argument("--pair-margin", type=float, default=0.05,
                   help="flag a stack whose NCC with a neighbouring frame's image exceeds its own by more than this "
                   "(default: %(default)s)")
    p.add_argument("--neighbours", type=int, default=3,
                   help="frames compared on each side (same video_id, else file order); 0 disables that check "
                   "(default: %(default)s)")
    p.add_argument("--pair-size", type=int, default=128,
                   help="longer side in pixels of the downsampled maps compared for pairing (default: %(default)s)")
    p.add_argument("--no-pairing", action="store_true", help="skip the image/stack pairing check")
    p.add_argument("--show", type=int, default=3, metavar="N",
                   help="files listed per problem kind in the summary (default: %(default)s)")
    p.add_argument("--output", default="", metavar="FILE.json", help="also write every problem to this JSON file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                   help="config overrides as trailing KEY VALUE pairs, as in train_net.py")
    args = p.parse_args(argv)
    for name in ("max_images", "workers", "neighbours", "show"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0")
    if args.pair_size < 8:
        p.error("--pair-size must be >= 8")
    return args


def dataset_names(cfg, requested: Sequence[str]) -> List[str]:
    names = list(requested) or list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    return list(dict.fromkeys(names))  # unique, in order


def load_records(name: str):
    """Records of ``name``, or an empty list and the ``dataset_*`` problem when its loader fails."""
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from polar_rcnn.data import DataError
    from polar_rcnn.data.dataset_checks import Problem

    try:
        return DatasetCatalog.get(name), []
    except DataError as e:
        return [], [Problem.from_error(e, name)]
    except Exception as e:  # another loader's error is a finding too, not a crash
        file = MetadataCatalog.get(name).get("json_file") or name
        return [], [Problem("dataset_format", file, f"cannot load dataset {name!r} ({type(e).__name__}: {e})", name)]


def num_classes(cfg, name: str) -> Optional[int]:
    """Categories an annotation may have: the dataset's, and fewer if the model's class count
    (MODEL.ROI_HEADS.NUM_CLASSES, RetinaNet: MODEL.RETINANET.NUM_CLASSES) is smaller (the mapper
    rejects those)."""
    from detectron2.data import MetadataCatalog
    from polar_rcnn.architecture import num_classes as model_num_classes

    classes = MetadataCatalog.get(name).get("thing_classes")
    limits = [model_num_classes(cfg)] + ([len(classes)] if classes else [])
    return min(limits)


def sample(records: List[Dict], max_images: int, seed: int) -> List[Dict]:
    import numpy as np

    if not max_images or len(records) <= max_images:
        return records
    keep = np.sort(np.random.default_rng(seed).choice(len(records), max_images, replace=False))
    return [records[i] for i in keep]


def check_dataset(name: str, cfg, args) -> Tuple[int, List[Problem], List[str]]:
    """Check one registered dataset; return (images checked, problems, warnings)."""
    from tqdm import tqdm
    from detectron2.data import MetadataCatalog
    from polar_rcnn.data import STACK_FILE_KEY
    from polar_rcnn.data.dataset_checks import (CheckOptions, PairItem, check_records, class_count_warning,
                                                frame_order_key, pairing_group, pairing_problems)

    records, problems = load_records(name)
    warning = class_count_warning(cfg, MetadataCatalog.get(name).get("thing_classes")) if records else None
    warnings = [f"[{name}] {warning}"] if warning else []
    records = sorted(sample(records, args.max_images, args.seed), key=frame_order_key)
    pairing = not args.no_pairing and cfg.INPUT.STACK.ENABLED
    options = CheckOptions.from_config(cfg, num_classes=num_classes(cfg, name), pairing=pairing,
                                       pair_size=args.pair_size)
    results = check_records(records, options, workers=args.workers)
    bar = tqdm(total=len(records), desc=name, unit="img", disable=args.no_progress or not records, file=sys.stderr)

    def items():
        for record, result in zip(records, results):
            problems.extend(dataclasses.replace(p, dataset=name) for p in result.problems)
            bar.update()
            yield PairItem(record["file_name"], record.get(STACK_FILE_KEY, ""), pairing_group(record),
                           result.image_map, result.stack_map)

    if pairing:
        found = pairing_problems(items(), min_corr=args.min_pair_corr, margin=args.pair_margin,
                                 neighbours=args.neighbours)
        problems.extend(dataclasses.replace(p, dataset=name) for p in found)
    else:
        for _ in items():
            pass
    bar.close()
    return len(records), problems, warnings


def summary_table(problems: List[Problem], show: int) -> str:
    from tabulate import tabulate
    from polar_rcnn.data.dataset_checks import PROBLEM_KINDS

    counts = Counter(p.kind for p in problems)
    files = defaultdict(list)
    for p in problems:
        if len(files[p.kind]) < show and p.file not in files[p.kind]:
            files[p.kind].append(p.file)
    order = [k for k in PROBLEM_KINDS if k in counts] + sorted(k for k in counts if k not in PROBLEM_KINDS)
    rows = [[k, counts[k], "\n".join(files[k]) + ("\n..." if counts[k] > len(files[k]) else "")] for k in order]
    return tabulate(rows, headers=["problem", "count", "first files"], tablefmt="grid")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    from detectron2.data import DatasetCatalog
    from polar_rcnn.engine.cli import setup_tool

    cfg = setup_tool(args.config_file, args.opts)
    if cfg is None:
        return 2
    names = dataset_names(cfg, args.dataset)
    if not names:
        print("No datasets to check: give --dataset NAME or a --config-file with DATASETS.TRAIN/TEST.", file=sys.stderr)
        return 2
    unknown = [n for n in names if n not in DatasetCatalog.list()]
    if unknown:
        print(f"Not registered: {unknown}. Registered datasets: {sorted(DatasetCatalog.list())}", file=sys.stderr)
        return 2

    start = time.perf_counter()
    problems, warnings, checked = [], [], {}
    for name in names:
        checked[name], found, warned = check_dataset(name, cfg, args)
        problems.extend(found)
        warnings.extend(warned)
    seconds = time.perf_counter() - start

    for p in problems:
        print(p)
    for w in warnings:
        print(f"warning: {w}")
    total = sum(checked.values())
    where = ", ".join(f"{n} ({k} images)" for n, k in checked.items())
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"datasets": checked, "seconds": seconds, "problems": [dataclasses.asdict(p) for p in problems],
                       "counts": dict(Counter(p.kind for p in problems)), "warnings": warnings}, f, indent=1)
    warned = f"; {len(warnings)} warning{'s' if len(warnings) > 1 else ''} (above)" if warnings else ""
    if not problems:
        print(f"{'No' if warnings else 'OK: no'} problems in {total} images of {where} ({seconds:.1f} s){warned}.")
        return 0
    print()
    print(summary_table(problems, args.show))
    bad_images = len({p.file for p in problems})
    print(f"{len(problems)} problems in {bad_images} files; checked {total} images of {where} ({seconds:.1f} s)"
          f"{warned}.")
    return 1


if __name__ == "__main__":
    sys.exit(main())
