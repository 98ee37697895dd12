"""Train a small CNN on a folder of images with kloader, on whichever Keras backend is selected.

    KERAS_BACKEND=jax python examples/train_image_folder.py          (or tensorflow, torch)
    KERAS_BACKEND=jax python examples/train_image_folder.py PATH     (PATH/<class>/<image>)

Without PATH it first generates a small image folder, data/shapes/ (four classes
of JPEGs of various sizes: circles, squares, triangles and crosses, each in a
noisy tint of its own, on noisy backgrounds), then trains on it for a few epochs with two
worker processes and a seeded augmentation, printing the accuracy of every
epoch, and writes what the model saw in the first batch to runs/preview.png.

The batches of every epoch, augmentation included, are a pure function of
(seed, epoch): run it twice, or on another backend, and the model sees the
same images in the same order.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

import kloader

# Keras is imported in main(), not here: worker processes import this script to
# find `augment` below, and they have no use for Keras or its backend.

SHAPES = ("circle", "cross", "square", "triangle")
# Each shape leans towards a colour, so that a few epochs suffice; the shape does the rest.
TINTS = {"circle": (220, 60, 60), "cross": (60, 200, 60), "square": (60, 90, 230), "triangle": (230, 210, 50)}


def augment(sample: tuple[np.ndarray, Any], rng: np.random.Generator) -> tuple[np.ndarray, Any]:
    """A seeded augmentation: mirror half the images, jitter brightness and contrast.

    `rng` depends only on (seed, epoch, sample index), so every worker, backend
    and run draws the same numbers for the same sample.
    """
    image, label = sample
    if rng.random() < 0.5:
        image = image[:, ::-1, :]
    contrast, brightness = rng.uniform(0.8, 1.2), rng.uniform(-0.1, 0.1)
    image = np.clip((image - 0.5) * contrast + 0.5 + brightness, 0.0, 1.0)
    return image.astype(np.float32), label


# --------------------------------------------------------------- the data


def draw_shape(shape: str, rng: np.random.Generator) -> Image.Image:
    """One picture: a shape in a noisy tint of its class on a noisy background, at a random size."""
    width, height = (int(v) for v in rng.integers(200, 401, size=2))
    background = rng.integers(40, 216) + rng.integers(-40, 41, size=3)  # greyish
    noise = rng.normal(0, 25, size=(height // 8 + 1, width // 8 + 1, 3))
    pixels = np.clip(background + np.kron(noise, np.ones((8, 8, 1)))[:height, :width], 0, 255)
    image = Image.fromarray(pixels.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    color = tuple(int(v) for v in np.clip(np.array(TINTS[shape]) + rng.normal(0, 40, size=3), 0, 255))
    size = rng.uniform(0.35, 0.6) * min(width, height)
    cx, cy = rng.uniform(size / 2 + 5, width - size / 2 - 5), rng.uniform(size / 2 + 5, height - size / 2 - 5)
    left, top, right, bottom = cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2
    if shape == "circle":
        draw.ellipse((left, top, right, bottom), fill=color)
    elif shape == "square":
        draw.rectangle((left, top, right, bottom), fill=color)
    elif shape == "triangle":
        draw.polygon([(cx, top), (right, bottom), (left, bottom)], fill=color)
    else:
        bar = size / 3.5
        draw.rectangle((left, cy - bar / 2, right, cy + bar / 2), fill=color)
        draw.rectangle((cx - bar / 2, top, cx + bar / 2, bottom), fill=color)
    return image


def generate(directory: Path, per_class: int = 200, seed: int = 0) -> None:
    """Writes per_class JPEGs per shape into directory/<shape>/, once."""
    marker = directory / ".complete"
    if marker.exists():
        return
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    for shape in SHAPES:
        (directory / shape).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            draw_shape(shape, rng).save(
                directory / shape / f"{shape}_{i:03d}.jpg", quality=int(rng.integers(70, 95))
            )
    marker.touch()
    print(f"generated {per_class * len(SHAPES)} JPEGs in {directory}/ ({time.perf_counter() - start:.1f} s)")


# ------------------------------------------------------------- training


def build_model(input_shape: tuple[int, int, int], num_classes: int) -> Any:
    import keras

    model = keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.GlobalMaxPooling2D(),
            keras.layers.Dense(num_classes, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=3e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "directory", nargs="?", help="image folder, one subfolder per class (default: generate one)"
    )
    parser.add_argument("--data", default="data/shapes", help="where to generate the default folder")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--preview", default="runs/preview.png", help="where to write the first batch")
    parser.add_argument("--preview-images", type=int, default=64, help="at most this many images in it")
    args = parser.parse_args()

    import keras

    start = time.perf_counter()
    directory = Path(args.directory) if args.directory else Path(args.data)
    if not args.directory:
        generate(directory)

    # One scan, a deterministic stratified split; unreadable files are left out (and listed).
    folder = kloader.ImageFolder(directory, image_size=args.image_size, rescale=1 / 255, on_error="skip")
    train_folder, validation_folder = folder.split(0.2, seed=1337)
    print(
        f"{len(folder)} images in {len(folder.class_names or [])} classes {folder.class_names}: "
        f"{len(train_folder)} to train, {len(validation_folder)} to validate"
    )
    train = kloader.Loader(
        train_folder, batch_size=args.batch_size, seed=42, transform=augment, num_workers=args.workers
    )
    validation = kloader.Loader(validation_folder, batch_size=64, shuffle=False, num_workers=args.workers)
    kloader.save_preview(train, args.preview, max_images=args.preview_images)
    print(f"wrote {args.preview}: batch 0 of epoch 0, augmented, as the model gets it")

    # Keras draws initial weights from seeds it takes from Python's `random`; seeding it
    # makes runs repeatable (keras.utils.set_random_seed would also import TensorFlow).
    random.seed(0)
    model = build_model(train_folder.image_shape, len(folder.class_names or []))
    history = model.fit(train, validation_data=validation, epochs=args.epochs, verbose=2)

    accuracy = " -> ".join(f"{value:.2f}" for value in history.history["accuracy"])
    val_accuracy = " -> ".join(f"{value:.2f}" for value in history.history["val_accuracy"])
    print(f"backend {keras.backend.backend()}: train accuracy {accuracy}")
    print(f"backend {keras.backend.backend()}: validation accuracy {val_accuracy}")
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
