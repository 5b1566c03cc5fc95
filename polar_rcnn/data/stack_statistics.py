"""Per-channel statistics of stacks as the model sees them (read by the config's
:class:`~polar_rcnn.data.SampleReader`, scaled, then ``INPUT.STACK.DERIVED``): what
``MODEL.POLAR.STACK_MEAN`` / ``STACK_STD`` normalise. Streaming, one stack at a time, per-image
float64 means and squared deviations merged with Chan et al.'s parallel formula (every pixel weighs
the same; population std, like numpy's default)."""
import multiprocessing
import sys
from typing import Dict, List, Optional, Tuple

import numpy as np
from tqdm import tqdm

from .errors import DataError
from .reader import SampleReader
from .record_validation import STACK_FILE_KEY


class ChannelStats:
    """Running per-channel pixel count, mean and sum of squared deviations (float64)."""

    def __init__(self):
        self.count = 0
        self.mean: Optional[np.ndarray] = None
        self.m2: Optional[np.ndarray] = None

    @staticmethod
    def of(stack: np.ndarray) -> Tuple[int, np.ndarray, np.ndarray]:
        """(count, mean, M2) of one (H, W, C) stack."""
        x = stack.reshape(-1, stack.shape[-1])
        mean = x.mean(axis=0, dtype=np.float64)
        m2 = np.square(x - mean).sum(axis=0)  # float64: x is promoted
        return x.shape[0], mean, m2

    def merge(self, count: int, mean: np.ndarray, m2: np.ndarray, source: str = "") -> None:
        """Add a batch's statistics (Chan, Golub, LeVeque 1979)."""
        if count == 0:
            return
        if self.mean is None:
            self.count, self.mean, self.m2 = count, mean.copy(), m2.copy()
            return
        if mean.shape != self.mean.shape:
            raise ValueError(f"{source}: {mean.shape[0]} channels, the stacks before it had {self.mean.shape[0]}")
        total = self.count + count
        delta = mean - self.mean
        self.mean = self.mean + delta * (count / total)
        self.m2 = self.m2 + m2 + delta * delta * (self.count * count / total)
        self.count = total

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / self.count)


class StackStatistics:
    """Picklable ``record -> (stack path, count, mean, M2)`` of the record's stack read like the mapper."""

    def __init__(self, cfg):
        self.reader = SampleReader.from_config(cfg)

    def __call__(self, record: Dict):
        path = record.get(STACK_FILE_KEY)
        if not path:
            raise DataError(record.get("file_name", "?"), f"dataset record has no '{STACK_FILE_KEY}'")
        stack = self.reader.load_stack(path)  # at its own size: the statistics need no image
        return (path,) + ChannelStats.of(self.reader.derive(stack))


def compute_stack_stats(records: List[Dict], cfg, workers: int = 0, progress: bool = True) -> ChannelStats:
    """Streaming per-channel statistics of the stacks of ``records``."""
    stats = ChannelStats()
    fn = StackStatistics(cfg)
    bar = tqdm(total=len(records), desc="stacks", unit="img", disable=not progress, file=sys.stderr)
    if workers > 0 and len(records) > 1:
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
        with multiprocessing.get_context(method).Pool(workers) as pool:
            for path, *values in pool.imap(fn, records, chunksize=4):
                stats.merge(*values, source=path)
                bar.update()
    else:
        for record in records:
            path, *values = fn(record)
            stats.merge(*values, source=path)
            bar.update()
    bar.close()
    return stats
