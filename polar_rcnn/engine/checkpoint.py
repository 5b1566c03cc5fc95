"""Loading weights into polar models with a summary of what was and was not loaded."""
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from detectron2.checkpoint import DetectionCheckpointer

from .freezing import part_of

logger = logging.getLogger(__name__)

# buffers that Detectron2 initialises from the config (MODEL.PIXEL_MEAN/STD), not from weights
_FROM_CONFIG = ("pixel_mean", "pixel_std")


@dataclass
class LoadSummary:
    """What one :meth:`PolarCheckpointer.load` did; ``missing``/``mismatched`` map part -> names."""

    source: str
    loaded: int
    total: int
    checkpoint_tensors: int
    unused: List[str] = field(default_factory=list)
    missing: Dict[str, List[str]] = field(default_factory=dict)
    mismatched: Dict[str, List[str]] = field(default_factory=dict)

    def message(self) -> str:
        text = f"Loaded {self.loaded} of {self.total} model tensors from {self.source}"
        fresh = [f"{part} ({len(keys)} not in the checkpoint)" for part, keys in self.missing.items()]
        fresh += [f"{part} ({len(keys)} of another shape, e.g. NUM_CLASSES)" for part, keys in self.mismatched.items()]
        text += "; initialised fresh: " + ", ".join(fresh) if fresh else "; nothing initialised fresh"
        if self.unused:
            text += f"; {len(self.unused)} of {self.checkpoint_tensors} checkpoint tensors unused"
        return text + "."


def _by_part(names) -> Dict[str, List[str]]:
    groups: Dict[str, List[str]] = OrderedDict()
    for name in names:
        groups.setdefault(part_of(name), []).append(name)
    return groups


class PolarCheckpointer(DetectionCheckpointer):
    """:class:`DetectionCheckpointer` (model-zoo ``detectron2://`` URLs, ``.pkl``, ``.pth``) that logs
    one summary line per load: N of M model tensors loaded and which parts start from their own
    initialisation (e.g. the polar branch from a vanilla checkpoint, the box predictor when
    ``NUM_CLASSES`` differs). The last summary is kept as :attr:`last_load`.
    """

    last_load: Optional[LoadSummary] = None
    _source = "?"

    def load(self, path, *args, **kwargs):
        self._source = path  # as given (e.g. a detectron2:// URL), not the local cache path
        return super().load(path, *args, **kwargs)

    def _load_model(self, checkpoint):
        checkpoint_tensors = len(checkpoint.get("model", {}))
        incompatible = super()._load_model(checkpoint)
        keys = [k for k in self.model.state_dict() if k.rpartition(".")[2] not in _FROM_CONFIG]
        mismatched = [k for k, _, _ in incompatible.incorrect_shapes]
        # fvcore drops tensors of another shape before loading, so they are "missing" too
        missing = [k for k in incompatible.missing_keys if k in keys and k not in mismatched]
        self.last_load = LoadSummary(
            source=self._source,
            loaded=len(keys) - len(missing) - len(mismatched),
            total=len(keys),
            checkpoint_tensors=checkpoint_tensors,
            unused=list(incompatible.unexpected_keys),
            missing=_by_part(missing),
            mismatched=_by_part(mismatched),
        )
        logger.info(self.last_load.message())
        return incompatible
