"""On TensorFlow, batches of arrays without a transform are gathered by tf.data from
the indices the loader hands out: the same bytes as the loader's own batches."""

from __future__ import annotations

import numpy as np
import pytest

import kloader

from utils import assert_batches_equal

pytestmark = pytest.mark.backend("tensorflow")


def as_numpy(value: object) -> object:
    if isinstance(value, dict):
        return {key: as_numpy(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return tuple(as_numpy(item) for item in value)
    array = value.numpy()  # type: ignore[attr-defined]
    return array.astype("S") if array.dtype == object else array  # tf.string: bytes objects


def epoch_from_tensorflow(loader: kloader.Loader) -> list[object]:
    return [as_numpy(batch) for batch in loader.get_tf_dataset()]


def test_every_dtype_and_structure_matches_the_loaders_batches() -> None:
    n = 11
    ids = np.arange(n)
    source = (
        {
            "bool": ids % 3 == 0,
            "int8": (ids - 5).astype(np.int8),
            "uint16": (ids * 1000).astype(np.uint16),
            "uint32": (ids * 7).astype(np.uint32),
            "uint64": (ids * 2**40).astype(np.uint64),
            "float16": (ids / 3).astype(np.float16),
            "float64": np.stack([ids / 7, -ids / 7], axis=1),
            "complex64": (ids + 1j * ids).astype(np.complex64),
            "image": np.arange(n * 2 * 3 * 3, dtype=np.uint8).reshape(n, 2, 3, 3),
        },
        (ids.astype(np.int32), np.array([f"s{i:02d}" for i in ids]).astype("S")),
    )
    loader = kloader.Loader(source, batch_size=4, seed=3)
    expected = [loader[b] for b in range(len(loader))]
    assert_batches_equal(epoch_from_tensorflow(loader), expected)
    # The pass handed out a whole epoch: the next dataset iteration is epoch 1.
    loader_epoch_1 = kloader.Loader(source, batch_size=4, seed=3)
    loader_epoch_1.set_epoch(1)
    assert_batches_equal(
        epoch_from_tensorflow(loader), [loader_epoch_1[b] for b in range(len(loader_epoch_1))]
    )


def test_unicode_strings_arrive_as_utf8() -> None:
    names = np.array(["a", "ü", "日本", "", "zz"])
    loader = kloader.Loader(names, batch_size=2, shuffle=False)
    got = [batch.tolist() for batch in epoch_from_tensorflow(loader)]
    assert got == [[s.encode() for s in names[i : i + 2]] for i in range(0, 5, 2)]
