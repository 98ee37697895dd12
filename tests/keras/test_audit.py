"""`python -m kloader audit`: real fits in fresh processes, on the backend of this run."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest

from kloader._keras import audit

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).resolve().parent / "scripts"


def run_audit(target: str, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(SCRIPTS), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-m", "kloader", "audit", target, "--backends", keras.backend.backend()]
    return subprocess.run(
        [*command, "--epochs", "2", *extra],
        cwd=SCRIPTS,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def table_rows(stdout: str) -> list[list[str]]:
    backend = keras.backend.backend()
    return [line.split() for line in stdout.splitlines() if line.startswith(backend + " ")]


@pytest.mark.slow
@pytest.mark.backend("jax", "torch")
def test_textbook_pydataset_with_process_workers_fails_with_duplicates_counted() -> None:
    """The on_epoch_end-shuffling PyDataset with workers=2 duplicates samples: exit 1, counted, cause named."""
    result = run_audit("audit_data:textbook")
    assert result.returncode == 1, result.stdout + result.stderr
    rows = table_rows(result.stdout)
    assert len(rows) == 2  # one per epoch
    duplicated = [int(count) for row in rows for count in row[3].split("/")]
    missing = [int(count) for row in rows for count in row[4].split("/")]
    assert sum(duplicated) > 0 and duplicated == missing
    assert all(row[5] == "NO" for row in rows if row[3] != "0")
    assert "Result: FAIL" in result.stdout
    assert "shuffling in on_epoch_end with workers" in result.stdout
    assert "kloader.Loader(" in result.stdout  # the fix
    assert "run 2/2" in result.stderr  # progress


@pytest.mark.slow
def test_textbook_pydataset_without_workers_is_named_for_fits_unseeded_batch_reordering() -> None:
    """Without workers every epoch is a permutation, but fit reorders batches unseeded: runs differ, exit 1."""
    result = run_audit("audit_data:textbook_without_workers")
    assert result.returncode == 1, result.stdout + result.stderr
    rows = table_rows(result.stdout)
    assert all(row[3] == "0" and row[4] == "0" and row[5] == "yes" for row in rows)
    assert any(row[7] == "NO" for row in rows)
    assert "fit's own batch reordering" in result.stdout and "set_random_seed" in result.stdout


@pytest.mark.slow
def test_loader_with_two_workers_passes_on_this_backend() -> None:
    """A kloader.Loader with 2 workers gives every sample once per epoch, new orders, both runs alike: exit 0."""
    result = run_audit("audit_data:loader_with_workers")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = table_rows(result.stdout)
    assert [row[1:] for row in rows] == [
        ["0", "100", "0", "0", "yes", "-", "yes"],
        ["1", "100", "0", "0", "yes", "yes", "yes"],
    ]
    assert "Result: PASS" in result.stdout


@pytest.mark.slow
def test_loader_without_seed_fails_because_runs_differ() -> None:
    """seed=None draws a seed per run: the runs disagree, exit 1, and the fix says seed=."""
    result = run_audit("audit_data:loader_without_seed")
    assert result.returncode == 1, result.stdout + result.stderr
    assert all(row[5] == "yes" and row[7] == "NO" for row in table_rows(result.stdout))
    assert "seed=None" in result.stdout


@pytest.mark.slow
def test_a_function_that_fails_is_reported_with_its_error() -> None:
    """A target that does not exist: exit 2 with the reason, no report."""
    result = run_audit("audit_data:no_such_function")
    assert result.returncode == 2
    assert "no function 'no_such_function'" in result.stdout


@pytest.mark.slow
@pytest.mark.backend("jax", "torch")
def test_a_run_past_the_timeout_is_stopped_and_its_output_quoted() -> None:
    """A hang: the run is killed at --timeout, exit 2, and the message quotes what the run
    printed (its log is in a temporary folder that is gone when the audit returns)."""
    result = run_audit("audit_data:hangs", "--timeout", "20", "--runs", "1")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "did not finish within 20 s" in result.stdout
    assert "Its output ends with:" in result.stdout and "reading the data ..." in result.stdout


def test_what_cannot_be_replayed_is_refused_with_what_to_return() -> None:
    """A string is not an iterable of batches, and a tuple of scalars not arrays of rows."""
    from kloader._keras import audit_run

    with pytest.raises(SystemExit, match="Return what you pass to fit"):
        audit_run.describe("hello")
    with pytest.raises(SystemExit, match="which has no rows"):
        audit_run.read_reference(("a", "b"), audit_run.describe(("a", "b"))["kind"])


# ------------------------------------------------- analysis (pure logic)


def record(epochs: list[list[list[str]]], reference: list[str], **data: object) -> audit.Run:
    description = {"kind": "PyDataset", "type": "t.T", "workers": 1, "use_multiprocessing": False}
    description.update({"on_epoch_end": True, **data})
    return audit.analyse({"backend": "jax", "data": description, "reference": reference, "epochs": epochs})


def test_epoch_check_counts_duplicates_missing_and_unknown() -> None:
    """Counts are multiset differences against the data's own samples."""
    check = audit.check_epoch(collections.Counter("abcd"), [["a", "a"], ["b", "z"]])
    assert (check.samples, check.duplicated, check.missing, check.unknown) == (4, 1, 2, 1)
    assert not check.permutation
    assert audit.check_epoch(collections.Counter("abab"), [["b", "a"], ["a", "b"]]).permutation


