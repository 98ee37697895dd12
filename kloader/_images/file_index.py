"""The files of an image folder, kept in NumPy arrays, and their split by seed.

A `FileIndex` holds every relative path in one bytes buffer with offsets, and
the labels in an int32 array. Worker processes receive it by pickling: a few
arrays, not a Python object per file, so it pickles small and its memory is
never touched by reference counting (no copy-on-write growth in forked
workers).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterator, Sequence

import numpy as np

from kloader._core import seeding


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


# ------------------------------------------------------------------ split


def split_positions(index: FileIndex, validation_split: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training positions, validation positions) of `index`, each in source order.

    Every file gets a key that depends only on the seed and its relative path
    (BLAKE2b of the path, keyed by 8 bytes drawn from `split_bits(seed)`).
    Files are grouped by label (one group without labels). The validation side
    holds int(validation_split * N) of all N files (as Keras's does), shared out among the
    groups in proportion to their sizes (largest remainders: each group of n
    files gives floor(validation_split * n), and the groups with the largest
    fractions left over give one more, ties broken by a key of the seed and the
    label); in each group, the files with the smallest keys go to validation,
    the rest to training. So the split is stratified, as large as asked, the
    same on every machine, backend and run, and it does not reshuffle when files
    are added or removed: only files near a group's cut-off can change sides.
    """
    salt = int(seeding.split_bits(seed).random_raw()).to_bytes(8, "little")
    keys = np.fromiter((_path_key(path, salt) for path in index.paths()), dtype=np.uint64, count=len(index))
    groups = np.zeros(len(index), np.int32) if index.labels is None else index.labels
    members = {int(group): np.flatnonzero(groups == group) for group in np.unique(groups)}
    exact = {group: validation_split * len(files) for group, files in members.items()}
    counts = {group: int(np.floor(share)) for group, share in exact.items()}
    left = int(validation_split * len(index)) - sum(counts.values())  # Keras's size
    by_remainder = sorted(
        counts, key=lambda group: (counts[group] - exact[group], _path_key(str(group), salt))
    )
    for group in by_remainder[:left]:
        counts[group] += 1
    validation = np.zeros(len(index), dtype=bool)
    for group, files in members.items():
        ranked = files[np.lexsort((files, keys[files]))]
        validation[ranked[: counts[group]]] = True
    return np.flatnonzero(~validation), np.flatnonzero(validation)


def _path_key(path: str, salt: bytes) -> int:
    portable = os.fsencode(path.replace(os.sep, "/"))
    return int.from_bytes(hashlib.blake2b(portable, digest_size=8, key=salt).digest(), "little")
