"""Inference over files or datasets: inputs, COCO-format results ("submission"), pictures."""
from .inputs import images_with_stacks, load_inputs, records_from_files
from .pictures import PictureMaker, capture_proposals, write_pictures
from .submission import coco_results, dataset_id_map

__all__ = [
    "PictureMaker",
    "capture_proposals",
    "coco_results",
    "dataset_id_map",
    "images_with_stacks",
    "load_inputs",
    "records_from_files",
    "write_pictures",
]
