"""Which shard this process reads: found from the distributed engine already running.

kloader starts no engine and imports none: it looks at the ones the program
has already imported and initialised, in this order:

1. `torch.distributed`, initialised (`torchrun` + `init_process_group`):
   rank and world size.
2. JAX multi-process (`jax.distributed.initialize`): `jax.process_index()` and
   `jax.process_count()`. Only when the distributed client is up, so that
   merely importing JAX never starts its backends.
3. TensorFlow multi-worker (`tf.distribute.MultiWorkerMirroredStrategy`, which
   reads `TF_CONFIG`): the worker's task index and the number of workers.

Otherwise the process reads everything: shard (0, 1).
"""

from __future__ import annotations

import json
import os
import sys


def _torch_shard() -> tuple[int, int] | None:
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return None
    return dist.get_rank(), dist.get_world_size()


def _jax_shard() -> tuple[int, int] | None:
    if "jax" not in sys.modules:
        return None
    import jax
    from jax._src import distributed

    if distributed.global_state.client is None:
        return None
    return jax.process_index(), jax.process_count()


def _tensorflow_shard() -> tuple[int, int] | None:
    if "tensorflow" not in sys.modules or "TF_CONFIG" not in os.environ:
        return None
    try:
        config = json.loads(os.environ["TF_CONFIG"])
    except ValueError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON ({error}): {os.environ['TF_CONFIG']!r}.") from None
    cluster = config.get("cluster", {}) if isinstance(config, dict) else None
    task = config.get("task", {}) if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise ValueError(
            'TF_CONFIG must be a JSON object {"cluster": {"worker": [...], ...}, "task": {"type": '
            f'"worker", "index": 0}}}}, got {os.environ["TF_CONFIG"]!r}. Fix TF_CONFIG (or pass '
            "shard=(index, count) to kloader.Loader)."
        )
    workers = [*cluster.get("chief", []), *cluster.get("worker", [])]
    if len(workers) < 2 or task.get("type") not in ("chief", "worker"):
        return None
    kind, index = task["type"], task.get("index", 0)
    members = len(cluster.get(kind, []))
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < members:
        raise ValueError(
            f"TF_CONFIG says this process is {kind} {index!r}, but its cluster lists {members} "
            f"{kind} address(es), so task.index must be an int from 0 to {members - 1}. Reading a "
            "shard that is not in the cluster would give overlapping and missing batches: fix "
            "TF_CONFIG's task.index (or pass shard=(index, count) to kloader.Loader)."
        )
    chiefs = len(cluster.get("chief", []))
    return index + (chiefs if kind == "worker" else 0), len(workers)


def detect_shard() -> tuple[tuple[int, int], str]:
    """(index, count) of this process, and which engine said so ("none" if no engine)."""
    for engine, find in (
        ("torch.distributed", _torch_shard),
        ("jax", _jax_shard),
        ("tensorflow", _tensorflow_shard),
    ):
        shard = find()
        if shard is not None:
            index, count = shard
            if not 0 <= index < count:
                # Checked like an explicit shard: a process outside the job would
                # read overlapping or empty batches.
                raise ValueError(
                    f"{engine} says this process is {index} of {count}, which is not a shard "
                    "(0 <= index < count is needed). Check how the job was launched, or pass "
                    "shard=(index, count) to kloader.Loader."
                )
            return (int(index), int(count)), engine
    return (0, 1), "none"
