"""Faults: killed workers, failing samples, interrupts, long runs and start methods.

Nothing may hang, leak a process or a shared-memory segment, or fail silently.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import keras
import numpy as np
import psutil
import pytest

import kloader

from keras_utils import IdRecorder, id_model
from utils import IdDataset, assert_batches_equal, jitter, slow_jitter, wait_until_a_worker_is_up

HELPERS = ("multiprocessing.forkserver", "multiprocessing.resource_tracker")


def worker_processes() -> set[int]:
    """Children of this process, leaving out Python's fork server and resource tracker."""
    children = psutil.Process().children(recursive=True)
    return {
        c.pid for c in children if not any(h in " ".join(c.cmdline()) for h in HELPERS) and c.is_running()
    }


def shared_memory_segments() -> set[str]:
    """Entries of /dev/shm, leaving out those other processes on the machine have mapped
    (other test runs may share this machine); a leaked entry of ours is mapped by nobody
    else."""
    if not os.path.isdir("/dev/shm"):
        return set()
    ours = {os.getpid()} | {child.pid for child in psutil.Process().children(recursive=True)}
    theirs: set[str] = set()
    for process in psutil.process_iter():
        if process.pid in ours:
            continue
        try:
            theirs |= {
                m.path.rsplit("/", 1)[-1] for m in process.memory_maps() if m.path.startswith("/dev/shm/")
            }
        except (psutil.Error, OSError):
            continue
    return set(os.listdir("/dev/shm")) - theirs


def wait_gone(pids: list[int], timeout: float = 10) -> list[int]:
    _, alive = psutil.wait_procs([psutil.Process(p) for p in pids if psutil.pid_exists(p)], timeout=timeout)
    return [p.pid for p in alive]


class KillWorker(keras.callbacks.Callback):
    """SIGKILLs one worker of `loader` after batch 2."""

    def __init__(self, loader: kloader.Loader):
        super().__init__()
        self.loader = loader
        self.killed_at = 0.0

    def on_train_batch_end(self, batch: int, logs: object = None) -> None:
        if batch == 2 and not self.killed_at:
            os.kill(self.loader.worker_pids[0], signal.SIGKILL)
            self.killed_at = time.monotonic()


def test_killed_worker_fails_the_training_step_within_10_seconds() -> None:
    """A worker SIGKILLed mid-epoch: fit raises an error naming the worker, the
    signal and what to do, within 10 s, and no worker is left."""
    loader = kloader.Loader(IdDataset(400), batch_size=8, seed=0, transform=slow_jitter, num_workers=2)
    killer = KillWorker(loader)
    recorder = IdRecorder()
    with pytest.raises(Exception, match="A kloader worker process died") as error:
        id_model(recorder).fit(loader, epochs=1, verbose=0, callbacks=[recorder, killer])
    waited = time.monotonic() - killer.killed_at
    assert waited < 10, f"took {waited:.1f} s"
    message = str(error.value)
    assert "killed by SIGKILL" in message and "out-of-memory killer" in message
    assert loader.worker_pids == []


def fail_on_17(sample: tuple[np.ndarray, np.float32], rng: np.random.Generator) -> object:
    if sample[1] == 17:
        raise OSError("cannot read the label file for 17")
    return sample


def test_sample_error_inside_fit_names_the_sample_and_stops_workers() -> None:
    """A transform raising in a worker during fit: the error names sample 17 and keeps
    the worker's traceback; every worker exits."""
    loader = kloader.Loader(IdDataset(40), batch_size=8, seed=0, transform=fail_on_17, num_workers=2)
    with pytest.raises(Exception, match=r"failed on sample 17 \(epoch 0\) with OSError") as error:
        id_model(IdRecorder()).fit(loader, epochs=1, verbose=0)
    assert "fail_on_17" in str(error.value), "the worker's traceback is part of the message"
    assert loader.worker_pids == []
    assert worker_processes() == set()


