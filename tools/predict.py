#!/usr/bin/env python
"""Run a trained model over image files (with their stacks) or a registered dataset: COCO-format
results JSON (the "submission" format) and pictures.

    .venv/bin/python tools/predict.py --config-file CONFIG --input 'data/images/*.png' --stacks data/stacks \\
        --output output/predictions MODEL.WEIGHTS output/model/model_final.pth
    .venv/bin/python tools/predict.py --config-file CONFIG --dataset polar_synth_val \\
        --output output/predictions MODEL.WEIGHTS output/model/model_final.pth

Writes to --output:
  coco_results.json  [{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, ...] (with
                     "segmentation", COCO RLE, for Mask R-CNN models) for every
                     detection the model keeps (MODEL.ROI_HEADS.SCORE_THRESH_TEST); pycocotools'
                     COCO.loadRes reads it. image_id: the dataset's ids (--dataset), else 1..N in
                     sorted file order; category_id: the dataset's category ids (--dataset, else
                     those of DATASETS.TEST[0] when it is registered and readable), else the
                     contiguous class index 0..K-1.
  images.json        with --input: the COCO "images" entries (id, file_name, height, width,
                     stack_file) that the image ids refer to.
  pictures/          the first --num-pictures images drawn (see tools/visualize.py) and grid.png.
A model that reads stacks (INPUT.STACK.ENABLED) needs --stacks with --input, or --rgb-only to predict
from the images alone; an image without a stack in --stacks is predicted from the image alone (logged).
"""
import argparse
import json
import logging
import os
import sys
import time
from typing import Optional, Sequence

logger = logging.getLogger("polar_rcnn.tools.predict")
RESULTS_FILE = "coco_results.json"
IMAGES_FILE = "images.json"


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, metavar="FILE", help="the model's config yaml")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", action="append", default=[], metavar="GLOB",
                        help="image file or quoted glob (repeatable)")
    source.add_argument("--dataset", default="", metavar="NAME", help="a registered dataset")
    p.add_argument("--stacks", default="", metavar="DIR", help="with --input: folder of stacks named like the images "
                   "(required for a model that reads stacks, unless --rgb-only)")
    p.add_argument("--rgb-only", action="store_true",
                   help="the model gets no stack, only the images (a model that reads stacks then uses its "
                        "image-only path)")
    p.add_argument("--output", default="output/predictions", metavar="DIR",
                   help="where the results go (default: %(default)s)")
    p.add_argument("--num-pictures", type=int, default=6, metavar="N",
                   help="images drawn (0: none) (default: %(default)s)")
    p.add_argument("--score-threshold", type=float, default=0.5,
                   help="detections drawn in the pictures (default: %(default)s)")
    p.add_argument("--min-detections", type=int, default=3, metavar="K",
                   help="when no detection of an image reaches --score-threshold, its K best are drawn (a young "
                        "model scores low; 0: none) (default: %(default)s)")
    p.add_argument("--topk", type=int, default=50, metavar="K", help="RPN proposals drawn (default: %(default)s)")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                   help="config overrides as trailing KEY VALUE pairs (MODEL.WEIGHTS FILE ...)")
    args = p.parse_args(argv)
    if args.stacks and not args.input:
        p.error("--stacks goes with --input")
    if args.num_pictures < 0 or args.topk < 0 or args.min_detections < 0:
        p.error("--num-pictures, --topk and --min-detections must be >= 0")
    return args


def category_metadata(cfg, dataset: str):
    """Metadata with the dataset category ids: --dataset's, else DATASETS.TEST[0]'s if it can be read."""
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from polar_rcnn.data import DataError

    name = dataset or (cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "")
    if not name:
        return None
    meta = MetadataCatalog.get(name)
    if not hasattr(meta, "thing_dataset_id_to_contiguous_id"):
        try:
            DatasetCatalog.get(name)  # loading the JSON sets the id map
        except (DataError, OSError) as e:
            logger.warning("Cannot read %s for its category ids (%s): writing contiguous class indices", name, e)
            return meta
    return meta


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    from tqdm import tqdm
    from detectron2.data import DatasetCatalog
    from polar_rcnn.data import STACK_FILE_KEY, DataError
    from polar_rcnn.evaluation import (PictureMaker, check_stack_source, coco_results, dataset_id_map, load_inputs,
                                       records_from_files, without_stacks)
    from polar_rcnn.evaluation.pictures import GRID_FILE, picture_name, write_png
    from polar_rcnn.evaluation import visualization as vis
    from polar_rcnn.engine.cli import setup_tool

    cfg = setup_tool(args.config_file, args.opts)
    if cfg is None:
        return 2
    if not cfg.MODEL.WEIGHTS:
        logger.warning("MODEL.WEIGHTS is empty: predicting with an untrained model")
    if args.dataset and args.dataset not in DatasetCatalog.list():
        print(f"Dataset {args.dataset!r} is not registered. Registered: {sorted(DatasetCatalog.list())}",
              file=sys.stderr)
        return 2
    try:
        if args.input:
            check_stack_source(cfg, args.stacks, args.rgb_only)
        records = DatasetCatalog.get(args.dataset) if args.dataset else records_from_files(args.input, args.stacks)
        if args.rgb_only:
            records = without_stacks(records)
    except (DataError, FileNotFoundError, ValueError) as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2
    metadata = category_metadata(cfg, args.dataset)
    id_map = dataset_id_map(metadata)
    if id_map is None:
        logger.warning("No dataset category ids known: category_id is the contiguous class index")
    maker = PictureMaker(cfg, topk=args.topk, score_threshold=args.score_threshold,
                         min_detections=args.min_detections, metadata=metadata)

    os.makedirs(args.output, exist_ok=True)
    pictures_dir = os.path.join(args.output, "pictures")
    results, images, rows, taken = [], [], [], set()
    start = time.perf_counter()
    try:
        for i, record in enumerate(tqdm(records, desc="predict", unit="img", file=sys.stderr)):
            image, stack = load_inputs(cfg, record)
            outputs, proposals = maker.predict(image, stack)
            results.extend(coco_results(outputs["instances"], record["image_id"], id_map))
            images.append({"id": record["image_id"], "file_name": record["file_name"], "height": image.shape[0],
                           "width": image.shape[1], "stack_file": record.get(STACK_FILE_KEY)})
            if i < args.num_pictures:
                picture = maker.picture(record, image, stack, outputs, proposals)
                write_png(os.path.join(pictures_dir, picture_name(record, taken)), picture)
                rows.append(picture)
    except (DataError, ValueError) as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    if rows:
        write_png(os.path.join(pictures_dir, GRID_FILE), vis.image_grid(rows))
    results_path = os.path.join(args.output, RESULTS_FILE)
    with open(results_path, "w") as f:
        json.dump(results, f)
    print(f"{len(records)} images, {len(results)} detections in {seconds:.1f} s "
          f"({seconds / max(len(records), 1):.3f} s/image)")
    print(f"results:  {results_path}")
    if not args.dataset:
        with open(os.path.join(args.output, IMAGES_FILE), "w") as f:
            json.dump(images, f, indent=1)
        print(f"images:   {os.path.join(args.output, IMAGES_FILE)}")
    if rows:
        print(f"pictures: {pictures_dir} ({len(rows)} + {GRID_FILE})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
