"""kloader against the loaders a Keras user would pick, measured side by side.

    python benchmarks/run.py --out benchmarks/RESULTS.md     (about 30 minutes on 2 cores)
    python benchmarks/run.py --quick                         (one repeat, a few minutes)

With one virtual environment per backend (as tox makes them), point each
backend's cases at its interpreter: `--python tensorflow=.tox/tensorflow/bin/python
--python jax=.tox/jax/bin/python --python torch=.tox/torch/bin/python`.

Generates the data once (seeded) under `data/benchmarks/`, then runs every case
in its own fresh Python process, interleaved: repeat 1 of every case, then
repeat 2, ... so that a slow moment of a shared machine hits all of them.
Reports medians with min-max over the repeats; ratios are taken repeat by
repeat (kloader and the other loader of the same repeat) and then summarised.

Workloads:
  images  2000 JPEGs of 500x375, decoded, resized to 160x160 (bilinear),
          randomly flipped, batches of 64, float32 0..255 unless a row says
          otherwise. Loaders: kloader (2 workers: the defaults, and
          dtype="uint8"), Keras
          PyDataset (2 threads, 2 processes), torch DataLoader (2 workers,
          persistent_workers=True), tf.data (image_dataset_from_directory +
          random_flip_left_right + prefetch(AUTOTUNE)), and the limit: one
          process decoding one sample at a time, times the cores.
  arrays  50 000 x 32x32x3 uint8 + int32 labels, batches of 256: kloader
          against the data path of `model.fit(x, y)` (Keras's ArrayDataAdapter).
  fit     `model.fit(epochs=4)` of a small model fed by each loader, on the
          TensorFlow, JAX and PyTorch backends: epochs 2-4 (median and
          slowest: a stall at an epoch boundary shows in the slowest), and
          epoch 1 counted from before the loader is built (start-up, tracing
          and compilation).
  memory  kloader with 2 workers over 20 epochs: the process tree's memory.

Per case: images/s over full epochs after the first, and over the first
epoch counted from building the loader; time from the built loader to its
first batch, and the longest wait for a batch in the first epoch; peak memory of the whole process tree, as PSS
(proportional set size: a page shared by k processes counts 1/k in each, so
the sum over the tree counts every page once), sampled every 0.1 s by this
process. "Added" is that peak minus the case's own PSS just before it built
the loader (after imports), i.e. what the loader itself costs.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

import _data
from _cases import pss

HERE = Path(__file__).resolve().parent
BACKENDS = ("tensorflow", "jax", "torch")
NOTES = "<!-- notes: everything from here on is kept when run.py rewrites this file -->"


# --------------------------------------------------------------------- cases


def image_cases(root: str, epochs: int) -> list[dict[str, Any]]:
    base = {"kind": "loader", "root": root, "epochs": epochs}
    kloader = {**base, "loader": "kloader_images"}
    return [
        {"name": "kloader, 2 workers", "spec": {**kloader, "workers": 2}},
        {
            "name": "kloader, 2 workers, uint8",
            "spec": {**kloader, "workers": 2, "dtype": "uint8"},
        },
        {
            "name": "Keras PyDataset, 2 threads",
            "spec": {**base, "loader": "pydataset_images", "workers": 2, "processes": False},
        },
        {
            "name": "Keras PyDataset, 2 processes",
            "spec": {**base, "loader": "pydataset_images", "workers": 2, "processes": True},
        },
        {"name": "torch DataLoader, 2 workers", "spec": {**base, "loader": "torch_images", "workers": 2}},
        {"name": "tf.data", "spec": {**base, "loader": "tfdata_images"}, "backend": "tensorflow"},
        {"name": "limit: full decode x cores", "spec": {"kind": "limit", "root": root, "decode": "full"}},
        {"name": "limit: draft decode x cores", "spec": {"kind": "limit", "root": root, "decode": "draft"}},
    ]


def array_cases(count: int, epochs: int) -> list[dict[str, Any]]:
    base = {"kind": "loader", "count": count, "batch_size": 256, "epochs": epochs}
    kloader = {**base, "loader": "kloader_arrays"}
    return [
        {"name": "kloader, 0 workers", "spec": {**kloader, "workers": 0}},
        {"name": "kloader, 2 workers", "spec": {**kloader, "workers": 2}},
        {"name": "fit(x, y)'s ArrayDataAdapter", "spec": {**base, "loader": "keras_arrays"}},
    ]


def fit_cases(root: str, count: int, epochs: int, backends: tuple[str, ...]) -> list[dict[str, Any]]:
    images = {"kind": "fit", "root": root, "epochs": epochs}
    arrays = {"kind": "fit", "count": count, "batch_size": 256, "epochs": epochs}
    loaders = [
        ("images: kloader, 2 workers", {**images, "loader": "kloader_images", "workers": 2}),
        (
            "images: PyDataset, 2 processes",
            {**images, "loader": "pydataset_images", "workers": 2, "processes": True},
        ),
        ("images: torch DataLoader, 2 workers", {**images, "loader": "torch_images", "workers": 2}),
        ("images: tf.data", {**images, "loader": "tfdata_images"}),
        ("arrays: fit(x, y)", {**arrays, "loader": "fit_arrays"}),
        ("arrays: kloader, 0 workers", {**arrays, "loader": "kloader_arrays", "workers": 0}),
    ]
    # Arrays only on TensorFlow, where kloader's path differs (tf.data gathers); on JAX
    # and torch both run the same NumPy gather (measured within 1.1x before).
    return [
        {"name": name, "spec": spec, "backend": backend, "column": backend}
        for backend in backends
        for name, spec in loaders
        if not name.startswith("arrays") or backend == "tensorflow"
    ]


def memory_cases(root: str, epochs: int) -> list[dict[str, Any]]:
    spec = {"kind": "loader", "root": root, "epochs": epochs, "loader": "kloader_images", "workers": 2}
    return [{"name": "kloader, 2 workers", "spec": {**spec, "track_memory": True}}]


# ------------------------------------------------------------------- running


def tree_pss(process: psutil.Process) -> int:
    try:
        children = process.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0
    return pss(process.pid) + sum(pss(child.pid) for child in children)


# backend -> Python interpreter for that backend's cases (--python); default: this one.
PYTHONS: dict[str, str] = {}


def run_case(case: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Runs one case in a fresh process; samples its process tree's PSS meanwhile."""
    backend = case.get("backend", "torch")
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [PYTHONS.get(backend, sys.executable), str(HERE / "_cases.py"), json.dumps(case["spec"])]
    process = psutil.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.1):
            peak = max(peak, tree_pss(process))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for child in process.children(recursive=True):
            child.kill()
        process.kill()
        stdout, stderr = process.communicate()
        return {"error": f"timed out after {timeout:.0f} s"}
    finally:
        done.set()
        sampler.join()
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if process.returncode != 0 or not lines:
        return {"error": f"exit code {process.returncode}: {stderr.strip().splitlines()[-1:]}"}
    result: dict[str, Any] = json.loads(lines[-1])
    result["peak_pss"] = peak
    return result


