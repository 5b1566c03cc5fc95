"""Shared pieces of the command-line tools: the config they read and how they set it up."""
import sys
from typing import Optional, Sequence

from detectron2.config import CfgNode, get_cfg
from detectron2.utils.logger import setup_logger

from ..config import add_polar_config
from ..data import register_datasets_from_config


def setup_cfg(config_file: str, opts: Sequence[str], freeze: bool = True) -> CfgNode:
    """Detectron2 defaults + polar keys + ``config_file`` (if any) + ``opts``; registers the
    datasets the config names (``DATASETS.POLAR_COCO``)."""
    cfg = get_cfg()
    add_polar_config(cfg)
    if config_file:
        cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    if freeze:
        cfg.freeze()
    register_datasets_from_config(cfg)
    return cfg


def setup_tool(config_file: str, opts: Sequence[str]) -> Optional[CfgNode]:
    """What every tool starts with: polar_rcnn and detectron2 loggers, then :func:`setup_cfg`.
    Returns None after printing the reason when the config is invalid (tools then exit with 2)."""
    setup_logger(name="polar_rcnn", abbrev_name="polar")
    setup_logger(name="detectron2", abbrev_name="d2")
    try:
        return setup_cfg(config_file, opts)
    except (ValueError, KeyError, AssertionError) as e:  # yacs asserts on unknown keys
        print(f"Config error: {e}", file=sys.stderr)
        return None
