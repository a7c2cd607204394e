"""A training sampler whose position survives a checkpoint, so `--resume` replays the same data order."""
import itertools

from detectron2.data.samplers import TrainingSampler


class ResumableTrainingSampler(TrainingSampler):
    """detectron2's infinite TrainingSampler, plus a seed that is saved in checkpoints and a start offset.

    detectron2 restarts its sampler stream from the beginning when a run resumes, so the resumed run sees the
    first images of the epoch again. Here the trainer stores the seed with the checkpoint and, on resume, skips the
    indices this rank already consumed (``start_index``), so the resumed stream continues where it stopped.
    """

    def __init__(self, size: int, shuffle: bool = True, seed=None):
        super().__init__(size, shuffle=shuffle, seed=seed)
        self.start_index = 0

    def __iter__(self):
        yield from itertools.islice(super().__iter__(), self.start_index, None)

    # checkpointable interface (fvcore Checkpointer saves any object with state_dict/load_state_dict)
    def state_dict(self):
        return {"seed": self._seed, "size": self._size, "shuffle": self._shuffle}

    def load_state_dict(self, state):
        if state.get("size") != self._size:
            raise ValueError(
                f"the checkpoint's training sampler covered {state.get('size')} images but the dataset now has "
                f"{self._size}: the data order cannot be resumed (did the training set change?)"
            )
        self._seed = int(state["seed"])
        self._shuffle = bool(state["shuffle"])