def run_all(cases: list[dict[str, Any]], repeats: int, timeout: float) -> None:
    """Fills case["runs"], interleaved: every case once per repeat."""
    for case in cases:
        case["runs"] = []
    total = repeats * len(cases)
    for repeat in range(repeats):
        for i, case in enumerate(cases):
            started = time.perf_counter()
            result = run_case(case, timeout)
            case["runs"].append(result)
            shown = result.get("error") or f"{result['images_per_s']:.0f} img/s"
            column = f" [{case['column']}]" if "column" in case else ""
            print(
                f"[{repeat * len(cases) + i + 1}/{total}] {case['name']}{column}: {shown} "
                f"({time.perf_counter() - started:.0f} s)",
                flush=True,
            )


# ------------------------------------------------------------------ reporting


def summary(values: list[float], digits: int = 0, unit: str = "") -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    median = statistics.median(values)
    if len(values) == 1:
        return f"{median:.{digits}f}{unit}"
    return f"{median:.{digits}f}{unit} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def values(case: dict[str, Any], key: str) -> list[Any]:
    return [run.get(key) for run in case["runs"] if "error" not in run]


def ratios(a: dict[str, Any], b: dict[str, Any], key: str = "images_per_s") -> list[float]:
    """a / b repeat by repeat (the runs of one repeat ran next to each other)."""
    return [x[key] / y[key] for x, y in zip(a["runs"], b["runs"]) if "error" not in x and "error" not in y]


