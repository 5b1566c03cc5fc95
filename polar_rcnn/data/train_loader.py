"""The training data loader, resumable to the sample: Detectron2's samplers, aspect-ratio grouping
and worker processes, with every sample's augmentation seeded by its place in the stream.

Each rank reads the stream of its sampler (``DATALOADER.SAMPLER_TRAIN``, seeded once and shared by
the ranks) as positions ``k = 0, 1, ...``. The mapper runs under Python/NumPy/torch RNGs seeded
from ``(sampler seed, rank, k)``, so a sample's augmentation does not depend on which process maps
it or on what ran before: with or without workers, and after a resume, the same position gives
the same tensors. :meth:`TrainLoader.state_dict` holds the sampler seed, how many positions the
delivered batches consumed and the positions still waiting in an aspect-ratio bucket; a loader
that loads it continues with exactly the batches the original would have delivered next.
"""
import contextlib
import itertools
import logging
import random
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch
import torch.utils.data as torchdata

from detectron2.data import DatasetFromList, get_detection_dataset_dicts
from detectron2.data.samplers import RandomSubsetTrainingSampler, RepeatFactorTrainingSampler, TrainingSampler
from detectron2.utils import comm
from detectron2.utils.serialize import PicklableWrapper

logger = logging.getLogger(__name__)

#: Tries of other samples (drawn from the position's own RNG) before a skip is declared hopeless.
_MAX_FALLBACKS = 1000


@contextlib.contextmanager
def seeded_rngs(*key: int) -> Iterator[None]:
    """Run the body with Python's, NumPy's and torch's global RNGs seeded from ``key``; the outer
    states are restored afterwards (so the caller's random stream is left untouched)."""
    state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    seed = int(np.random.SeedSequence([int(k) % (1 << 63) for k in key]).generate_state(1)[0])
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(state[0])
        np.random.set_state(state[1])
        torch.set_rng_state(state[2])


class EmptyTrainingSetError(RuntimeError):
    """Every training sample was skipped as bad: there is nothing to train on."""


class SeededMapDataset(torchdata.Dataset):
    """``dataset[i]`` mapped by ``mapper`` under :func:`seeded_rngs` of ``(seed, rank, position)``.

    Items are ``(position, index)``. When the mapper returns None (a bad sample skipped by
    ``DATASETS.ON_BAD_SAMPLE: "skip"``) another index is drawn from an RNG of the position, so the
    replacement is the same in every process; when every index has failed,
    :class:`EmptyTrainingSetError`.
    """

    def __init__(self, dataset, mapper: Callable, seed: int, rank: int = 0):
        self._dataset = dataset
        self._mapper = PicklableWrapper(mapper)
        self.seed = int(seed)
        self.rank = int(rank)
        self._bad = set()

    def __len__(self) -> int:
        return len(self._dataset)

    def __getitem__(self, item):
        position, index = item
        fallback = random.Random(hash((self.seed, self.rank, position)))
        for attempt in range(_MAX_FALLBACKS + 1):
            with seeded_rngs(self.seed, self.rank, position, attempt):
                data = self._mapper(self._dataset[index])
            if data is not None:
                return data
            self._bad.add(index)
            if len(self._bad) >= len(self._dataset):
                break
            index = fallback.randrange(len(self._dataset))
        raise EmptyTrainingSetError(
            f"every training sample tried was bad ({len(self._bad)} of {len(self._dataset)} failed, "
            f"DATASETS.ON_BAD_SAMPLE 'skip'): there is nothing to train on. The skipped files and their "
            "problems are in OUTPUT_DIR/bad_samples_rank*.jsonl; tools/check_dataset.py lists them all."
        )


def _positions(sampler, start: int, replay: Sequence[int]) -> Iterator:
    """``(k, index)`` of the rank's sampler stream: first the positions in ``replay`` (all < start,
    increasing), then ``start, start + 1, ...``."""
    stream = iter(sampler)
    first = replay[0] if replay else start
    next(itertools.islice(stream, first, first), None)  # consume ``first`` indices at C speed
    wanted, remembered = set(replay), {}
    for k in range(first, start):
        index = next(stream)
        if k in wanted:
            remembered[k] = index
    for k in replay:
        yield k, remembered[k]
    yield from enumerate(stream, start=start)


class _SampleStream(torchdata.IterableDataset):
    """The mapped samples of ``positions`` as ``(k, data)``, split round-robin over loader workers
    (the DataLoader then yields them in the stream's order)."""

    def __init__(self, mapped: SeededMapDataset, sampler, start: int, replay: Sequence[int]):
        self.mapped, self.sampler, self.start, self.replay = mapped, sampler, start, list(replay)

    def __iter__(self):
        positions = _positions(self.sampler, self.start, self.replay)
        worker = torchdata.get_worker_info()
        if worker is not None and worker.num_workers > 1:
            positions = itertools.islice(positions, worker.id, None, worker.num_workers)
        for k, index in positions:
            yield k, self.mapped[(k, index)]


def _identity(x):
    return x


