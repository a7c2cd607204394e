"""The rule for running a config on several processes (``tools/train_net.py --num-gpus N``).

The released recipe trains in one process: ``SOLVER.IMS_PER_BATCH`` images per iteration. detectron2 splits that
batch evenly over the processes, so it runs unchanged on any N that divides it (e.g. DCN+ R-101, batch 4: 1, 2 or
4 GPUs). ``SOLVER.REFERENCE_WORLD_SIZE R`` instead keeps ``IMS_PER_BATCH / R`` images per process and scales the batch,
learning rate and schedule linearly to N processes (detectron2's ``DefaultTrainer.auto_scale_workers``): another
recipe, but one that fits any N. :func:`check_world_size` stops before any process starts when neither holds.
"""
from detectron2.engine import DefaultTrainer

__all__ = ["check_world_size"]


def _divisors(n: int):
    return [d for d in range(1, n + 1) if n % d == 0]


def check_world_size(cfg, world_size: int) -> None:
    """Raise ``ValueError`` saying what to set when ``cfg``'s training batch cannot be split over ``world_size``
    processes."""
    s = cfg.SOLVER
    ref = s.REFERENCE_WORLD_SIZE
    if ref and s.IMS_PER_BATCH % ref:
        raise ValueError(
            f"SOLVER.REFERENCE_WORLD_SIZE {ref} does not divide SOLVER.IMS_PER_BATCH {s.IMS_PER_BATCH}: it is the "
            "number of processes the batch was written for (the released recipe: 1)"
        )
    batch = DefaultTrainer.auto_scale_workers(cfg, world_size).SOLVER.IMS_PER_BATCH
    if batch % world_size == 0:
        return
    scaled = cfg.clone()
    scaled.defrost()
    scaled.SOLVER.REFERENCE_WORLD_SIZE = 1
    scaled = DefaultTrainer.auto_scale_workers(scaled, world_size).SOLVER
    fits = ", ".join(str(d) for d in _divisors(s.IMS_PER_BATCH))
    raise ValueError(
        f"SOLVER.IMS_PER_BATCH {s.IMS_PER_BATCH} (images per iteration over all processes) cannot be split over "
        f"{world_size} processes. Keep the recipe with a process count that divides it ({fits}: --num-gpus x "
        f"--num-machines), or add 'SOLVER.REFERENCE_WORLD_SIZE 1' to scale it linearly to {world_size} processes "
        f"(IMS_PER_BATCH {scaled.IMS_PER_BATCH}, BASE_LR {scaled.BASE_LR:g}, MAX_ITER {scaled.MAX_ITER}, "
        f"STEPS {tuple(scaled.STEPS)}, WARMUP_ITERS {scaled.WARMUP_ITERS})"
    )
