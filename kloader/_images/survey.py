"""A survey of an image folder: classes, counts, image sizes, unreadable files.

What `python -m kloader inspect DIR` prints. It reads what an `ImageFolder`
would read (the same scan, the same check as `on_error="skip"`), so the files
it reports as unreadable are exactly the ones `on_error="skip"` leaves out.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from kloader._images import decode, scan

Progress = Callable[[int, int], None]
_THREADS = 8


@dataclasses.dataclass
class FileInfo:
    """What one file's header says, and why it cannot be read (None when it can)."""

    path: str
    size: tuple[int, int] | None = None  # (width, height) as stored
    format: str | None = None
    mode: str | None = None
    problem: str | None = None


@dataclasses.dataclass
class Survey:
    directory: str
    classes: list[tuple[str, int]] | None  # None: no class subfolders
    files: list[FileInfo]
    loose_images: int  # images directly in the folder, next to class subfolders (not used)
    other_files: list[str]
    # (path, why) of folders that cannot be listed and image names that are not
    # regular files: unreadable, and never opened (a named pipe would block).
    unreachable: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    # Why ImageFolder would refuse the whole folder (classes reaching one folder through
    # a link, with follow_links), or None.
    refused: str | None = None

    @property
    def unreadable(self) -> list[FileInfo]:
        unreachable = [FileInfo(path, problem=why) for path, why in self.unreachable]
        return unreachable + [info for info in self.files if info.problem is not None]


@contextlib.contextmanager
def without_pillows_limit() -> Iterator[None]:
    """Pillow's decompression-bomb limit lifted, for a command whose `max_pixels` is the limit.

    Pillow's own (`PIL.Image.MAX_IMAGE_PIXELS`, which refuses twice its value as
    it opens a file) would refuse what the command's --max-pixels allows, and a
    user of the command has no way to raise it. Put back on the way out.
    """
    pillows_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = pillows_limit


def survey(
    directory: str,
    *,
    follow_links: bool = False,
    check: bool = True,
    max_pixels: int | None = decode.DEFAULT_MAX_PIXELS,
    progress: Progress | None = None,
) -> Survey:
    """Scans `directory` as ImageFolder does and reads every file's header (and checks it)."""
    if not os.path.isdir(directory):
        raise NotADirectoryError(f"{directory!r} is not a folder (looked at {os.path.abspath(directory)!r}).")
    folders = scan.list_class_folders(directory)
    classes: list[tuple[str, int]] | None = None
    paths: list[str] = []
    others: list[str] = []
    problems: list[tuple[str, str]] = []
    loose = 0
    refused = None
    if folders:
        classes = []
        walks = {
            name: scan.walk_images(os.path.join(directory, name), follow_links=follow_links)
            for name in folders
        }
        try:
            scan.refuse_shared_folders(walks, directory, follow_links=follow_links)
            scan.refuse_empty_classes(walks, directory)
        except ValueError as error:
            refused = str(error)
        for name, walk in walks.items():
            classes.append((name, len(walk.images)))
            paths.extend(os.path.join(directory, name, path) for path in walk.images)
            others.extend(walk.others)
            problems.extend(walk.problems)
        top = [name for name in os.listdir(directory) if os.path.isfile(os.path.join(directory, name))]
        loose = sum(scan.is_image_name(name) for name in top)
    else:
        walk = scan.walk_images(directory, follow_links=follow_links)
        paths = [os.path.join(directory, path) for path in walk.images]
        others, problems = walk.others, walk.problems
    spec = decode.DecodeSpec((8, 8), max_pixels=max_pixels)
    infos: list[FileInfo] = []
    with ThreadPoolExecutor(max_workers=min(_THREADS, os.cpu_count() or 1)) as pool:
        for info in pool.map(lambda path: _read(path, spec, check), paths):
            infos.append(info)
            if progress is not None:
                progress(len(infos), len(paths))
    return Survey(directory, classes, infos, loose, others, problems, refused)


