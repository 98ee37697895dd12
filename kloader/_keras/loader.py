"""`kloader.Loader`: a deterministic, epoch-aware PyDataset for Keras 3 on any backend."""

from __future__ import annotations

import functools
import numbers
import threading
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from kloader._core import checkpoint, checks, epochs, order, passes, seeding
from kloader._core.batches import BatchMaker, Transform
from kloader._core.cursor import Cursor, Position
from kloader._core.sources import ArraySource, MapSource, as_source
from kloader._keras import arguments, calls, distributed, internals
from kloader._keras.feed import KerasFeed
from kloader._keras.fixed import Fixed
from kloader._workers import options as worker_options
from kloader._workers.plan import Task

if TYPE_CHECKING:
    from kloader._workers.pool import WorkerPool

_CACHED_PERMUTATIONS = 3


def _resolve_shard(shard: Any) -> tuple[tuple[int, int], str]:
    if isinstance(shard, str) and shard == "auto":  # not `shard == "auto"`: an array compares elementwise
        return distributed.detect_shard()
    if shard is None:
        return (0, 1), "none"
    try:
        index, count = shard
        ok = checks.is_int(index) and checks.is_int(count)
    except (TypeError, ValueError):
        ok = False
    if not ok or not 0 <= index < count:
        raise ValueError(
            f'`shard` must be "auto", None or (index, count) with 0 <= index < count, got '
            f"{shard!r}. For process 2 of 4 pass shard=(2, 4)."
        )
    return (int(index), int(count)), "explicit"


def _plan_from(task_for: Any, num_batches: int, task: Task) -> Iterator[Task]:
    """The tasks expected from `task` on: the rest of its epoch, then the epochs after it."""
    epoch, batch = task.epoch, task.batch
    while True:
        for b in range(batch, num_batches):
            yield task_for(epoch, b)
        epoch, batch = epoch + 1, 0


def _weak_method(method: Any, *, when_gone: str = "raise") -> Any:
    # Workers and watchers must not keep their loader alive: a loader is freed,
    # and its workers stopped, as soon as the last reference to it goes.
    reference = weakref.WeakMethod(method)

    def call(*args: Any) -> Any:
        bound = reference()
        if bound is None:
            if when_gone == "ignore":
                return None
            raise RuntimeError("The kloader.Loader that owned these workers was garbage collected.")
        return bound(*args)

    return call


