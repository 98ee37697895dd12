"""The files of an image folder: found once, kept in NumPy arrays, split by seed.

A `FileIndex` holds every relative path in one bytes buffer with offsets, and
the labels in an int32 array. Worker processes receive it by pickling: a few
arrays, not a Python object per file, so it pickles small and its memory is
never touched by reference counting (no copy-on-write growth in forked
workers).

Source order is image_dataset_from_directory's: classes in label order, and
within a class the folders in sorted order of their paths and the files of
each folder sorted by name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterator, Sequence

import numpy as np

from kloader import _seeding

EXTENSIONS = ("bmp", "gif", "jpeg", "jpg", "png", "tif", "tiff", "webp")
_SUFFIXES = tuple("." + extension for extension in EXTENSIONS)


def is_image_name(name: str) -> bool:
    """True for a visible file with an image extension (any case)."""
    return not name.startswith(".") and name.lower().endswith(_SUFFIXES)


def describe_extensions() -> str:
    return ", ".join("." + extension for extension in EXTENSIONS) + " (any case)"


@dataclasses.dataclass(frozen=True)
class FileIndex:
    """Relative paths (one UTF-8/filesystem-encoded buffer + offsets) and labels.

    `labels` is None for an index without labels.
    """

    buffer: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray | None

    @classmethod
    def build(cls, paths: Sequence[str], labels: Sequence[int] | np.ndarray | None) -> FileIndex:
        encoded = [os.fsencode(path) for path in paths]
        lengths = np.fromiter((len(item) for item in encoded), dtype=np.int64, count=len(encoded))
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        buffer = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()
        label_array = None if labels is None else np.asarray(labels, dtype=np.int32).copy()
        for array in (buffer, offsets, label_array):
            if array is not None:
                array.flags.writeable = False
        return cls(buffer, offsets, label_array)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def path(self, position: int) -> str:
        start, stop = self.offsets[position], self.offsets[position + 1]
        return os.fsdecode(self.buffer[start:stop].tobytes())

    def paths(self) -> Iterator[str]:
        for position in range(len(self)):
            yield self.path(position)

    def take(self, positions: np.ndarray) -> FileIndex:
        """The sub-index of `positions`, in that order."""
        labels = None if self.labels is None else self.labels[positions]
        return FileIndex.build([self.path(int(p)) for p in positions], labels)


# ------------------------------------------------------------------- scan


def list_class_folders(directory: str) -> list[str]:
    """Visible subfolders of `directory` (links to folders included), sorted by name."""
    return sorted(
        name
        for name in os.listdir(directory)
        if not name.startswith(".") and os.path.isdir(os.path.join(directory, name))
    )


def walk_images(directory: str, *, follow_links: bool) -> tuple[list[str], list[str]]:
    """(image paths, other file names) under `directory`, recursively.

    Image paths are relative to `directory`, in image_dataset_from_directory's
    order (folders sorted by path, files sorted by name). Hidden files and
    folders (names starting with ".") are left out. With `follow_links`, linked
    folders are entered, each real folder once (no endless loops).
    """
    seen: set[tuple[int, int]] = set()
    folders: list[tuple[str, list[str]]] = []
    others: list[str] = []
    for root, dirnames, filenames in os.walk(directory, followlinks=follow_links):
        if follow_links:
            status = os.stat(root)
            if (status.st_dev, status.st_ino) in seen:
                dirnames[:] = []
                continue
            seen.add((status.st_dev, status.st_ino))
        dirnames[:] = [name for name in dirnames if not name.startswith(".")]
        folders.append((root, [name for name in filenames if is_image_name(name)]))
        others.extend(name for name in filenames if not name.startswith(".") and not is_image_name(name))
    paths: list[str] = []
    for root, names in sorted(folders, key=lambda folder: folder[0]):
        relative = os.path.relpath(root, directory)
        paths.extend(name if relative == "." else os.path.join(relative, name) for name in sorted(names))
    return paths, others


# ------------------------------------------------------------------ split


def split_positions(index: FileIndex, validation_split: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training positions, validation positions) of `index`, each in source order.

    Every file gets a key that depends only on the seed and its relative path
    (BLAKE2b of the path, keyed by 8 bytes drawn from `split_bits(seed)`).
    Files are grouped by label (one group without labels); in each group of n
    files, the round(validation_split * n) files with the smallest keys go to
    validation, the rest to training. So the split is stratified, the same on
    every machine, backend and run, and it does not reshuffle when files are
    added or removed: only files near a group's cut-off can change sides.
    """
    salt = int(_seeding.split_bits(seed).random_raw()).to_bytes(8, "little")
    keys = np.fromiter((_path_key(path, salt) for path in index.paths()), dtype=np.uint64, count=len(index))
    groups = np.zeros(len(index), np.int32) if index.labels is None else index.labels
    validation = np.zeros(len(index), dtype=bool)
    for group in np.unique(groups):
        members = np.flatnonzero(groups == group)
        count = int(np.floor(validation_split * len(members) + 0.5))
        ranked = members[np.lexsort((members, keys[members]))]
        validation[ranked[:count]] = True
    return np.flatnonzero(~validation), np.flatnonzero(validation)


def _path_key(path: str, salt: bytes) -> int:
    portable = os.fsencode(path.replace(os.sep, "/"))
    return int.from_bytes(hashlib.blake2b(portable, digest_size=8, key=salt).digest(), "little")
