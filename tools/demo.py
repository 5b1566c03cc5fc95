#!/usr/bin/env python
"""The CPU demo: synthetic polarization data -> train -> COCO evaluation -> pictures.

    python tools/demo.py --output output/demo          (what ``make demo`` runs)

Each step is skipped when its result exists (use --retrain to train again): the data under
$POLAR_RCNN_DATASETS/polar_synth (default datasets/), the model under <output>/model.
"""
import argparse
import json
import logging
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "faster_rcnn_R_18_FPN_demo_polar_synth.yaml")
logger = logging.getLogger("polar_rcnn.demo")


def run(cmd, env):
    logger.info("$ %s", " ".join(cmd))
    subprocess.run(cmd, check=True, cwd=REPO, env=env)


def write_pictures(cfg, out_dir, num_images):
    """Pictures of the first val images (polar_rcnn.evaluation.write_pictures): per-image PNGs + grid.png."""
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from polar_rcnn import evaluation

    dataset = cfg.DATASETS.TEST[0]
    paths, _ = evaluation.write_pictures(cfg, DatasetCatalog.get(dataset), out_dir, num_images=num_images,
                                         metadata=MetadataCatalog.get(dataset))
    return paths


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="output/demo", help="where the model and pictures go")
    parser.add_argument("--retrain", action="store_true", help="train even if a final model exists")
    parser.add_argument("--num-pictures", type=int, default=6)
    parser.add_argument("--num-workers", type=int, default=2, help="data-loader workers")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="extra config options (KEY VALUE ...)")
    args = parser.parse_args()
    from detectron2.config import get_cfg
    from detectron2.utils.logger import setup_logger
    from polar_rcnn import add_polar_config

    setup_logger(name="polar_rcnn")
    output = os.path.abspath(args.output)
    datasets_root = os.path.abspath(os.getenv("POLAR_RCNN_DATASETS", os.path.join(REPO, "datasets")))
    env = dict(os.environ, POLAR_RCNN_DATASETS=datasets_root)
    os.environ["POLAR_RCNN_DATASETS"] = datasets_root
    timings = {}

    start = time.perf_counter()
    run([sys.executable, "datasets/prepare_polar_synth.py", "--output", os.path.join(datasets_root, "polar_synth"),
         "--train-videos", "8", "--val-videos", "2", "--frames-per-video", "16", "--size", "256"], env)
    timings["data"] = time.perf_counter() - start

    model_dir = os.path.join(output, "model")
    weights = os.path.join(model_dir, "model_final.pth")
    opts = ["OUTPUT_DIR", model_dir, "DATALOADER.NUM_WORKERS", str(args.num_workers)] + args.opts
    train_cmd = [sys.executable, "train_net.py", "--config-file", CONFIG]
    start = time.perf_counter()
    if args.retrain or not os.path.exists(weights):
        run(train_cmd + opts, env)  # trains, then evaluates on polar_synth_val (COCO AP table)
    else:
        logger.info("%s exists: evaluating it (pass --retrain to train again)", weights)
        run(train_cmd + ["--eval-only"] + opts + ["MODEL.WEIGHTS", weights], env)
    timings["train+eval"] = time.perf_counter() - start

    cfg = get_cfg()
    add_polar_config(cfg)
    cfg.merge_from_file(CONFIG)
    cfg.merge_from_list(opts + ["MODEL.WEIGHTS", weights])
    start = time.perf_counter()
    pictures = write_pictures(cfg, os.path.join(output, "pictures"), args.num_pictures)
    timings["pictures"] = time.perf_counter() - start

    results = os.path.join(model_dir, "inference", cfg.DATASETS.TEST[0], "coco_instances_results.json")
    print("\n=== polar-rcnn demo done ===")
    print(f"model:        {weights}")
    print(f"metrics:      {os.path.join(model_dir, 'metrics.json')}")
    print(f"detections:   {results}")
    print(f"pictures:     {os.path.dirname(pictures[0]) if pictures else '-'} ({len(pictures)} PNG + grid.png: ground truth | RPN top-50 | detections | DoLP | AoLP)")
    print("timings (s):  " + json.dumps({k: round(v, 1) for k, v in timings.items()}))


if __name__ == "__main__":
    main()
