"""The benchmark's datasets, generated reproducibly from a seed (no framework imports).

- An image folder: `count` photo-like JPEGs of 500x375 (smooth shading, filled
  shapes, fine texture and a little sensor noise; quality 90, about 40 KB each,
  so they compress and decode like photos), in `classes` class subfolders.
- In-memory arrays: `count` uint8 images of 32x32x3 and int32 labels.
"""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

IMAGE_SIZE = (500, 375)  # width, height of every generated JPEG


def photo_like(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Shading, shapes with edges, texture and noise: what makes decoding and resizing work."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.empty((height, width, 3), np.float32)
    for channel in range(3):
        base = 128 + 60 * np.sin(x / width * rng.uniform(1, 5) + rng.uniform(0, 6))
        base += 40 * np.cos(y / height * rng.uniform(1, 5) + rng.uniform(0, 6))
        period = rng.uniform(4, 12)
        base += 10 * np.sin((x * rng.uniform(0.5, 1) + y * rng.uniform(0.5, 1)) / period + rng.uniform(0, 6))
        image[:, :, channel] = base
    picture = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for _ in range(25):
        x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
        w, h = rng.uniform(0.03, 0.35) * width, rng.uniform(0.03, 0.35) * height
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x0, y0, x0 + w, y0 + h), fill=color)
    picture = picture.filter(ImageFilter.GaussianBlur(1.0))
    noisy = np.asarray(picture).astype(np.float32) + rng.normal(0, 4, size=(height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def _write_image(job: tuple[Path, int, int, int, tuple[int, int]]) -> None:
    root, i, classes, seed, size = job
    rng = np.random.default_rng([seed, i])
    folder = root / f"class_{i % classes}"
    folder.mkdir(parents=True, exist_ok=True)
    photo_like(rng, *size).save(folder / f"image_{i:05d}.jpg", "JPEG", quality=90)


def image_folder(
    root: str | os.PathLike[str],
    count: int,
    *,
    classes: int = 4,
    seed: int = 0,
    size: tuple[int, int] = IMAGE_SIZE,
) -> Path:
    """Writes the folder (once: an existing folder made with the same arguments is reused)."""
    root = Path(root)
    recipe = {"count": count, "classes": classes, "seed": seed, "size": list(size), "version": 1}
    marker = root / ".recipe.json"
    if marker.exists() and json.loads(marker.read_text()) == recipe:
        return root
    # One generator per file: file i is the same whatever `count` is, and
    # whichever process writes it; the files are written by one process per core
    # (started fresh: the caller may already run threads that a fork would copy).
    jobs = [(root, i, classes, seed, size) for i in range(count)]
    processes = min(os.cpu_count() or 1, 16)
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(processes, mp_context=context) as pool:
        list(pool.map(_write_image, jobs, chunksize=16))
    marker.write_text(json.dumps(recipe))
    return root


def arrays(count: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels): `count` x 32x32x3 uint8 and `count` int32 labels in 0..9."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(count, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=count, dtype=np.int32)
    return images, labels
