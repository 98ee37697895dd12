"""Command line: `python -m kloader inspect DIR` and `python -m kloader audit MODULE:FUNCTION`.

`inspect` surveys an image folder. It prints the classes (in label order) with their image counts, a summary of
the image sizes, formats and modes, and every file that cannot be read (the
files `ImageFolder(..., on_error="skip")` leaves out). Large folders get a
progress bar on stderr. It never imports Keras.

`audit` checks what `model.fit` really gives a model from the data that
`FUNCTION()` returns (a `keras.utils.PyDataset`, a `kloader.Loader`, arrays with
targets, ...): on each installed backend, twice, in fresh processes, it records
every sample the model received and reports per epoch the samples duplicated
and missing, whether runs and backends agree, and the likely cause and fix.
Exit status 0 when every epoch is a permutation and the runs agree, 1 when not,
2 when the audit could not run.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, TextIO

from kloader._images import decode, survey
from kloader._keras import audit as order_audit

_PROGRESS_FROM = 200  # files; smaller folders are read in a blink
_BAR_WIDTH = 30


class ProgressBar:
    """`[#######-------]  700/1000 files` on one line, redrawn at most 10 times a second."""

    def __init__(self, stream: TextIO, label: str = "reading"):
        self.stream = stream
        self.label = label
        self._last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._last < 0.1:
            return
        self._last = now
        filled = _BAR_WIDTH * done // max(total, 1)
        bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
        self.stream.write(f"\r{self.label} [{bar}] {done}/{total} files")
        if done == total:
            self.stream.write("\n")
        self.stream.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kloader", description="kloader tools")
    commands = parser.add_subparsers(dest="command", required=True)
    inspect = commands.add_parser(
        "inspect", help="survey an image folder: classes, counts, sizes, unreadable files"
    )
    inspect.add_argument("directory", help="the folder (one subfolder per class, or loose images)")
    inspect.add_argument("--follow-links", action="store_true", help="enter folders that are links")
    inspect.add_argument(
        "--no-check", action="store_true", help="read headers only; do not decode (much faster)"
    )
    inspect.add_argument(
        "--max-pixels",
        type=_positive,
        default=decode.DEFAULT_MAX_PIXELS,
        help="images with more pixels (width x height) count as unreadable; the one limit, in "
        "place of Pillow's own (default: %(default)s, Pillow's)",
    )
    progress = inspect.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None)
    progress.add_argument("--no-progress", dest="progress", action="store_false")
    add_audit_parser(commands)
    args = parser.parse_args(argv)
    if args.command == "audit":
        return run_audit(args)
    show = args.progress
    bar = ProgressBar(sys.stderr) if show or show is None else None

    def on_progress(done: int, total: int) -> None:
        if bar is not None and (show or (total >= _PROGRESS_FROM and sys.stderr.isatty())):
            bar(done, total)

    try:
        with survey.without_pillows_limit():  # --max-pixels is the limit
            result = survey.survey(
                args.directory,
                follow_links=args.follow_links,
                check=not args.no_check,
                max_pixels=args.max_pixels,
                progress=on_progress,
            )
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(survey.report(result))
    return 1 if result.unreadable or result.refused is not None else 0


def add_audit_parser(commands: Any) -> None:
    audit = commands.add_parser(
        "audit",
        help="train a throw-away model on your data on each backend, twice, and check that every "
        "epoch gives each sample exactly once",
        description="FUNCTION() returns what you pass to model.fit: a keras.utils.PyDataset, a "
        "kloader.Loader, a tuple (x, y) of arrays, a dict of fit arguments, a tf.data.Dataset ...",
    )
    audit.add_argument(
        "target", metavar="MODULE:FUNCTION", help="e.g. my_data:make_train or my_data.py:make_train"
    )
    audit.add_argument("--epochs", type=_positive, default=3, help="epochs per run (default: %(default)s)")
    audit.add_argument(
        "--backends",
        default=None,
        help="comma-separated Keras backends (default: every installed one of tensorflow, jax, torch)",
    )
    audit.add_argument("--runs", type=_positive, default=2, help="runs per backend (default: %(default)s)")
    audit.add_argument(
        "--timeout", type=float, default=1800.0, help="seconds one run may take (default: %(default)s)"
    )
    audit.add_argument("--no-progress", action="store_true", help="print no progress on stderr")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def run_audit(args: argparse.Namespace) -> int:
    backends = None
    if args.backends:
        backends = [name.strip() for name in args.backends.split(",") if name.strip()]
        unknown = [name for name in backends if name not in order_audit.BACKENDS]
        if unknown:
            print(
                f"error: unknown backend(s) {unknown}; choose from {list(order_audit.BACKENDS)}.",
                file=sys.stderr,
            )
            return 2
        missing = [name for name in backends if name not in order_audit.installed_backends()]
        if missing:
            print(f"error: {missing} not installed in this Python ({sys.executable}).", file=sys.stderr)
            return 2
    return order_audit.audit(
        args.target,
        epochs=args.epochs,
        backends=backends,
        runs=args.runs,
        timeout=args.timeout,
        progress=None if args.no_progress else sys.stderr,
    )


if __name__ == "__main__":
    sys.exit(main())
