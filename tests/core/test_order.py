"""The pure order functions: permutations and batch layouts (grain-style tiers)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kloader._core import order, seeding

seeds = st.integers(0, seeding.MAX_SEED)
epochs = st.integers(0, 10_000)


# ------------------------------------------------------------ properties


@given(seed=seeds, epoch=epochs, n=st.integers(1, 3000))
def test_every_epoch_is_a_permutation(seed: int, epoch: int, n: int) -> None:
    """Each epoch orders every index exactly once."""
    permutation = order.epoch_permutation(seed, epoch, n)
    assert np.array_equal(np.sort(permutation), np.arange(n))


@given(seed=seeds, epoch=epochs)
def test_epochs_differ(seed: int, epoch: int) -> None:
    """Consecutive epochs of 100 samples never share an order."""
    a = order.epoch_permutation(seed, epoch, 100)
    b = order.epoch_permutation(seed, epoch + 1, 100)
    assert not np.array_equal(a, b)


@given(seed=st.integers(0, seeding.MAX_SEED - 1), epoch=epochs)
def test_seeds_differ(seed: int, epoch: int) -> None:
    """Neighbouring seeds give different orders of the same epoch."""
    a = order.epoch_permutation(seed, epoch, 100)
    b = order.epoch_permutation(seed + 1, epoch, 100)
    assert not np.array_equal(a, b)


def test_seed_and_epoch_do_not_add_up() -> None:
    """seed 42 at epoch 1 is not seed 43 at epoch 0 (no `seed + epoch` derivation)."""
    assert not np.array_equal(order.epoch_permutation(42, 1, 100), order.epoch_permutation(43, 0, 100))


def test_high_seed_words_matter() -> None:
    """Seeds that differ only above bit 32 give different orders."""
    assert not np.array_equal(order.epoch_permutation(1, 0, 100), order.epoch_permutation(1 + 2**32, 0, 100))


# --------------------------------------------------------- reproducibility


@given(seed=seeds, epoch=epochs, n=st.integers(1, 500))
def test_same_inputs_same_order(seed: int, epoch: int, n: int) -> None:
    """The order is a pure function of (seed, epoch, n)."""
    assert np.array_equal(order.epoch_permutation(seed, epoch, n), order.epoch_permutation(seed, epoch, n))


def test_golden_order() -> None:
    """Frozen orders for seed 42. Only update these values if you know what you're doing:
    a change here changes every kloader user's data order."""
    assert order.epoch_permutation(42, 0, 20).tolist() == [
        18, 5, 0, 7, 6, 11, 2, 10, 1, 15, 9, 13, 17, 19, 8, 16, 14, 4, 12, 3,
    ]  # fmt: skip
    assert order.epoch_permutation(42, 1, 20).tolist() == [
        0, 1, 14, 5, 2, 17, 8, 18, 15, 7, 11, 12, 13, 3, 19, 16, 4, 10, 9, 6,
    ]  # fmt: skip
    assert order.epoch_permutation(0, 0, 10).tolist() == [4, 6, 1, 3, 9, 8, 2, 0, 5, 7]


def test_negative_epoch_is_refused() -> None:
    """Epochs count from 0."""
    with pytest.raises(ValueError, match="epoch must be >= 0"):
        order.epoch_permutation(0, -1, 10)


# ----------------------------------------------------------------- layouts


def _shards(n: int, batch_size: int, num_shards: int, drop: bool) -> list[order.BatchLayout]:
    return [
        order.BatchLayout.build(n, batch_size, num_shards=num_shards, shard_index=r, drop_remainder=drop)
        for r in range(num_shards)
    ]


def _positions(layout: order.BatchLayout) -> list[list[int]]:
    return [list(range(*layout.positions(b).indices(10**9))) for b in range(len(layout))]


def test_single_shard_is_plain_batching() -> None:
    """One shard: consecutive batches of batch_size, the last one smaller."""
    layout = order.BatchLayout.build(10, 4)
    assert _positions(layout) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert _positions(order.BatchLayout.build(10, 4, drop_remainder=True)) == [[0, 1, 2, 3], [4, 5, 6, 7]]


@settings(max_examples=300)
@given(
    n=st.integers(1, 400),
    batch_size=st.integers(1, 40),
    num_shards=st.integers(1, 8),
    drop=st.booleans(),
)
def test_shards_are_disjoint_equal_and_cover_the_epoch(
    n: int, batch_size: int, num_shards: int, drop: bool
) -> None:
    """Shards: same number of non-empty batches of at most batch_size, disjoint,
    and together the whole epoch (or every full global step, with drop_remainder)."""
    try:
        layouts = _shards(n, batch_size, num_shards, drop)
    except ValueError:
        # Only the documented impossible cases may refuse.
        step = batch_size * num_shards
        assert (drop and n < step) or n < num_shards or (batch_size == 1 and n % num_shards)
        return
    counts = {len(layout) for layout in layouts}
    assert len(counts) == 1 and counts.pop() > 0
    taken = [p for layout in layouts for batch in _positions(layout) for p in batch]
    assert len(taken) == len(set(taken)), "shards overlap"
    for layout in layouts:
        sizes = layout.stops - layout.starts
        assert sizes.min() >= 1 and sizes.max() <= batch_size
    if drop:
        step = batch_size * num_shards
        assert sorted(taken) == list(range((n // step) * step))
        assert all((layout.stops - layout.starts == batch_size).all() for layout in layouts)
    else:
        assert sorted(taken) == list(range(n))


def test_shards_split_each_global_step() -> None:
    """Step j of every shard comes from the same stretch of the permutation."""
    layouts = _shards(20, 4, 2, drop=False)
    assert _positions(layouts[0])[0] == [0, 1, 2, 3] and _positions(layouts[1])[0] == [4, 5, 6, 7]
    assert _positions(layouts[0])[2] == [16, 17] and _positions(layouts[1])[2] == [18, 19]


def test_tail_smaller_than_shard_count_is_rebalanced() -> None:
    """9 samples, batch 4, 2 shards: the last step would leave a shard empty, so
    the last two steps are re-divided and both shards get two batches."""
    first, second = _shards(9, 4, 2, drop=False)
    assert _positions(first) == [[0, 1, 2, 3], [7]]
    assert _positions(second) == [[4, 5, 6], [8]]


def test_impossible_splits_say_what_to_do() -> None:
    """Too few samples, or batch_size 1 with a remainder, refuse with a fix."""
    with pytest.raises(ValueError, match="fewer than"):
        order.BatchLayout.build(3, 4, drop_remainder=True)
    with pytest.raises(ValueError, match="at least one sample each"):
        order.BatchLayout.build(2, 4, num_shards=3)
    with pytest.raises(ValueError, match="drop_remainder=True or a batch_size of at least 2"):
        order.BatchLayout.build(7, 1, num_shards=2)
