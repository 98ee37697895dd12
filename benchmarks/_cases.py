"""One measured case, run in a fresh process by `run.py`: `python _cases.py '<json spec>'`.

Prints one JSON line with the measurements. Frameworks are imported inside the
functions, never at module level: under forkserver or spawn, worker processes
import the main module, and a Keras or TensorFlow import there would be paid
(in time and memory) by every worker.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

import _data
import _work
from _work import BATCH_SIZE, IMAGE_SIZE


def pss(pid: int) -> int:
    """Proportional set size of one process in bytes (shared pages split among their users)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as rollup:
            for line in rollup:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def tree_pss() -> int:
    """PSS of this process and all its descendants."""
    import psutil

    me = psutil.Process()
    return pss(me.pid) + sum(pss(child.pid) for child in me.children(recursive=True))


def tree_cpu() -> tuple[dict[int, float], float]:
    """CPU seconds (user + system) of this process and each live descendant, and of reaped children."""
    import psutil

    me = psutil.Process()
    seconds = {}
    for process in [me, *me.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        seconds[process.pid] = times.user + times.system
    own = os.times()
    return seconds, own.children_user + own.children_system


def cpu_between(start: tuple[dict[int, float], float], end: tuple[dict[int, float], float]) -> float:
    """CPU seconds the process tree spent between two `tree_cpu()` snapshots."""
    live = sum(seconds - start[0].get(pid, 0.0) for pid, seconds in end[0].items())
    gone = sum(seconds for pid, seconds in start[0].items() if pid not in end[0])
    return live + (end[1] - start[1]) - gone


# ------------------------------------------------------------------ loaders
# Each returns (build, iterate_epoch, close): build() makes the loader (timed
# from there to the first batch); iterate_epoch(loader, epoch) yields its batches.


def kloader_images(spec: dict[str, Any]) -> Any:
    import kloader
    from kloader import augment

    kloader.Loader, kloader.ImageFolder  # noqa: B018  (imports Keras here, not in build())
    # torch is not imported here: a loader with workers starts its fork server and
    # then imports torch when it is made, the two imports side by side, as in a
    # script. (The image-folder cases run on Keras's torch backend, where Keras has
    # imported torch already; `fit` on TensorFlow and JAX counts the import.)

    def build() -> Any:
        folder = kloader.ImageFolder(
            spec["root"],
            image_size=IMAGE_SIZE,
            dtype=spec.get("dtype", "float32"),
            fast_decode=spec.get("fast_decode", True),
        )
        return kloader.Loader(
            folder,
            batch_size=BATCH_SIZE,
            seed=0,
            transform=augment.RandomFlip(horizontal=True),
            num_workers=spec["workers"],
        )

    return build, lambda loader, epoch: iter(loader), lambda loader: loader.close()


def kloader_arrays(spec: dict[str, Any]) -> Any:
    import kloader

    kloader.Loader  # noqa: B018  (imports Keras here, not in build())
    x, y = _data.arrays(spec["count"])

    def build() -> Any:
        return kloader.Loader((x, y), batch_size=spec["batch_size"], seed=0, num_workers=spec["workers"])

    return build, lambda loader, epoch: iter(loader), lambda loader: loader.close()


def keras_arrays(spec: dict[str, Any]) -> Any:
    """The data path of `model.fit(x, y, batch_size=B)`: Keras's ArrayDataAdapter."""
    from keras.src.trainers.data_adapters.array_data_adapter import ArrayDataAdapter

    x, y = _data.arrays(spec["count"])

    def build() -> Any:
        return ArrayDataAdapter(x, y, batch_size=spec["batch_size"], shuffle=True)

    return build, lambda adapter, epoch: adapter.get_numpy_iterator(), lambda adapter: None


def pydataset_class() -> Any:
    import keras

    class FolderPyDataset(keras.utils.PyDataset):  # type: ignore[misc]
        """The textbook PyDataset: batch i of a fixed shuffled order, made sample by sample."""

        def __init__(self, root: str, **kwargs: Any):
            super().__init__(**kwargs)
            self.samples = _work.FolderSamples(root)
            self.order = np.random.default_rng(0).permutation(len(self.samples))

        def __len__(self) -> int:
            return -(-len(self.samples) // BATCH_SIZE)

        def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
            positions = self.order[index * BATCH_SIZE : (index + 1) * BATCH_SIZE]
            samples = [self.samples[int(i)] for i in positions]
            return np.stack([s[0] for s in samples]), np.array([s[1] for s in samples])

    return FolderPyDataset


def pydataset_images(spec: dict[str, Any]) -> Any:
    """Keras's PyDataset with its own enqueuer, iterated as `fit` does (one pool per epoch)."""
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    dataset_class = pydataset_class()

    def build() -> Any:
        dataset = dataset_class(spec["root"], workers=spec["workers"], use_multiprocessing=spec["processes"])
        return PyDatasetAdapter(dataset, shuffle=True)

    def iterate(adapter: Any, epoch: int) -> Iterable[Any]:
        adapter.on_epoch_begin()
        yield from adapter.get_numpy_iterator()
        adapter.on_epoch_end()

    return build, iterate, lambda adapter: None


def torch_images(spec: dict[str, Any]) -> Any:
    import torch

    def build() -> Any:
        return torch.utils.data.DataLoader(
            _work.FolderSamples(spec["root"]),
            batch_size=BATCH_SIZE,
            shuffle=True,
            num_workers=spec["workers"],
            persistent_workers=spec["workers"] > 0,
            generator=torch.Generator().manual_seed(0),
        )

    return build, lambda loader, epoch: iter(loader), lambda loader: None


def tfdata_images(spec: dict[str, Any]) -> Any:
    import keras
    import tensorflow as tf

    def build() -> Any:
        dataset = keras.utils.image_dataset_from_directory(
            spec["root"], image_size=IMAGE_SIZE, batch_size=BATCH_SIZE, shuffle=True, seed=0, verbose=False
        )
        flip = lambda x, y: (tf.image.random_flip_left_right(x), y)  # noqa: E731
        return dataset.map(flip, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

    return build, lambda dataset, epoch: iter(dataset), lambda dataset: None


LOADERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "kloader_images": kloader_images,
    "kloader_arrays": kloader_arrays,
    "keras_arrays": keras_arrays,
    "pydataset_images": pydataset_images,
    "torch_images": torch_images,
    "tfdata_images": tfdata_images,
}


# -------------------------------------------------------------- measurements


def batch_size_of(batch: Any) -> int:
    first = batch[0] if isinstance(batch, (tuple, list)) else batch
    return int(first.shape[0])


def measure_loader(spec: dict[str, Any]) -> dict[str, Any]:
    """First-batch latency, the first epoch from `build()` on, then images/s over the epochs after it."""
    import keras  # noqa: F401  (every case is a Keras program: its import is not the loader's cost)

    build, iterate, close = LOADERS[spec["loader"]](spec)
    baseline = pss(os.getpid())
    started = time.perf_counter()
    loader = build()
    built = time.perf_counter()
    epoch_seconds, counts, memory = [], [], []
    first_batch = None
    cpu_start = None
    first_epoch_gaps: list[float] = []
    for epoch in range(spec["epochs"]):
        if epoch == 1:
            cpu_start = tree_cpu()
        start = time.perf_counter()
        previous = built
        count = 0
        for batch in iterate(loader, epoch):
            now = time.perf_counter()
            if first_batch is None:
                first_batch = now - built
            if epoch == 0:
                first_epoch_gaps.append(now - previous)
                previous = now
            count += batch_size_of(batch)
        epoch_seconds.append(time.perf_counter() - start)
        if epoch == 0:
            first_epoch_with_start = time.perf_counter() - started
        counts.append(count)
        if spec.get("track_memory"):
            memory.append(tree_pss())
    cpu = cpu_between(cpu_start, tree_cpu()) if cpu_start is not None else None
    close(loader)
    measured = slice(1, None) if spec["epochs"] > 1 else slice(None)
    return {
        "images_per_s": sum(counts[measured]) / sum(epoch_seconds[measured]),
        # The first epoch as a user sees it: from building the loader (workers
        # start here) to its last batch.
        "first_epoch_images_per_s": counts[0] / first_epoch_with_start,
        # The longest wait for a batch in the first epoch (the first batch's
        # wait counted from the built loader).
        "first_epoch_max_gap_s": max(first_epoch_gaps),
        "cpu_ms_per_image": None if cpu is None else 1e3 * cpu / sum(counts[measured]),
        "first_batch_s": first_batch,
        "build_s": built - started,
        "epoch_s": epoch_seconds,
        "samples_per_epoch": counts[0],
        "baseline_pss": baseline,
        "tree_pss_per_epoch": memory,
    }


def measure_limit(spec: dict[str, Any]) -> dict[str, Any]:
    """One process, one sample at a time, no loader: the per-core rate, times the cores."""
    paths, _ = _work.list_images(spec["root"])
    paths = paths[: spec.get("limit_images", len(paths))]
    if spec["decode"] == "kloader":
        import kloader

        folder = kloader.ImageFolder(paths=paths, image_size=IMAGE_SIZE, label_mode=None)
        work = folder.__getitem__
        items: list[Any] = list(range(len(paths)))
    else:
        draft = spec["decode"] == "draft"
        work = lambda path: _work.random_flip(_work.load_image(path, draft=draft)).copy()  # noqa: E731
        items = paths
    for item in items[:50]:  # warm up
        work(item)
    start = time.perf_counter()
    for item in items:
        work(item)
    per_core = len(items) / (time.perf_counter() - start)
    cores = len(os.sched_getaffinity(0))
    return {
        "images_per_s": per_core * cores,
        "per_core": per_core,
        "cores": cores,
        "cpu_ms_per_image": 1e3 / per_core,
    }


def image_model(keras: Any) -> Any:
    inputs = keras.Input((*IMAGE_SIZE, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=4, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4)(x))


def array_model(keras: Any) -> Any:
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    return keras.Model(inputs, keras.layers.Dense(10)(x))


def measure_fit(spec: dict[str, Any]) -> dict[str, Any]:
    """Wall time of each `model.fit` epoch of a small model fed by one loader."""
    import keras

    images = "root" in spec
    model = image_model(keras) if images else array_model(keras)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    times: list[float] = []
    # The first epoch from before the loader is built: start-up, tracing and compilation included.
    first_with_start: list[float] = []

    class EpochTimer(keras.callbacks.Callback):  # type: ignore[misc]
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            times.append(time.perf_counter() - self.start)
            if epoch == 0:
                first_with_start.append(time.perf_counter() - started)

    fit = {"epochs": spec["epochs"], "verbose": 0, "callbacks": [EpochTimer()]}
    started = time.perf_counter()
    if spec["loader"] == "fit_arrays":
        x, y = _data.arrays(spec["count"])
        model.fit(x, y, batch_size=spec["batch_size"], shuffle=True, **fit)
        count = len(x)
    elif spec["loader"] == "pydataset_images":
        dataset = pydataset_class()(
            spec["root"], workers=spec["workers"], use_multiprocessing=spec["processes"]
        )
        model.fit(dataset, **fit)
        count = len(dataset.samples)
    else:
        build, _, close = LOADERS[spec["loader"]](spec)
        loader = build()
        model.fit(loader, **fit)
        close(loader)
        count = spec.get("count") or len(_work.list_images(spec["root"])[0])
    steady = sorted(times[1:]) or times
    return {
        "images_per_s": count / steady[len(steady) // 2],
        "epoch_s": times,
        "first_epoch_with_start_s": first_with_start[0],
    }


if __name__ == "__main__":
    case = json.loads(sys.argv[1])
    measure = {"loader": measure_loader, "limit": measure_limit, "fit": measure_fit}[case["kind"]]
    print(json.dumps(measure(case)))