def megabytes(case: dict[str, Any], added: bool) -> list[float]:
    runs = [run for run in case["runs"] if "error" not in run and "baseline_pss" in run]
    return [(run["peak_pss"] - (run["baseline_pss"] if added else 0)) / 2**20 for run in runs]


def memory_ratios(a: dict[str, Any], b: dict[str, Any], added: bool) -> list[float]:
    """a's peak memory / b's (or memory added, with `added`), repeat by repeat."""
    return [x / y for x, y in zip(megabytes(a, added), megabytes(b, added))]


def loader_table(cases: list[dict[str, Any]], reference: dict[str, Any]) -> list[str]:
    lines = [
        f"| loader | images/s | ÷ {reference['name']} | first epoch incl. start (images/s) "
        f"| ÷ {reference['name']}, first epoch | CPU ms per image | first batch (s) "
        "| longest wait, first epoch (s) | peak memory, tree (MB) | added by the loader (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        errors = [run["error"] for run in case["runs"] if "error" in run]
        rate = summary(values(case, "images_per_s")) + (
            f" ({len(errors)} failed: {errors[0]})" if errors else ""
        )
        is_limit = case["spec"]["kind"] == "limit"
        first = "first_epoch_images_per_s"
        lines.append(
            f"| {case['name']} | {rate} | {summary(ratios(case, reference), 2)} | "
            f"{'—' if is_limit else summary(values(case, first))} | "
            f"{'—' if is_limit else summary(ratios(case, reference, first), 2)} | "
            f"{summary(values(case, 'cpu_ms_per_image'), 2 if case['group'] == 'images' else 4)} | "
            f"{'—' if is_limit else summary(values(case, 'first_batch_s'), 2)} | "
            f"{'—' if is_limit else summary(values(case, 'first_epoch_max_gap_s'), 2)} | "
            f"{'—' if is_limit else summary(megabytes(case, False))} | "
            f"{'—' if is_limit else summary(megabytes(case, True))} |"
        )
    return lines


def fit_table(cases: list[dict[str, Any]], backends: tuple[str, ...]) -> list[str]:
    names = list(dict.fromkeys(case["name"] for case in cases))
    by_key = {(case["name"], case["column"]): case for case in cases}
    later = later_epochs_label(cases)
    lines = [
        "| loader | "
        + " | ".join(
            f"{b}: {later}, median (s) | {b}: slowest of {later} (s) | {b}: epoch 1 incl. start (s)"
            for b in backends
        )
        + " |",
        "|---|" + "---|---|---|" * len(backends),
    ]
    for name in names:
        cells = []
        for backend in backends:
            case = by_key.get((name, backend))
            if case is None:
                cells += ["—", "—", "—"]
                continue
            errors = [run["error"] for run in case["runs"] if "error" in run]
            failed = f" ({len(errors)} failed: {errors[0]})" if errors else ""
            cells.append(summary(steady_epochs(case), 2) + failed)
            cells.append(summary(slowest_later_epochs(case), 2))
            cells.append(summary(values(case, "first_epoch_with_start_s"), 2))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def fit_epochs(cases: list[dict[str, Any]]) -> int:
    """How many epochs the `fit` cases ran."""
    return max(case["spec"]["epochs"] for case in cases)


def later_epochs_label(cases: list[dict[str, Any]]) -> str:
    """What the table calls the epochs after the first: "epoch 2", or "epochs 2-N"."""
    epochs = fit_epochs(cases)
    return "epoch 2" if epochs <= 2 else f"epochs 2-{epochs}"


def later_epochs(run: dict[str, Any]) -> list[float]:
    """Seconds of a `fit` run's epochs after the first (all of them, if it ran one)."""
    return run["epoch_s"][1:] or run["epoch_s"]


def slowest_later_epochs(case: dict[str, Any]) -> list[float]:
    """Seconds of each repeat's slowest epoch after the first, for a fit case."""
    return [max(later_epochs(run)) for run in case["runs"] if "error" not in run]


def steady_epochs(case: dict[str, Any]) -> list[float]:
    """Seconds of each repeat's epochs after the first (median), for a fit case."""
    return [statistics.median(later_epochs(run)) for run in case["runs"] if "error" not in run]


def fit_ratios(a: dict[str, Any], b: dict[str, Any], key: str | None = None) -> list[float]:
    """a's fit epoch / b's, repeat by repeat: steady epochs, or `key` (e.g. the first epoch)."""
    pairs = [(x, y) for x, y in zip(a["runs"], b["runs"]) if "error" not in x and "error" not in y]
    if key is not None:
        return [x[key] / y[key] for x, y in pairs]
    return [statistics.median(later_epochs(x)) / statistics.median(later_epochs(y)) for x, y in pairs]


def target_row(what: str, measured: list[float], goal: float, higher: bool, digits: int = 2) -> str:
    if not measured:
        return f"| {what} | n/a | — |"
    median = statistics.median(measured)
    holds = median >= goal if higher else median <= goal
    sign = "≥" if higher else "≤"
    return f"| {what} ({sign} {goal:g}) | {summary(measured, digits)} | {'yes' if holds else '**no**'} |"


def machine() -> list[str]:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = []
    for package in ("kloader", "keras", "torch", "tensorflow", "tensorflow-cpu", "jax", "pillow", "numpy"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions.append(f"{package} {metadata.version(package)}")
    import kloader

    return [
        f"- Machine: {model}, {len(os.sched_getaffinity(0))} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB; {platform.platform()}",
        f"- Python {platform.python_version()}; {', '.join(versions)}; kloader imported from "
        f"`{Path(kloader.__file__).parent}`",
        f"- Date: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write the Markdown report here (default: print it)")
    parser.add_argument("--quick", action="store_true", help="one repeat, fewer epochs, fit on one backend")
    parser.add_argument(
        "--repeats", type=int, default=None, help="repeats of every case (default 3; 1 with --quick)"
    )
    parser.add_argument(
        "--data", default=str(HERE.parent / "data" / "benchmarks"), help="where the generated data lives"
    )
    parser.add_argument("--only", default="images,arrays,fit,memory", help="comma-separated workloads to run")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="backends for the fit workload")
    parser.add_argument("--json", help="also write the raw measurements here")
    parser.add_argument(
        "--python",
        action="append",
        default=[],
        metavar="BACKEND=PATH",
        help="run that backend's cases with this interpreter (e.g. one virtual environment per backend)",
    )
    parser.add_argument("--images", type=int, default=2000, help="images in the folder (default 2000)")
    args = parser.parse_args()
    for item in args.python:
        backend, _, path = item.partition("=")
        PYTHONS[backend] = path
    repeats = args.repeats or (1 if args.quick else 3)
    only = set(args.only.split(","))
    backends = tuple(args.backends.split(","))
    if args.quick and args.backends == ",".join(BACKENDS):
        backends = (os.environ.get("KERAS_BACKEND", "jax"),)

    images = args.images
    array_count = 50_000
    root = str(_data.image_folder(Path(args.data) / f"jpeg_{images}", images).resolve())
    load_at_start = os.getloadavg()
    started = time.perf_counter()
    groups: dict[str, list[dict[str, Any]]] = {}
    if "images" in only:
        groups["images"] = image_cases(root, epochs=2 if args.quick else 3)
    if "arrays" in only:
        groups["arrays"] = array_cases(array_count, epochs=2 if args.quick else 4)
    if "fit" in only:
        groups["fit"] = fit_cases(root, array_count, epochs=2 if args.quick else 4, backends=backends)
    if "memory" in only:
        groups["memory"] = memory_cases(root, epochs=10 if args.quick else 20)
    everything = [case for cases in groups.values() for case in cases]
    for case in everything:
        case["group"] = next(name for name, cases in groups.items() if case in cases)
    memory = groups.pop("memory", [])
    run_all([case for cases in groups.values() for case in cases], repeats, timeout=600)
    run_all(memory, 1, timeout=900)
    load_at_end = os.getloadavg()
    minutes = (time.perf_counter() - started) / 60

    command = (
        "python benchmarks/run.py"
        + (" --quick" if args.quick else "")
        + (f" --out {args.out}" if args.out else "")
    )
    report = ["# kloader benchmarks", "", *machine()]
    report += [
        f"- Command: `{command}` ({minutes:.0f} minutes); {repeats} repeat(s) of every case, interleaved, "
        "each in a fresh process.",
        f"- Load average (1 min) at start {load_at_start[0]:.1f}, at end {load_at_end[0]:.1f} "
        "(other jobs on a shared machine slow every case; ratios of the same repeat are the "
        "numbers to compare).",
        "- Cells: median (min-max) over the repeats. Ratios are taken repeat by repeat.",
        "",
    ]
    if "images" in groups:
        cases = groups["images"]
        report += [
            f"## Image folder: {images} JPEGs 500x375 → 160x160, random flip, batch 64",
            "",
            "images/s: over full epochs after the first. First epoch incl. start: images of the first "
            "epoch divided by the time from building the loader (workers start there) to its last "
            "batch. First batch: seconds from the built loader to its first batch; longest wait: the "
            "longest of those waits for a batch in the first epoch. Every case is the first loader of "
            "a fresh process.",
            "",
            *loader_table(cases, next(case for case in cases if case["name"] == "tf.data")),
            "",
        ]
    if "arrays" in groups:
        cases = groups["arrays"]
        report += [
            "## In-memory arrays: 50 000 x 32x32x3 uint8 + labels, batch 256",
            "",
            *loader_table(cases, cases[0]),
            "",
        ]
    if "fit" in groups:
        report += [
            "## model.fit: one epoch of a small model",
            "",
            "Images: Rescaling → Conv2D(8, 3, strides=4) → GlobalAveragePooling2D → Dense(4); "
            "arrays: Rescaling → Flatten → Dense(10). Seconds per epoch of one "
            f"`fit(epochs={fit_epochs(groups['fit'])})`: the median and "
            "the slowest of the epochs after the first, and the first epoch counted from before "
            "the loader is built (imports, worker start, tracing and compilation).",
            "",
            *fit_table(groups["fit"], backends),
            "",
        ]
    if memory:
        run = memory[0]["runs"][0]
        if "error" not in run:
            per_epoch = [m / 2**20 for m in run["tree_pss_per_epoch"]]
            # Batches in flight make single samples jitter by tens of MB: compare
            # the median of the first five epochs with that of the last five.
            first, last = statistics.median(per_epoch[:5]), statistics.median(per_epoch[-5:])
            growth = (last - first) / first
            report += [
                f"## Memory over {len(per_epoch)} epochs (kloader, 2 workers, image folder)",
                "",
                f"Process tree PSS after each epoch (MB): {', '.join(f'{m:.0f}' for m in per_epoch)}; "
                f"growth, median of the last five against median of the first five: {growth:+.1%}.",
                "",
            ]
            groups["memory"] = memory
            memory[0]["growth"] = growth
    report += targets(groups)
    text = "\n".join(report)
    if args.out:
        out = Path(args.out)
        previous = out.read_text() if out.exists() else ""
        if NOTES in previous:  # hand-written notes survive a regenerated table
            text += "\n\n" + previous[previous.index(NOTES) :]
        out.write_text(text)
        print(f"wrote {args.out}")
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(groups, indent=1))


