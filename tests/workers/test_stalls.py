"""A worker that holds one batch too long: named, with its epoch, batch and samples."""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import numpy as np
import pytest

import kloader
from kloader._workers import processes

import image_files as images
from utils import IdDataset, assert_batches_equal, wait_until_a_worker_is_up


class HangOn:
    """Sleeps `seconds` on sample `index`, in a worker process only (the main process
    makes batches too while the workers start)."""

    def __init__(self, index: int, seconds: float):
        self.index, self.seconds, self.main = index, seconds, os.getpid()

    def __call__(self, sample: tuple[np.ndarray, np.float32], rng: np.random.Generator) -> object:
        if sample[1] == self.index and os.getpid() != self.main:
            time.sleep(self.seconds)
        return sample


def started(loader: kloader.Loader) -> object:
    """A pass over `loader` whose first batch is out, with a worker up."""
    passes = iter(loader)
    next(passes)
    wait_until_a_worker_is_up(loader)
    return passes


def test_timeout_names_the_worker_epoch_batch_and_samples() -> None:
    """timeout=2 and a sample that takes 10 minutes: a WorkerError within a few seconds that
    names the worker, the epoch, the batch and its samples; no worker is left."""
    loader = kloader.Loader(
        IdDataset(40), batch_size=4, shuffle=False, transform=HangOn(30, 600), num_workers=2, timeout=2
    )
    passes = started(loader)
    start = time.monotonic()
    with pytest.raises(kloader.WorkerError) as error:
        list(passes)
    waited = time.monotonic() - start
    assert waited < 10, f"took {waited:.1f} s"
    message = str(error.value)
    assert "has been making batch 7 of epoch 0 (samples [28, 29, 30, 31])" in message, message
    assert "longer than timeout=2 s" in message and "kloader worker" in message
    assert loader.worker_pids == []


class HangAnywhere(HangOn):
    """Sleeps `seconds` on sample `index`, in whichever process makes it."""

    def __call__(self, sample: tuple[np.ndarray, np.float32], rng: np.random.Generator) -> object:
        if sample[1] == self.index:
            time.sleep(self.seconds)
        return sample


def test_with_a_timeout_the_first_batch_too_is_watched() -> None:
    """A stall in the first batch, which this process made itself while the workers started
    (where nothing could stop it: the loop blocked for as long as the sample took): with a
    timeout the workers make every batch, and the stall is a WorkerError within seconds."""
    loader = kloader.Loader(
        IdDataset(40), batch_size=4, shuffle=False, transform=HangAnywhere(1, 60), num_workers=2, timeout=2
    )
    start = time.monotonic()
    with pytest.raises(kloader.WorkerError, match=r"making batch 0 of epoch 0 \(samples \[0, 1, 2, 3\]\)"):
        next(iter(loader))
    waited = time.monotonic() - start
    assert waited < 30, f"took {waited:.1f} s"
    assert loader.worker_pids == []


def test_a_stalled_image_batch_names_its_files(tmp_path: Path) -> None:
    """For an image folder, the stall error also names the files of the samples held."""
    paths = [str(images.write_pattern(tmp_path / f"{i:02d}.png", size=(8, 6), seed=i)) for i in range(16)]
    folder = kloader.ImageFolder(paths=paths, labels=list(range(16)), image_size=(4, 4), verbose=False)
    loader = kloader.Loader(
        folder, batch_size=4, shuffle=False, transform=HangOn(10, 600), num_workers=2, timeout=2
    )
    passes = started(loader)
    with pytest.raises(kloader.WorkerError) as error:
        list(passes)
    message = str(error.value)
    assert "(samples [8, 9, 10, 11], files [" in message, message
    assert all(path in message for path in paths[8:12])
    assert loader.worker_pids == []


def test_no_timeout_warns_once_and_keeps_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    """timeout=None: a batch held past the (shortened) warning delay gives one warning with
    the same details, and the loop then gets every batch, the same as num_workers=0."""
    monkeypatch.setattr(processes, "DEFAULT_STALL_WARNING_S", 1.0)
    expected = list(kloader.Loader(IdDataset(40), batch_size=4, shuffle=False))
    loader = kloader.Loader(
        IdDataset(40), batch_size=4, shuffle=False, transform=HangOn(30, 4), num_workers=2
    )
    passes = started(loader)
    with pytest.warns(
        RuntimeWarning, match=r"making batch 7 of epoch 0 \(samples \[28, 29, 30, 31\]\)"
    ) as warned:
        got = [expected[0], *passes]
    assert len([w for w in warned if "making batch" in str(w.message)]) == 1
    assert_batches_equal(got, expected)
    loader.close()


@pytest.mark.parametrize("timeout", [0, -1, "60", True, float("nan")])
def test_timeout_must_be_a_positive_number(timeout: object) -> None:
    with pytest.raises(ValueError, match="`timeout` must be None or a number of seconds > 0"):
        kloader.Loader(IdDataset(4), batch_size=2, num_workers=1, timeout=timeout)  # type: ignore[arg-type]


def test_prefetch_is_bounded_by_the_open_files_allowed() -> None:
    """A prefetch whose batches could not all be held open is refused, naming the limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        pytest.skip("no limit on open files here")
    with pytest.raises(ValueError, match=r"`prefetch` must be at most \d+ with num_workers=2.*ulimit -n"):
        kloader.Loader(IdDataset(4), batch_size=2, num_workers=2, prefetch=soft)
    kloader.Loader(IdDataset(4), batch_size=2, num_workers=2, prefetch=2)
    kloader.Loader(IdDataset(4), batch_size=2, num_workers=0, prefetch=soft)  # no workers: nothing held
