"""Detections as COCO-format results (the "submission" format that ``COCO.loadRes`` reads):
a list of ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``."""
import logging
from typing import Dict, List, Optional

from detectron2.evaluation.coco_evaluation import instances_to_coco_json

logger = logging.getLogger(__name__)


def dataset_id_map(metadata) -> Optional[Dict[int, int]]:
    """Contiguous class index -> the dataset's category id (``thing_dataset_id_to_contiguous_id``
    reversed), or None when the metadata does not know the dataset ids."""
    forward = getattr(metadata, "thing_dataset_id_to_contiguous_id", None) if metadata is not None else None
    if not forward:
        return None
    return {contiguous: dataset_id for dataset_id, contiguous in forward.items()}


def coco_results(instances, image_id: int, id_map: Optional[Dict[int, int]] = None) -> List[Dict]:
    """COCO results of one image's predicted ``instances`` (boxes XYWH in the image's pixels).

    ``category_id`` is the dataset's id through ``id_map`` (see :func:`dataset_id_map`), else the
    contiguous class index. ValueError for a class the map does not know.
    """
    results = instances_to_coco_json(instances.to("cpu"), image_id)
    if id_map is not None:
        for r in results:
            if r["category_id"] not in id_map:
                raise ValueError(f"predicted class {r['category_id']} is not in the dataset's categories "
                                 f"{sorted(id_map)}: does MODEL.ROI_HEADS.NUM_CLASSES match the dataset?")
            r["category_id"] = id_map[r["category_id"]]
    return results
