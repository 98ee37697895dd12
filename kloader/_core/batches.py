"""Making one batch: read each sample, transform it, and stack it into the batch.

`BatchMaker.make(seed, epoch, indices, allocate)` is the whole job of a worker,
and the same code runs in the main process when `num_workers=0`, so a batch is
bit-for-bit the same wherever it is made. It never imports Keras.

Samples are written into the batch one at a time, as they are made, into
arrays obtained from `allocate` (shared memory in workers), so a batch is never
held twice.

Dtypes: each part of a batch has the dtype of that part of source sample 0
(after the transform), so the dtypes never depend on the order a shuffle puts
samples in. A sample of another dtype is stored only when every value
survives the cast (an int32 into int64, or an int64 that fits in int32);
otherwise it is refused with its index (2**40 + 5 never becomes 5, 1e5 never
becomes inf in float16).

Every sample is also watched for draws from global random generators (see
`global_random`): the first is warned about once per loader.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from kloader._core import memory, seeding, tree
from kloader._core.errors import GlobalRandomWarning, SampleError
from kloader._core.global_random import GlobalRandomGuard, advice
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
    try:
        return np.asarray(leaf)
    except TypeError as error:
        # A torch tensor of a dtype NumPy lacks (bfloat16, ...): say which sample, and the fix.
        raise SampleError(
            f"Sample {index} at {path} cannot become a NumPy array ({error}). Convert it in the "
            "source or the transform, e.g. tensor.float() for bfloat16."
        ) from error


class Reference(NamedTuple):
    """What every batch is built to: the structure and dtypes of source sample 0."""

    structure: tree.Structure
    dtypes: list[np.dtype]


def reference_of(sample: Any) -> Reference:
    leaves, structure = tree.flatten(sample)
    paths = tree.leaf_paths(structure, "sample")
    return Reference(structure, [_as_array(leaf, 0, path).dtype for leaf, path in zip(leaves, paths)])


def _always_exact(source: np.dtype, target: np.dtype) -> bool:
    """Whether every value of `source` is exactly a value of `target`: numpy's 'safe' casts,
    less those from integers wider than the float's mantissa (int64 -> float64 rounds 2**53 + 1)."""
    if not np.can_cast(source, target, casting="safe"):
        return False
    if source.kind in "iu" and target.kind in "fc":
        bits = 8 * source.itemsize - (source.kind == "i")
        return bits <= int(np.finfo(target).nmant) + 1
    return True


def _store_exactly(view: np.ndarray, array: np.ndarray, index: int, path: str) -> None:
    """Writes `array` into `view` when every value survives the cast, else says which does not."""
    if array.dtype == view.dtype or _always_exact(array.dtype, view.dtype):
        np.copyto(view, array, casting="unsafe")
        return
    problem = f"has dtype {array.dtype} at {path}, but the batch dtype is {view.dtype}"
    fix = (
        "The batch dtype of each part is the dtype of source sample 0 (after the transform), "
        "whatever the order; a sample of another dtype is stored only when its values fit "
        "exactly. Return the same dtype from every sample (e.g. .astype(np.float32) in the "
        "source or the transform)."
    )
    if array.dtype.kind not in "biufc" or view.dtype.kind not in "biufc":
        raise SampleError(f"Sample {index} {problem}, which cannot hold it. {fix}")
    with np.errstate(all="ignore"), warnings.catch_warnings():
        # The imaginary part a cast to real drops is caught below, not warned.
        warnings.simplefilter("ignore", np.exceptions.ComplexWarning)
        cast = array.astype(view.dtype)
        exact = cast.astype(array.dtype) == array
        if array.dtype.kind in "iu" and view.dtype.kind in "iu":
            # The round trip misses a wrap between int32 and uint32 (3e9 -> -1294967296 -> 3e9),
            # which flips the sign; comparisons with 0 are exact for every integer type.
            exact &= (cast < 0) == (array < 0)
        if array.dtype.kind in "fc":
            exact |= np.isnan(array) & np.isnan(cast)
    if not np.all(exact):
        lost = ~exact
        value, becomes = (array[lost].flat[0], cast[lost].flat[0]) if array.ndim else (array[()], cast[()])
        raise SampleError(
            f"Sample {index} {problem}: its value {value.item()!r} would become {becomes.item()!r}. {fix}"
        )
    view[...] = cast


def _stacked(arrays: list[np.ndarray], dtype: np.dtype) -> np.ndarray:
    """Samples that could not be preallocated, as one batch array: objects stay objects in
    every batch (np.array would make int64 of a batch without sample 0's big int); strings
    are as wide as the longest in the batch."""
    if dtype.kind != "O":
        return np.array(arrays)
    stacked = np.empty((len(arrays), *arrays[0].shape), dtype=object)
    for position, array in enumerate(arrays):
        stacked[position] = array
    return stacked