def test_same_order_every_epoch_passes_with_a_warning() -> None:
    """A fixed seed per epoch replays one permutation: status 0, and the warning names the cause."""
    epoch = [["b", "a"], ["c", "d"]]
    runs = {"jax": [record([epoch, epoch], list("abcd")), record([epoch, epoch], list("abcd"))]}
    status, text = audit.diagnose(runs)
    assert status == 0
    assert "same order" in text and "fixed seed per epoch" in text


def test_same_batches_reordered_is_named() -> None:
    """Epochs that only reorder whole batches get the fit-reordering warning."""
    first, second = [["a", "b"], ["c", "d"]], [["c", "d"], ["a", "b"]]
    runs = {"jax": [record([first, second], list("abcd")), record([first, second], list("abcd"))]}
    status, text = audit.diagnose(runs)
    assert status == 0 and "same batches" in text


def test_samples_that_change_on_every_read_cannot_be_audited() -> None:
    """Augmented samples are not identities: status 2 and advice to audit without augmentation."""
    runs = {"jax": [record([[["x", "y"], ["z", "w"]]], list("abcd"))]}
    status, text = audit.diagnose(runs)
    assert status == 2 and "without its augmentation" in text


def test_samples_that_all_look_the_same_cannot_be_audited() -> None:
    """Identical rows leave the audit blind to order: status 2, not a PASS with a false warning."""
    epoch = [["a", "a"], ["a", "a"]]
    runs = {"jax": [record([epoch, epoch], list("aaaa")), record([epoch, epoch], list("aaaa"))]}
    status, text = audit.diagnose(runs)
    assert status == 2
    assert "all 4 samples have the same input values" in text
    assert "same order" not in text


def test_samples_that_repeat_another_are_counted_in_a_note() -> None:
    """Some repeated rows: the verdict stands, and a note says what the audit cannot see."""
    first, second = [["a", "b"], ["c", "a"]], [["c", "a"], ["a", "b"]]
    runs = {"jax": [record([first, second], list("abca")), record([first, second], list("abca"))]}
    status, text = audit.diagnose(runs)
    assert status == 0
    assert "1 of the 4 samples repeat the input values of another sample" in text
    distinct = {"jax": [record([[["a", "b"], ["c", "d"]]], list("abcd"))]}
    assert "repeat the input values" not in audit.diagnose(distinct)[1]
