"""What the user defines in `__main__` works in workers, wherever `__main__` comes from.

A transform and a dataset class defined in a script without a guard, in
`python -c` and on standard input: with num_workers=2 under the default start
method they reach the workers by value, the workers never run the script, and
the batches are bit-identical to num_workers=0.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kloader._workers import options

# No `if __name__ == "__main__":` guard, on purpose.
PROGRAM = textwrap.dedent(
    """
    import json, os, time
    import numpy as np
    import kloader

    print("top level ran", flush=True)

    class Squares:
        def __len__(self):
            return 40

        def __getitem__(self, index):
            return np.array([index, index * index], dtype=np.float32)

    def noisy(sample, rng):
        return sample + rng.normal(size=2).astype(np.float32), np.int64(os.getpid())

    reference = kloader.Loader(Squares(), batch_size=4, seed=3, transform=noisy)
    loader = kloader.Loader(Squares(), batch_size=4, seed=3, transform=noisy, num_workers=2)
    deadline = time.monotonic() + 90
    from_workers = epochs = 0
    # The main process makes batches until a worker is up: go on until workers made some.
    while from_workers < 10 and time.monotonic() < deadline:
        for got, want in zip(list(loader), list(reference)):
            assert got[0].tobytes() == want[0].tobytes(), (epochs, got, want)
            from_workers += int(got[1][0] != os.getpid())
        epochs += 1
    loader.close()
    print(json.dumps({"from_workers": from_workers, "epochs": epochs}), flush=True)
    """
)


def check(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines.count("top level ran") == 1, "a worker ran the program again"
    outcome = json.loads(lines[-1])
    assert outcome["from_workers"] >= 10, outcome


@pytest.fixture(autouse=True)
def _default_is_forkserver() -> None:
    assert options.default_start_method() == "forkserver"


def test_a_script_without_a_main_guard(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(PROGRAM)
    check(subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=180))


def test_python_dash_c(tmp_path: Path) -> None:
    check(
        subprocess.run(
            [sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=180, cwd=tmp_path
        )
    )


def test_standard_input(tmp_path: Path) -> None:
    check(
        subprocess.run(
            [sys.executable, "-"], input=PROGRAM, capture_output=True, text=True, timeout=180, cwd=tmp_path
        )
    )