class _BatchWriter:
    """Stacks samples into batch arrays, each to the structure and dtypes of the reference."""

    def __init__(self, batch_size: int, allocate: Allocate, reference: Reference):
        self.batch_size = batch_size
        self.allocate = allocate
        self.reference = reference
        self.first_index = -1
        self.views: list[Any] = []
        self.owners: list[Any] = []
        self.paths: list[str] = tree.leaf_paths(reference.structure, "sample")

    def add(self, position: int, index: int, sample: Any) -> None:
        leaves, structure = tree.flatten(sample)
        if structure != self.reference.structure:
            raise SampleError(
                f"Sample {index} has structure {tree.describe(structure)} but sample 0 has "
                f"{tree.describe(self.reference.structure)}. Every sample must have the same "
                "structure (same tuple length, same dict keys)."
            )
        arrays = [_as_array(leaf, index, path) for leaf, path in zip(leaves, self.paths)]
        if position == 0:
            self._start(index, arrays)
        for array, path, view, dtype in zip(arrays, self.paths, self.views, self.reference.dtypes):
            self._write(position, index, array, path, view, dtype)

    def _start(self, index: int, arrays: list[np.ndarray]) -> None:
        self.first_index = index
        size = sum(
            self.batch_size * array.size * dtype.itemsize
            for array, dtype in zip(arrays, self.reference.dtypes)
        )
        memory.check_fits(
            size,
            f"A batch of {self.batch_size} samples shaped like sample {index} "
            f"({', '.join(str(array.shape) for array in arrays)})",
            "Use a smaller batch_size, or smaller samples (e.g. a smaller image_size).",
        )
        for array, dtype in zip(arrays, self.reference.dtypes):
            if dtype.kind in "OUSV":
                # Strings and objects cannot be preallocated: collect, stack at the end.
                self.views.append([])
                self.owners.append(None)
            else:
                view, owner = self.allocate((self.batch_size,) + array.shape, dtype)
                self.views.append(view)
                self.owners.append(owner)

    def _write(
        self, position: int, index: int, array: np.ndarray, path: str, view: Any, dtype: np.dtype
    ) -> None:
        if isinstance(view, list):
            if dtype.kind in "US" and array.dtype.kind != dtype.kind:
                # np.array would turn a number into its text, or bytes into str, without a word.
                kind = {"U": "str", "S": "bytes"}[dtype.kind]
                raise SampleError(
                    f"Sample {index} has dtype {array.dtype} at {path}, but the batch holds {kind} "
                    f"there (source sample 0 has {dtype}). Return the same kind from every sample."
                )
            view.append(array)
            return
        if array.shape != view.shape[1:]:
            raise SampleError(
                f"Sample {index} has shape {array.shape} at {path}, but sample {self.first_index} "
                f"has shape {view.shape[1:]}. Samples in a batch must have equal shapes: resize "
                "or pad them in the source or in the transform."
            )
        _store_exactly(view[position, ...], array, index, path)

    def finish(self) -> Any:
        owners = [
            _stacked(view, dtype) if isinstance(view, list) else owner
            for view, owner, dtype in zip(self.views, self.owners, self.reference.dtypes)
        ]
        return tree.unflatten(self.reference.structure, owners)


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
        self._reference: Reference | None = None
        # Until one is noticed in this process; then None (warned once, no more cost).
        self._guard: GlobalRandomGuard | None = GlobalRandomGuard()
        # Workers set this: what they notice goes back to the main process to be warned there.
        self.collect_notices = False
        self._notices: list[str] = []
        self._warned = False

    @property
    def gathers(self) -> bool:
        """True when a batch is one vectorised gather per array (arrays, no transform).

        Such a batch costs a memory copy: cheaper here than handing it over
        from a worker process, so the loader never sends it to one.
        """
        return self.transform is None and isinstance(self.source, ArraySource)

    def files_of(self, indices: np.ndarray) -> list[str]:
        """The files samples `indices` are read from, when the source says (an ImageFolder
        has `file_paths`), else an empty list: for messages about those samples."""
        paths = getattr(getattr(self.source, "dataset", None), "file_paths", None)
        if not isinstance(paths, list):
            return []
        return [paths[int(i)] for i in indices if 0 <= int(i) < len(paths)]

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
        writer = _BatchWriter(len(indices), allocate, self.reference(seed))
        for position, index in enumerate(indices.tolist()):
            writer.add(position, index, self._sample(seed, epoch, index))
        return writer.finish()

    def reference(self, seed: int) -> Reference:
        """The structure and dtypes of every batch: those of source sample 0, epoch 0.

        Fixed by the source, not by whichever sample a shuffle puts first, so
        every batch of every epoch has the same dtypes. Read once per process.
        """
        if self._reference is None:
            try:
                sample = self._sample(seed, 0, 0)
            except SampleError as error:
                raise SampleError(
                    f"{error} (every process reads source sample 0 first: its dtypes are the "
                    "dtypes of every batch, so it must be readable)"
                ) from error.__cause__
            self._reference = reference_of(sample)
        return self._reference

    def take_notices(self) -> list[str]:
        """The global-random notices made since the last call (workers send these back)."""
        notices, self._notices = self._notices, []
        return notices

    def warn(self, notices: list[str]) -> None:
        """Warns, once per maker, about the first notice (from this process or a worker)."""
        if notices and not self._warned:
            self._warned = True
            self._guard = None
            warnings.warn(notices[0], GlobalRandomWarning, stacklevel=2)

    def _notice(self, names: list[str], index: int, where: str) -> None:
        self._guard = None
        message = advice(names, index, where)
        if self.collect_notices:
            self._notices.append(message)
        else:
            self.warn([message])

    def _sample(self, seed: int, epoch: int, index: int) -> Any:
        guard = self._guard
        before = guard.snapshot() if guard is not None else None
        try:
            sample = self.source.sample(index)
        except SampleError:
            raise
        except Exception as exc:
            raise SampleError(
                f"Reading sample {index} (epoch {epoch}) failed with {type(exc).__name__}: {exc}"
            ) from exc
        if before is not None:
            moved = GlobalRandomGuard.moved(before)
            if moved:
                self._notice(moved, index, "The source's __getitem__")
                before = None
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
        if before is not None:
            moved = GlobalRandomGuard.moved(before)
            if moved:
                self._notice(moved, index, "The transform")
        if sample is None:
            raise SampleError(
                f"transform(sample, rng) returned None for sample {index}. A transform must "
                "return the transformed sample."
            )
        return sample