class Interrupt(keras.callbacks.Callback):
    def __init__(self, loader: kloader.Loader, error: type[BaseException]):
        super().__init__()
        self.loader, self.error = loader, error
        self.pids: list[int] = []

    def on_train_batch_end(self, batch: int, logs: object = None) -> None:
        if batch == 3:
            self.pids = self.loader.worker_pids
            raise self.error("stop")


@pytest.mark.parametrize("error", [KeyboardInterrupt, ValueError])
def test_interrupted_fit_leaves_no_process_and_no_shared_memory(error: type[BaseException]) -> None:
    """KeyboardInterrupt or any exception inside fit: once it is handled, no worker
    process and no /dev/shm segment is left."""
    gc.collect()  # what earlier tests left for the collector is not this test's
    segments_before = shared_memory_segments()
    loader = kloader.Loader(IdDataset(200), batch_size=4, seed=1, transform=jitter, num_workers=2)
    interrupt = Interrupt(loader, error)
    with contextlib.suppress(error):
        id_model(IdRecorder()).fit(loader, epochs=2, verbose=0, callbacks=[interrupt])
    assert len(interrupt.pids) == 2
    assert wait_gone(interrupt.pids) == []
    assert loader.worker_pids == []
    assert worker_processes() == set()
    deadline = time.monotonic() + 5  # a leak stays; another process's passing entry goes
    while not shared_memory_segments() <= segments_before and time.monotonic() < deadline:
        time.sleep(0.1)
    left = shared_memory_segments() - segments_before
    assert not left, f"new /dev/shm entries were left behind: {sorted(left)}"


