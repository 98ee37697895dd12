"""One run of `python -m kloader audit`: train a throw-away model, record what it got.

Started by `kloader._keras.audit` as `python -m kloader._keras.audit_run` in a
fresh process with `KERAS_BACKEND` set, once per backend and run. It calls the
user's function, reads the samples the data holds (by indexing it in order),
then runs `model.fit` on it with a probe model whose `call` hands every batch
of inputs to Python from inside the compiled train step (`jax.debug.callback`
on JAX, `tf.numpy_function` on TensorFlow, directly on torch): what is recorded
is what the model received, after everything Keras does to the order. Samples
are identified by a hash of their input row, so the data needs no ids.

The result is one JSON file (`--out`); progress goes as JSON lines to the file
descriptor `--progress-fd`, so nothing the user's code prints can garble it.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import json
import os
import sys
import time
from typing import Any

import keras
import numpy as np

_PROGRESS_EVERY = 0.2  # seconds between progress lines


def load_function(target: str) -> Any:
    """`module:function` or `path/to/file.py:function` -> the function."""
    module_name, colon, function_name = target.rpartition(":")
    if not colon or not module_name or not function_name:
        raise SystemExit(
            f"audit: expected MODULE:FUNCTION (e.g. my_data:make_train or my_data.py:make_train), got {target!r}."
        )
    if module_name.endswith(".py") or os.sep in module_name:
        path = os.path.abspath(module_name)
        if not os.path.isfile(path):
            raise SystemExit(f"audit: no such file: {path}")
        name = os.path.splitext(os.path.basename(path))[0]
        sys.path.insert(0, os.path.dirname(path))
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # so worker processes can unpickle what it defines
        spec.loader.exec_module(module)
    else:
        sys.path.insert(0, os.getcwd())
        module = importlib.import_module(module_name)
    function = getattr(module, function_name, None)
    if not callable(function):
        raise SystemExit(f"audit: {module_name} has no function {function_name!r}.")
    return function


# ------------------------------------------------------------ identities


def _canonical(leaf: Any) -> np.ndarray:
    # Backends change dtypes on the way to the model (JAX makes float64
    # float32 and int64 int32): compare every value in one dtype per kind.
    array = np.asarray(leaf)
    if array.dtype.kind == "f" or array.dtype.kind == "c":
        return np.ascontiguousarray(array, dtype=np.float32)
    if array.dtype.kind in "iub":
        return np.ascontiguousarray(array, dtype=np.int64)
    return np.asarray([str(value).encode() for value in array.reshape(len(array), -1)], dtype=object)


def row_hashes(leaves: list[Any]) -> list[str]:
    """One hash per sample: over that sample's row of every input array."""
    arrays = [_canonical(leaf) for leaf in leaves]
    rows = len(arrays[0]) if arrays else 0
    hashes = []
    for i in range(rows):
        digest = hashlib.blake2b(digest_size=8)
        for array in arrays:
            row = array[i]
            digest.update(row.tobytes() if isinstance(row, np.ndarray) else bytes(row))
        hashes.append(digest.hexdigest())
    return hashes


# ----------------------------------------------------------- what it is


def split_batch(batch: Any) -> tuple[Any, Any]:
    """(x, y) of one batch as Keras unpacks it (a bare x has no targets)."""
    if isinstance(batch, (tuple, list)) and len(batch) in (2, 3):
        return batch[0], batch[1]
    return batch, None


def describe(data: Any) -> dict[str, Any]:
    """What the user's function returned, in the words the report uses."""
    kind = type(data)
    name = f"{kind.__module__}.{kind.__qualname__}"
    info: dict[str, Any] = {"type": "kloader.Loader" if name == "kloader._keras.loader.Loader" else name}
    if isinstance(data, keras.utils.PyDataset):
        info["kind"] = "PyDataset"
        info["num_batches"] = len(data)
        info["workers"] = int(getattr(data, "workers", 1) or 1)
        info["use_multiprocessing"] = bool(getattr(data, "use_multiprocessing", False))
        overridden = getattr(kind, "on_epoch_end", None) is not keras.utils.PyDataset.on_epoch_end
        info["on_epoch_end"] = bool(overridden)
        if kind.__module__.startswith("kloader."):
            info["kind"] = "kloader.Loader"
            info["seed"] = int(data.seed)
            info["num_workers"] = int(getattr(data, "num_workers", 0))
            info["shuffle"] = bool(getattr(data, "shuffle", True))
    elif isinstance(data, tuple) and len(data) in (2, 3):
        info["kind"] = "arrays"
    elif isinstance(data, dict) and "x" in data:
        info["kind"] = "fit arguments"
    elif hasattr(data, "__iter__") and not hasattr(data, "__next__") and not isinstance(data, (str, bytes)):
        info["kind"] = "iterable"
    else:
        raise SystemExit(
            f"audit: the function returned a {info['type']}, which audit cannot replay for several "
            "epochs. Return what you pass to fit: a keras.utils.PyDataset (a kloader.Loader is one), "
            "a tuple (x, y) or (x, y, sample_weight) of arrays, a dict of fit arguments "
            "({'x': ..., 'y': ..., 'batch_size': ...}), a tf.data.Dataset or a torch DataLoader."
        )
    return info


def fit_arguments(data: Any, kind: str) -> dict[str, Any]:
    if kind == "arrays":
        return dict(zip(("x", "y", "sample_weight"), data))
    if kind == "fit arguments":
        return dict(data)
    return {"x": data}


