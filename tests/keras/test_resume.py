"""Exact resume after a crash: a training process SIGKILLed mid-epoch and restarted
trains on the same sequence of samples as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_distributed import SCRIPT

import kloader

COMMON = ["--epochs", "3", "--num-samples", "19", "--batch-size", "4", "--seed", "5", "--num-workers", "2"]


def train(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), *COMMON, *extra],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ},
    )


def trained(out: Path) -> list[list[int]]:
    return [json.loads(line)["ids"] for line in out.read_text().splitlines()]


@pytest.mark.slow
def test_killed_run_resumes_with_the_uninterrupted_sequence(tmp_path: Path) -> None:
    """Killed after 7 batches (epoch 1, batch 2) with backups every 3 batches, the
    restarted run continues from the backup after batch 6: the batches up to the
    backup plus those of the restarted run equal an uninterrupted run's."""
    backup = tmp_path / "backup"
    uninterrupted = train(tmp_path / "reference.jsonl")
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]

    crashed = train(
        tmp_path / "first.jsonl", "--backup", str(backup), "--save-freq", "3", "--kill-after", "7"
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-3000:]
    state = json.loads((backup / kloader.BackupAndRestore.STATE_FILE).read_text())["kloader"]["loader"]
    assert (state["epoch"], state["batch"]) == (1, 1), (
        "the last backup was taken after batch 6 = epoch 1, batch 1"
    )
    assert len(trained(tmp_path / "first.jsonl")) == 7

    resumed = train(tmp_path / "second.jsonl", "--backup", str(backup), "--save-freq", "3")
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    reference = trained(tmp_path / "reference.jsonl")
    assert len(reference) == 15
    assert trained(tmp_path / "first.jsonl")[:6] + trained(tmp_path / "second.jsonl") == reference
    assert not backup.exists(), "the backup is deleted once training finishes"
