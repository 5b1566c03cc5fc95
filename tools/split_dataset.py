#!/usr/bin/env python
"""Split a COCO JSON (with stack_file entries) into train/val(/test) JSONs by video, never by frame.

    .venv/bin/python tools/split_dataset.py data/all.json --image-root data/images
    .venv/bin/python tools/split_dataset.py data/all.json --split train=0.7 --split val=0.15 --split test=0.15
    .venv/bin/python tools/split_dataset.py data/all.json --group-by similarity --image-root data/images

Writes <output-dir>/<stem>_<split>.json: each keeps the source's categories and other top-level
keys, its images' entries unchanged (file_name, stack_file, video_id, ...) and exactly their
annotations (ids preserved); `info.split` records how it was made. All splits share the source's
image and stack roots. Grouping (--group-by): `video` keeps each video_id in one split; without
video ids `similarity` groups chains of similar consecutive frames (file order) and every pair of
near-duplicates, `order` groups runs of --chunk-size frames in file order, `image` does not
group (a frame-level split, for comparison); `auto` = video if every image has one, else
similarity. Afterwards every frame is compared with the frames of the other splits (NCC of gray
thumbnails) and near-duplicates across splits (NCC >= --dup-threshold) are reported. Every pair
of frames is compared (quadratic: about 3 s for 10,000 images on 2 CPU cores).

Exit status: 0 on success (also when near-duplicates were found, unless --strict), 1 with
--strict and near-duplicates across splits, 2 on usage errors or unreadable input.
"""
from __future__ import annotations  # the annotations name numpy types, imported where used

import argparse
import json
import logging
import os
import sys
from collections import Counter, defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

logger = logging.getLogger("polar_rcnn.tools.split_dataset")
# polar_rcnn.data.splits.GROUP_MODES, here for --help without importing polar_rcnn (tests/tools/test_help.py)
GROUP_MODES = ("auto", "video", "similarity", "order", "image")


def _fraction(text: str):
    name, sep, value = text.partition("=")
    try:
        fraction = float(value)
    except ValueError:
        fraction = -1.0
    if not sep or not name or fraction < 0:
        raise argparse.ArgumentTypeError(f"expected NAME=FRACTION with FRACTION >= 0, got {text!r}")
    return name, fraction


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("json_file", help="COCO instances JSON to split")
    p.add_argument("--split", type=_fraction, action="append", default=[], metavar="NAME=FRACTION",
                   help="a split and its share of the images (repeatable; normalised to sum 1; "
                   "default: train=0.8 val=0.2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random assignment of groups to splits")
    p.add_argument("--group-by", choices=GROUP_MODES, default="auto",
                   help="what must stay within one split (default: %(default)s)")
    p.add_argument("--chunk-size", type=int, default=32,
                   help="frames per group for --group-by order (default: %(default)s)")
    p.add_argument("--image-root", default="", metavar="DIR",
                   help="folder the images' file_name entries are relative to (default: the JSON's folder)")
    p.add_argument("--thumb-size", type=int, default=32,
                   help="side in pixels of the thumbnails compared (default: %(default)s)")
    p.add_argument("--chain-threshold", type=float, default=0.9,
                   help="--group-by similarity: consecutive frames with thumbnail NCC >= this share a group "
                   "(default: %(default)s)")
    p.add_argument("--dup-threshold", type=float, default=0.95,
                   help="frames with thumbnail NCC >= this are near-duplicates (grouped together by "
                   "'similarity', reported across splits); 0 disables (no images are read then, except "
                   "for --group-by similarity) (default: %(default)s)")
    p.add_argument("--output-dir", default="", metavar="DIR", help="where to write (default: the JSON's folder)")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.add_argument("--strict", action="store_true", help="exit 1 when near-duplicates end up in different splits")
    p.add_argument("--show", type=int, default=5, metavar="N",
                   help="near-duplicate examples listed per split pair (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    args.split = args.split or [("train", 0.8), ("val", 0.2)]
    names = [n for n, _ in args.split]
    if len(set(names)) != len(names):
        p.error(f"split names must be unique, got {names}")
    if sum(f for _, f in args.split) <= 0:
        p.error("split fractions must have a positive sum")
    if args.chunk_size < 1 or args.thumb_size < 4 or args.show < 0:
        p.error("--chunk-size >= 1, --thumb-size >= 4 and --show >= 0 required")
    return args


def read_coco(path: str) -> dict:
    from polar_rcnn.data import DataError

    try:
        with open(path) as f:
            coco = json.load(f)
    except FileNotFoundError:
        raise DataError(path, "annotation file not found", kind="missing")
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(path, f"not a JSON file ({e})", kind="unreadable")
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco.get(key), list):
            raise DataError(path, f"COCO instances file needs a list '{key}'", kind="record")
    return coco


