#!/usr/bin/env python
"""The CPU demo: synthetic polarization data -> the polar model and its RGB-only baseline, trained
by the same command on the same frames -> both COCO AP tables -> pictures side by side.

    python tools/demo.py --output output/demo          (what ``make demo`` runs)

Each step is skipped when its result exists (use --retrain to train again): the data under
$POLAR_RCNN_DATASETS/polar_synth (default datasets/), the models under <output>/model (polar) and
<output>/rgb_only (``configs/faster_rcnn_R_18_FPN_demo_rgb_only_polar_synth.yaml``).
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
RGB_CONFIG = os.path.join(REPO, "configs", "faster_rcnn_R_18_FPN_demo_rgb_only_polar_synth.yaml")
METRICS = ("AP", "AP50", "AP75")
# the make-demo budget, given to both models (before the command line's opts): the evidence runs' recipe
# (docs/RESULTS.md), 128 px input, FPN width 64, box head 128, 600 iterations with warmup + cosine decay;
# ~3 min per model on 2 CPU cores. No flips: the synthetic plastic (AoLP 60 deg) and metal (120 deg) are
# mirror images, so a physically correct flip turns one into the other (docs/RESULTS.md, "Flips and the
# synthetic classes"); real materials are not told apart by absolute AoLP, and the shipped configs keep flips
DEMO_OPTS = ["INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "128", "INPUT.MIN_SIZE_TEST", "128",
             "INPUT.MAX_SIZE_TEST", "128", "MODEL.FPN.OUT_CHANNELS", "64", "MODEL.ROI_BOX_HEAD.FC_DIM", "128",
             "MODEL.RPN.POST_NMS_TOPK_TRAIN", "256", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64",
             "SOLVER.MAX_ITER", "600", "SOLVER.WARMUP_ITERS", "20", "SOLVER.LR_SCHEDULER_NAME", "WarmupCosineLR",
             "SOLVER.STEPS", "()", "INPUT.RANDOM_FLIP", "none"]
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
    parser.add_argument("--no-baseline", action="store_true", help="train the polar model only (no RGB-only baseline)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="extra config options (KEY VALUE ...)")
    args = parser.parse_args()
    from detectron2.utils.logger import setup_logger

    setup_logger(name="polar_rcnn")
    output = os.path.abspath(args.output)
    datasets_root = os.path.abspath(os.getenv("POLAR_RCNN_DATASETS", os.path.join(REPO, "datasets")))
    env = dict(os.environ, POLAR_RCNN_DATASETS=datasets_root)
    os.environ["POLAR_RCNN_DATASETS"] = datasets_root
    timings = {}

    start = time.perf_counter()
    run([sys.executable, "datasets/prepare_polar_synth.py", "--output", os.path.join(datasets_root, "polar_synth"),
         "--train-videos", "8", "--val-videos", "8", "--frames-per-video", "16", "--size", "256"], env)
    timings["data"] = time.perf_counter() - start

    models = {"polar": (CONFIG, os.path.join(output, "model"))}
    if not args.no_baseline:
        models = {"RGB only": (RGB_CONFIG, os.path.join(output, "rgb_only")), **models}
    cfgs, results = {}, {}
    for name, (config, model_dir) in models.items():
        start = time.perf_counter()
        cfgs[name] = train_or_evaluate(config, model_dir, args, env)
        results[name] = last_evaluation(model_dir)
        timings[f"{name} train+eval"] = time.perf_counter() - start

    start = time.perf_counter()
    pictures = write_pictures(cfgs["polar"], os.path.join(output, "pictures"), args.num_pictures)
    side_by_side = write_side_by_side(cfgs, os.path.join(output, "side_by_side"), args.num_pictures) \
        if len(cfgs) > 1 else None
    timings["pictures"] = time.perf_counter() - start

    polar_dir = models["polar"][1]
    print("\n=== polar-rcnn demo done ===")
    print(comparison_table(results))
    print(f"models:       {', '.join(os.path.join(d, 'model_final.pth') for _, d in models.values())}")
    print(f"metrics:      {os.path.join(polar_dir, 'metrics.json')} (and the baseline's)")
    print(f"pictures:     {os.path.dirname(pictures[0]) if pictures else '-'} ({len(pictures)} PNG + grid.png: ground truth | RPN top-50 | detections | DoLP | AoLP)")
    if side_by_side:
        print(f"side by side: {side_by_side} (ground truth | RGB-only detections | polar detections | DoLP | AoLP)")
    print("timings (s):  " + json.dumps({k: round(v, 1) for k, v in timings.items()}))


def train_or_evaluate(config, model_dir, args, env):
    """Train ``config`` into ``model_dir`` (then COCO-evaluate it: train_net.py prints the table), or
    evaluate its final model again; returns the config of that model."""
    from detectron2.config import get_cfg
    from polar_rcnn import add_polar_config

    weights = os.path.join(model_dir, "model_final.pth")
    opts = DEMO_OPTS + ["OUTPUT_DIR", model_dir, "DATALOADER.NUM_WORKERS", str(args.num_workers)] + args.opts
    train_cmd = [sys.executable, "train_net.py", "--config-file", config]
    if args.retrain or not os.path.exists(weights):
        run(train_cmd + opts, env)  # trains, then evaluates on polar_synth_val (COCO AP table)
    else:
        logger.info("%s exists: evaluating it (pass --retrain to train again)", weights)
        run(train_cmd + ["--eval-only"] + opts + ["MODEL.WEIGHTS", weights], env)
    cfg = get_cfg()
    add_polar_config(cfg)
    cfg.merge_from_file(config)
    cfg.merge_from_list(opts + ["MODEL.WEIGHTS", weights])
    return cfg


def last_evaluation(model_dir):
    """The last COCO box evaluation of ``model_dir/metrics.json``: {"AP": ..., "AP50": ..., ...}."""
    from polar_rcnn.utils.plots import read_metrics

    rows = [r for r in read_metrics(model_dir) if "bbox/AP" in r]
    if not rows:
        raise RuntimeError(f"{os.path.join(model_dir, 'metrics.json')} holds no COCO box evaluation (bbox/AP)")
    return {k.split("/", 1)[1]: v for k, v in rows[-1].items() if k.startswith("bbox/")}


def comparison_table(results):
    """A markdown table of COCO box AP / AP50 / AP75 per model, and the difference to the first."""
    from polar_rcnn.evaluation.report import markdown_table

    def value(result, m):
        return result.get(m, float("nan"))

    names = list(results)
    rows = [[name] + [f"{value(results[name], m):.1f}" for m in METRICS] for name in names]
    if len(names) > 1:
        base, last = results[names[0]], results[names[-1]]
        rows.append([f"{names[-1]} - {names[0]}"] + [f"{value(last, m) - value(base, m):+.1f}" for m in METRICS])
    return markdown_table(["model", *METRICS], rows).rstrip("\n")


def write_side_by_side(cfgs, out_dir, num_images):
    """Pictures of every model on the first val images (polar_rcnn.evaluation.write_comparison_pictures);
    returns their folder."""
    from detectron2.data import DatasetCatalog
    from polar_rcnn import evaluation

    makers = {name: evaluation.PictureMaker(cfg, topk=0) for name, cfg in cfgs.items()}
    evaluation.write_comparison_pictures(makers, DatasetCatalog.get(cfgs["polar"].DATASETS.TEST[0]), out_dir,
                                         num_images=num_images)
    return out_dir


if __name__ == "__main__":
    main()
