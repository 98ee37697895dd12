"""The first epoch as a user meets it: worker start included, batch by batch.

    python benchmarks/first_epoch.py               (3 runs, each in a fresh process)
    python benchmarks/first_epoch.py --runs 5 --workers 2

Workload: an image folder of 1200 photo-like JPEGs of 500x375 (generated once,
seeded, under data/benchmarks/), decoded and resized to 128x128, randomly
flipped, batches of 32, `--workers` worker processes with the default start
method. Each run is a fresh Python process (a cold fork server, as in a new
script): it builds the loader, then times every batch of epoch 0 and of
epoch 1 from the moment it asks for the first one.

Printed per run: the time to the first batch, the largest gap between two
batches of epoch 0, epoch 0's and epoch 1's rates (images/s) and their ratio,
and every gap of epoch 0. Then the medians over the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

COUNT = 1200
BATCH_SIZE = 32
IMAGE_SIZE = (128, 128)


def one_run(root: Path, workers: int) -> dict[str, object]:
    import kloader
    from kloader import augment

    folder = kloader.ImageFolder(root, image_size=IMAGE_SIZE)
    loader = kloader.Loader(
        folder,
        batch_size=BATCH_SIZE,
        seed=0,
        transform=augment.RandomFlip(horizontal=True),
        num_workers=workers,
    )
    epochs = []
    for _ in range(2):
        start = time.perf_counter()
        arrivals = []
        for _batch in loader:
            arrivals.append(time.perf_counter() - start)
        epochs.append(arrivals)
    loader.close()
    first, second = epochs
    gaps = [b - a for a, b in zip([0.0, *first], first)]
    rate = [COUNT / epoch[-1] for epoch in epochs]
    return {
        "first_batch_s": first[0],
        "max_gap_s": max(gaps),
        "worst_gaps_s": sorted(gaps, reverse=True)[:5],
        "gaps_s": gaps,
        "epoch0_img_s": rate[0],
        "epoch1_img_s": rate[1],
        "epoch0_over_epoch1": rate[0] / rate[1],
        "epoch0_s": first[-1],
        "epoch1_s": second[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--root", default=str(HERE.parent / "data" / "benchmarks" / "first_epoch"))
    args = parser.parse_args()
    root = Path(args.root)
    if args.one:
        print(json.dumps(one_run(root, args.workers)))
        return

    import _data

    _data.image_folder(root, COUNT)
    results = []
    for run in range(args.runs):
        output = subprocess.run(
            [sys.executable, __file__, "--one", "--workers", str(args.workers), "--root", str(root)],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        ).stdout
        result = json.loads(output.strip().splitlines()[-1])
        results.append(result)
        gaps = " ".join(f"{g * 1000:.0f}" for g in result["gaps_s"])
        print(
            f"run {run + 1}: first batch {result['first_batch_s']:.3f} s, largest gap "
            f"{result['max_gap_s']:.3f} s, epoch 0 {result['epoch0_img_s']:.0f} img/s, epoch 1 "
            f"{result['epoch1_img_s']:.0f} img/s (ratio {result['epoch0_over_epoch1']:.2f})\n"
            f"  epoch 0 gaps (ms): {gaps}",
            flush=True,
        )
    print(f"medians over {len(results)} runs, {args.workers} workers:")
    for key in ("first_batch_s", "max_gap_s", "epoch0_img_s", "epoch1_img_s", "epoch0_over_epoch1"):
        print(f"  {key}: {statistics.median(float(r[key]) for r in results):.3f}")  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
