"""When worker processes start: the fork server when a loader is made, the workers on its first batch.

A fresh fork server imports torch and kloader before it forks a worker (a
second or more of CPU). A loader with workers starts it when it is made, before
this process imports torch itself, so that those imports overlap with this
process's own import of torch and with building and compiling the model; the
workers themselves start only when a batch is asked for, and never again for a
pass closed meanwhile. The cases run by `run` use a fresh interpreter, where no
fork server runs yet.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from typing import Any

import keras
import numpy as np
import pytest

import kloader

from utils import IdDataset

PROGRAM = textwrap.dedent(
    """
    import importlib.abc, json, sys, time
    import numpy as np
    import psutil
    import kloader

    def processes():
        names = []
        for child in psutil.Process().children(recursive=True):
            line = " ".join(child.cmdline())
            names.append("fork server" if "forkserver" in line else "tracker" if "resource_tracker" in line else line)
        return sorted(names)

    at_torch_import = []  # the processes there when this process first imports torch

    class WatchTorchImport(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "torch" and not at_torch_import:
                at_torch_import.append(processes())
            return None

    sys.meta_path.insert(0, WatchTorchImport())

    class Rows:
        def __len__(self):
            return 32

        def __getitem__(self, index):
            return np.full(2, index, dtype=np.float32)

    case = sys.argv[1]
    kloader.Loader  # imports Keras, which on the torch backend imports torch
    torch_before_loader = "torch" in sys.modules
    x = np.arange(64, dtype=np.float32).reshape(32, 2)
    if case == "map source, 2 workers":
        loader = kloader.Loader(Rows(), batch_size=4, num_workers=2)
    elif case == "no workers":
        loader = kloader.Loader(Rows(), batch_size=4, num_workers=0)
    elif case == "arrays gathered here":
        loader = kloader.Loader(x, batch_size=4, num_workers=2)
    elif case == "spawn":
        loader = kloader.Loader(Rows(), batch_size=4, num_workers=2, start_method="spawn")
    made = processes()
    batches = [b.tobytes() for b in loader]
    pids = loader.worker_pids
    loader.close()
    print(json.dumps({
        "made": made, "workers": len(pids), "batches": len(batches),
        "torch_before_loader": torch_before_loader,
        "at_torch_import": at_torch_import[0] if at_torch_import else None,
    }))
    """
)


def run(case: str) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM, case], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outcome: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return outcome


@pytest.mark.slow
def test_a_loader_with_workers_starts_the_fork_server_when_made_and_its_workers_on_the_first_batch() -> None:
    outcome = run("map source, 2 workers")
    assert "fork server" in outcome["made"], outcome  # before any batch was asked for
    assert len(outcome["made"]) <= 2, outcome  # the server (and Python's resource tracker): no worker yet
    assert outcome["workers"] == 2 and outcome["batches"] == 8


@pytest.mark.slow
def test_the_fork_server_starts_before_this_process_imports_torch() -> None:
    """The server imports torch while this process does: when this process first
    imports torch, the server already runs. On the torch backend Keras has
    imported torch before any loader exists, and there is nothing to overlap."""
    outcome = run("map source, 2 workers")
    if keras.config.backend() == "torch":
        assert outcome["torch_before_loader"], outcome
        assert outcome["at_torch_import"] == [], outcome  # imported by Keras, before the loader
    else:
        assert not outcome["torch_before_loader"], outcome
        assert "fork server" in outcome["at_torch_import"], outcome


@pytest.mark.slow
@pytest.mark.parametrize("case", ["no workers", "arrays gathered here", "spawn"])
def test_loaders_that_fork_no_worker_from_the_server_start_no_process_when_made(case: str) -> None:
    outcome = run(case)
    assert outcome["made"] == [], outcome
    assert outcome["batches"] == 8


class _HeldLoader(kloader.Loader):
    """Holds the next batch asked for between the pass's check and the worker start,
    where a framework's read-ahead thread can be when its Keras call ends."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.hold_next = False
        self.held = threading.Event()
        self.go_on = threading.Event()

    def _task(self, epoch: int, batch: int) -> Any:
        if self.hold_next:
            self.hold_next = False
            self.held.set()
            self.go_on.wait(60)
        return super()._task(epoch, batch)


def test_a_batch_asked_for_as_its_pass_closes_starts_no_worker_again() -> None:
    """The end of a Keras call closes the call's passes, then stops the workers. A
    thread that was already asking one of those passes for a batch (tf.data's
    prefetch, say) gets it made in this process; no worker starts again after the
    call, where before the workers restarted and stayed up, idle."""
    loader = _HeldLoader(IdDataset(16), batch_size=4, seed=3, num_workers=2)
    passing = iter(loader)
    loader.hold_next = True
    got: list[Any] = []
    asking = threading.Thread(target=lambda: got.append(next(passing)))
    asking.start()
    assert loader.held.wait(60)
    passing.close()  # what the call's end does first (KerasFeed._call_ended) ...
    loader.close()  # ... and then, after the last call (KerasCalls' on_last_end)
    loader.go_on.set()
    asking.join(60)
    assert got, "the asking thread got no batch"
    assert loader.worker_pids == []
    expected = loader.batch(0, epoch=0)
    np.testing.assert_array_equal(got[0][0], expected[0])
    np.testing.assert_array_equal(got[0][1], expected[1])
