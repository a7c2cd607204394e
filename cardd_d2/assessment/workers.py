"""A fixed pool of inference worker threads behind a bounded queue, for the HTTP service.

Each worker owns the object ``make_state()`` returned for it (a predictor: one model per worker, so workers never
share one module's forward). ``submit(fn, *args)`` runs ``fn(state, *args)`` on the next free worker and returns a
``concurrent.futures.Future``; when ``queue_size`` jobs are already waiting it raises :class:`PoolFull` at once
instead of blocking. An exception inside a job fails that job's future only: the worker carries on with the next.
Torch releases the GIL inside its kernels, so threads run inference in parallel.
"""
from __future__ import annotations

import collections
import concurrent.futures
import logging
import math
import queue
import threading
import time
from typing import Any, Callable, Optional

logger = logging.getLogger(__name__)

__all__ = ["InferencePool", "PoolFull"]

# Latency percentiles are over this many most recent finished jobs.
LATENCY_WINDOW = 256
_STOP = object()


class PoolFull(RuntimeError):
    """Every worker is busy and the queue holds ``queue_size`` waiting jobs."""

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = int(retry_after_s)


def _percentile(sorted_values, q: float) -> float:
    # Nearest-rank percentile: a value that was actually observed.
    k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100.0 * len(sorted_values)) - 1))
    return float(sorted_values[k])


class InferencePool:
    def __init__(self, make_state: Callable[[], Any], workers: int = 1, queue_size: int = 8):
        if int(workers) < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if int(queue_size) < 0:
            raise ValueError(f"queue_size must be >= 0, got {queue_size}")
        self.make_state = make_state
        self.num_workers = int(workers)
        self.queue_size = int(queue_size)
        # queue.Queue(0) would be unbounded; admission is counted by hand instead (see submit).
        self._jobs: "queue.Queue" = queue.Queue()
        self._lock = threading.Lock()
        self._waiting = 0
        self._running = 0
        self._threads = []
        self._latency = collections.deque(maxlen=LATENCY_WINDOW)  # (total_s, service_s) of recent jobs
        self._counts = {"completed": 0, "failed": 0, "rejected": 0, "cancelled": 0}
        self.started = False

    def start(self):
        """Build every worker's state (in this thread, so a failure stops start-up) and start the workers."""
        states = [self.make_state() for _ in range(self.num_workers)]
        for i, st in enumerate(states):
            t = threading.Thread(target=self._work, args=(st,), name=f"cardd-inference-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        self.started = True

    def close(self, timeout: Optional[float] = 30.0):
        for _ in self._threads:
            self._jobs.put(_STOP)
        for t in self._threads:
            t.join(timeout)
        self._threads = []
        self.started = False

    def retry_after_s(self) -> int:
        """Seconds until a slot is likely free: the waiting jobs spread over the workers at the median service time."""
        with self._lock:
            service = sorted(s for _, s in self._latency)
            waiting = self._waiting
        per_job = _percentile(service, 50) if service else 1.0
        return max(1, math.ceil((waiting + 1) * per_job / self.num_workers))

    def submit(self, fn: Callable, *args) -> concurrent.futures.Future:
        if not self.started:
            raise RuntimeError("the inference pool is not started")
        with self._lock:
            # A job is admitted when a worker is idle or the queue has room.
            full = self._waiting + self._running >= self.num_workers + self.queue_size
            if full:
                self._counts["rejected"] += 1
            else:
                self._waiting += 1
        if full:
            raise PoolFull(f"server busy: {self.num_workers} worker(s) busy and {self.queue_size} request(s) "
                           "queued; retry later", self.retry_after_s())
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put((fn, args, fut, time.perf_counter()))
        return fut

    def _work(self, state):
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            fn, args, fut, t_submit = job
            with self._lock:
                self._waiting -= 1
                if fut.set_running_or_notify_cancel():
                    self._running += 1
                else:  # the client went away (or timed out) while the job was waiting
                    self._counts["cancelled"] += 1
                    continue
            t0 = time.perf_counter()
            try:
                result = fn(state, *args)
            except BaseException as e:  # noqa: BLE001  (the job fails, the worker stays)
                ok, result = False, e
            else:
                ok = True
            t1 = time.perf_counter()
            with self._lock:
                self._running -= 1
                self._latency.append((t1 - t_submit, t1 - t0))
                self._counts["completed" if ok else "failed"] += 1
            if ok:
                fut.set_result(result)
            else:
                fut.set_exception(result)

    def stats(self) -> dict:
        """Workers, queue depth, job counts and p50/p95 latency (ms) of the recent jobs: total (queue wait included)
        and service (inference only)."""
        with self._lock:
            lat = list(self._latency)
            out = {"workers": self.num_workers, "workers_alive": sum(t.is_alive() for t in self._threads),
                   "queue_size": self.queue_size, "queue_depth": self._waiting, "in_flight": self._running,
                   **self._counts}
        latency = {"window": len(lat)}
        for i, key in enumerate(("total", "service")):
            vals = sorted(v[i] for v in lat)
            for q in (50, 95):
                latency[f"{key}_p{q}_ms"] = round(_percentile(vals, q) * 1000.0, 2) if vals else None
        out["latency"] = latency
        return out
