"""keras.distribution and tf.distribute: training over several devices trains each loader
epoch once, in order."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

SCRIPT = Path(__file__).parent / "scripts" / "data_parallel_fit.py"
TF_STRATEGY_SCRIPT = Path(__file__).parent / "scripts" / "tf_strategy_fit.py"


def run_script(script: Path, *args: str) -> dict[str, Any]:
    """Runs `script` in a fresh process (device counts are set before the framework starts);
    returns the JSON report it prints last."""
    result = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=300, env={**os.environ}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


@pytest.mark.backend("jax")
@pytest.mark.parametrize("num_workers", [0, 2])
def test_data_parallel_trains_each_epoch_once_split_across_devices(num_workers: int) -> None:
    """Over 4 CPU devices: the model receives exactly the loader's batches of epochs
    0, 1, 2 in order, each global batch of 8 sharded 4 ways, and the loader ends at epoch 3."""
    report = run_script(SCRIPT, str(num_workers))
    assert report["devices"] == 4
    assert report["epoch"] == 3
    assert len(report["received"]) == len(report["expected"]) == 18
    for got, want in zip(report["received"], report["expected"]):
        np.testing.assert_array_equal(np.asarray(got, dtype=np.float32), np.asarray(want, dtype=np.float32))
    # Inside the train step each global batch of 8 labels is split in 4 shards of 2.
    assert report["shardings"] in (["4 devices, shards of (2,)"], ["4 devices, shards of (2, 1)"]), report


@pytest.mark.backend("tensorflow")
@pytest.mark.parametrize(
    ("strategy", "source", "num_workers"),
    [("mirrored", "arrays", 0), ("one", "arrays", 0), ("mirrored", "transform", 2)],
)
def test_a_tf_distribute_strategy_trains_epoch_0_first(strategy: str, source: str, num_workers: int) -> None:
    """Under a strategy Keras builds the model from a pulled batch, and tf.data can pull
    that short pass to its end before Keras throws it away: fit(epochs=3) still trains the
    loader's epochs 0, 1, 2, every step the batch due (split across the replicas)."""
    report = run_script(TF_STRATEGY_SCRIPT, strategy, source, str(num_workers))
    assert report["received"] == report["expected"]
    assert report["epoch"] == 3