class Loader(keras.utils.PyDataset, internals.DataAdapter):  # type: ignore[misc]
    """Batches from a source in an order that is a pure function of (seed, epoch).

    The batches of epoch e, and the augmentation of every sample in them, depend
    only on (seed, e): they are identical on the TensorFlow, JAX and PyTorch
    backends, for any `num_workers`, on every run, and after a resume. Each epoch
    is a new permutation; `shuffle=False` keeps source order.

    Pass the loader straight to `model.fit`, `evaluate` or `predict`. Keras's
    own enqueuer never runs for it and `fit(shuffle=...)` does not reorder it:
    the loader's worker processes do the parallel work.

    Args:
        source: an array, a tuple / list / dict of equal-length arrays (batches
            keep that structure), or any map-style dataset whose `__getitem__(i)`
            returns one sample (an array, a tuple, or a dict of arrays). A
            Hugging Face `datasets.Dataset` is read through `kloader.HFDataset`.
            A `keras.utils.PyDataset` (its items are batches) is refused with the
            way to migrate.
        y: targets, as in `model.fit(x, y)`: `Loader(x, y, batch_size=32)` is
            `Loader((x, y), batch_size=32)`. Only with arrays as `source`.
        sample_weight: per-sample weights: `Loader(x, y, sample_weight, ...)`
            is `Loader((x, y, sample_weight), ...)`.
        batch_size: samples per batch.
        shuffle: a new permutation every epoch (True) or source order (False).
        seed: int in [0, 2**63 - 1]; None draws one from the OS (see `seed`).
        transform: `transform(sample, rng) -> sample`, where `rng` is a
            `numpy.random.Generator` derived from (seed, epoch, sample index).
        drop_remainder: leave out the last, smaller batch of each epoch.
        num_workers: 0 makes batches in this process; N > 0 starts N worker
            processes that live across epochs and prefetch ahead. Until one
            is up, batches are made in this process (the same bytes). The
            transform and the source reach the workers by value (cloudpickle):
            they may be defined anywhere, a notebook cell included. Arrays
            without a transform need no workers: each batch is one vectorised
            gather per array, made in this process for any `num_workers`.
        shard: which part of every epoch this process reads. "auto" (default)
            asks the distributed engine already initialised in this process
            (torch.distributed, JAX multi-process, TensorFlow multi-worker) and
            reads everything when there is none; `(index, count)` reads shard
            `index` of `count`; None reads everything. Shards of an epoch come
            from the same permutation, are disjoint, have the same number of
            batches, and together cover the epoch.
        start_method: how workers start: "forkserver" (default where available,
            safe after CUDA / JAX / TensorFlow have started threads), "spawn" or
            "fork".
        prefetch: batches in flight per worker (bounded by the open files
            this process may hold: `ulimit -n`).
        timeout: seconds a worker may spend on one batch. When one takes
            longer, a `kloader.WorkerError` names the worker, the epoch, the
            batch and its sample indices, and all workers stop. With a timeout
            the workers make every batch (without, this process makes the first
            ones while they start). None (default) warns once, with the same
            details, after 60 s, and keeps waiting.

    Example:
        ```python
        x = np.random.rand(1000, 8).astype("float32")
        y = np.random.randint(0, 2, size=(1000,))
        loader = kloader.Loader(x, y, batch_size=32, seed=42)  # or Loader((x, y), ...)
        model.fit(loader, epochs=3)
        ```
    """

    def __init__(
        self,
        source: Any,
        y: Any = None,
        sample_weight: Any = None,
        *,
        batch_size: int,
        shuffle: bool = True,
        seed: int | None = None,
        transform: Transform | None = None,
        drop_remainder: bool = False,
        num_workers: int = 0,
        shard: tuple[int, int] | str | None = "auto",
        start_method: str | None = None,
        prefetch: int = 2,
        timeout: float | None = None,
        **keras_arguments: Any,
    ):
        arguments.check_keras_arguments(keras_arguments)
        source = arguments.combine(source, y, sample_weight)
        super().__init__(workers=1, use_multiprocessing=False)
        self._batch_size: int = checks.int_at_least(batch_size, 1, name="batch_size", example="batch_size=32")
        if not checks.is_int(num_workers) or num_workers < 0:
            raise ValueError(
                f"`num_workers` must be an int >= 0, got {num_workers!r}. Use 0 to make batches in "
                "this process, or the number of worker processes, e.g. num_workers=2."
            )
        self.num_workers = int(num_workers)
        self.prefetch = checks.int_at_least(prefetch, 1, name="prefetch", example="prefetch=2")
        worker_options.check_prefetch(self.prefetch, self.num_workers)
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, numbers.Real) or not timeout > 0
        ):
            raise ValueError(
                f"`timeout` must be None or a number of seconds > 0, got {timeout!r}. For example "
                "timeout=120 raises when a worker spends more than 2 minutes on one batch."
            )
        self.timeout = None if timeout is None else float(timeout)
        self.start_method = start_method or worker_options.default_start_method()
        if self.start_method not in worker_options.START_METHODS:
            raise ValueError(
                f"`start_method` must be one of {worker_options.START_METHODS}, got {start_method!r}."
            )
        if transform is not None and not callable(transform):
            raise TypeError(f"`transform` must be callable as transform(sample, rng), got {transform!r}.")
        self.transform = transform
        self.shuffle = checks.flag(shuffle, name="shuffle")
        self.drop_remainder = checks.flag(drop_remainder, name="drop_remainder")
        shard_position, engine = _resolve_shard(shard)
        self._shard_auto = isinstance(shard, str) and shard == "auto"
        self.shard = shard_position
        self.shard_index = shard_position[0]
        self.num_shards = shard_position[1]
        self.shard_engine = engine
        # Without shuffling the order does not depend on the seed: the shards cannot overlap.
        if seed is None and self.num_shards > 1 and self.shuffle:
            raise ValueError(
                f"This loader reads shard {self.shard_index} of {self.num_shards} "
                f"({self.shard_engine}), but seed=None would draw a different seed in every "
                "process, and the shards would overlap. Pass the same seed in every process, "
                "e.g. seed=42 (a loader with shuffle=False needs none)."
            )
        self._seed: int = seeding.draw_seed() if seed is None else seeding.validate_seed(seed)
        self._seed_was_given: bool = seed is not None
        self._given_source: Any = source
        self._source: ArraySource | MapSource = as_source(source)
        self._maker: BatchMaker = BatchMaker(self._source, transform)
        self._layout: order.BatchLayout = order.BatchLayout.build(
            len(self._source),
            self._batch_size,
            num_shards=self.num_shards,
            shard_index=self.shard_index,
            drop_remainder=self.drop_remainder,
        )
        self._lock: threading.RLock = threading.RLock()
        self._cursor: Cursor = Cursor(len(self._layout))
        self._permutations: dict[tuple[int, int], np.ndarray] = {}
        self._pool: WorkerPool | None = None
        # What Keras sees of this loader; when the last Keras call using it
        # ends, its workers stop.
        self._feed: KerasFeed = KerasFeed(
            self._cursor, calls.KerasCalls(on_last_end=_weak_method(self.close, when_gone="ignore"))
        )
        if self._uses_workers and self.start_method == "forkserver":
            # The fork server's imports (a second or more) run while this process
            # imports torch (next) and builds and compiles the model, instead of
            # delaying the workers.
            from kloader._workers import fork_server

            fork_server.warm(self._maker)
        if self._uses_workers:
            # torch, here rather than at the first batch, which should come at once.
            from kloader._workers import pool  # noqa: F401

    # ----------------------------------------------------------------- order

    # Settings that shape the batches: fixed once the loader is made (see fixed.py).
    batch_size = Fixed[int]("Samples per batch (the last batch of an epoch may hold fewer).")
    seed = Fixed[int]("The seed of this loader: given, drawn from the OS, or restored by `load_state_dict`.")
    shuffle = Fixed[bool]("A new permutation every epoch (True) or source order (False).")
    drop_remainder = Fixed[bool]("Whether the last, smaller batch of each epoch is left out.")
    num_workers = Fixed[int]("Worker processes making batches (0: made in this process).")
    prefetch = Fixed[int]("Batches in flight per worker.")
    timeout = Fixed["float | None"](
        "Seconds a worker may spend on one batch before kloader raises (None: warn once)."
    )
    start_method = Fixed[str]('How workers start: "forkserver", "spawn" or "fork".')
    transform = Fixed["Transform | None"](
        "What `transform(sample, rng)` makes of each sample (None: nothing)."
    )
    shard = Fixed["tuple[int, int]"](
        "(shard_index, num_shards): the shard of every epoch this process reads."
    )
    shard_index = Fixed[int]("Which shard of every epoch this process reads.")
    num_shards = Fixed[int]("How many shards every epoch is split into.")
    shard_engine = Fixed[str]('What set the shard: "explicit", "none" or the distributed engine.')

    @property
    def epoch(self) -> int:
        """The epoch the next pass (`iter(loader)` or a Keras epoch) will yield."""
        return self._position().epoch

    def _position(self) -> Position:
        # A Keras call of this thread that left through an exception is ended first (the
        # watcher would end it within half a second): read in an `except` block, the
        # position is where that call left the loader.
        self._feed.calls.end_calls_gone_from_this_thread(None)
        return self._cursor.position

    @property
    def source(self) -> Any:
        """What this loader reads: the dataset or arrays it was given."""
        return self._given_source

    @property
    def num_samples(self) -> int:
        """Samples in the source (all shards)."""
        return len(self._source)

    def set_epoch(self, epoch: int) -> None:
        """Makes the next pass yield epoch `epoch` from its first batch."""
        self._cursor.jump_to(checks.epoch(epoch), 0)

    def indices(self, batch: int, epoch: int | None = None) -> np.ndarray:
        """The source indices of the samples in batch `batch` of `epoch` (default: `self.epoch`)."""
        batch = self._check_batch_index(batch)
        epoch = self.epoch if epoch is None else checks.epoch(epoch)
        return self._permutation(epoch)[self._layout.positions(batch)]

    def _permutation(self, epoch: int) -> np.ndarray:
        key = (self._seed, epoch)
        with self._lock:
            permutation = self._permutations.get(key)
            if permutation is None:
                if self.shuffle:
                    permutation = order.epoch_permutation(self._seed, epoch, len(self._source))
                else:
                    permutation = np.arange(len(self._source))
                if len(self._permutations) >= _CACHED_PERMUTATIONS:
                    self._permutations.pop(next(iter(self._permutations)))
                self._permutations[key] = permutation
            return permutation

    def _task(self, epoch: int, batch: int) -> Task:
        return Task(self._seed, epoch, batch, self.indices(batch, epoch))

    # ------------------------------------------------------- manual access

    def __len__(self) -> int:
        """Batches per epoch (for this shard)."""
        return len(self._layout)

    def _check_batch_index(self, index: Any) -> int:
        return checks.position(index, len(self), of=f"a loader of {len(self)} batches")

    def __getitem__(self, index: int) -> Any:
        """Batch `index` of the current epoch, made in this process (pure, random access)."""
        return self.batch(index)

    def batch(self, index: int, epoch: int | None = None) -> Any:
        """Batch `index` of `epoch` (default: `self.epoch`), made in this process; the cursor stays.

        Example:
            ```python
            first = loader.batch(0, epoch=3)  # what epoch 3 starts with, whatever the loader's epoch
            ```
        """
        index = self._check_batch_index(index)
        task = self._task(self.epoch if epoch is None else checks.epoch(epoch), index)
        return self._maker.make(task.seed, task.epoch, task.indices)

    def __iter__(self) -> Iterator[Any]:
        """The rest of the current epoch, one batch at a time; then the epoch advances."""
        return epochs.manual_pass(self._cursor, self._batch)

    def _batch(self, epoch: int, batch: int) -> Any:
        task = self._task(epoch, batch)
        if not self._uses_workers:
            return self._maker.make(task.seed, task.epoch, task.indices)
        asking = passes.making()
        if asking is None:
            return self._worker_pool().get(task)
        return self._worker_pool().get(task, still_wanted=asking.is_open)

    @property
    def _uses_workers(self) -> bool:
        # Arrays without a transform are gathered here whatever num_workers says.
        return self.num_workers > 0 and not self._maker.gathers

    def _batch_indices(self, epoch: int, batch: int) -> np.ndarray:
        return self.indices(batch, epoch).astype(np.int64, copy=False)

    def _worker_pool(self) -> WorkerPool:
        with self._lock:
            if self._pool is None:
                # Imported here: torch comes with it, and a loader without workers never needs it.
                from kloader._workers import pool as workers

                if self._maker.transform is not None:
                    workers.check_picklable(self._maker.transform, "transform")
                if isinstance(self._source, MapSource):
                    workers.check_picklable(self._source.dataset, "source")
                self._pool = workers.WorkerPool(
                    self._maker,
                    functools.partial(_plan_from, _weak_method(self._task), len(self)),
                    num_workers=self.num_workers,
                    start_method=self.start_method,
                    prefetch=self.prefetch,
                    timeout=self.timeout,
                )
            return self._pool

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the running worker processes (empty when none run)."""
        return self._pool.pids if self._pool is not None else []

    # --------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        """Where the loader is: a small, versioned, JSON-serialisable dict.

        After `iter(loader)` has handed out a batch, the state points just past
        it. During `model.fit` the loader only knows which epoch Keras is in;
        use `kloader.BackupAndRestore` to save the exact batch.
        """
        return self.state_at(*self._position())

    def state_at(self, epoch: int, batch: int) -> dict[str, Any]:
        """The state of this loader at batch `batch` of `epoch` (past the last batch: the next epoch).

        Example:
            ```python
            state = loader.state_at(epoch=2, batch=0)  # resume at the start of epoch 2
            ```
        """
        batch = checks.int_at_least(batch, 0, name="batch", example="batch=0")
        position = self._cursor.normalised(checks.epoch(epoch), batch)
        checks.epoch(position.epoch)
        return checkpoint.make(
            seed=self._seed, epoch=position.epoch, batch=position.batch, layout=self._layout_values()
        )

    def _layout_values(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in checkpoint.LAYOUT_KEYS}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continues from `state`: the next pass yields exactly the batches left in it."""
        seed, epoch, batch = checkpoint.check(
            state,
            layout=self._layout_values(),
            seed=self._seed,
            seed_was_given=self._seed_was_given,
            batches_per_epoch=len(self),
        )
        with self._lock:
            self._seed = seed
            self._cursor.jump_to(epoch, batch)

    # ------------------------------------------------- Keras data adapter

    @property
    def num_batches(self) -> int:
        """Batches per epoch, as Keras asks for them."""
        # Keras reads this while it builds an EpochIterator: the moment to refuse
        # fit arguments that Keras would silently ignore for a data adapter.
        internals.calling_epoch_iterator(internals.caller_frame(1))
        self._refuse_an_engine_started_since()
        return len(self)

    def _refuse_an_engine_started_since(self) -> None:
        """shard="auto" found no engine when the loader was made: one started since (the loader
        was made before init_process_group) would have every process train on every sample."""
        if not self._shard_auto or self.shard_engine != "none":
            return
        (index, count), engine = distributed.detect_shard()
        if count > 1:
            raise ValueError(
                f'This loader was made before {engine} was initialised, so shard="auto" found no '
                f"distributed engine and it reads every sample; {engine} now says this process is "
                f"{index} of {count}, and every process would train on the same batches. Make the "
                "loader after initialising the engine (or pass shard=(index, count), or shard=None "
                "to read everything in every process)."
            )

    def on_epoch_begin(self) -> None:
        """Keras starts an epoch (or a pull to build the model)."""
        self._feed.epoch_begins(internals.caller_frame(1))

    def on_epoch_end(self) -> None:
        """Keras ended an epoch, or threw its iterator away (`reset`)."""
        self._feed.epoch_ends(internals.caller_frame(1))

    def get_numpy_iterator(self) -> Iterator[Any]:
        return self._feed.new_pass(internals.caller_frame(1), self._batch)

    def get_jax_iterator(self) -> Iterator[Any]:
        return self._feed.new_pass(internals.caller_frame(1), self._batch)

    def get_torch_dataloader(self) -> Any:
        return internals.torch_dataloader(self._feed.new_pass(internals.caller_frame(1), self._batch))

    def get_tf_dataset(self) -> Any:
        asking = internals.caller_frame(1)
        source = self._source
        if self._maker.gathers and isinstance(source, ArraySource) and internals.tf_can_gather(source.arrays):
            # Batches of arrays are gathered by TensorFlow from the sample
            # indices this pass hands out (see internals.tf_gather_dataset).
            return internals.tf_gather_dataset(
                self._feed.tensorflow_pass_maker(asking, self._batch_indices), source.arrays, source.structure
            )
        # The first sample of the first, second and last batch: where their
        # shapes differ (variable-length samples), the signature leaves the
        # dimension unknown, as Keras does for its own PyDataset.
        examples = [
            self._maker.make(task.seed, task.epoch, task.indices[:1])
            for task in (self._task(self.epoch, b) for b in sorted({0, min(1, len(self) - 1), len(self) - 1}))
        ]
        return internals.tf_dataset(self._feed.tensorflow_pass_maker(asking, self._batch), examples)

    @property
    def has_partial_batch(self) -> bool:
        return bool(np.any(self._layout.stops - self._layout.starts != self.batch_size))

    @property
    def partial_batch_size(self) -> int | None:
        sizes = self._layout.stops - self._layout.starts
        partial = sizes[sizes != self._batch_size]
        return int(partial[-1]) if len(partial) else None

    # ------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Stops the worker processes now. The loader stays usable; workers restart on demand."""
        if self._pool is not None:
            self._pool.close()

    def __enter__(self) -> Loader:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # copy.copy, copy.deepcopy and pickle give an independent loader: the same
    # settings, seed and position (epoch and batch), no workers (the copy starts
    # its own on demand) and attached to no Keras call. Sharing the worker pool
    # would have two loaders pulling each other's batches.
    _NOT_COPIED = ("_pool", "_lock", "_cursor", "_feed", "_permutations")

    def __getstate__(self) -> dict[str, Any]:
        """What a copy or a pickle keeps: everything but the workers and the Keras bookkeeping."""
        with self._lock:
            state = {key: value for key, value in self.__dict__.items() if key not in self._NOT_COPIED}
            state["_position"] = tuple(self._cursor.position)
            return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        position = state.pop("_position")
        self.__dict__.update(state)
        # Its own dtype reference and global-random guard, warned afresh.
        self._maker = BatchMaker(self._source, self._maker.transform)
        self._lock = threading.RLock()
        self._pool = None
        self._permutations = {}
        self._cursor = Cursor(len(self._layout))
        self._cursor.jump_to(*position)
        self._feed = KerasFeed(
            self._cursor, calls.KerasCalls(on_last_end=_weak_method(self.close, when_gone="ignore"))
        )

    def __del__(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.close()

    def __repr__(self) -> str:
        shard = f", shard=({self.shard_index}, {self.num_shards})" if self.num_shards > 1 else ""
        return (
            f"Loader({self.num_samples} samples, batch_size={self._batch_size}, {len(self)} batches, "
            f"shuffle={self.shuffle}, seed={self._seed}, epoch={self.epoch}, "
            f"num_workers={self.num_workers}{shard})"
        )


def feed_of(loader: Loader) -> KerasFeed:
    """What Keras sees of `loader`: for the callbacks in this layer, which steer it."""
    return loader._feed
