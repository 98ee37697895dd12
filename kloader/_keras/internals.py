"""Every place kloader touches Keras internals, in one file, each pinned by a test.

kloader's Loader is a `keras.utils.PyDataset` *and* a Keras `DataAdapter`.
`keras.src.trainers.data_adapters.get_data_adapter` returns a DataAdapter
unchanged (keras-team/keras#20349, Keras >= 3.7), so Keras iterates the loader
through the loader's own methods: Keras's enqueuer never runs, `fit(shuffle=True)`
never reorders its batches, and TensorFlow never peeks at `__getitem__`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import sys
import warnings
import weakref
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any, cast

import keras
import numpy as np
from keras.src.callbacks.callback_list import CallbackList
from keras.src.trainers.data_adapters import data_adapter_utils
from keras.src.trainers.data_adapters.data_adapter import DataAdapter
from keras.src.trainers.epoch_iterator import EpochIterator

from kloader._core import tree

__all__ = [
    "CallbackList",
    "DataAdapter",
    "RanOutSilenced",
    "add_callback",
    "backup_metadata_path",
    "call_local",
    "calling_epoch_iterator",
    "epoch_iterator_above",
    "outermost_keras_call",
    "tf_dataset",
    "torch_dataloader",
]

# The Keras model methods that drive a data adapter, and the callback hook that ends each.
KERAS_CALLS = {"fit": "on_train_end", "evaluate": "on_test_end", "predict": "on_predict_end"}
# How an EpochIterator ends an epoch: `reset` throws its iterator away (after
# building the model); the other two end an epoch the model trained or ran on.
RESET = "reset"
EPOCH_ENDS = ("_enumerate_iterator", "catch_stop_iteration")

_IGNORED_FIT_ARGUMENTS = {
    "y": "the targets must come from the loader's source, e.g. Loader((x, y), ...)",
    "sample_weight": "return (x, y, sample_weight) samples from the source instead",
    "class_weight": "weight the samples in the source, as (x, y, sample_weight) samples",
}


def calling_epoch_iterator(frame: FrameType | None) -> EpochIterator | None:
    """The Keras EpochIterator being built in `frame`, if that is what `frame` is.

    Keras builds one EpochIterator per `fit` / `evaluate` / `predict` call (and
    one for validation that lives for the whole `fit`), and reads the adapter's
    `num_batches` in its constructor. A Loader asks here who is reading, to
    learn when a Keras call that uses it begins (and, through a weakref, ends),
    and to reject arguments that Keras silently drops for custom adapters.
    """
    if frame is None or frame.f_code is not EpochIterator.__init__.__code__:
        return None
    iterator = frame.f_locals.get("self")
    builder = builder_frame(iterator, frame) if isinstance(iterator, EpochIterator) else None
    call = builder.f_code.co_name if builder is not None else "fit/evaluate/predict"
    for name, fix in _IGNORED_FIT_ARGUMENTS.items():
        if frame.f_locals.get(name) is not None:
            raise ValueError(
                f"`{name}` was passed to {call} together with a kloader.Loader, and Keras "
                f"would ignore it silently: {fix}."
            )
    if not isinstance(iterator, EpochIterator):
        return None
    _check_batch_size(frame, builder, call)
    _warn_if_predict_shuffles(frame, builder)
    return iterator


def _check_batch_size(frame: FrameType, builder: FrameType | None, call: str) -> None:
    """Refuses `batch_size=`, which Keras drops for a data adapter (the loader's batch_size rules)."""
    batch_size = frame.f_locals.get("batch_size")
    if batch_size is None:
        return
    name = "batch_size"
    if builder is not None and call == "fit" and call_local(builder, "x") is not frame.f_locals.get("x"):
        # Building the validation's EpochIterator.
        if call_local(builder, "validation_batch_size") is None:
            return  # fit(x, y, batch_size=16, validation_data=loader): meant for the arrays x
        name = "validation_batch_size"
    raise ValueError(
        f"`{name}={batch_size!r}` was passed to {call} together with a kloader.Loader, and Keras "
        "would ignore it silently: the loader makes the batches. Set it on the loader, "
        f"kloader.Loader(source, batch_size=...), and leave {name} out of the call."
    )


_warned_predict: weakref.WeakSet[Any] = weakref.WeakSet()


def _warn_if_predict_shuffles(frame: FrameType, builder: FrameType | None) -> None:
    """Warns, once per loader, where predict's rows will not line up with the source: a
    loader that shuffles, or one that reads one shard of several."""
    loader: Any = frame.f_locals.get("x")
    if builder is None or builder.f_code.co_name != "predict" or loader in _warned_predict:
        return
    sharded = getattr(loader, "num_shards", 1) > 1
    if not (getattr(loader, "shuffle", False) or sharded):
        return
    _warned_predict.add(loader)
    if sharded:
        message = (
            f"predict() runs on a kloader.Loader that reads shard {loader.shard_index} of "
            f"{loader.num_shards}: its rows are this process's shard only, batch by batch. For a "
            "prediction of every sample in source order, predict on a loader made with "
            "shard=None and shuffle=False (or gather the shards' rows with loader.indices(batch))."
        )
    else:
        message = (
            "predict() runs on a kloader.Loader with shuffle=True: its rows come back in the "
            "loader's shuffled order, not in source order. For predictions that line up with the "
            "source, predict on a loader made with shuffle=False (or reorder with "
            "loader.indices(batch) for each batch)."
        )
    warnings.warn(message, UserWarning, stacklevel=2)


def builder_frame(epoch_iterator: EpochIterator, frame: FrameType) -> FrameType | None:
    """The frame that built `epoch_iterator` (fit, evaluate or predict), above its constructors."""
    caller = frame.f_back
    while (
        caller is not None
        and caller.f_code.co_name == "__init__"
        and caller.f_locals.get("self") is epoch_iterator
    ):
        caller = caller.f_back
    return caller


def epoch_iterator_above(frame: FrameType | None, depth: int = 4) -> tuple[EpochIterator, str] | None:
    """The EpochIterator whose method runs in one of the `depth` frames from `frame` up,
    with that method's name: who is calling a data adapter's hook or asking it for an
    iterator (`reset`, `_enumerate_iterator`, `catch_stop_iteration`, `_get_iterator`,
    `__init__` ...)."""
    for _ in range(depth):
        if frame is None:
            return None
        owner = frame.f_locals.get("self")
        if isinstance(owner, EpochIterator):
            return owner, frame.f_code.co_name
        frame = frame.f_back
    return None


def outermost_keras_call(frame: FrameType | None) -> FrameType | None:
    """The outermost `fit`, `evaluate` or `predict` of a Keras model on the stack above `frame`.

    Validation inside `fit` runs `evaluate`, and so may a callback: both belong
    to the `fit` above them. Keras's own methods are known by their code,
    without reading the frame's locals: on CPython before 3.13, `frame.f_locals`
    stores a snapshot of every local variable on the frame, kept until the next
    read. Read at each epoch, the snapshot of `fit`'s frame held the previous
    epoch's iterator one epoch too long and freed it inside the next epoch's
    hook; on TensorFlow, freeing a tf.data iterator there held up the first step
    of the epoch for up to 5 s. A model class's own `fit` that calls
    `super().fit` is therefore not the call: Keras's `fit` inside it is. Only
    when no Keras method is on the stack (a fit written without Keras's) is a
    method of that name taken, when its `self` is a Keras model.
    """
    keras_codes = _keras_call_codes()
    outermost = None
    same_name: list[FrameType] = []
    while frame is not None:
        code = frame.f_code
        if code.co_name in KERAS_CALLS:
            if code in keras_codes:
                outermost = frame
            else:
                same_name.append(frame)
        frame = frame.f_back
    if outermost is not None:
        return outermost
    for candidate in reversed(same_name):
        code = candidate.f_code
        is_method = code.co_argcount > 0 and code.co_varnames[0] == "self"
        if is_method and isinstance(candidate.f_locals.get("self"), keras.Model):
            return candidate
    return None


@functools.cache
def _keras_call_codes() -> frozenset[CodeType]:
    # keras.Model's fit / evaluate / predict are the backend trainer's, wrapped
    # by Keras's traceback filter (functools.wraps): the code that runs is the
    # wrapped function's.
    return frozenset(inspect.unwrap(getattr(keras.Model, name)).__code__ for name in KERAS_CALLS)


# Before 3.13 (PEP 667), `frame.f_locals` is a snapshot that stays on the frame.
_F_LOCALS_IS_A_SNAPSHOT = sys.version_info < (3, 13)


def call_local(call: FrameType, name: str) -> Any:
    """The local variable `name` of a running `fit` / `evaluate` / `predict`, read without
    keeping the call's other variables alive.

    On CPython before 3.13, reading `frame.f_locals` copies every local variable
    into a dict stored on the frame, which keeps each value alive until the next
    read. A `fit` runs for hours: read once at the first validation, the dict
    held that epoch's iterator (on TensorFlow, a tf.data iterator and its
    threads) until `fit` returned. For Keras's own methods, which never call
    `locals()`, the dict is emptied after the read: the next read fills it
    again, and the frame's variables are untouched.
    """
    snapshot = call.f_locals
    value = snapshot.get(name)
    if _F_LOCALS_IS_A_SNAPSHOT and call.f_code in _keras_call_codes():
        snapshot.clear()
    return value


def call_epoch_iterator(call: FrameType) -> EpochIterator | None:
    """The EpochIterator a running `fit` / `evaluate` / `predict` built (its local `epoch_iterator`)."""
    found = call_local(call, "epoch_iterator")
    return found if isinstance(found, EpochIterator) else None


@dataclasses.dataclass(frozen=True)
class FitValidation:
    """What a running `fit` trains on and how it validates, as its callbacks cannot see it:
    Keras's `params` hold the training steps only."""

    training_data: Any  # the data adapter of fit's own EpochIterator (a Loader is its own)
    steps: int | None  # validation_steps: each validation reads that many batches from a fresh iterator
    freq: Any  # validation_freq: an int n (every n-th epoch) or a container of epoch numbers (from 1)

    def validations_before(self, keras_epoch: int) -> int:
        """How many validations a fit from epoch 0 runs before Keras epoch `keras_epoch`."""
        if isinstance(self.freq, int):
            return keras_epoch // self.freq
        return sum(1 for epoch in range(1, keras_epoch + 1) if epoch in self.freq)


def fit_validation(frame: FrameType | None) -> FitValidation | None:
    """What the Keras `fit` above `frame` (a callback's hook) trains on and validates with."""
    call = outermost_keras_call(frame)
    if call is None or call.f_code.co_name != "fit":
        return None
    epoch_iterator = call_epoch_iterator(call)
    steps = call_local(call, "validation_steps")
    freq = call_local(call, "validation_freq")
    return FitValidation(
        training_data=getattr(epoch_iterator, "data_adapter", None),
        steps=steps if isinstance(steps, int) and steps > 0 else None,
        freq=freq if freq is not None else 1,
    )


def fit_callbacks(frame: FrameType | None) -> list[Any]:
    """The callbacks of the Keras call above `frame` (a callback's hook): those of the
    CallbackList it keeps in its local `callbacks`; empty if none is found."""
    call = outermost_keras_call(frame)
    callbacks = call_local(call, "callbacks") if call is not None else None
    return list(callbacks.callbacks) if isinstance(callbacks, CallbackList) else []


def add_callback(call: FrameType, callback: Any) -> bool:
    """Adds `callback` to the CallbackList of the running Keras `call`, if it has made it yet.

    `fit`, `evaluate` and `predict` keep their CallbackList in the local
    `callbacks` (made from the user's list after the model is built).
    """
    callbacks = call_local(call, "callbacks")
    if not isinstance(callbacks, CallbackList):
        return False
    if getattr(callbacks, "model", None) is not None:
        callback.set_model(callbacks.model)
    if getattr(callbacks, "params", None):
        callback.set_params(callbacks.params)
    callbacks.callbacks.append(callback)
    callback.keras_callbacks = weakref.ref(callbacks)
    return True


def finish_batch_ends(callbacks: CallbackList | None) -> None:
    """Waits for the batch-end callbacks Keras still runs in its thread pool. On JAX and torch,
    when no user callback overrides a batch-end hook (Keras >= 3.10 checks when it makes the
    CallbackList, before kloader adds its own), Keras runs `on_train_batch_end` in a thread
    and waits for it only at the epoch's end: after the validation has started."""
    if callbacks is not None and getattr(callbacks, "_async_train", False):
        # Keras 3.10 names it _clear_futures.
        wait = getattr(callbacks, "_flush_futures", None) or callbacks._clear_futures
        wait()


@functools.cache
def reports_end_steps() -> bool:
    """Whether `on_train_batch_end(batch)` gets the last step of each execution (Keras >= 3.11,
    whose EpochIterator yields (begin_step, end_step, data)) rather than its first."""
    return "end_step" in EpochIterator.enumerate_epoch.__code__.co_varnames


def steps_trained(model: Any, batch: int, so_far: int) -> int | None:
    """How many batches an epoch has trained after `on_train_batch_end(batch)`, or None when
    this Keras cannot tell (several steps per execution, and it reports the first)."""
    per_execution = getattr(model, "steps_per_execution", 1) or 1
    if per_execution == 1 or reports_end_steps():
        return max(so_far, batch + 1)
    return None


def backup_metadata_path(backup: keras.callbacks.BackupAndRestore) -> str:
    """Where Keras's BackupAndRestore writes the epoch it saved (and, on a failed weights
    load with double_checkpoint, restores the previous file from, with the weights)."""
    path: str = backup._training_metadata_path
    return path


# What Keras warns when an epoch's iterator runs out before its steps
# (EpochIterator._interrupted_warning).
RAN_OUT = r"Your input ran out of data"


class RanOutSilenced:
    """While entered, Keras's "ran out of data" warning is not shown, for an epoch that
    kloader ends early on purpose. One filter entry, removed by `stop()` however late
    (from another callback, or at the next run after a crash), never a saved filter list."""

    def __init__(self) -> None:
        # `filterwarnings` first takes out an entry equal to the new one: the regex comment
        # makes this entry kloader's own, so that a user's filter for the same warning
        # is neither moved nor removed with it.
        warnings.filterwarnings("ignore", message=RAN_OUT + "(?#kloader)", category=UserWarning)
        self._entry = warnings.filters[0]

    def stop(self) -> None:
        # An "ignore" entry leaves nothing in warning registries: removing it is enough.
        with contextlib.suppress(ValueError):
            cast(list[Any], warnings.filters).remove(self._entry)


def caller_frame(depth: int) -> FrameType | None:
    try:
        return sys._getframe(depth + 1)
    except ValueError:
        return None


def torch_dataloader(iterable: Any) -> Any:
    """What the torch backend iterates: Keras's own wrapper, converting batches to tensors;
    on a CUDA device, the same tensors through pinned memory, copied without blocking."""
    import torch
    from keras.src.backend.torch.core import convert_to_tensor, get_device, to_torch_dtype

    from kloader._keras import feeding

    device = torch.device(get_device())
    if device.type == "cuda":
        return feeding.device_dataloader(iterable, device, convert_to_tensor, to_torch_dtype)
    return data_adapter_utils.get_torch_dataloader(iterable)


def tf_dataset(make_pass: Callable[[], Any], example_batches: list[Any]) -> Any:
    """A tf.data.Dataset that runs `make_pass()` for each iterator TensorFlow creates.

    `example_batches` (batches, even of one sample each) give the output
    signature: the batch dimension and every dimension in which they differ
    (variable-length samples) are left unknown. TensorFlow is imported only
    here, and only the TensorFlow backend calls this.
    """
    import tensorflow as tf

    def spec(*arrays: np.ndarray) -> Any:
        first = arrays[0]
        dtype = tf.string if first.dtype.kind in "US" else tf.as_dtype(first.dtype)
        if len({array.ndim for array in arrays}) > 1:
            return tf.TensorSpec(shape=None, dtype=dtype)
        dims = [
            sizes[0] if len(set(sizes)) == 1 else None
            for sizes in zip(*(array.shape[1:] for array in arrays))
        ]
        return tf.TensorSpec(shape=(None, *dims), dtype=dtype)

    signature = tf.nest.map_structure(spec, *example_batches)
    dataset = tf.data.Dataset.from_generator(make_pass, output_signature=signature)
    return _unsharded_and_prefetched(dataset)


def tf_can_gather(arrays: list[np.ndarray]) -> bool:
    """Whether TensorFlow can hold these arrays (numbers, booleans, strings; not objects)."""
    return all(array.dtype.kind in "biufcSU" and array.dtype.itemsize > 0 for array in arrays)


def tf_gather_dataset(make_index_pass: Callable[[], Any], arrays: list[np.ndarray], structure: Any) -> Any:
    """A tf.data.Dataset of batches of `arrays`, for a pass that hands out sample indices.

    Python hands out one small index array per batch, so the order and the
    epoch tracking are the same as for batches made in Python; TensorFlow
    gathers the rows in its own threads, without the GIL that the training
    loop needs (benchmarks/run.py compares it with `fit(x, y)`). The arrays are
    copied into TensorFlow once per dataset, as `fit(x, y)` does.
    """
    import tensorflow as tf

    constants = [tf.constant(array) for array in arrays]

    def gather(indices: Any) -> Any:
        return tree.unflatten(structure, [tf.gather(constant, indices) for constant in constants])

    indices = tf.data.Dataset.from_generator(
        make_index_pass, output_signature=tf.TensorSpec((None,), tf.int64)
    )
    dataset = indices.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return _unsharded_and_prefetched(dataset)


def _unsharded_and_prefetched(dataset: Any) -> Any:
    import tensorflow as tf

    # The loader shards itself: tf.distribute must not drop elements of it again.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)
