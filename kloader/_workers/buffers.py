"""Shared-memory batch buffers that a worker reuses once the main process lets go.

A worker writes each batch into shared memory, so that handing it over costs a
file descriptor instead of a copy. A fresh buffer is the expensive part: the
kernel allocates, zeroes and faults in every page of it (a 64x160x160x3 float32
batch is 19.6 MB), where refilling a buffer the worker has written before only
copies. So a worker keeps the buffers it has lent, and writes a
new batch into one of them as soon as the main process has let go of it.

"Let go" is decided by reference counting, never by guessing: the main process
puts a `weakref.finalize` on the tensor that owns each array it receives. Every
NumPy view of the array, and every tensor a backend makes from it without
copying (torch's `from_numpy`; JAX and TensorFlow when they alias NumPy
memory), holds that owner, so its finalizer runs only when nothing can read the
batch any more. The finalizer queues the buffer's id, and the ids go back to
their worker through a pipe, ahead of the next task. A batch the user keeps
(`batches = list(loader)`) is therefore never overwritten: its buffers are
simply not returned.

A worker holds at most `_FREE_BUFFERS` idle buffers, and remembers at most
`_LENT_BUFFERS` lent ones (forgetting the oldest only means that buffer is
freed instead of reused when it comes back), so its memory stays bounded
whatever the consumer does.
"""

from __future__ import annotations

import contextlib
import weakref
from collections import OrderedDict, deque
from typing import Any

import numpy as np
import torch

from kloader._core import tree
from kloader._workers import shared_memory, torch_internals
from kloader._workers.plan import Key

_FREE_BUFFERS = 2
_LENT_BUFFERS = 64
# Ids sent back per worker per task: more only happen when the consumer drops
# many held batches at once, and the worker has forgotten most of those anyway.
_RETURNS_PER_MESSAGE = _LENT_BUFFERS
# Keys of tasks to skip that a worker remembers: only tasks that were in flight
# while the workers started are ever skipped.
_SKIPS_REMEMBERED = 1024


class Lent:
    """A worker's buffer on its way to the main process: the tensor and its id."""

    __slots__ = ("buffer", "tensor", "worker")

    def __init__(self, tensor: torch.Tensor, worker: int, buffer: int):
        self.tensor, self.worker, self.buffer = tensor, worker, buffer


class WorkerBuffers:
    """In a worker: hands out buffers for batches, reusing those returned.

    The same pipe carries the keys of tasks the main process has made itself
    meanwhile (while the workers started): `skipped` holds those not yet met.

    Args:
        worker: this worker's id.
        returns: read end of the pipe on which the main process sends back the
            ids of buffers it has let go of (None: never reuse).
    """

    def __init__(self, worker: int, returns: Any):
        self.worker = worker
        self._returns = returns
        # Buffers by id; an id stays with its buffer for as long as it lives.
        self._free: list[tuple[int, torch.UntypedStorage]] = []
        self._lent: OrderedDict[int, torch.UntypedStorage] = OrderedDict()
        self._next_id = 0
        self.skipped: OrderedDict[Key, None] = OrderedDict()

    def allocate(self, shape: tuple[int, ...], dtype: np.dtype) -> tuple[np.ndarray, Any]:
        """`_batches.Allocate`: (NumPy view to fill, object to send)."""
        torch_dtype = shared_memory.torch_dtype_of(np.dtype(dtype))
        if torch_dtype is None:
            return shared_memory.empty(shape, dtype)
        self.take_messages()
        nbytes = shared_memory.nbytes_of(shape, dtype)
        buffer, storage = self._reuse(nbytes) or self._new(nbytes)
        self._lent[buffer] = storage
        while len(self._lent) > _LENT_BUFFERS:
            self._lent.popitem(last=False)
        tensor = shared_memory.tensor_on(storage, shape, torch_dtype)
        return tensor.numpy(), Lent(tensor, self.worker, buffer)

    def _reuse(self, nbytes: int) -> tuple[int, torch.UntypedStorage] | None:
        for position, (_, storage) in enumerate(self._free):
            if storage.nbytes() == nbytes:
                return self._free.pop(position)
        return None

    def _new(self, nbytes: int) -> tuple[int, torch.UntypedStorage]:
        self._next_id += 1
        return self._next_id, torch_internals.new_shared_storage(nbytes)

    def take_messages(self) -> None:
        """Takes the returned buffers and the keys to skip that the main process sent."""
        if self._returns is None:
            return
        try:
            while self._returns.poll():
                returned, skipped = self._returns.recv()
                for buffer in returned:
                    storage = self._lent.pop(buffer, None)
                    if storage is not None:
                        self._free.append((buffer, storage))
                for key in skipped:
                    self.skipped[tuple(key)] = None
                while len(self.skipped) > _SKIPS_REMEMBERED:
                    self.skipped.popitem(last=False)
        except (EOFError, OSError):
            self._returns = None  # the main process is gone; the watchdog ends this worker
        del self._free[: max(len(self._free) - _FREE_BUFFERS, 0)]


class Returns:
    """In the main process: receives batches and sends their buffers back when dropped.

    Args:
        writers: one pipe write end per worker, by worker id.
    """

    def __init__(self, writers: list[Any]):
        self._writers = writers
        # Appended to by finalizers, from whichever thread drops a batch.
        self._released: deque[tuple[int, int]] = deque()
        self._newest = [0] * len(writers)
        self.fresh = 0  # buffers received for the first time
        self.reused = 0  # buffers received again

    def receive(self, batch: Any) -> Any:
        """The batch as NumPy arrays; each buffer goes back when its array is dropped."""
        if batch is None:  # a skipped task
            return None
        leaves, structure = tree.flatten(batch)
        return tree.unflatten(structure, [self._array(leaf) for leaf in leaves])

    def _array(self, leaf: Any) -> np.ndarray:
        if not isinstance(leaf, Lent):
            return shared_memory.to_numpy(leaf)
        if leaf.buffer > self._newest[leaf.worker]:
            self._newest[leaf.worker] = leaf.buffer
            self.fresh += 1
        else:
            self.reused += 1
        array = leaf.tensor.numpy()
        # The array's owner (not `leaf.tensor`, which dies here) lives as long
        # as anything that can read the array.
        finalizer = weakref.finalize(array.base, self._released.append, (leaf.worker, leaf.buffer))
        finalizer.atexit = False
        return array

    def send(self, skip: list[Key] | None = None) -> None:
        """Sends the ids of dropped buffers to their workers, and `skip` to every worker."""
        returned: dict[int, list[int]] = {}
        if not self._writers:  # closed
            self._released.clear()
        while self._released:
            worker, buffer = self._released.popleft()
            returned.setdefault(worker, []).append(buffer)
        workers = range(len(self._writers)) if skip else returned
        for worker in workers:
            # A dead worker's pipe is broken: the pool reports the death where it
            # waits for batches.
            with contextlib.suppress(OSError):
                self._writers[worker].send((returned.get(worker, [])[-_RETURNS_PER_MESSAGE:], skip or []))

    def close(self) -> None:
        for writer in self._writers:
            writer.close()
        self._writers = []