class TrainLoader:
    """An infinite iterable of training batches (lists of mapped dicts, ``batch_size`` per rank),
    resumable through :meth:`state_dict` / :meth:`load_state_dict`.

    The state may be loaded any time before the first batch is drawn from ``iter(loader)``
    (Detectron2's trainer calls ``iter`` when it is built; the stream starts at the first ``next``).
    """

    def __init__(
        self,
        dataset,
        *,
        mapper: Callable,
        make_sampler: Callable[[int], torchdata.Sampler],
        batch_size: int,
        aspect_ratio_grouping: bool = True,
        num_workers: int = 0,
        seed: Optional[int] = None,
    ):
        """
        Args:
            dataset: list of dataset dicts, or a map-style dataset.
            mapper: dataset dict -> model input (or None to skip a bad sample).
            make_sampler: seed -> the rank's infinite index sampler (e.g. :class:`TrainingSampler`).
            batch_size: images per batch on this rank.
            aspect_ratio_grouping: batch images of the same orientation (``width > height``) together,
                as Detectron2's ``AspectRatioGroupedDataset``.
            seed: sampler and augmentation seed; None = one random seed shared by all ranks.
        """
        self._dataset = DatasetFromList(dataset, copy=False) if isinstance(dataset, list) else dataset
        self._mapper = mapper
        self._make_sampler = make_sampler
        self.batch_size = int(batch_size)
        self.aspect_ratio_grouping = aspect_ratio_grouping
        self.num_workers = num_workers
        self.seed = comm.shared_random_seed() if seed is None else int(seed)
        self.rank = comm.get_rank()
        self._next = 0  # positions < _next were pulled into buckets (and most delivered)
        self._pending: List[int] = []  # positions pulled but waiting in a bucket

    def __len__(self) -> int:
        return len(self._dataset)

    # ------------------------------------------------------------------------------- state
    def state_dict(self) -> Dict:
        return {
            "seed": self.seed,
            "next": self._next,
            "pending": list(self._pending),
            "batch_size": self.batch_size,
            "aspect_ratio_grouping": self.aspect_ratio_grouping,
        }

    def load_state_dict(self, state: Dict) -> None:
        if state.get("batch_size") != self.batch_size or state.get("aspect_ratio_grouping") != self.aspect_ratio_grouping:
            logger.warning(
                "The data loader state was saved with %d images per rank (aspect-ratio grouping %s), this run "
                "has %d (%s): the samples go on from position %d but not as the original run would have drawn them.",
                state.get("batch_size", -1), state.get("aspect_ratio_grouping"), self.batch_size,
                self.aspect_ratio_grouping, state["next"],
            )
            self._pending = []
        else:
            self._pending = [int(p) for p in state.get("pending", ())]
        self.seed = int(state["seed"])
        self._next = int(state["next"])

    def skip_to(self, position: int) -> None:
        """Go on from stream position ``position`` (no sample waits in a bucket); for resuming from
        checkpoints without loader state."""
        self._next, self._pending = int(position), []

    # ------------------------------------------------------------------------------ batches
    def __iter__(self):
        mapped = SeededMapDataset(self._dataset, self._mapper, self.seed, self.rank)
        stream = _SampleStream(mapped, self._make_sampler(self.seed), self._next, self._pending)
        loader = torchdata.DataLoader(
            stream,
            batch_size=None,
            num_workers=self.num_workers,
            collate_fn=_identity,
            generator=torch.Generator().manual_seed(self.seed),  # leaves the global torch RNG alone
            persistent_workers=False,
        )
        buckets: Dict[int, list] = {}
        for k, data in loader:
            key = int(data["width"] > data["height"]) if self.aspect_ratio_grouping else 0
            bucket = buckets.setdefault(key, [])
            bucket.append((k, data))
            if k >= self._next:
                self._next = k + 1
            if len(bucket) == self.batch_size:
                batch = [d for _, d in bucket]
                bucket.clear()
                self._pending = sorted(p for b in buckets.values() for p, _ in b)
                yield batch


def build_training_sampler(cfg, dataset_dicts: list) -> Callable[[int], torchdata.Sampler]:
    """``seed -> sampler`` for ``DATALOADER.SAMPLER_TRAIN`` (as Detectron2's train loader builds it)."""
    name = cfg.DATALOADER.SAMPLER_TRAIN
    if name == "TrainingSampler":
        return lambda seed: TrainingSampler(len(dataset_dicts), seed=seed)
    if name == "RepeatFactorTrainingSampler":
        factors = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(
            dataset_dicts, cfg.DATALOADER.REPEAT_THRESHOLD
        )
        return lambda seed: RepeatFactorTrainingSampler(factors, seed=seed)
    if name == "RandomSubsetTrainingSampler":
        ratio = cfg.DATALOADER.RANDOM_SUBSET_RATIO
        return lambda seed: RandomSubsetTrainingSampler(len(dataset_dicts), ratio, seed_shuffle=seed, seed_subset=seed)
    raise ValueError(f"Unknown training sampler DATALOADER.SAMPLER_TRAIN {name!r}")


def build_train_loader(cfg, mapper: Callable) -> TrainLoader:
    """The :class:`TrainLoader` of ``DATASETS.TRAIN`` with the dataset filters, sampler, batch size
    and workers of Detectron2's ``build_detection_train_loader(cfg)``."""
    dataset = get_detection_dataset_dicts(
        cfg.DATASETS.TRAIN,
        filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
        min_keypoints=cfg.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE if cfg.MODEL.KEYPOINT_ON else 0,
        proposal_files=cfg.DATASETS.PROPOSAL_FILES_TRAIN if cfg.MODEL.LOAD_PROPOSALS else None,
    )
    world_size = comm.get_world_size()
    if cfg.SOLVER.IMS_PER_BATCH % world_size:
        raise ValueError(f"SOLVER.IMS_PER_BATCH {cfg.SOLVER.IMS_PER_BATCH} is not divisible by the {world_size} processes")
    logger.info("Using training sampler %s", cfg.DATALOADER.SAMPLER_TRAIN)
    return TrainLoader(
        dataset,
        mapper=mapper,
        make_sampler=build_training_sampler(cfg, dataset),
        batch_size=cfg.SOLVER.IMS_PER_BATCH // world_size,
        aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
    )
