"""What the global-random guard costs on an image epoch (it is on by default).

    python benchmarks/global_random_guard.py [--count 512] [--repeats 5]

Two measurements, on one core (num_workers=0: every sample is made, and
guarded, in this process; each worker pays the same per sample):

1. The guard alone: the mean cost of one sample's checks, `snapshot()` then
   `moved()`, over 20 000 samples, with torch imported (the costliest case:
   three generators watched), including the full checks made on the first
   16 samples and on one sample in 64 after that.
2. An image epoch: `count` photo-like 500x375 JPEGs resized to 160x160 with a
   random flip, made by a Loader with the guard on and with it off,
   alternating, best of `repeats` each.

The share printed is (1) divided by the time of one sample in (2): the epoch
difference itself is below the noise of a shared machine. For scale, the
worst case is also timed: 20 000 rows of 32 floats with a one-line transform,
guard on and off, alternating, best of 10.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch  # noqa: F401  # the guard then also watches torch's default generator

import kloader
from kloader import augment
from kloader._core.global_random import GlobalRandomGuard

from _data import image_folder


def guard_cost(samples: int = 20_000) -> float:
    """Seconds per sample of the guard's checks."""
    guard = GlobalRandomGuard()
    start = time.perf_counter()
    for _ in range(samples):
        before = guard.snapshot()
        GlobalRandomGuard.moved(before)
    return (time.perf_counter() - start) / samples


def epoch_seconds(folder: kloader.ImageFolder, *, guarded: bool) -> float:
    loader = kloader.Loader(folder, batch_size=32, seed=0, transform=augment.RandomFlip(horizontal=True))
    if not guarded:
        loader._maker._guard = None
    start = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - start


def add_one(sample: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return sample + 1.0


def rows_epoch_seconds(rows: np.ndarray, *, guarded: bool) -> float:
    loader = kloader.Loader(rows, batch_size=256, seed=0, transform=add_one)
    if not guarded:
        loader._maker._guard = None
    start = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    per_check = guard_cost()
    with tempfile.TemporaryDirectory() as root:
        folder = kloader.ImageFolder(image_folder(root, args.count), image_size=160)
        epoch_seconds(folder, guarded=True)  # warm the page cache
        on, off = [], []
        for _ in range(args.repeats):
            on.append(epoch_seconds(folder, guarded=True))
            off.append(epoch_seconds(folder, guarded=False))
    per_sample = min(off) / args.count
    print(f"guard checks per sample:        {per_check * 1e6:7.2f} us")
    print(f"image sample (decode + flip):   {per_sample * 1e6:7.1f} us")
    print(f"guard share of an image epoch:  {100 * per_check / per_sample:7.2f} %")
    print(f"epoch, guard on / off (best of {args.repeats}): {min(on):.3f} s / {min(off):.3f} s")
    print(f"  all runs on:  {np.round(on, 3).tolist()}")
    print(f"  all runs off: {np.round(off, 3).tolist()}")
    rows = np.random.default_rng(0).random((20_000, 32), dtype=np.float32)
    rows_on, rows_off = [], []
    for _ in range(10):
        rows_on.append(rows_epoch_seconds(rows, guarded=True))
        rows_off.append(rows_epoch_seconds(rows, guarded=False))
    extra = (min(rows_on) - min(rows_off)) / min(rows_off)
    print(
        f"rows with a one-line transform, guard on / off: {min(rows_on):.3f} s / {min(rows_off):.3f} s ({100 * extra:+.1f} %)"
    )


if __name__ == "__main__":
    main()
