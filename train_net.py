#!/usr/bin/env python
"""Train or evaluate a polar-rcnn model with Detectron2's trainer, on one or many processes.

    python train_net.py --config-file configs/faster_rcnn_R_18_FPN_demo_polar_synth.yaml
    python train_net.py --config-file CONFIG --eval-only MODEL.WEIGHTS output/model_final.pth
    python train_net.py --config-file CONFIG --num-gpus 8            # DDP (gloo on CPU)
"""
import argparse

from detectron2.config import get_cfg
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from polar_rcnn import add_polar_config
from polar_rcnn.config import polar_config_help
from polar_rcnn.data import register_datasets_from_config
from polar_rcnn.engine import PolarTrainer as Trainer


def setup(args):
    """Config from Detectron2's defaults + polar keys + the yaml file + command-line opts;
    registers the datasets named in DATASETS.POLAR_COCO."""
    cfg = get_cfg()
    add_polar_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="polar_rcnn")
    register_datasets_from_config(cfg)
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        return Trainer.evaluate_weights(cfg, resume=args.resume)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    parser = default_argument_parser(epilog=polar_config_help())
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    args = parser.parse_args()
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
