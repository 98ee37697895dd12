"""The worker settings a Loader checks when it is made, before any worker exists.

Kept apart from pool.py, which imports torch: a loader that never starts a
worker process (no workers, or arrays gathered in this process) does not
import torch, a second or more on the TensorFlow and JAX backends.
"""

from __future__ import annotations

import multiprocessing
import resource

START_METHODS = ("fork", "forkserver", "spawn")

# File descriptors one prefetched batch may hold open in this process: one per
# array (a shared-memory segment), for an assumed 4 arrays, twice (queued, and
# held back to keep the order).
_DESCRIPTORS_PER_PREFETCHED_BATCH = 8


def check_prefetch(prefetch: int, num_workers: int) -> None:
    """Refuses a `prefetch` whose batches in flight this process could not hold open.

    Each batch a worker has handed over holds a file descriptor per array until
    it is used; half of the process's limit on open files is left for them.
    """
    if num_workers == 0:
        return
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return
    most = max(1, soft // 2 // (num_workers * _DESCRIPTORS_PER_PREFETCHED_BATCH))
    if prefetch > most:
        raise ValueError(
            f"`prefetch` must be at most {most} with num_workers={num_workers}: each prefetched "
            f"batch holds open files (shared memory) in this process, and it may open {soft} "
            f"files (`ulimit -n`). Use prefetch={min(2, most)}, or raise the limit on open files."
        )


def default_start_method() -> str:
    """`forkserver` where it exists: safe after CUDA, JAX or TensorFlow have started threads."""
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
