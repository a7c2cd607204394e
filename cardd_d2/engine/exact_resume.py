"""What a checkpoint must hold so that ``--resume`` continues a run bit-identically.

A resumed run must see the same images in the same batches with the same random augmentations, and draw the same
random numbers in the model (proposal sampling) as the uninterrupted run would have:

* :class:`ResumableTrainingSampler` numbers every sample of this rank's stream (its *position*) and, on resume,
  continues the stream after the batches already trained on, including the images that aspect-ratio grouping still
  held back at the checkpoint.
* :class:`PositionSeededMapper` draws the random augmentation of a sample (range-resize height, flip, ...) from a
  generator seeded by (sampler seed, rank, position), so it does not depend on what ran before, on data-loader
  workers or on the interruption.
* :class:`GlobalRNGState` saves and restores torch's, numpy's and Python's global generators.

Exact in a single process with ``DATALOADER.NUM_WORKERS 0``, and with any number of workers when
``DATALOADER.ASPECT_RATIO_GROUPING`` is off. With workers *and* aspect-ratio grouping the resumed run trains on the
same images with the same augmentations, but the workers' interleaving can group them into batches differently. With
several processes each rank continues its own data stream exactly, but the global generators (model-side sampling)
are only restored in single-process runs.
"""
from __future__ import annotations

import itertools
import logging
import random
from contextlib import contextmanager
from typing import Iterator, List, Optional, Sequence

import numpy as np
import torch
from detectron2.data.samplers import TrainingSampler
from detectron2.utils import comm
from torch.utils.data import Dataset

logger = logging.getLogger(__name__)

__all__ = ["ResumableTrainingSampler", "PositionedDataset", "PositionSeededMapper", "GlobalRNGState",
           "POSITION_KEY"]

# Key of a dataset dict that holds the sample's position in this rank's stream (kept in the mapped dict).
POSITION_KEY = "stream_position"


class ResumableTrainingSampler(TrainingSampler):
    """detectron2's infinite TrainingSampler whose seed is saved in checkpoints and whose stream can be resumed.

    It yields ``position * size + index`` (decoded by :class:`PositionedDataset`), so that every dataset dict knows
    its position in this rank's stream.

    Args:
        size, shuffle, seed: as TrainingSampler.
        landscape: for aspect-ratio grouping, whether each image is wider than high (None: no grouping).
    """

    def __init__(self, size: int, shuffle: bool = True, seed=None, landscape: Optional[Sequence[bool]] = None):
        super().__init__(size, shuffle=shuffle, seed=seed)
        self._landscape = None if landscape is None else [bool(v) for v in landscape]
        self._pending: List[int] = []  # positions before next_position still to be yielded (in stream order)
        self.next_position = 0

    @property
    def seed(self) -> int:
        return int(self._seed)

    def _positions(self) -> Iterator[tuple]:
        """(position, dataset index) of this rank's stream, from the start."""
        return enumerate(itertools.islice(self._infinite_indices(), self._rank, None, self._world_size))

    def __iter__(self):
        pending = set(self._pending)
        for position, index in self._positions():
            if position >= self.next_position or position in pending:
                yield position * self._size + index

    def resume_after(self, batches: int, batch_size: int, num_workers: int):
        """Continue the stream after ``batches`` batches of ``batch_size`` were trained on.

        With aspect-ratio grouping the batches are replayed from the images' orientations (no image is read): the
        images grouping still held back at the checkpoint come first, then the stream continues.
        """
        if self._landscape is None:
            self._pending, self.next_position = [], batches * batch_size
            return
        stream, indices = self._positions(), []
        received, buckets, made = set(), ([], []), 0
        for position in _main_process_order(num_workers, batch_size):
            if made == batches:
                break
            while len(indices) <= position:
                indices.append(next(stream)[1])
            bucket = buckets[0 if self._landscape[indices[position]] else 1]
            bucket.append(position)
            received.add(position)
            if len(bucket) == batch_size:
                made += 1
                del bucket[:]
        self.next_position = max(received) + 1 if received else 0
        self._pending = sorted((set(range(self.next_position)) - received) | set(buckets[0]) | set(buckets[1]))

    # checkpointable interface (fvcore's Checkpointer saves any object with state_dict / load_state_dict)
    def state_dict(self):
        return {"seed": self.seed, "size": self._size, "shuffle": self._shuffle}

    def load_state_dict(self, state):
        if state.get("size") != self._size:
            raise ValueError(
                f"the checkpoint's training sampler covered {state.get('size')} images but the dataset now has "
                f"{self._size}: the data order cannot be resumed (did the training set change?)"
            )
        self._seed = int(state["seed"])
        self._shuffle = bool(state["shuffle"])


def _main_process_order(num_workers: int, chunk: int) -> Iterator[int]:
    """Stream positions in the order the main process receives single samples from a DataLoader over
    detectron2's ToIterableDataset: worker ``w`` takes chunks ``w, w + W, ...`` of ``chunk`` samples and the
    DataLoader returns one sample per worker in turn."""
    if num_workers <= 1:
        yield from itertools.count()
        return
    for k in itertools.count():
        worker, j = k % num_workers, k // num_workers
        yield (j // chunk) * num_workers * chunk + worker * chunk + j % chunk


class PositionedDataset(Dataset):
    """Map-style dataset over ``dataset`` whose keys are ``position * len(dataset) + index`` (see
    :class:`ResumableTrainingSampler`); the returned dict carries ``POSITION_KEY``."""

    def __init__(self, dataset):
        self._dataset = dataset

    def __len__(self):
        return len(self._dataset)

    def __getitem__(self, key):
        position, index = divmod(int(key), len(self._dataset))
        d = self._dataset[index]
        d[POSITION_KEY] = position
        return d


@contextmanager
def _seeded_numpy(seed_words: Sequence[int]):
    # detectron2's augmentations draw from numpy's global generator; give it a per-sample seed, then put it back.
    saved = np.random.get_state()
    np.random.seed(np.random.SeedSequence(list(seed_words)).generate_state(1)[0])
    try:
        yield
    finally:
        np.random.set_state(saved)


class PositionSeededMapper:
    """Calls ``mapper`` with numpy's generator seeded by (sampler seed, rank, the dict's position)."""

    def __init__(self, mapper, sampler: ResumableTrainingSampler):
        self.mapper = mapper
        self.sampler = sampler
        self.rank = comm.get_rank()

    def __call__(self, dataset_dict):
        with _seeded_numpy((self.sampler.seed, self.rank, int(dataset_dict[POSITION_KEY]))):
            return self.mapper(dataset_dict)


class GlobalRNGState:
    """Checkpointable view of torch's (CPU and CUDA), numpy's and Python's global random generators.

    Stored as tensors and ints only, so the checkpoint stays readable with ``torch.load(weights_only=True)``.
    """

    def state_dict(self):
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        version, internal, gauss_next = random.getstate()
        state = {
            "torch": torch.get_rng_state(),
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state):
        if comm.get_world_size() > 1:
            # The file holds the main process's generators only; giving them to every rank would make all ranks
            # draw the same numbers. Each rank keeps the seed default_setup gave it.
            logger.info("Global random state not restored: it is saved for single-process runs only")
            return
        torch.set_rng_state(state["torch"])
        n = state["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
        p = state["python"]
        random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


@contextmanager
def preserved_global_rng():
    """Runs a block (evaluation during training) without changing the global generators the training uses."""
    rng = GlobalRNGState()
    saved = rng.state_dict()
    try:
        yield
    finally:
        rng.load_state_dict(saved)
