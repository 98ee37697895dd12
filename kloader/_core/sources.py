"""What a Loader reads from: in-memory arrays, or any map-style dataset.

`as_source` turns what the user passed into one of two sources:

- `ArraySource`: one array, or a tuple / list / dict of equal-length arrays
  (nested tuples and dicts allowed), as in `model.fit(x, y)`. Batches are
  gathered with one NumPy `take` per array. The worker layer sends the
  arrays to worker processes once, as shared memory (`SharedArraySource`).
  Python lists in a tuple or dict, `(x_list, y_list)`, are read as columns
  too when they have one entry per sample (`_lists_as_columns`).
- `MapSource`: anything with `__len__` and `__getitem__(i)` returning one sample
  (an array, a tuple, or a dict of arrays and scalars), a
  `torch.utils.data.Dataset` included.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from kloader._core import tree

# A plain list of arrays is read as columns, like `fit(x=[a, b])`. A list this
# long is far more likely a list of samples, which would be misread silently.
_MAX_LIST_COLUMNS = 16


def _is_array(obj: Any) -> bool:
    return isinstance(obj, np.ndarray) or (hasattr(obj, "__array__") and hasattr(obj, "shape"))


def _is_array_structure(obj: Any) -> bool:
    """True for an array, or tuples / dicts (any depth) of arrays, or a flat list of arrays."""
    if _is_array(obj):
        return True
    if isinstance(obj, tuple):
        return len(obj) > 0 and all(_is_array_structure(item) for item in obj)
    if isinstance(obj, Mapping):
        return len(obj) > 0 and all(_is_array_structure(value) for value in obj.values())
    if isinstance(obj, list):
        return len(obj) > 0 and all(_is_array(item) for item in obj)
    return False


def is_array_structure(obj: Any) -> bool:
    """True for what `ArraySource` reads: an array, or tuples / dicts / a flat list of arrays."""
    return _is_array_structure(obj)


def _leaf_lengths(source: Any) -> set[int]:
    leaves, _ = tree.flatten(source)
    return {len(leaf) if getattr(leaf, "ndim", 1) else -1 for leaf in leaves}


def _lists_as_columns(source: Any) -> Any:
    """`(x_list, y_list)` or `{"x": x_list, ...}` with one entry per sample, as arrays.

    Without this, a tuple of two lists would be a map-style dataset of two
    samples. A list of arrays that are themselves columns, `([a, b], y)` as in
    `fit(x=[a, b], y)`, is left as it is.
    """
    items = list(source.values()) if isinstance(source, Mapping) else list(source)
    names = [f"source[{key!r}]" for key in source] if isinstance(source, Mapping) else None
    names = names or [f"source[{i}]" for i in range(len(items))]
    if not any(isinstance(item, list) for item in items):
        return source
    if _is_array_structure(source) and len(_leaf_lengths(source)) == 1:
        return source
    lengths = {
        name: len(item) for name, item in zip(names, items) if isinstance(item, list) or _is_array(item)
    }
    if len(lengths) != len(items) or len(set(lengths.values())) != 1:
        listing = ", ".join(f"{name} has {length}" for name, length in lengths.items())
        raise ValueError(
            f"The source is a {type(source).__name__} holding Python lists ({listing}), which "
            "kloader cannot read as columns with one entry per sample. Pass equal-length "
            "columns, e.g. (np.asarray(x_list), np.asarray(y_list)), or a map-style dataset "
            "whose __getitem__(i) returns sample i."
        )
    columns = []
    for name, item in zip(names, items):
        if not isinstance(item, list):
            columns.append(item)
            continue
        try:
            column = np.asarray(item)
        except ValueError:  # ragged: NumPy refuses to stack it
            column = None
        if column is None or column.dtype == object:
            raise ValueError(
                f"{name} is a list of {len(item)} samples that do not stack into one array (their "
                "shapes or types differ). Give every entry the same shape, or pass a map-style "
                "dataset whose __getitem__(i) returns sample i and resize in the transform."
            )
        columns.append(column)
    if isinstance(source, Mapping):
        return dict(zip(source, columns))
    return tuple(columns)


def read_only(array: np.ndarray) -> np.ndarray:
    # A transform gets rows of these arrays; writing into them would change the
    # source for every later epoch (and, in workers, for every worker).
    view: np.ndarray = array.view()
    view.flags.writeable = False
    return view


class ArraySource:
    """Equal-length arrays held in memory; sample i is the i-th row of each."""

    def __init__(self, arrays: Any):
        leaves, self.structure = tree.flatten(arrays)
        self.arrays = [read_only(np.asarray(leaf)) for leaf in leaves]
        lengths = []
        for path, array in zip(tree.leaf_paths(self.structure, "source"), self.arrays):
            if array.ndim == 0:
                raise ValueError(
                    f"The array at {path} is a scalar (shape ()); every array in the source "
                    "needs one row per sample. Give it a leading sample dimension."
                )
            lengths.append((path, len(array)))
        if len({length for _, length in lengths}) > 1:
            listing = ", ".join(f"{path} has {length}" for path, length in lengths)
            raise ValueError(
                f"The arrays in the source have different lengths: {listing}. Every array needs "
                "exactly one row per sample; check that inputs and targets were built from the "
                "same samples."
            )
        self.num_samples = lengths[0][1]

    def __len__(self) -> int:
        return self.num_samples

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Unpickled arrays come back writeable: read-only again, as made.
        self.__dict__.update(state)
        self.arrays = [read_only(array) for array in self.arrays]

    def sample(self, index: int) -> Any:
        return tree.unflatten(self.structure, [array[index] for array in self.arrays])

    def gather(self, indices: np.ndarray, allocate: Any) -> Any:
        """The batch of rows `indices`, written straight into arrays from `allocate`."""
        owners = []
        for array in self.arrays:
            view, owner = allocate((len(indices),) + array.shape[1:], array.dtype)
            np.take(array, indices, axis=0, out=view)
            owners.append(owner)
        return tree.unflatten(self.structure, owners)


class MapSource:
    """A map-style dataset: `len(dataset)` samples, `dataset[i]` is sample i."""

    def __init__(self, dataset: Any):
        self.dataset = dataset
        self.num_samples = len(dataset)

    def __len__(self) -> int:
        return self.num_samples

    def sample(self, index: int) -> Any:
        return self.dataset[index]


def as_source(source: Any) -> ArraySource | MapSource:
    """Reads `source` as arrays or as a map-style dataset, or says why it cannot."""
    if isinstance(source, (str, bytes)):
        raise TypeError(
            f"A source cannot be a {type(source).__name__}. For an image folder use "
            "kloader.ImageFolder(path, ...) as the source."
        )
    if isinstance(source, list) and len(source) > _MAX_LIST_COLUMNS and all(_is_array(s) for s in source):
        raise ValueError(
            f"The source is a list of {len(source)} arrays. kloader reads a list of arrays as "
            "columns (inputs, targets, ...) like keras's fit(x=[a, b]), so a list this long is "
            "ambiguous. For a list of samples, stack them (np.stack(samples)) or pass a tuple of "
            "columns, e.g. (images, labels)."
        )
    if (
        isinstance(source, list)
        and 2 <= len(source) <= _MAX_LIST_COLUMNS
        and all(isinstance(item, list) for item in source)
        and len({len(item) for item in source}) == 1
    ):
        # [x_list, y_list] (columns) and [[1, 2, 3], [4, 5, 6]] (samples) look alike.
        raise ValueError(
            f"The source is a list of {len(source)} equal-length Python lists: kloader cannot "
            "tell columns ([x_list, y_list]) from samples. For columns pass a tuple, "
            "(x_list, y_list); for samples pass np.asarray(samples) or a map-style dataset."
        )
    if isinstance(source, (tuple, Mapping)):
        source = _lists_as_columns(source)
    result: ArraySource | MapSource
    if _is_array_structure(source):
        result = ArraySource(source)
    elif hasattr(source, "__len__") and hasattr(source, "__getitem__"):
        result = MapSource(source)
    else:
        raise TypeError(
            f"Cannot read samples from a {type(source).__name__}. A source is an array, a "
            "tuple / list / dict of equal-length arrays, or a map-style dataset with __len__ "
            "and __getitem__(i) (a torch.utils.data.Dataset works). Iterable-only datasets "
            "and generators have no random access, which deterministic shuffling needs."
        )
    if len(result) == 0:
        raise ValueError(
            "The source is empty (0 samples); there is nothing to load. Check the path or "
            "the arrays you passed."
        )
    return result