def read_reference(data: Any, kind: str) -> tuple[list[str], Any]:
    """The hashes of the samples the data holds, and one batch (for the probe's shapes)."""
    if kind in ("arrays", "fit arguments"):
        arguments = fit_arguments(data, kind)
        x, y = arguments["x"], arguments.get("y")
        leaves = keras.tree.flatten(x)
        if not leaves or any(np.ndim(leaf) == 0 for leaf in leaves):
            raise SystemExit(
                f"audit: the function returned x = {str(x)[:80]!r}, which has no rows. Return the "
                "arrays you pass to fit, one row per sample: (x, y) or (x, y, sample_weight)."
            )
        return row_hashes(leaves), (x, y)
    hashes: list[str] = []
    first: Any = None
    batches = (data[i] for i in range(len(data))) if kind in ("PyDataset", "kloader.Loader") else iter(data)
    for batch in batches:
        x, y = split_batch(batch)
        if first is None:
            first = (x, y)
        hashes += row_hashes([_to_numpy(leaf) for leaf in keras.tree.flatten(x)])
    if first is None:
        raise SystemExit("audit: the data holds no batches.")
    return hashes, first


def _to_numpy(leaf: Any) -> np.ndarray:
    if hasattr(leaf, "detach"):
        leaf = leaf.detach().cpu()
    return np.asarray(leaf)


# ------------------------------------------------------------ the probe


class Recorder(keras.callbacks.Callback):  # type: ignore[misc]
    """Collects the batches the probe hands over, split by Keras epoch."""

    def __init__(self, progress: Any, epochs: int, num_batches: int | None):
        super().__init__()
        self.epochs_seen: list[list[list[str]]] = []
        self._current: list[list[str]] | None = None
        self._progress = progress
        self._epochs = epochs
        self._num_batches = num_batches
        self._last = 0.0

    def record(self, *leaves: Any) -> None:
        if self._current is not None:
            self._current.append(row_hashes([_to_numpy(leaf) for leaf in leaves]))

    def _flush(self) -> None:
        if keras.backend.backend() == "jax":
            import jax

            jax.effects_barrier()

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self._current = []
        self._send(epoch, 0, done=False)

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        if time.monotonic() - self._last > _PROGRESS_EVERY:
            self._send(len(self.epochs_seen), batch + 1, done=False)

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self._flush()
        assert self._current is not None
        self.epochs_seen.append(self._current)
        self._current = None
        self._send(epoch + 1, 0, done=True)

    def _send(self, epoch: int, batch: int, *, done: bool) -> None:
        self._last = time.monotonic()
        self._progress(
            {
                "epoch": epoch,
                "epochs": self._epochs,
                "batch": batch,
                "batches": self._num_batches,
                "done": done,
            }
        )


def probe_model(recorder: Recorder, example_y: Any) -> keras.Model:
    """A model that hands its inputs to Python and predicts the targets' shapes (badly)."""
    target_leaves = [np.asarray(_to_numpy(leaf)) for leaf in keras.tree.flatten(example_y)]
    shapes = [leaf.shape[1:] for leaf in target_leaves]
    structure = keras.tree.map_structure(lambda _: 0, example_y)
    backend = keras.backend.backend()

    class Probe(keras.Model):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.heads = [keras.layers.Dense(max(int(np.prod(shape)), 1)) for shape in shapes]

        def call(self, inputs: Any) -> Any:
            leaves = keras.tree.flatten(inputs)
            if backend == "jax":
                import jax

                jax.debug.callback(recorder.record, *leaves, ordered=True)
            elif backend == "tensorflow":
                import tensorflow as tf

                def record(*arrays: Any) -> Any:
                    recorder.record(*arrays)
                    return np.float32(0)

                tf.numpy_function(record, leaves, tf.float32, stateful=True)
            elif all(getattr(leaf, "device", None) is None or leaf.device.type != "meta" for leaf in leaves):
                recorder.record(*leaves)
            first = keras.ops.cast(leaves[0], "float32")
            feature = keras.ops.reshape(first, (-1, int(np.prod(first.shape[1:])) or 1))
            feature = keras.ops.mean(feature, axis=1, keepdims=True)
            outputs = [
                keras.ops.reshape(head(feature), (-1, *shape)) for head, shape in zip(self.heads, shapes)
            ]
            return keras.tree.pack_sequence_as(structure, outputs)

    def loss(y_true: Any, y_pred: Any) -> Any:
        return keras.ops.mean(keras.ops.square(y_pred)) * 1e-3

    model = Probe()
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=1e-3), loss=loss)
    return model


# ------------------------------------------------------------------ main


def run(target: str, epochs: int, progress: Any) -> dict[str, Any]:
    data = load_function(target)()
    info = describe(data)
    reference, (_, example_y) = read_reference(data, info["kind"])
    if example_y is None:
        raise SystemExit(
            "audit: the data has no targets (its batches are x alone). audit trains a model with "
            "model.fit, which needs (x, y) batches."
        )
    recorder = Recorder(progress, epochs, info.get("num_batches"))
    model = probe_model(recorder, example_y)
    arguments = fit_arguments(data, info["kind"])
    model.fit(**arguments, epochs=epochs, verbose=0, callbacks=[recorder])
    close = getattr(data, "close", None)
    if info["kind"] == "kloader.Loader" and callable(close):
        close()
    return {
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "data": info,
        "reference": reference,
        "epochs": recorder.epochs_seen,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m kloader._keras.audit_run")
    parser.add_argument("target")
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--progress-fd", type=int, default=-1)
    args = parser.parse_args()
    channel = os.fdopen(args.progress_fd, "w", buffering=1) if args.progress_fd >= 0 else None

    def progress(event: dict[str, Any]) -> None:
        if channel is not None:
            channel.write(json.dumps(event) + "\n")

    result = run(args.target, args.epochs, progress)
    with open(args.out, "w") as file:
        json.dump(result, file)


if __name__ == "__main__":
    main()
