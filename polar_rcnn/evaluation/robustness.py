"""COCO evaluation under the stack faults users hit: misregistration, missing stacks, sensor noise.

:class:`StackPerturbation` changes the stack of each mapped test input (full resolution, as
``INPUT.STACK.RESOLUTION "full"`` delivers it, so a shift is in image pixels):

* ``shift`` (dy, dx) px: the stack's content moves by that much against its image (a two-sensor
  rig misregistered), the exposed border repeating the stack's edge;
* ``missing``: that fraction of the images (a seeded choice over the dataset, the same for every
  model) loses its stack and is detected from the image alone;
* ``noise_std``: zero-mean Gaussian noise of that std added to the stack's float values (stored
  values times ``"stack_scale"``: e.g. 0.01 of a [0, 1] sensor range), seeded per image.

:func:`evaluate_under` runs Detectron2's COCO evaluation of a model on a dataset with one
perturbation; :func:`robustness_table` runs a list of them (tools/robustness.py is the command).
"""
import logging
import zlib
from dataclasses import asdict, dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StackPerturbation:
    """What is done to each test input's stack (see the module docstring)."""

    shift: Tuple[int, int] = (0, 0)  # (dy, dx) in image pixels
    missing: float = 0.0  # fraction of images without their stack
    noise_std: float = 0.0  # Gaussian noise on the float stack
    seed: int = 0

    def __post_init__(self):
        if not 0.0 <= self.missing <= 1.0:
            raise ValueError(f"missing must be in [0, 1], got {self.missing}")
        if not self.noise_std >= 0.0:
            raise ValueError(f"noise_std must be >= 0, got {self.noise_std}")

    @property
    def name(self) -> str:
        parts = []
        if self.shift != (0, 0):
            parts.append(f"shift {self.shift[0]},{self.shift[1]} px")
        if self.missing:
            parts.append(f"missing {self.missing:g}")
        if self.noise_std:
            parts.append(f"noise {self.noise_std:g}")
        return ", ".join(parts) or "none"

    def missing_ids(self, image_ids: Sequence) -> set:
        """The ``round(missing * N)`` image ids (of ``image_ids``) that lose their stack."""
        ids = sorted(set(image_ids), key=str)
        order = np.random.default_rng(self.seed).permutation(len(ids))
        return {ids[i] for i in order[: int(round(self.missing * len(ids)))]}

    def apply(self, inputs: Dict, missing: bool = False) -> Dict:
        """A copy of a mapped input with the perturbed stack (no ``"stack"`` when ``missing``)."""
        out = dict(inputs)
        if "stack" not in out:
            return out
        if int(out.get("stack_stride", 1)) != 1:
            raise ValueError("StackPerturbation needs full-resolution stacks: evaluate with "
                             "INPUT.STACK.RESOLUTION full (a shift is in image pixels)")
        if missing:
            del out["stack"]
            out.pop("stack_scale", None)
            return out
        stack = out["stack"]
        if self.shift != (0, 0):
            stack = shift_with_edge(stack, self.shift)
        if self.noise_std:
            scale = float(out.get("stack_scale", 1.0))
            seed = zlib.crc32(f"{self.seed}/{out.get('image_id', out.get('file_name'))}".encode())
            g = torch.Generator().manual_seed(seed)
            stack = stack.float() * scale + torch.randn(stack.shape, generator=g) * self.noise_std
            out["stack_scale"] = 1.0
        out["stack"] = stack
        return out


def shift_with_edge(stack: torch.Tensor, shift: Tuple[int, int]) -> torch.Tensor:
    """(C, H, W) ``stack`` whose content moved by ``shift`` = (dy, dx) px: out[:, y, x] =
    stack[:, y - dy, x - dx], indices clamped to the edge."""
    _, h, w = stack.shape
    ys = (torch.arange(h) - int(shift[0])).clamp_(0, h - 1)
    xs = (torch.arange(w) - int(shift[1])).clamp_(0, w - 1)
    return stack.index_select(1, ys).index_select(2, xs)


class PerturbedMapper:
    """A test mapper whose outputs get ``perturbation``; the images losing their stack are chosen
    once over ``image_ids`` (the dataset's)."""

    def __init__(self, mapper: Callable, perturbation: StackPerturbation, image_ids: Iterable):
        self.mapper, self.perturbation = mapper, perturbation
        self.missing = perturbation.missing_ids(list(image_ids)) if perturbation.missing else set()

    def __call__(self, record: Dict) -> Dict:
        inputs = self.mapper(record)
        return self.perturbation.apply(inputs, missing=record.get("image_id") in self.missing)


def evaluate_under(cfg, model, perturbation: StackPerturbation, dataset_name: str,
                   output_dir: Optional[str] = None) -> Dict:
    """Detectron2's COCO evaluation of ``model`` on ``dataset_name`` with ``perturbation`` applied
    to every test input (``cfg`` is cloned with ``INPUT.STACK.RESOLUTION "full"``)."""
    from detectron2.data import DatasetCatalog, build_detection_test_loader
    from detectron2.evaluation import COCOEvaluator, inference_on_dataset

    from ..data import PolarDatasetMapper

    cfg = cfg.clone()
    cfg.defrost()
    cfg.INPUT.STACK.RESOLUTION = "full"
    records = DatasetCatalog.get(dataset_name)
    mapper = PerturbedMapper(PolarDatasetMapper(cfg, is_train=False), perturbation,
                             [r.get("image_id") for r in records])
    loader = build_detection_test_loader(cfg, dataset_name, mapper=mapper)
    evaluator = COCOEvaluator(dataset_name, output_dir=output_dir)
    return inference_on_dataset(model, loader, evaluator)


def robustness_table(cfg, model, perturbations: Sequence[StackPerturbation], dataset_name: str) -> List[Dict]:
    """One row per perturbation: its parameters, name and box AP / AP50 / AP75."""
    rows = []
    for p in perturbations:
        logger.info("robustness: %s", p.name)
        bbox = evaluate_under(cfg, model, p, dataset_name).get("bbox", {})
        rows.append({"condition": p.name, **asdict(p), "AP": bbox.get("AP"), "AP50": bbox.get("AP50"),
                     "AP75": bbox.get("AP75")})
    return rows


__all__ = ["PerturbedMapper", "StackPerturbation", "evaluate_under", "robustness_table", "shift_with_edge"]
