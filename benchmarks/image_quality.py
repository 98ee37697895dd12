"""Image decode paths: quality against a full-precision reference, and time per image.

    python benchmarks/image_quality.py            (about a minute)

The reference for a JPEG and a target size is the exact computation the
default asks for: a full decode (no DCT scaling), then the antialiased
bilinear resize (Pillow's triangle filter) in float64, never rounded. Every
path's output is compared with it as PSNR (dB; higher is closer, 40 dB is a
mean error of about 2.5 levels of 255 in root-mean-square terms). Paths:

- `Pillow`: full decode, Pillow's bilinear resize (kloader before torch resized).
- `torch`: full decode, torch's antialiased bilinear uint8 resize (the default).
- `draft 1/d`: decoded at 1/d scale by libjpeg, then torch's resize told the
  decoded image's exact extent (375 rows at 1/2 are 187.5 decoded rows, held
  in 188); the default (`fast_decode=True`) picks the smallest such scale that
  still covers the target.
- `draft 1/d, partial pixel ignored`: the same, resizing the 188 rows as if
  they were the whole image (what kloader did before): shifted by up to one
  source pixel.
- `no antialias`: full decode, bilinear without antialiasing (what tf.data's
  `image_dataset_from_directory` does), for comparison.

Images: the benchmark's photo-like JPEGs (`_data.photo_like`, quality 90).
Times are the median over interleaved rounds of one call per image, one
thread, on whatever load the machine has (compare the columns, not the rows).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from kloader._images import decode

import _data

SOURCES = [(500, 375), (1024, 768), (2048, 1536)]
TARGETS = [(224, 224), (160, 160), (128, 128), (64, 64)]


def psnr(output: np.ndarray, reference: np.ndarray) -> float:
    mse = float(np.mean((output.astype(np.float64) - reference) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def reference(path: str, size: tuple[int, int]) -> np.ndarray:
    """Full decode, then Pillow's antialiased bilinear filter in float64 (torch implements it)."""
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    batch = torch.from_numpy(pixels).permute(2, 0, 1)[None]
    resized = torch.nn.functional.interpolate(batch, size=size, mode="bilinear", antialias=True)
    return resized[0].permute(1, 2, 0).numpy()


def pillow(path: str, size: tuple[int, int]) -> np.ndarray:
    with Image.open(path) as image:
        image = image.convert("RGB")
        return np.asarray(image.resize(size[::-1], Image.Resampling.BILINEAR), dtype=np.float32)


def no_antialias(path: str, size: tuple[int, int]) -> np.ndarray:
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    batch = torch.from_numpy(pixels).permute(2, 0, 1)[None]
    resized = torch.nn.functional.interpolate(batch, size=size, mode="bilinear", antialias=False)
    return resized[0].permute(1, 2, 0).numpy()


def kloader_path(fast_decode: bool | str) -> Callable[[str, tuple[int, int]], np.ndarray]:
    def run(path: str, size: tuple[int, int]) -> np.ndarray:
        return decode.decode(path, decode.DecodeSpec(size, fast_decode=fast_decode))

    return run


def draft_at(scale: int, exact: bool = True) -> Callable[[str, tuple[int, int]], np.ndarray]:
    """A draft decode at exactly 1/scale, then torch's resize; `exact`: told the decoded image's
    exact extent (the default path), else resizing the decoded pixels as if they were the image."""

    def run(path: str, size: tuple[int, int]) -> np.ndarray:
        with Image.open(path) as image:
            width, height = image.size
            image.draft("RGB", (width // scale, height // scale))
            pixels = np.array(image.convert("RGB"))
        extent = (height / scale, width / scale) if exact else pixels.shape[:2]
        return decode._torch_resize(pixels, extent, size, "bilinear").astype(np.float32)

    return run


def timed(
    paths: list[str], size: tuple[int, int], paths_by_name: dict[str, Any], rounds: int
) -> dict[str, float]:
    seconds: dict[str, list[float]] = {name: [] for name in paths_by_name}
    for _ in range(rounds):
        for name, run in paths_by_name.items():
            start = time.perf_counter()
            for path in paths:
                run(path, size)
            seconds[name].append((time.perf_counter() - start) / len(paths))
    return {name: 1e3 * statistics.median(values) for name, values in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8, help="images per source size")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (median kept)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{args.images} photo-like JPEGs per size; PSNR (dB) against a float64 reference; ms per image")
    print("| source → target | path | PSNR | ms |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as directory:
        for width, height in SOURCES:
            paths = []
            for i in range(args.images):
                path = Path(directory) / f"{width}x{height}_{i}.jpg"
                _data.photo_like(np.random.default_rng([1, i]), width, height).save(path, quality=90)
                paths.append(str(path))
            for size in TARGETS:
                candidates: dict[str, Any] = {
                    "Pillow": pillow,
                    "torch (fast_decode=False)": kloader_path(False),
                }
                for scale in (2, 4, 8):
                    if min(width // scale, height // scale) >= min(size):
                        candidates[f"draft 1/{scale}"] = draft_at(scale)
                        if width % scale or height % scale:
                            candidates[f"draft 1/{scale}, partial pixel ignored"] = draft_at(
                                scale, exact=False
                            )
                candidates["default (fast_decode=True)"] = kloader_path(True)
                candidates["no antialias"] = no_antialias
                references = [reference(path, size) for path in paths]
                quality = {
                    name: statistics.mean(psnr(run(p, size), r) for p, r in zip(paths, references))
                    for name, run in candidates.items()
                }
                times = timed(paths, size, candidates, args.rounds)
                for name in candidates:
                    print(
                        f"| {width}x{height} → {size[0]}x{size[1]} | {name} | {quality[name]:.1f} dB "
                        f"| {times[name]:.2f} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
