"""Real image files for the tests, written by Pillow; and picklable image transforms.

This module must not import Keras: worker processes import it to unpickle the
transforms below.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

PALETTE = [(220, 30, 30), (30, 160, 40), (40, 60, 220), (230, 200, 20)]


def pattern(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth colourful (height, width, 3) uint8 picture that survives JPEG well."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = []
    for _ in range(3):
        fx, fy, phase = rng.uniform(1, 3), rng.uniform(1, 3), rng.uniform(0, 6)
        channels.append(128 + 100 * np.sin(fx * x / width * 3 + phase) * np.cos(fy * y / height * 3))
    return np.clip(np.stack(channels, axis=-1), 0, 255).astype(np.uint8)


def write(path: Path, image: Image.Image, **save: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **save)
    return path


def write_pattern(path: Path, size: tuple[int, int] = (40, 30), seed: int = 0, **save: Any) -> Path:
    """A pattern picture of `size` (width, height) in the format of the file's extension."""
    return write(path, Image.fromarray(pattern(*size, seed=seed)), **save)


def write_solid(
    path: Path, color: Any, size: tuple[int, int] = (24, 24), mode: str = "RGB", **save: Any
) -> Path:
    return write(path, Image.new(mode, size, color), **save)


def make_folder(
    root: Path, counts: dict[str, int], *, ext: str = "png", size: tuple[int, int] = (20, 16)
) -> Path:
    """One subfolder per class; image j of class c is a solid colour of the class, file j.ext."""
    for label, (name, count) in enumerate(counts.items()):
        for j in range(count):
            write_solid(root / name / f"{j:03d}.{ext}", PALETTE[label % len(PALETTE)], size=size)
    return root


def write_truncated_jpeg(path: Path, size: tuple[int, int] = (64, 48)) -> Path:
    """A JPEG whose second half is missing."""
    write_pattern(path, size, quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def write_zero_bytes(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def write_text(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("not an image, just text with an image extension\n")
    return path


def write_bomb_png(path: Path, width: int = 30_000, height: int = 30_000) -> Path:
    """A tiny PNG whose header declares width x height pixels (a decompression bomb)."""
    write_solid(path, (0, 0, 0), size=(1, 1))
    data = bytearray(path.read_bytes())
    # IHDR: 8-byte signature, 4-byte length, b"IHDR", then width and height, then CRC.
    start = 8 + 4
    assert data[start : start + 4] == b"IHDR"
    body = bytes(data[start + 4 : start + 4 + 13])
    body = struct.pack(">II", width, height) + body[8:]
    data[start + 4 : start + 4 + 13] = body
    data[start + 4 + 13 : start + 4 + 17] = struct.pack(">I", zlib.crc32(b"IHDR" + body))
    path.write_bytes(bytes(data))
    return path


def write_exif_rotated(path: Path, orientation: int, size: tuple[int, int] = (60, 40)) -> Path:
    """A JPEG stored as `size`: left half red, right half blue, with an EXIF orientation tag."""
    width, height = size
    array = np.zeros((height, width, 3), np.uint8)
    array[:, : width // 2] = (255, 0, 0)
    array[:, width // 2 :] = (0, 0, 255)
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = orientation
    return write(path, image, exif=exif, quality=95)


def flip(sample: Any, rng: np.random.Generator) -> Any:
    """A seeded augmentation: a horizontal flip half the time, and a brightness shift."""
    image, label = sample
    if rng.random() < 0.5:
        image = image[:, ::-1]
    return np.clip(image + rng.uniform(-20, 20), 0, 255).astype(image.dtype), label


def invert(sample: Any, rng: np.random.Generator) -> Any:
    """Inverts the image when rng says so; a change that is easy to see in a preview."""
    image, label = sample
    return (255 - image if rng.random() < 0.5 else image), label


def photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """`pattern` plus fine texture and sensor noise: hard to resize, like a photo (uint8 HxWx3)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    texture = 12 * np.sin((x * rng.uniform(0.5, 1) + y * rng.uniform(0.5, 1)) / 3.0)[:, :, np.newaxis]
    noisy = pattern(width, height, seed) + texture + rng.normal(0, 6, (height, width, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8)


def torch_threads(sample: Any, rng: np.random.Generator) -> Any:
    """Appends (torch's intra-op thread count, process id) of the process that made the sample."""
    import os

    import torch

    return (*sample, np.array([torch.get_num_threads(), os.getpid()], dtype=np.int64))


def image_data_generator_like() -> Any:
    """A transform with most of ImageDataGenerator's augmentations on, for uint8 RGB images."""
    from kloader import augment

    return augment.from_image_data_generator(
        rotation_range=20,
        width_shift_range=0.1,
        height_shift_range=0.1,
        shear_range=10,
        zoom_range=0.2,
        channel_shift_range=10,
        horizontal_flip=True,
        vertical_flip=True,
        brightness_range=(0.7, 1.3),
        rescale=1 / 255,
    )