def targets(groups: dict[str, list[dict[str, Any]]]) -> list[str]:
    lines = ["## Targets", "", "| target | measured | holds |", "|---|---|---|"]
    first = "first_epoch_images_per_s"
    if "images" in groups:
        by_name = {case["name"]: case for case in groups["images"]}
        defaults, fast = (
            by_name["kloader, 2 workers"],
            by_name["kloader, 2 workers, uint8"],
        )
        tfdata, torch_loader = by_name["tf.data"], by_name["torch DataLoader, 2 workers"]
        processes = by_name["Keras PyDataset, 2 processes"]
        first_vs_later = [run[first] / run["images_per_s"] for run in defaults["runs"] if "error" not in run]
        lines += [
            target_row(
                "defaults x tf.data, first epoch incl. start", ratios(defaults, tfdata, first), 1.0, True
            ),
            target_row("defaults x tf.data, later epochs", ratios(defaults, tfdata), 1.0, True),
            target_row(
                "uint8 x tf.data, first epoch incl. start",
                ratios(fast, tfdata, first),
                1.3,
                True,
            ),
            target_row("uint8 x tf.data, later epochs", ratios(fast, tfdata), 1.3, True),
            target_row(
                "defaults x PyDataset processes, first epoch incl. start",
                ratios(defaults, processes, first),
                2.5,
                True,
            ),
            target_row("defaults: first batch (s)", values(defaults, "first_batch_s"), 0.3, False),
            target_row(
                "defaults: longest wait for a batch, first epoch (s)",
                values(defaults, "first_epoch_max_gap_s"),
                0.3,
                False,
            ),
            target_row(
                "defaults: first epoch incl. start ÷ later epochs (images/s)", first_vs_later, 0.9, True
            ),
            target_row(
                "defaults: peak memory ÷ torch DataLoader's (tree)",
                memory_ratios(defaults, torch_loader, added=False),
                1.0,
                False,
            ),
        ]
    if "fit" in groups:
        by_key = {(case["name"], case["column"]): case for case in groups["fit"]}
        for backend in sorted({case["column"] for case in groups["fit"]}):
            ours, theirs = (
                by_key[("images: kloader, 2 workers", backend)],
                by_key[("images: tf.data", backend)],
            )
            lines += [
                target_row(
                    f"fit on {backend}: defaults epoch ÷ tf.data epoch", fit_ratios(ours, theirs), 1.0, False
                ),
                target_row(
                    f"fit on {backend}: defaults epoch 1 incl. start ÷ tf.data's",
                    fit_ratios(ours, theirs, "first_epoch_with_start_s"),
                    1.0,
                    False,
                ),
            ]
        for backend in sorted(
            {case["column"] for case in groups["fit"] if case["name"].startswith("arrays")}
        ):
            for name in ("arrays: kloader, 0 workers",):
                reference = by_key[("arrays: fit(x, y)", backend)]
                lines.append(
                    target_row(
                        f"fit on {backend}: {name} epoch ÷ fit(x, y) epoch",
                        fit_ratios(by_key[(name, backend)], reference),
                        1.1,
                        False,
                    )
                )
    if "memory" in groups:
        lines.append(
            target_row("memory growth over 20 epochs", [groups["memory"][0]["growth"]], 0.05, False, 3)
        )
    return lines


if __name__ == "__main__":
    main()
