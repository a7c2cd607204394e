"""The data side of exact resume: batches after a resume equal the uninterrupted run's, also with aspect-ratio
grouping holding images back at the checkpoint, and each sample's augmentation depends only on its position."""
import itertools

import numpy as np
import pytest
from detectron2.data import build_detection_train_loader
from detectron2.data.common import DatasetFromList

from cardd_d2.engine.exact_resume import PositionedDataset, PositionSeededMapper, ResumableTrainingSampler

# mixed orientations, so that aspect-ratio grouping keeps images waiting in its buckets between batches
DICTS = [{"image_id": i, "width": 40 if i % 3 else 20, "height": 30} for i in range(11)]


def _augment(d):
    return {"image_id": d["image_id"], "width": d["width"], "height": d["height"],
            "draw": float(np.random.uniform()), "flip": bool(np.random.rand() < 0.5)}


def _batches(sampler, n, grouping=True, num_workers=0):
    loader = build_detection_train_loader(
        PositionedDataset(DatasetFromList(DICTS, copy=False)), mapper=PositionSeededMapper(_augment, sampler),
        sampler=sampler, total_batch_size=3, aspect_ratio_grouping=grouping, num_workers=num_workers,
        seed=sampler.seed)
    return [[(d["image_id"], d["draw"], d["flip"]) for d in batch] for batch in itertools.islice(loader, n)]


def _sampler(grouping=True):
    return ResumableTrainingSampler(len(DICTS), seed=5,
                                    landscape=[d["width"] > d["height"] for d in DICTS] if grouping else None)


@pytest.mark.parametrize("grouping", [True, False])
@pytest.mark.parametrize("stop", [1, 2, 5])
def test_resumed_batches_equal_the_uninterrupted_run(grouping, stop):
    straight = _batches(_sampler(grouping), 9, grouping)
    np.random.seed(123)  # the resumed process's global generator is elsewhere
    resumed_sampler = _sampler(grouping)
    resumed_sampler.load_state_dict(_sampler(grouping).state_dict())
    resumed_sampler.resume_after(stop, 3, num_workers=0)
    assert _batches(resumed_sampler, 9 - stop, grouping) == straight[stop:]


def test_resumed_batches_equal_with_workers_without_grouping():
    straight = _batches(_sampler(False), 6, grouping=False, num_workers=2)
    assert straight == _batches(_sampler(False), 6, grouping=False)  # workers change nothing
    resumed_sampler = _sampler(False)
    resumed_sampler.resume_after(3, 3, num_workers=2)
    assert _batches(resumed_sampler, 3, grouping=False, num_workers=2) == straight[3:]


def test_grouping_really_holds_images_back():
    # otherwise the test above would not exercise the replay of the buckets
    sampler = _sampler()
    sampler.resume_after(2, 3, num_workers=0)
    assert sampler._pending and sampler.next_position > 6


def test_augmentation_does_not_depend_on_the_global_generator():
    np.random.seed(0)
    a = _batches(_sampler(), 3)
    np.random.seed(1)
    assert _batches(_sampler(), 3) == a


def test_sampler_rejects_a_changed_dataset():
    with pytest.raises(ValueError, match="11 images but the dataset now has 12"):
        ResumableTrainingSampler(12, seed=1).load_state_dict(_sampler().state_dict())


def test_global_rng_state_round_trip_and_multi_process_skip(monkeypatch):
    import random

    import torch

    from cardd_d2.engine.exact_resume import GlobalRNGState

    rng = GlobalRNGState()
    state = rng.state_dict()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    rng.load_state_dict(state)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1]) and expected[2] == again[2]

    from detectron2.utils import comm

    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    before = torch.get_rng_state()
    rng.load_state_dict(state)  # another rank's generators are not imposed on this one
    assert torch.equal(torch.get_rng_state(), before)
