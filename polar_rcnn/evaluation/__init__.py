"""Inference over files or datasets: inputs, COCO-format results ("submission"), pictures."""
from .inputs import check_stack_source, images_with_stacks, load_inputs, records_from_files, without_stacks
from .pictures import PictureMaker, capture_proposals, comparison_picture, write_comparison_pictures, write_pictures
from .submission import coco_results, dataset_id_map

__all__ = [
    "PictureMaker",
    "comparison_picture",
    "capture_proposals",
    "check_stack_source",
    "coco_results",
    "dataset_id_map",
    "images_with_stacks",
    "load_inputs",
    "records_from_files",
    "without_stacks",
    "write_comparison_pictures",
    "write_pictures",
]
