"""Skipping bad training samples: a log shared by data-loader workers, and the end-of-training report.

With ``DATASETS.ON_BAD_SAMPLE: "skip"`` the training mapper returns None for a sample that raises
a :class:`~polar_rcnn.data.errors.DataError` (Detectron2's ``MapDataset`` then draws another
index), logs it, and appends one JSON line ``{"path", "kind", "problem", "pid"}`` to
``<OUTPUT_DIR>/bad_samples_rank<R>.jsonl``. Appends are single ``O_APPEND`` writes, so every
worker process of every rank can write without locks; :class:`BadSampleReport` reads the files
(main process) and reports the count during and after training.
"""
import collections
import glob
import json
import logging
import os
from typing import Dict, List

from detectron2.engine import HookBase
from detectron2.utils import comm

from .errors import DataError

logger = logging.getLogger(__name__)

LOG_PATTERN = "bad_samples_rank*.jsonl"
ON_BAD_SAMPLE = ("raise", "skip")


def bad_sample_log_path(output_dir: str, rank: int) -> str:
    """The skip log of one rank's training data loader."""
    return os.path.join(output_dir, f"bad_samples_rank{rank}.jsonl")


class BadSampleLog:
    """Append-only JSON-lines file of skipped samples (one per rank, shared by its workers)."""

    def __init__(self, path: str):
        self.path = path

    def reset(self) -> None:
        """Start an empty log; call in the main process before data-loader workers start."""
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        with open(self.path, "w"):
            pass

    def record(self, error: DataError) -> None:
        line = json.dumps({"path": error.path, "kind": error.kind, "problem": error.problem, "pid": os.getpid()})
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode("utf-8"))  # one write: atomic w.r.t. other appenders
        finally:
            os.close(fd)


def read_bad_samples(output_dir: str) -> List[Dict]:
    """All entries of the skip logs of every rank in ``output_dir`` (a torn last line is ignored)."""
    entries = []
    for path in sorted(glob.glob(os.path.join(output_dir, LOG_PATTERN))):
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    entries.append(json.loads(line))
                except ValueError:
                    continue
    return entries


class BadSampleReport(HookBase):
    """Puts the number of skipped samples into the event storage (``data/bad_samples``) every
    ``period`` iterations and at the end, and logs a summary (count per kind, the first files) after
    training. Place it before the writers' hook, so that the count reaches metrics.json."""

    def __init__(self, output_dir: str, period: int = 20, max_listed: int = 10):
        self.output_dir = output_dir
        self.period = period
        self.max_listed = max_listed
        self.entries: List[Dict] = []

    @property
    def count(self) -> int:
        return len(self.entries)

    def _refresh(self) -> None:
        self.entries = read_bad_samples(self.output_dir)

    def after_step(self):
        if comm.is_main_process() and (self.trainer.iter + 1) % self.period == 0:
            self._refresh()
            self.trainer.storage.put_scalar("data/bad_samples", self.count, smoothing_hint=False)

    def after_train(self):
        if not comm.is_main_process():
            return
        self._refresh()
        self.trainer.storage.put_scalar("data/bad_samples", self.count, smoothing_hint=False)
        if not self.entries:
            logger.info("No bad training samples were skipped.")
            return
        kinds = collections.Counter(e["kind"] for e in self.entries)
        files = collections.Counter((e["path"], e["problem"]) for e in self.entries)
        listed = "\n".join(f"  {n}x {path}: {problem}" for (path, problem), n in files.most_common(self.max_listed))
        logger.warning(
            "Skipped %d bad training samples (%d distinct; %s) (DATASETS.ON_BAD_SAMPLE 'skip'); "
            "logs: %s\n%s",
            self.count, len(files), ", ".join(f"{k}: {n}" for k, n in kinds.most_common()),
            os.path.join(self.output_dir, LOG_PATTERN), listed,
        )