@pytest.mark.slow
def test_a_fit_run_again_at_once_after_ctrl_c_gets_working_workers(tmp_path: Path) -> None:
    """Ctrl-C in a terminal (or Jupyter's interrupt) sends SIGINT to the whole process group,
    the workers included, in the middle of fit; the script catches it and fits again at once.
    The second fit trains on new workers. Before, it could inherit the workers the same
    SIGINT had stopped, and failed with a WorkerError blaming the transform."""
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, signal, time

            # What Python in a terminal has; a run in the background (CI) inherits SIGINT ignored.
            signal.signal(signal.SIGINT, signal.default_int_handler)
            import keras, numpy as np, kloader

            x = np.random.default_rng(0).random((400, 8)).astype("float32")
            y = np.arange(400) % 2

            def jitter(sample, rng):
                return sample[0] + np.float32(rng.normal(scale=0.01)), sample[1]

            class CtrlC(keras.callbacks.Callback):
                def on_train_batch_end(self, batch, logs=None):
                    if batch == 3:
                        os.killpg(os.getpgrp(), signal.SIGINT)
                        time.sleep(10)  # the KeyboardInterrupt comes here

            loader = kloader.Loader(x, y, batch_size=16, seed=3, transform=jitter, num_workers=2)
            model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)])
            model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            try:
                model.fit(loader, epochs=2, verbose=0, callbacks=[CtrlC()])
            except KeyboardInterrupt:
                print("interrupted")
            model.fit(loader, epochs=1, verbose=0)
            print("fit again: loader at epoch", loader.epoch)
            """
        )
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, start_new_session=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines() == ["interrupted", "fit again: loader at epoch 1"], result.stderr[
        -3000:
    ]


@pytest.mark.slow
def test_memory_and_file_descriptors_stay_flat_over_30_epochs() -> None:
    """30 epochs with 2 workers: main and worker memory grow < 5 %, open files do not grow."""
    x = np.random.default_rng(0).integers(0, 255, size=(512, 32, 32, 3), dtype=np.uint8)
    loader = kloader.Loader((x, np.arange(512)), batch_size=32, seed=2, transform=jitter_image, num_workers=2)
    main = psutil.Process()
    samples: list[tuple[int, list[int], int]] = []
    first_pass = iter(loader)
    next(first_pass)  # made here while the workers start: the measurement starts once they are up
    wait_until_a_worker_is_up(loader)
    list(first_pass)
    for epoch in range(30):
        for _ in loader:
            pass
        workers = [psutil.Process(p) for p in loader.worker_pids]
        samples.append((main.memory_info().rss, [w.memory_info().rss for w in workers], main.num_fds()))
        if epoch == 0:
            first_workers = loader.worker_pids
    assert loader.worker_pids == first_workers, "the same workers served all 30 epochs"
    warm, last = samples[4], samples[-1]
    assert last[0] < warm[0] * 1.05, f"main process grew from {warm[0]} to {last[0]} bytes"
    for before, after in zip(warm[1], last[1]):
        assert after < before * 1.05, f"a worker grew from {before} to {after} bytes"
    # Out-of-order results torch holds for a moment keep a descriptor per array:
    # at most num_workers * prefetch batches of 2 arrays. A leak of one descriptor
    # per batch would add 16 per epoch.
    in_flight = 2 * 2 * 2
    assert max(s[2] for s in samples[20:]) <= max(s[2] for s in samples[2:10]) + in_flight, "open files grew"
    loader.close()


def jitter_image(
    sample: tuple[np.ndarray, np.int64], rng: np.random.Generator
) -> tuple[np.ndarray, np.int64]:
    image, label = sample
    return np.flip(image, axis=1) if rng.random() < 0.5 else image, label


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called:RuntimeWarning")
@pytest.mark.parametrize("start_method", ["fork", "forkserver", "spawn"])
def test_start_methods_give_identical_batches(start_method: str) -> None:
    """fork, forkserver and spawn workers make bit-identical batches."""
    reference = kloader.Loader(IdDataset(30), batch_size=4, seed=3, transform=jitter)
    expected = [b for _ in range(2) for b in reference]
    with kloader.Loader(
        IdDataset(30), batch_size=4, seed=3, transform=jitter, num_workers=2, start_method=start_method
    ) as loader:
        assert_batches_equal([b for _ in range(2) for b in loader], expected, what=start_method)


def run_script(tmp_path: Path, source: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(source))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_script_without_main_guard_gets_a_hint_under_spawn(tmp_path: Path) -> None:
    """Under spawn, a script that starts workers at import time fails as soon as its workers
    fail to start (not after the 200 s of work it asked for), with the fix."""
    result = run_script(
        tmp_path,
        """
        import time
        import numpy as np
        import kloader

        def double(sample, rng):
            time.sleep(0.002)
            return sample * 2

        # Far more work (200 s) than the main process can do while the workers start:
        # it makes batches until they fail, then reports it.
        loader = kloader.Loader(np.arange(100_000.0)[:, None], batch_size=4, transform=double,
                                num_workers=2, start_method="spawn")
        print(len(list(loader)))
        """,
    )
    assert result.returncode != 0
    assert "`if __name__ == '__main__':` guard" in result.stderr
    assert "kloader.WorkerError" in result.stderr or "WorkerError" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
def test_workers_exit_when_the_main_process_is_killed(tmp_path: Path, start_method: str) -> None:
    """The main process SIGKILLed: its workers (and the fork server) exit within 10 s."""
    tests = str(Path(__file__).parent.parent)
    result = run_script(
        tmp_path,
        f"""
        import json, os, signal, sys
        sys.path.insert(0, {tests!r})
        import multiprocessing.forkserver
        import kloader
        from utils import IdDataset, jitter

        if __name__ == "__main__":
            loader = kloader.Loader(IdDataset(40), batch_size=4, transform=jitter, num_workers=2,
                                    start_method={start_method!r})
            next(iter(loader))
            server = multiprocessing.forkserver._forkserver._forkserver_pid
            print(json.dumps(loader.worker_pids + ([server] if server else [])), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        """,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    pids = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(pids) >= 2
    assert wait_gone(pids) == []
