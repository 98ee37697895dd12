"""Per-image cost of kloader's augmentations on 160x160x3 images, uint8 and float32.

    python benchmarks/augment.py [--size 160] [--repeats 7]

Each number is the best of `repeats` runs of 200 images, in microseconds per
image, on one core (the main process; workers each do the same).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from kloader import augment


def per_image(
    transform: Callable[[Any, np.random.Generator], Any], images: np.ndarray, repeats: int
) -> float:
    rngs = [np.random.default_rng(i) for i in range(len(images))]
    transform(images[0], rngs[0])
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for image, rng in zip(images, rngs):
            transform(image, rng)
        best = min(best, (time.perf_counter() - start) / len(images))
    return best * 1e6


def cases() -> dict[str, Callable[[Any, np.random.Generator], Any]]:
    return {
        "RandomFlip(horizontal, vertical)": augment.RandomFlip(horizontal=True, vertical=True),
        "RandomRotation(20) bilinear, nearest fill": augment.RandomRotation(20),
        "RandomRotation(20) bilinear, constant fill": augment.RandomRotation(20, fill_mode="constant"),
        "RandomRotation(20) bilinear, reflect fill": augment.RandomRotation(20, fill_mode="reflect"),
        "RandomRotation(20) nearest interpolation": augment.RandomRotation(20, interpolation="nearest"),
        "RandomAffine(all four)": augment.RandomAffine(
            rotation=20, width_shift=0.1, height_shift=0.1, shear=10, zoom=0.2
        ),
        "RandomBrightness((0.8, 1.2))": augment.RandomBrightness((0.8, 1.2)),
        "RandomContrast(0.2)": augment.RandomContrast(0.2),
        "RandomBrightness + RandomContrast": augment.Compose(
            [augment.RandomBrightness((0.8, 1.2)), augment.RandomContrast(0.2)]
        ),
        "RandomCrop(128)": augment.RandomCrop(128),
        "RandomResizedCrop(128)": augment.RandomResizedCrop(128),
        "Rescale(1 / 255)": augment.Rescale(1 / 255),
        "ImageDataGenerator-like pipeline": augment.from_image_data_generator(
            rotation_range=20,
            width_shift_range=0.1,
            height_shift_range=0.1,
            shear_range=10,
            zoom_range=0.2,
            horizontal_flip=True,
            brightness_range=(0.8, 1.2),
            rescale=1 / 255,
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    uint8 = rng.integers(0, 256, size=(200, args.size, args.size, 3), dtype=np.uint8)
    float32 = uint8.astype(np.float32)
    print(f"{'transform':45s} {'uint8 us':>10s} {'float32 us':>11s}")
    for name, transform in cases().items():
        a = per_image(transform, uint8, args.repeats)
        b = per_image(transform, float32, args.repeats)
        print(f"{name:45s} {a:10.0f} {b:11.0f}")


if __name__ == "__main__":
    main()
