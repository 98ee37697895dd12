"""Making one batch: read each sample, transform it, and stack it into the batch.

`BatchMaker.make(seed, epoch, indices, allocate)` is the whole job of a worker,
and the same code runs in the main process when `num_workers=0`, so a batch is
bit-for-bit the same wherever it is made. It never imports Keras.

Samples are written into the batch one at a time, as they are made, into
arrays obtained from `allocate` (shared memory in workers), so a batch is never
held twice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from kloader._core import seeding, tree
from kloader._core.errors import SampleError
from kloader._core.sources import ArraySource, MapSource

# allocate(shape, dtype) -> (NumPy view to write into, object that owns the memory)
Allocate = Callable[[tuple[int, ...], np.dtype], tuple[np.ndarray, Any]]
Transform = Callable[[Any, np.random.Generator], Any]


def allocate_local(shape: tuple[int, ...], dtype: np.dtype) -> tuple[np.ndarray, Any]:
    array = np.empty(shape, dtype=dtype)
    return array, array


def _as_array(leaf: Any, index: int, path: str) -> np.ndarray:
    if leaf is None:
        raise SampleError(
            f"Sample {index} has None at {path}. Every part of a sample must be an array or a "
            "number; return a placeholder value instead of None."
        )
    if hasattr(leaf, "is_cuda") and leaf.is_cuda:
        raise SampleError(
            f"Sample {index} holds a CUDA tensor at {path}. Sources must return CPU data "
            "(workers never touch the GPU); return the tensor before calling .cuda()."
        )
    return np.asarray(leaf)


class _BatchWriter:
    """Stacks samples into batch arrays, checking each against the first."""

    def __init__(self, batch_size: int, allocate: Allocate):
        self.batch_size = batch_size
        self.allocate = allocate
        self.structure: tree.Structure = None
        self.first_index = -1
        self.views: list[Any] = []
        self.owners: list[Any] = []
        self.paths: list[str] = []

    def add(self, position: int, index: int, sample: Any) -> None:
        leaves, structure = tree.flatten(sample)
        if position == 0:
            self._start(index, structure, leaves)
        elif structure != self.structure:
            raise SampleError(
                f"Sample {index} has structure {tree.describe(structure)} but sample "
                f"{self.first_index} has {tree.describe(self.structure)}. Every sample must "
                "have the same structure (same tuple length, same dict keys)."
            )
        for leaf, path, view in zip(leaves, self.paths, self.views):
            self._write(position, index, _as_array(leaf, index, path), path, view)

    def _start(self, index: int, structure: tree.Structure, leaves: list[Any]) -> None:
        self.structure, self.first_index = structure, index
        self.paths = tree.leaf_paths(structure, "sample")
        for leaf, path in zip(leaves, self.paths):
            array = _as_array(leaf, index, path)
            if array.dtype.kind in "OUSV":
                # Strings and objects cannot be preallocated: collect, stack at the end.
                self.views.append([])
                self.owners.append(None)
            else:
                view, owner = self.allocate((self.batch_size,) + array.shape, array.dtype)
                self.views.append(view)
                self.owners.append(owner)

    def _write(self, position: int, index: int, array: np.ndarray, path: str, view: Any) -> None:
        if isinstance(view, list):
            view.append(array)
            return
        if array.shape != view.shape[1:]:
            raise SampleError(
                f"Sample {index} has shape {array.shape} at {path}, but sample {self.first_index} "
                f"has shape {view.shape[1:]}. Samples in a batch must have equal shapes: resize "
                "or pad them in the source or in the transform."
            )
        try:
            np.copyto(view[position, ...], array, casting="same_kind")
        except TypeError as exc:
            raise SampleError(
                f"Sample {index} has dtype {array.dtype} at {path}, which cannot be stored with "
                f"dtype {view.dtype} of sample {self.first_index}. Return the same dtype from "
                "every sample."
            ) from exc

    def finish(self) -> Any:
        owners = [
            np.array(view) if isinstance(view, list) else owner
            for view, owner in zip(self.views, self.owners)
        ]
        return tree.unflatten(self.structure, owners)


class BatchMaker:
    """Turns (seed, epoch, sample indices) into a batch; the same in every process.

    Args:
        source: the ArraySource or MapSource to read.
        transform: optional `transform(sample, rng) -> sample`; `rng` is derived
            from (seed, epoch, sample index) only.
    """

    def __init__(self, source: ArraySource | MapSource, transform: Transform | None):
        self.source = source
        self.transform = transform

    @property
    def gathers(self) -> bool:
        """True when a batch is one vectorised gather per array (arrays, no transform).

        Such a batch costs a memory copy: cheaper here than handing it over
        from a worker process, so the loader never sends it to one.
        """
        return self.transform is None and isinstance(self.source, ArraySource)

    def modules(self) -> list[str]:
        """The modules that define the source and transform, to import ahead in workers."""
        objects = [self.transform, getattr(self.source, "dataset", None)]
        names = {
            getattr(obj, "__module__", None) or type(obj).__module__ for obj in objects if obj is not None
        }
        return sorted(name for name in names if name not in ("__main__", "builtins"))

    def make(self, seed: int, epoch: int, indices: np.ndarray, allocate: Allocate = allocate_local) -> Any:
        if self.transform is None and isinstance(self.source, ArraySource):  # self.gathers
            return self.source.gather(indices, allocate)
        writer = _BatchWriter(len(indices), allocate)
        for position, index in enumerate(indices.tolist()):
            writer.add(position, index, self._sample(seed, epoch, index))
        return writer.finish()

    def _sample(self, seed: int, epoch: int, index: int) -> Any:
        try:
            sample = self.source.sample(index)
        except SampleError:
            raise
        except Exception as exc:
            raise SampleError(
                f"Reading sample {index} (epoch {epoch}) failed with {type(exc).__name__}: {exc}"
            ) from exc
        if sample is None:
            raise SampleError(
                f"The source returned None for sample {index}. __getitem__ must return the "
                "sample (an array, a tuple or a dict); check its return statement."
            )
        if self.transform is None:
            return sample
        try:
            sample = self.transform(sample, seeding.sample_rng(seed, epoch, index))
        except Exception as exc:
            raise SampleError(
                f"transform(sample, rng) failed on sample {index} (epoch {epoch}) with "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if sample is None:
            raise SampleError(
                f"transform(sample, rng) returned None for sample {index}. A transform must "
                "return the transformed sample."
            )
        return sample
