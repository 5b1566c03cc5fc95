"""Data: stack I/O, the aligned dataset mapper, dataset registration, synthetic generator."""
from .datasets import load_polar_coco_json, register_polar_coco_instances
from .mapper import STACK_FILE_KEY, PolarDatasetMapper, StackAugInput
from .stack_io import StackError, load_stack

__all__ = [
    "STACK_FILE_KEY",
    "PolarDatasetMapper",
    "StackAugInput",
    "StackError",
    "load_polar_coco_json",
    "load_stack",
    "register_polar_coco_instances",
]
