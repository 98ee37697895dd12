"""keras.distribution: DataParallel over several devices trains each loader epoch once, in order."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).parent / "scripts" / "data_parallel_fit.py"


@pytest.mark.backend("jax")
@pytest.mark.parametrize("num_workers", [0, 2])
def test_data_parallel_trains_each_epoch_once_split_across_devices(num_workers: int) -> None:
    """Over 4 CPU devices: the model receives exactly the loader's batches of epochs
    0, 1, 2 in order, each global batch of 8 sharded 4 ways, and the loader ends at epoch 3."""
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(num_workers)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["devices"] == 4
    assert report["epoch"] == 3
    assert len(report["received"]) == len(report["expected"]) == 18
    for got, want in zip(report["received"], report["expected"]):
        np.testing.assert_array_equal(np.asarray(got, dtype=np.float32), np.asarray(want, dtype=np.float32))
    # Inside the train step each global batch of 8 labels is split in 4 shards of 2.
    assert report["shardings"] in (["4 devices, shards of (2,)"], ["4 devices, shards of (2, 1)"]), report