def _read(path: str, spec: decode.DecodeSpec, check: bool) -> FileInfo:
    info = FileInfo(path)
    try:
        with Image.open(path) as image:
            info.size, info.format, info.mode = image.size, image.format, image.mode
            decode.check_pixels(image, spec.max_pixels)  # the header says it: no decode needed
    except decode.UnreadableImageError as error:
        info.problem = error.reason
        return info
    except Exception as error:  # reported, as the check below words it
        info.problem = f"{type(error).__name__}: {error}"
    if check or info.problem is not None:
        info.problem = decode.check(path, spec)
    return info


def report(result: Survey) -> str:
    """The survey as text, for people."""
    lines = [f"Folder: {_shown(result.directory)}"]
    extensions = scan.describe_extensions()
    if result.classes is None:
        lines.append(f"No class subfolders: {len(result.files)} images (label_mode=None reads them all).")
    else:
        lines.append(f"Classes: {len(result.classes)} (label order = sorted folder names)")
        width = max(len(_shown(name)) for name, _ in result.classes)
        for label, (name, count) in enumerate(result.classes):
            note = "   <- no images: ImageFolder refuses an empty class folder" if count == 0 else ""
            lines.append(f"  {label:>3}  {_shown(name):<{width}}  {count:>7} images{note}")
        lines.append(f"Total: {len(result.files)} images")
        if result.loose_images:
            lines.append(
                f"Note: {result.loose_images} images lie directly in the folder, outside the class "
                "subfolders; ImageFolder does not use them."
            )
    if result.other_files:
        kinds = collections.Counter(
            os.path.splitext(name)[1].lower() or "(none)" for name in result.other_files
        )
        listing = ", ".join(f"{kind} {count}" for kind, count in kinds.most_common(5))
        lines.append(f"Ignored: {len(result.other_files)} files without an image extension ({listing})")
    lines.extend(_size_lines(result.files))
    floats = sum(info.mode == "F" for info in result.files)
    if floats:
        lines.append(
            f"Note: {floats} images are 32-bit float (mode F). ImageFolder reads their values on the "
            "0..255 scale and clips the rest: a file holding 0..1 comes out nearly black."
        )
    unreadable = result.unreadable
    lines.append(
        f"Unreadable: {len(unreadable)}" + (" (on_error='skip' leaves these out)" if unreadable else "")
    )
    lines.extend(f"  {_shown(info.path)}: {info.problem}" for info in unreadable)
    if result.refused is not None:
        lines.append(f"ImageFolder refuses this folder: {result.refused}")
    if not result.files:
        lines.append(f"No images found (looked for {extensions}).")
    return "\n".join(lines)


def _shown(path: str) -> str:
    """`path` as it is, or quoted with escapes where it holds a newline or another control character."""
    return path if path.isprintable() else repr(path)


def _size_lines(files: list[FileInfo]) -> list[str]:
    sizes = [info.size for info in files if info.size is not None]
    if not sizes:
        return []
    widths = np.array([w for w, _ in sizes])
    heights = np.array([h for _, h in sizes])
    # Sizes that some image has: the widest and the tallest may be different images.
    smallest = min(sizes, key=lambda size: (size[0] * size[1], size))
    largest = max(sizes, key=lambda size: (size[0] * size[1], size))
    common = collections.Counter(sizes).most_common(3)
    formats = collections.Counter(info.format for info in files if info.format)
    modes = collections.Counter(info.mode for info in files if info.mode)
    return [
        "Image sizes (width x height, as stored): "
        f"smallest {smallest[0]}x{smallest[1]}, largest {largest[0]}x{largest[1]} (in pixels); "
        f"widths {widths.min()}-{widths.max()} (median {int(np.median(widths))}), "
        f"heights {heights.min()}-{heights.max()} (median {int(np.median(heights))}); "
        f"{len(set(sizes))} distinct; most common " + ", ".join(f"{w}x{h} ({n})" for (w, h), n in common),
        "Formats: " + ", ".join(f"{name} {n}" for name, n in formats.most_common()),
        "Modes: " + ", ".join(f"{name} {n}" for name, n in modes.most_common()),
    ]
