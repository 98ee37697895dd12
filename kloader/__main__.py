"""Command line: `python -m kloader inspect DIR` surveys an image folder.

It prints the classes (in label order) with their image counts, a summary of
the image sizes, formats and modes, and every file that cannot be read (the
files `ImageFolder(..., on_error="skip")` leaves out). Large folders get a
progress bar on stderr. It never imports Keras.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TextIO

from kloader._images import decode, survey

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
        type=int,
        default=decode.DEFAULT_MAX_PIXELS,
        help="images with more pixels count as unreadable (default: %(default)s)",
    )
    progress = inspect.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None)
    progress.add_argument("--no-progress", dest="progress", action="store_false")
    args = parser.parse_args(argv)
    show = args.progress
    bar = ProgressBar(sys.stderr) if show or show is None else None

    def on_progress(done: int, total: int) -> None:
        if bar is not None and (show or (total >= _PROGRESS_FROM and sys.stderr.isatty())):
            bar(done, total)

    try:
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
    return 1 if result.unreadable else 0


if __name__ == "__main__":
    sys.exit(main())
