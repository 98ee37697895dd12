"""`python -m kloader audit MODULE:FUNCTION`: does `model.fit` get every sample once per epoch?

`FUNCTION()` returns what the user passes to `fit` (their own
`keras.utils.PyDataset`, a `kloader.Loader`, arrays with targets, ...). For each
backend, twice, a fresh process (`kloader._keras.audit_run`) trains a
throw-away model on it and records every sample the model received, identified
by the content of its input row. This module compares the records: per epoch,
samples duplicated and missing, whether the epoch is a permutation, whether
epochs differ, whether the two runs agree and whether backends agree; then it
names the likely cause and the fix.

This side never imports Keras: each backend runs in its own process, with
`KERAS_BACKEND` set.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

BACKENDS = ("tensorflow", "jax", "torch")
_UNIDENTIFIED = 0.5  # more unknown samples than this share: content is not an identity


def installed_backends() -> list[str]:
    """The Keras backends whose framework can be imported here (without importing it)."""
    return [name for name in BACKENDS if importlib.util.find_spec(name) is not None]


# -------------------------------------------------------------- analysis


@dataclasses.dataclass
class EpochCheck:
    """What one epoch of one run got, against the samples the data holds."""

    samples: int
    duplicated: int
    missing: int
    unknown: int
    order: list[str]
    batches: list[frozenset[str]]

    @property
    def permutation(self) -> bool:
        return self.duplicated == 0 and self.missing == 0 and self.unknown == 0


def check_epoch(reference: collections.Counter[str], batches: list[list[str]]) -> EpochCheck:
    got = collections.Counter(sample for batch in batches for sample in batch)
    unknown = sum(count for sample, count in got.items() if sample not in reference)
    known = collections.Counter({sample: count for sample, count in got.items() if sample in reference})
    return EpochCheck(
        samples=sum(got.values()),
        duplicated=sum((known - reference).values()),
        missing=sum((reference - known).values()),
        unknown=unknown,
        order=[sample for batch in batches for sample in batch],
        batches=[frozenset(batch) for batch in batches],
    )


@dataclasses.dataclass
class Run:
    """One fit on one backend: the data's description and each epoch's check."""

    backend: str
    data: dict[str, Any]
    num_reference: int
    epochs: list[EpochCheck]
    distinct: int  # how many of the data's samples differ in content: what the audit can tell apart


def analyse(result: dict[str, Any]) -> Run:
    reference = collections.Counter(result["reference"])
    epochs = [check_epoch(reference, batches) for batches in result["epochs"]]
    distinct = len(reference)
    return Run(result["backend"], result["data"], len(result["reference"]), epochs, distinct)


def runs_agree(first: Run, second: Run) -> bool:
    return [e.order for e in first.epochs] == [e.order for e in second.epochs]


# ---------------------------------------------------------------- report


def _yes(flag: bool) -> str:
    return "yes" if flag else "NO"


def describe_data(data: dict[str, Any], num_samples: int) -> str:
    kind = data["kind"]
    text = f"{data['type']} ({kind}, {num_samples} samples"
    if "num_batches" in data:
        text += f" in {data['num_batches']} batches"
    if kind == "PyDataset":
        text += f", workers={data['workers']}, use_multiprocessing={data['use_multiprocessing']}"
        if data["on_epoch_end"]:
            text += ", overrides on_epoch_end"
    if kind == "kloader.Loader":
        text += f", num_workers={data['num_workers']}, shuffle={data['shuffle']}"
    return text + ")"


def table(runs: dict[str, list[Run]]) -> str:
    """One row per backend and epoch; numbers of the two runs as `first/second` when they differ."""
    header = ("backend", "epoch", "samples", "duplicated", "missing", "permutation", "differs", "runs agree")
    rows = [header]
    for backend, backend_runs in runs.items():
        for e in range(len(backend_runs[0].epochs)):
            checks = [run.epochs[e] for run in backend_runs if e < len(run.epochs)]

            def numbers(field: str, checks: list[EpochCheck] = checks) -> str:
                values = [str(getattr(check, field)) for check in checks]
                return values[0] if len(set(values)) == 1 else "/".join(values)

            differs = (
                "-"
                if e == 0
                else _yes(all(run.epochs[e].order != run.epochs[e - 1].order for run in backend_runs))
            )
            agree = (
                "-" if len(checks) < 2 else _yes(all(check.order == checks[0].order for check in checks[1:]))
            )
            rows.append(
                (
                    backend,
                    str(e),
                    numbers("samples"),
                    numbers("duplicated"),
                    numbers("missing"),
                    _yes(all(check.permutation for check in checks)),
                    differs,
                    agree,
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows
    )


def diagnose(runs: dict[str, list[Run]]) -> tuple[int, str]:
    """(exit status, the paragraph that says what is wrong and what to do)."""
    all_runs = [run for backend_runs in runs.values() for run in backend_runs]
    data = all_runs[0].data
    kind = data["kind"]
    worst_unknown = max(
        (check.unknown / max(check.samples, 1) for run in all_runs for check in run.epochs), default=0.0
    )
    if worst_unknown > _UNIDENTIFIED:
        return 2, (
            "Cannot identify the samples: most of what the model received differs from what indexing "
            "the data returns, so the samples change every time they are read (random augmentation, "
            "noise, a generator that yields new data). audit identifies samples by their input values; "
            "audit the same data without its augmentation (e.g. transform=None, or a flag in your "
            "PyDataset), which has the same order."
        )
    first = all_runs[0]
    if first.distinct == 1 and first.num_reference > 1:
        return 2, (
            f"Cannot audit the order: all {first.num_reference} samples have the same input values, "
            "and audit tells samples apart by their input values. Audit the real data, or give each "
            "sample distinct inputs (e.g. its index) in a copy made for the audit."
        )
    permutations = all(check.permutation for run in all_runs for check in run.epochs)
    agree = all(
        runs_agree(backend_runs[0], other) for backend_runs in runs.values() for other in backend_runs[1:]
    )
    workers = kind == "PyDataset" and (data["workers"] > 1 or data["use_multiprocessing"])
    parts: list[str] = []
    if not permutations:
        duplicated = sum(check.duplicated for run in all_runs for check in run.epochs)
        missing = sum(check.missing for run in all_runs for check in run.epochs)
        what = (
            f"The model did not get every sample exactly once per epoch ({duplicated} duplicated and "
            f"{missing} missing over all runs and epochs)."
        )
        if workers and data["on_epoch_end"]:
            parts.append(
                f"{what} Likely cause: shuffling in on_epoch_end with workers. Keras's enqueuer "
                "prefetches batches of the next epoch before on_epoch_end has reshuffled (and worker "
                "processes keep a copy of the old order), so batches from two orders mix: some "
                "samples come twice, as many never, different ones every run. (With Keras alone, "
                "workers=1 and use_multiprocessing=False stop the mixing, at the cost of speed.)"
            )
        elif workers:
            parts.append(
                f"{what} Likely cause: state that __getitem__ reads changes while Keras's workers run "
                "(they prefetch across epoch ends and worker processes hold copies)."
            )
        elif kind == "kloader.Loader":
            parts.append(
                f"{what} A kloader.Loader gives a permutation per epoch unless drop_remainder=True or "
                "steps_per_epoch leaves samples out; check those."
            )
        else:
            parts.append(
                f"{what} Likely cause: __getitem__ does not cover each sample once per epoch: check "
                "__len__ and the index arithmetic of the last batch, and that the order is not changed "
                "in the middle of an epoch (drop_remainder or steps_per_epoch also leave samples out)."
            )
    if not agree and (permutations or not workers):
        if kind == "kloader.Loader" and len({run.data["seed"] for run in all_runs}) > 1:
            parts.append(
                "The two runs got different orders: the Loader had another seed in each run "
                f"({', '.join(str(run.data['seed']) for run in all_runs)}), as seed=None draws one from "
                "the OS. Pass seed=42 (any int) for a reproducible order."
            )
        elif kind in ("arrays", "fit arguments"):
            parts.append(
                "The two runs got different orders: fit(x, y) shuffles arrays (shuffle=True, the "
                "default) from an unseeded random state. Call keras.utils.set_random_seed(42) (any "
                "int) before fit, or pass kloader.Loader(x, y, batch_size=32, seed=42) to fit."
            )
            return 1, " ".join(parts)
        elif _same_batches_reordered(runs):
            parts.append(
                "The two runs got the same batches in a different order: fit's own batch reordering "
                "(fit(shuffle=True), the default, reorders a PyDataset's batches with Python's "
                "random module) is not seeded. Call keras.utils.set_random_seed(...) at the start, or "
                "shuffle the samples yourself from the epoch number and pass shuffle=False to fit."
            )
        else:
            parts.append(
                "The two runs got different orders: the order depends on unseeded randomness (e.g. "
                "np.random.shuffle without a seed) or on timing (workers racing on shared state). "
                "Seed every random draw from (seed, epoch)."
            )
    if parts:
        parts.append(
            "Fix: compute each epoch's order from (seed, epoch) instead of mutating it in a hook. "
            "kloader.Loader does that on every backend and for any number of workers: "
            "kloader.Loader(x, y, batch_size=32, seed=42, num_workers=2), or wrap your per-sample "
            "code as a map-style source (__len__, __getitem__(i) -> one sample) and pass it instead."
        )
        return 1, " ".join([*parts, *_order_notes(runs)])
    notes = _order_notes(runs)
    verdict = "Every epoch is a permutation of the data and both runs got the same order."
    return 0, " ".join([verdict, *notes])


def _same_batches_reordered(runs: dict[str, list[Run]]) -> bool:
    for backend_runs in runs.values():
        first = backend_runs[0]
        for other in backend_runs[1:]:
            for a, b in zip(first.epochs, other.epochs):
                if sorted(map(sorted, a.batches)) != sorted(map(sorted, b.batches)):
                    return False
    return True


def _order_notes(runs: dict[str, list[Run]]) -> list[str]:
    notes = []
    run = next(iter(runs.values()))[0]
    if run.distinct < run.num_reference:
        shared = run.num_reference - run.distinct
        notes.append(
            f"Note: {shared} of the {run.num_reference} samples repeat the input values of another "
            "sample; audit tells samples apart by their input values, so it cannot see the order "
            "among such repeats, nor which of them came twice."
        )
    epochs = run.epochs
    if len(epochs) > 1 and all(e.order == epochs[0].order for e in epochs[1:]):
        notes.append(
            "Warning: every epoch has the same order. Fine with shuffle off; otherwise a fixed seed "
            "per epoch (e.g. np.random.seed(42) or default_rng(42) in on_epoch_end or __getitem__) "
            "replays one permutation: derive the seed from the epoch instead."
        )
    elif len(epochs) > 1 and all(
        sorted(map(sorted, e.batches)) == sorted(map(sorted, epochs[0].batches)) for e in epochs[1:]
    ):
        notes.append(
            "Warning: every epoch holds the same batches, only in another order (fit's own batch "
            "reordering): the samples are never shuffled across batches. Shuffle the samples per "
            "epoch, e.g. with kloader.Loader."
        )
    backends = list(runs)
    if len(backends) > 1:
        orders = {b: [e.order for e in runs[b][0].epochs] for b in backends}
        if any(orders[b] != orders[backends[0]] for b in backends[1:]):
            notes.append("The backends got different orders from each other.")
    return notes


def backends_line(runs: dict[str, list[Run]]) -> str:
    backends = list(runs)
    if len(backends) < 2:
        return f"Backends agree: - (only {backends[0]} was run)"
    orders = {b: [e.order for e in runs[b][0].epochs] for b in backends}
    same = all(orders[b] == orders[backends[0]] for b in backends[1:])
    return f"Backends agree: {_yes(same)} ({', '.join(backends)})"


# ------------------------------------------------------------- running


class Progress:
    """A one-line bar on a terminal; a line per finished epoch otherwise."""

    def __init__(self, stream: TextIO | None, total_epochs: int):
        self.stream = stream
        self.total = max(total_epochs, 1)
        self.done = 0
        self.tty = stream is not None and stream.isatty()

    def update(self, label: str, event: dict[str, Any], *, base: int) -> None:
        if self.stream is None:
            return
        epochs_done = base + int(event["epoch"])
        batches = event.get("batches")
        where = f"epoch {min(int(event['epoch']) + 1, int(event['epochs']))}/{event['epochs']}"
        if event["batch"] and batches:
            where += f", batch {event['batch']}/{batches}"
        if self.tty:
            filled = 30 * epochs_done // self.total
            self.stream.write(f"\r[{'#' * filled}{'-' * (30 - filled)}] {label}: {where}\x1b[K")
        elif event.get("done"):
            self.stream.write(f"{label}: epoch {event['epoch']}/{event['epochs']} done\n")
        self.stream.flush()

    def line(self, text: str) -> None:
        if self.stream is not None:
            self.stream.write(("\r\x1b[K" if self.tty else "") + text + "\n")
            self.stream.flush()


def run_once(
    target: str,
    backend: str,
    epochs: int,
    timeout: float,
    on_event: Callable[[dict[str, Any]], None],
    workdir: str,
    tag: str,
) -> dict[str, Any]:
    """Runs `audit_run` in a fresh process with KERAS_BACKEND=backend; returns its record."""
    out = os.path.join(workdir, f"{tag}.json")
    log_path = os.path.join(workdir, f"{tag}.log")
    read_end, write_end = os.pipe()
    env = {**os.environ, "KERAS_BACKEND": backend}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    command = [
        sys.executable,
        "-m",
        "kloader._keras.audit_run",
        target,
        "--epochs",
        str(epochs),
        "--out",
        out,
        "--progress-fd",
        str(write_end),
    ]
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, pass_fds=(write_end,)
        )
    os.close(write_end)

    def relay() -> None:
        with os.fdopen(read_end) as channel:
            for line in channel:
                try:
                    on_event(json.loads(line))
                except ValueError:
                    continue

    reader = threading.Thread(target=relay, daemon=True)
    reader.start()
    try:
        status = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        # The log lives in a temporary folder that is gone once the audit returns: quote it.
        raise AuditError(
            f"the {backend} run did not finish within {timeout:.0f} s (a hang in the data or its "
            f"workers?). Raise the limit with --timeout. Its output ends with:\n{_tail(log_path)}"
        ) from None
    reader.join(timeout=5)
    if status != 0:
        raise AuditError(
            f"the {backend} run failed (exit status {status}). Its output ends with:\n{_tail(log_path)}"
        )
    with open(out) as file:
        result: dict[str, Any] = json.load(file)
    return result


def _tail(log_path: str) -> str:
    with open(log_path, errors="replace") as log:
        return log.read()[-3000:] or "(nothing)"


class AuditError(Exception):
    """A run could not be done (the user's function failed, a timeout, ...)."""


def audit(
    target: str,
    *,
    epochs: int = 3,
    backends: list[str] | None = None,
    runs: int = 2,
    timeout: float = 1800.0,
    out: TextIO = sys.stdout,
    progress: TextIO | None = sys.stderr,
) -> int:
    """Audits `target` ("module:function"); prints the report to `out`; returns the exit status."""
    chosen = backends or installed_backends()
    bar = Progress(progress, len(chosen) * runs * epochs)
    records: dict[str, list[Run]] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kloader-audit-") as workdir:
        for b, backend in enumerate(chosen):
            for r in range(runs):
                label = f"{backend} run {r + 1}/{runs}"
                base = (b * runs + r) * epochs
                bar.line(f"{label}: training a throw-away model for {epochs} epochs ...")
                try:
                    result = run_once(
                        target,
                        backend,
                        epochs,
                        timeout,
                        functools.partial(bar.update, label, base=base),
                        workdir,
                        f"{backend}-{r}",
                    )
                except AuditError as error:
                    bar.line("")
                    print(f"audit: {error}", file=out)
                    return 2
                records.setdefault(backend, []).append(analyse(result))
    bar.line(f"done in {time.monotonic() - started:.0f} s")
    first = next(iter(records.values()))[0]
    status, paragraph = diagnose(records)
    print(f"kloader audit of {target}: {describe_data(first.data, first.num_reference)}", file=out)
    print(f"{epochs} epochs of model.fit, {runs} runs per backend; samples identified by content.", file=out)
    print("", file=out)
    print(table(records), file=out)
    print("", file=out)
    print(backends_line(records), file=out)
    print(f"Result: {'PASS' if status == 0 else 'FAIL' if status == 1 else 'CANNOT AUDIT'}", file=out)
    print("", file=out)
    print(paragraph, file=out)
    return status
