"""Training a small ResNet from an image folder: steps/s, and the share of each step spent waiting for data.

    KERAS_BACKEND=jax python benchmarks/gpu.py --workers 4,12 (on a GPU machine: GPU_RESULTS.md)
    KERAS_BACKEND=torch python benchmarks/gpu.py --quick      (CPU smoke run: tiny sizes, under a minute)

Generates a seeded image folder of photo-like JPEGs once (under `data/gpu/`),
builds a small ResNet (basic residual blocks, 4 stages, batch norm) for
224x224 images, and trains it for a fixed number of steps on the current
Keras backend, fed by each loader in turn:

- kloader: `ImageFolder` (defaults: float32) + `augment.RandomFlip`, with `--workers`
  worker processes;
- tf.data: `image_dataset_from_directory` + `random_flip_left_right` + prefetch
  (skipped when TensorFlow is not installed);
- torch DataLoader: a map-style dataset decoding with Pillow, `--workers`
  workers, `persistent_workers=True`, `pin_memory` on CUDA.

Each step pulls the next batch the way `fit` does on this backend (the
backend's own epoch iterator: on JAX with an accelerator Keras puts the
batch on the device one step ahead; on torch with CUDA kloader copies it from
pinned memory without blocking) and then runs `train_on_batch`, which returns
the loss and so waits for the device. Per loader: steps/s over the measured
steps (after `--warmup` steps that compile and start workers), and the share of
that time spent waiting for the next batch. A loader that keeps up shows a
wait share near 0.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _data  # noqa: E402
import _work  # noqa: E402


def resnet(keras: Any, size: int, width: int, classes: int) -> Any:
    """A small ResNet: stem, 4 stages of 2 basic blocks (widths w, 2w, 4w, 8w), pooling, dense."""

    def block(x: Any, filters: int, stride: int) -> Any:
        shortcut = x
        y = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
        y = keras.layers.Activation("relu")(keras.layers.BatchNormalization()(y))
        y = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(y)
        y = keras.layers.BatchNormalization()(y)
        if stride != 1 or x.shape[-1] != filters:
            shortcut = keras.layers.Conv2D(filters, 1, strides=stride, use_bias=False)(x)
            shortcut = keras.layers.BatchNormalization()(shortcut)
        return keras.layers.Activation("relu")(keras.layers.Add()([y, shortcut]))

    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(width, 7, strides=2, padding="same", use_bias=False)(x)
    x = keras.layers.Activation("relu")(keras.layers.BatchNormalization()(x))
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same")(x)
    for stage in range(4):
        for index in range(2):
            x = block(x, width * 2**stage, 2 if index == 0 and stage > 0 else 1)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(classes)(x))


# ------------------------------------------------------------------ loaders


def kloader_data(root: str, args: argparse.Namespace) -> Any:
    import kloader
    from kloader import augment

    folder = kloader.ImageFolder(root, image_size=args.size)
    return kloader.Loader(
        folder,
        batch_size=args.batch_size,
        seed=0,
        transform=augment.RandomFlip(horizontal=True),
        num_workers=args.workers,
    )


def tfdata_data(root: str, args: argparse.Namespace) -> Any:
    import keras
    import tensorflow as tf

    dataset = keras.utils.image_dataset_from_directory(
        root,
        image_size=(args.size, args.size),
        batch_size=args.batch_size,
        shuffle=True,
        seed=0,
        verbose=False,
    )
    flip = lambda x, y: (tf.image.random_flip_left_right(x), y)  # noqa: E731
    return dataset.map(flip, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def torch_data(root: str, args: argparse.Namespace) -> Any:
    import torch

    return torch.utils.data.DataLoader(
        _work.FolderSamples(root, size=(args.size, args.size)),
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
        pin_memory=torch.cuda.is_available(),
        generator=torch.Generator().manual_seed(0),
    )


LOADERS: dict[str, Callable[[str, argparse.Namespace], Any]] = {
    "kloader": kloader_data,
    "tf.data": tfdata_data,
    "torch DataLoader": torch_data,
}


def fit_batches(data: Any) -> Iterator[Any]:
    """Batches of `data`, endlessly, pulled as `fit` pulls them on this backend (its epoch iterator)."""
    import keras

    backend = keras.backend.backend()
    while True:
        if backend == "jax":
            from keras.src.backend.jax.trainer import JAXEpochIterator

            iterator = JAXEpochIterator(x=data)._get_iterator()
        elif backend == "torch":
            from keras.src.backend.torch.trainer import TorchEpochIterator

            iterator = TorchEpochIterator(x=data)._get_iterator()
        else:
            import tensorflow as tf
            from keras.src.backend.tensorflow.trainer import TFEpochIterator

            iterator = TFEpochIterator(
                x=data, distribute_strategy=tf.distribute.get_strategy()
            )._get_iterator()
        yield from iterator


def train(model: Any, data: Any, steps: int, warmup: int) -> dict[str, float]:
    """`warmup` steps, then `steps` timed ones: steps/s and the share spent waiting for a batch."""
    batches = fit_batches(data)
    for _ in range(warmup):
        model.train_on_batch(*next(batches))
    waited = 0.0
    started = time.perf_counter()
    for _ in range(steps):
        before = time.perf_counter()
        x, y = next(batches)
        waited += time.perf_counter() - before
        model.train_on_batch(x, y)
    elapsed = time.perf_counter() - started
    return {"steps_per_s": steps / elapsed, "wait_share": waited / elapsed, "seconds": elapsed}


def device() -> str:
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return f"jax: {jax.devices()[0].device_kind} ({jax.default_backend()})"
    if backend == "torch":
        import torch

        return f"torch: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU'}"
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return f"tensorflow: {gpus[0].name if gpus else 'CPU'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="CPU smoke run: tiny images, model and step count"
    )
    parser.add_argument("--steps", type=int, help="timed steps per loader (default 100; 4 with --quick)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (default 10; 1 with --quick)")
    parser.add_argument("--batch-size", type=int, help="default 128; 8 with --quick")
    parser.add_argument(
        "--workers",
        default="4",
        help="worker processes of kloader and torch; a comma-separated list runs each (default 4)",
    )
    parser.add_argument(
        "--loaders", default=",".join(LOADERS), help="comma-separated, from: " + ", ".join(LOADERS)
    )
    parser.add_argument(
        "--data", default=str(HERE.parent / "data" / "gpu"), help="where the image folder is made"
    )
    args = parser.parse_args()
    quick = args.quick
    args.steps = args.steps or (4 if quick else 100)
    args.warmup = args.warmup if args.warmup is not None else (1 if quick else 10)
    args.batch_size = args.batch_size or (8 if quick else 128)
    args.size, width, count, source = (48, 4, 32, (64, 48)) if quick else (224, 32, 2048, (500, 375))
    worker_counts = [int(workers) for workers in args.workers.split(",")]
    if quick and worker_counts == [4]:
        worker_counts = [2]

    root = str(_data.image_folder(Path(args.data) / f"{source[0]}x{source[1]}_{count}", count, size=source))
    import keras

    print(
        f"backend {keras.backend.backend()}, device {device()}; {count} JPEGs {source[0]}x{source[1]} -> "
        f"{args.size}x{args.size}, batch {args.batch_size}, {','.join(map(str, worker_counts))} workers, "
        f"{args.warmup} + {args.steps} steps per loader; Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )
    model = resnet(keras, args.size, width, classes=4)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rows = []
    for workers in worker_counts:
        args.workers = workers
        for name in args.loaders.split(","):
            if name == "tf.data" and importlib.util.find_spec("tensorflow") is None:
                if workers == worker_counts[0]:
                    rows.append(f"| {name} | — | — | — | not run: TensorFlow is not installed |")
                continue
            data = LOADERS[name](root, args)
            result = train(model, data, args.steps, args.warmup)
            if hasattr(data, "close"):
                data.close()
            rows.append(
                f"| {name} | {workers} | {result['steps_per_s']:.2f} | {100 * result['wait_share']:.1f} % "
                f"| {result['seconds']:.1f} s for {args.steps} steps |"
            )
            print(rows[-1], flush=True)
    print()
    print("| loader | workers | steps/s | waiting for data | |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
