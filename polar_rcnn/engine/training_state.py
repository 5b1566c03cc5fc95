"""What a checkpoint needs beyond weights and optimizer to resume a run exactly: each process's
RNG states and data-loader position, gathered from every rank before the main process saves."""
import contextlib
import json
import logging
import os
import random
from typing import Callable, Dict, Iterator, List, Optional

import numpy as np
import torch

from detectron2.engine import HookBase
from detectron2.utils import comm

logger = logging.getLogger(__name__)

#: Version of the ``"resume"`` entry of the trainer state.
RESUME_STATE_VERSION = 1


def capture_rng() -> Dict:
    """Python's, NumPy's, torch's (and CUDA's, when initialised) global RNG states, in types that
    ``torch.load(weights_only=True)`` reads."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Dict) -> None:
    """Set the global RNGs to a :func:`capture_rng` state."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run the body (e.g. an evaluation during training) without moving the global RNGs."""
    state = capture_rng()
    try:
        yield
    finally:
        restore_rng(state)


def process_state(data_loader) -> Dict:
    """This process's resume state: RNGs and (if it has one) the data loader's position."""
    state = {"rng": capture_rng()}
    if hasattr(data_loader, "state_dict"):
        state["data_loader"] = data_loader.state_dict()
    return state


class GatherResumeState(HookBase):
    """After the steps where a checkpoint may be written (``saves_after(iteration)``), every rank
    sends its :func:`process_state` to all; the main process's checkpoint then holds one entry per
    rank. Place it right before the checkpointing hooks. Single-process runs need no gathering."""

    def __init__(self, saves_after: Callable[[int], bool]):
        self.saves_after = saves_after
        self.gathered: Optional[tuple] = None  # (iteration, [state of rank 0, 1, ...])

    def after_step(self):
        if comm.get_world_size() > 1 and self.saves_after(self.trainer.iter):
            self.gathered = (self.trainer.iter, comm.all_gather(process_state(self.trainer.train_loader)))

    def states(self) -> Optional[List[Dict]]:
        """The states of every rank after the last finished step, or None (with a warning) when
        they were not gathered then."""
        if comm.get_world_size() == 1:
            return [process_state(self.trainer.train_loader)]
        finished = min(self.trainer.iter, self.trainer.max_iter - 1)  # after_train: iter == max_iter
        if self.gathered is not None and self.gathered[0] == finished:
            return self.gathered[1]
        logger.warning("Checkpoint at iteration %d without the other processes' RNG and data-loader states: "
                       "resuming from it is not exact", self.trainer.iter)
        return None


def drop_metrics_from(path: str, iteration: int) -> int:
    """Cut Detectron2's ``metrics.json`` (one JSON object per line) before its first row of
    ``iteration`` or later (or a torn row), so a resumed run appends where its checkpoint left off.
    Truncates in place: the JSON writer keeps the file open for appending. Returns rows dropped."""
    if not os.path.isfile(path):
        return 0
    offset, dropped = None, 0
    with open(path, "rb") as f:
        position = 0
        for line in f:
            if offset is None:
                try:
                    row_iteration = json.loads(line).get("iteration", -1)
                except ValueError:
                    row_iteration = iteration  # torn row of a killed run
                if row_iteration >= iteration:
                    offset = position
            if offset is not None:
                dropped += 1
            position += len(line)
    if offset is not None:
        os.truncate(path, offset)
        logger.info("Resuming at iteration %d: dropped %d rows of a later iteration from %s", iteration, dropped, path)
    return dropped


def mark_resume(path: str, iteration: int, checkpoint: str) -> None:
    """Cut ``metrics.json`` back to ``iteration`` (:func:`drop_metrics_from`) and append the row
    ``{"iteration": iteration, "resumed_from": checkpoint}`` (plot_metrics.py marks it)."""
    drop_metrics_from(path, iteration)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"iteration": iteration, "resumed_from": checkpoint}) + "\n")
