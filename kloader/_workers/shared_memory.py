"""Arrays that cross process boundaries as shared memory instead of bytes.

A NumPy array pickled into a pipe is copied twice (into the pipe and out of
it). A CPU `torch.Tensor` whose storage lives in shared memory pickles, under
torch's multiprocessing reductions, as a file descriptor: the receiver maps the
same pages. With torch's default `file_descriptor` strategy the segment has no
name in /dev/shm, so nothing can be left behind when a process dies.

Dtypes torch cannot hold (strings, objects) stay plain NumPy arrays.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import numpy as np
import torch

from kloader._core.batches import BatchMaker
from kloader._core.sources import ArraySource, read_only
from kloader._workers import torch_internals

SHARED_MEMORY_DIR = "/dev/shm"


def torch_dtype_of(dtype: np.dtype) -> torch.dtype | None:
    try:
        return torch.from_numpy(np.empty(0, dtype=dtype)).dtype
    except TypeError:
        return None


def empty(shape: tuple[int, ...], dtype: np.dtype) -> tuple[np.ndarray, Any]:
    """A new array in shared memory: (NumPy view to fill, object to send).

    The object to send is the tensor that owns the memory, or the array itself
    when torch cannot hold its dtype.
    """
    torch_dtype = torch_dtype_of(np.dtype(dtype))
    if torch_dtype is None:
        array = np.empty(shape, dtype=dtype)
        return array, array
    # Allocated directly in shared memory, as torch's default_collate does: no copy.
    storage = torch_internals.new_shared_storage(nbytes_of(shape, dtype))
    tensor = tensor_on(storage, shape, torch_dtype)
    return tensor.numpy(), tensor


def remove_segments_of(pids: list[int]) -> None:
    """Unlinks the named segments that the stopped processes `pids` left in /dev/shm.

    torch unlinks a segment as soon as it is mapped, except when the
    allocation fails half way (shared memory full: the file stays, named
    `torch_<pid>_...`) or the process dies in between. Nothing else uses those
    names, and the processes are gone: the files only hold memory.
    """
    try:
        names = os.listdir(SHARED_MEMORY_DIR)
    except OSError:
        return
    prefixes = tuple(f"torch_{pid}_" for pid in pids)
    for name in names:
        if prefixes and name.startswith(prefixes):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(SHARED_MEMORY_DIR, name))


def out_of_shared_memory(error: BaseException) -> bool:
    """True when `error` is a failed shared-memory allocation for lack of space."""
    text = str(error)
    return "shared memory" in text and ("No space left on device" in text or "(28)" in text)


def shared_memory_advice(nbytes: int | None = None) -> str:
    """What to do when shared memory runs out, with what is free now."""
    try:
        stats = os.statvfs(SHARED_MEMORY_DIR)
        room = f" ({stats.f_bavail * stats.f_frsize / 2**20:.0f} MB of {stats.f_blocks * stats.f_frsize / 2**20:.0f} MB free now)"
    except OSError:
        room = ""
    return (
        f"Shared memory ({SHARED_MEMORY_DIR}{room}) ran out: worker processes hand batches over "
        "in shared memory, about num_workers * (prefetch + 2) batches at a time. Use a smaller "
        "batch_size, fewer workers (num_workers) or a smaller prefetch, or give the machine more "
        "shared memory: in a container, a larger --shm-size (Docker's default is 64 MB), e.g. "
        "`docker run --shm-size=4g`. All workers were shut down and their shared memory released."
    )


def nbytes_of(shape: tuple[int, ...], dtype: np.dtype) -> int:
    """Bytes of shared memory an array of `shape` and `dtype` needs (at least 1)."""
    return max(int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize, 1)


def tensor_on(
    storage: torch.UntypedStorage, shape: tuple[int, ...], torch_dtype: torch.dtype
) -> torch.Tensor:
    """A tensor of `shape` over the start of `storage`."""
    return torch.empty(0, dtype=torch_dtype).set_(storage, 0, shape)  # type: ignore[call-overload,no-any-return]


def share(array: np.ndarray) -> Any:
    """A shared-memory copy of `array` to pickle to workers (one copy, made once)."""
    view, owner = empty(array.shape, array.dtype)
    view[...] = array
    return owner


def to_numpy(value: Any) -> np.ndarray:
    """The NumPy array behind a value made by `empty` or `share`, without copying."""
    if isinstance(value, torch.Tensor):
        return value.numpy()
    return np.asarray(value)


class SharedArraySource(ArraySource):
    """An ArraySource whose arrays live in shared memory: it pickles as handles to
    those pages, so every worker maps one copy instead of unpickling its own."""

    def __init__(self, source: ArraySource):
        self.structure = source.structure
        self.num_samples = source.num_samples
        self._shared = [share(array) for array in source.arrays]
        self.arrays = [read_only(to_numpy(value)) for value in self._shared]

    def __getstate__(self) -> dict[str, Any]:
        return {"structure": self.structure, "shared": self._shared, "num_samples": self.num_samples}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.structure = state["structure"]
        self._shared = state["shared"]
        self.arrays = [read_only(to_numpy(value)) for value in state["shared"]]
        self.num_samples = state["num_samples"]


def for_workers(maker: BatchMaker) -> BatchMaker:
    """The batch maker to send to worker processes: arrays moved into shared memory."""
    if isinstance(maker.source, ArraySource):
        return BatchMaker(SharedArraySource(maker.source), maker.transform)
    return maker
