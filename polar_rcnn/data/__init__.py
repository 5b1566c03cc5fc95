"""Data: stack I/O, the aligned dataset mapper, dataset registration, validation, synthetic generator.

Stable API for tools: :func:`read_stack`, :func:`load_stack`, :func:`validate_record`,
:func:`register_datasets_from_config`, the errors (:class:`DataError` and subclasses),
:class:`PolarLayout` / :func:`derived_channels`.
"""
from .bad_samples import BadSampleReport, read_bad_samples
from .datasets import load_polar_coco_json, register_datasets_from_config, register_polar_coco_instances
from .errors import AnnotationError, DataError, DatasetError, ImageError, StackError
from .mapper import PolarDatasetMapper, StackAugInput, StackData, apply_geometric_transforms, stack_values, transform_stack
from .polar_layout import (PolarLayout, check_stack_config, derived_channels, loader_stack_channels,
                           polar_layout_from_config)
from .reader import SampleReader, read_image_file
from .stack_io import STACK_EXTENSIONS, load_stack, read_stack, resize_stack
from .train_loader import EmptyTrainingSetError, TrainLoader, build_train_loader
from .record_validation import STACK_FILE_KEY, annotation_problems, validate_record

__all__ = [
    "STACK_EXTENSIONS",
    "STACK_FILE_KEY",
    "AnnotationError",
    "BadSampleReport",
    "DataError",
    "DatasetError",
    "EmptyTrainingSetError",
    "ImageError",
    "PolarDatasetMapper",
    "PolarLayout",
    "SampleReader",
    "StackAugInput",
    "StackData",
    "StackError",
    "TrainLoader",
    "annotation_problems",
    "apply_geometric_transforms",
    "build_train_loader",
    "stack_values",
    "transform_stack",
    "check_stack_config",
    "derived_channels",
    "loader_stack_channels",
    "load_polar_coco_json",
    "load_stack",
    "polar_layout_from_config",
    "read_bad_samples",
    "read_image_file",
    "read_stack",
    "register_datasets_from_config",
    "register_polar_coco_instances",
    "resize_stack",
    "validate_record",
]
