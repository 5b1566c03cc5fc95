"""Shared pieces of the command-line tools: the config they read and their help format."""
import argparse
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


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The module docstring as written; options show their default unless their help has one."""

    def _get_help_string(self, action):
        text = action.help or ""
        shown = action.default not in (None, "", False, [], argparse.SUPPRESS)
        if action.option_strings and shown and "default" not in text:
            text += " (default: %(default)s)"
        return text


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