def thumbnails(images: List[dict], image_root: str, size: int, progress: bool) -> np.ndarray:
    """One thumbnail per image; unreadable images get zeros (never near-duplicates) and a warning."""
    import numpy as np
    from tqdm import tqdm
    from polar_rcnn.data import DataError
    from polar_rcnn.data.splits import thumbnail

    out = np.zeros((len(images), size * size), dtype=np.float32)
    bad = []
    for i, image in enumerate(tqdm(images, desc="thumbnails", unit="img", disable=not progress, file=sys.stderr)):
        path = os.path.join(image_root, image["file_name"])
        try:
            out[i] = thumbnail(path, size)
        except DataError:
            bad.append(path)
    if bad and len(bad) == len(images):
        raise DataError(bad[0], "image not found or unreadable (as are all others): pass --image-root, the "
                                "folder that the JSON's file_name entries are relative to", kind="missing")
    if bad:
        logger.warning("%d images could not be read and are not compared (first: %s)", len(bad), bad[0])
    return out


def split_table(parts: Dict[str, dict], groups: Dict[str, set], paths: Dict[str, str], asked: Dict[str, float]) -> str:
    from tabulate import tabulate

    total = sum(len(p["images"]) for p in parts.values()) or 1
    norm = sum(asked.values())
    rows = [[name, paths[name], len(groups[name]), len(p["images"]), len(p["annotations"]),
             f"{len(p['images']) / total:.3f} ({asked[name] / norm:.3f})"] for name, p in parts.items()]
    return tabulate(rows, headers=["split", "file", "groups", "images", "annotations", "fraction (asked)"],
                    tablefmt="grid")


def duplicate_report(images, image_split, best, index, threshold, show) -> Tuple[int, str]:
    """Count and table of frames whose most similar frame in another split has NCC >= threshold."""
    import numpy as np
    from tabulate import tabulate

    pairs = defaultdict(list)
    for i in np.flatnonzero(best >= threshold):
        j = int(index[i])
        pairs[(image_split[images[i]["id"]], image_split[images[j]["id"]])].append((float(best[i]), i, j))
    rows = []
    for (a, b), found in sorted(pairs.items()):
        found.sort(reverse=True)
        examples = "\n".join(f"{images[i]['file_name']} ~ {images[j]['file_name']} ({s:.3f})"
                             for s, i, j in found[:show])
        rows.append([a, b, len(found), examples + ("\n..." if len(found) > show else "")])
    table = tabulate(rows, headers=["frames of", "match frames of", "frames", "examples (NCC)"], tablefmt="grid")
    return sum(len(v) for v in pairs.values()), table


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    from detectron2.utils.logger import setup_logger
    from polar_rcnn.data import DataError
    from polar_rcnn.data.splits import assign_groups, cross_split_matches, group_frames, resolve_group_mode, split_coco

    setup_logger(name="polar_rcnn", abbrev_name="polar")
    asked = dict(args.split)
    json_dir = os.path.dirname(os.path.abspath(args.json_file))
    output_dir = args.output_dir or json_dir
    stem = os.path.splitext(os.path.basename(args.json_file))[0]
    paths = {name: os.path.join(output_dir, f"{stem}_{name}.json") for name in asked if asked[name] > 0}
    existing = [p for p in paths.values() if os.path.exists(p)]
    if existing and not args.force:
        print(f"Output exists: {existing}; pass --force to overwrite.", file=sys.stderr)
        return 2
    try:
        coco = read_coco(args.json_file)
        images = coco["images"]
        mode = resolve_group_mode(images, args.group_by)
        thumbs = None
        if mode == "similarity" or args.dup_threshold > 0:
            thumbs = thumbnails(images, args.image_root or json_dir, args.thumb_size, not args.no_progress)
        keys = group_frames(images, mode, thumbs=thumbs, chunk_size=args.chunk_size,
                            chain_threshold=args.chain_threshold, duplicate_threshold=args.dup_threshold)
    except (DataError, ValueError) as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2

    group_of_split = assign_groups(Counter(keys), asked, seed=args.seed)
    image_split = {im["id"]: group_of_split[k] for im, k in zip(images, keys)}
    parts = split_coco(coco, image_split, list(paths), source=args.json_file)
    groups = defaultdict(set)
    for k, name in group_of_split.items():
        groups[name].add(k)
    os.makedirs(output_dir, exist_ok=True)
    for name, part in parts.items():
        info = dict(part.get("info") or {})
        info["split"] = {"name": name, "source": os.path.abspath(args.json_file), "group_by": mode,
                         "seed": args.seed, "fractions": asked}
        part["info"] = info
        with open(paths[name], "w") as f:
            json.dump(part, f)
    logger.info("Split %s (%d images, %d annotations) by %s into %d groups", args.json_file, len(images),
                len(coco["annotations"]), mode, len(group_of_split))
    print(split_table(parts, groups, paths, asked))
    empty = [n for n, p in parts.items() if not p["images"]]
    if empty:
        logger.warning("Splits %s are empty: only %d groups for %d splits", empty, len(group_of_split), len(parts))

    if args.dup_threshold <= 0:
        return 0
    best, index = cross_split_matches(thumbs, [image_split[im["id"]] for im in images])
    count, table = duplicate_report(images, image_split, best, index, args.dup_threshold, args.show)
    what = f"thumbnail NCC >= {args.dup_threshold:g} at {args.thumb_size}x{args.thumb_size} px"
    if not count:
        print(f"No near-duplicate frames across splits ({what}).")
        return 0
    print(f"\nNear-duplicate frames across splits ({what}): {count} frames have a near-duplicate in another split")
    print(table)
    return 1 if args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
