"""Shared memory running out: a clear error, and every segment released.

Runs the real thing in a private, small /dev/shm (a tmpfs mounted in a mount
namespace of its own, through `unshare -m`), so that no other process on the
machine is touched; skipped with the reason where that is not allowed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent

SCRIPT = textwrap.dedent(
    f"""
    import os, sys
    sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / "tests")!r}]
    import numpy as np
    import kloader
    from utils import wait_until_a_worker_is_up

    class Big:
        def __len__(self):
            return 64

        def __getitem__(self, index):
            return np.full((256, 256, 3), index, np.float32)  # batches of 16: 12 MB

    loader = kloader.Loader(Big(), batch_size=16, seed=0, num_workers=2)
    passes = iter(loader)
    next(passes)  # made here (no shared memory) while the workers start
    wait_until_a_worker_is_up(loader)
    try:
        for _ in range(3):
            list(passes)
            passes = iter(loader)
        print("NO ERROR")
    except kloader.WorkerError as error:
        print("ERROR", str(error).replace("\\n", " "))
    print("LEFT WHILE RUNNING", sorted(os.listdir("/dev/shm")), flush=True)
    """
)


def private_shm_available() -> str:
    if shutil.which("unshare") is None:
        return "no `unshare` on this machine"
    probe = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /dev/shm"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        return f"cannot mount a private /dev/shm (needs root or user namespaces): {probe.stderr.strip()}"
    return ""


def test_full_shared_memory_gives_advice_and_leaves_nothing(tmp_path: Path) -> None:
    """Batches of 12 MB in an 8 MB /dev/shm: a WorkerError that says what to do, and no
    segment left in /dev/shm, neither after the error nor after the process exits."""
    reason = private_shm_available()
    if reason:
        pytest.skip(reason)
    script = tmp_path / "full.py"
    script.write_text(SCRIPT)
    command = (
        f"mount -t tmpfs -o size=8m tmpfs /dev/shm && {sys.executable} {script}; "
        "echo LEFT AFTER EXIT $(ls -A /dev/shm)"
    )
    result = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", command],
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = result.stdout.splitlines()
    error = next((line for line in lines if line.startswith("ERROR")), None)
    assert error is not None, result.stdout + result.stderr[-3000:]
    assert "Shared memory (/dev/shm" in error and "ran out" in error
    assert "smaller batch_size" in error and "--shm-size" in error and "fewer workers" in error
    assert "LEFT WHILE RUNNING []" in lines, result.stdout
    assert lines[-1].strip() == "LEFT AFTER EXIT", result.stdout
