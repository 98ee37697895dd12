"""Seed validation and the derived random streams."""

from __future__ import annotations

import numpy as np
import pytest

from kloader._core import seeding


@pytest.mark.parametrize("seed", [0, 1, 2**63 - 1, np.int64(5), np.uint32(7)])
def test_valid_seeds(seed: object) -> None:
    """Non-negative integers up to 2**63 - 1, NumPy integers included."""
    assert seeding.validate_seed(seed) == int(seed)  # type: ignore[call-overload]


@pytest.mark.parametrize(
    ("seed", "error", "message"),
    [
        (-1, ValueError, r"must be in \[0, 2\*\*63 - 1\], got -1"),
        (2**63, ValueError, "must be in"),
        (1.5, TypeError, "got 1.5 of type float"),
        ("42", TypeError, "of type str"),
        (True, TypeError, "of type bool"),
        ([1], TypeError, "of type list"),
    ],
)
def test_invalid_seeds_say_how_to_fix(seed: object, error: type[Exception], message: str) -> None:
    """Bad seeds are refused with the accepted range and an example."""
    with pytest.raises(error, match=message):
        seeding.validate_seed(seed)


def test_drawn_seeds_are_valid_and_differ() -> None:
    """Drawn seeds come from OS entropy and are valid seeds."""
    drawn = {seeding.draw_seed() for _ in range(20)}
    assert len(drawn) == 20
    assert all(seeding.validate_seed(s) == s for s in drawn)


def test_sample_streams_depend_on_every_field() -> None:
    """seed, epoch and index each change the sample stream, and streams are reproducible."""
    base = seeding.sample_rng(1, 2, 3).integers(2**32, size=4)
    assert np.array_equal(base, seeding.sample_rng(1, 2, 3).integers(2**32, size=4))
    for other in [(0, 2, 3), (1, 0, 3), (1, 2, 0), (1, 2, 3 + 2**32)]:
        assert not np.array_equal(base, seeding.sample_rng(*other).integers(2**32, size=4))


def test_streams_of_different_uses_differ() -> None:
    """The permutation stream of (seed, epoch) is not the sample stream of (seed, epoch, 0)."""
    permutation = seeding.permutation_bits(5, 0).random_raw(4)
    sample = np.random.Generator(seeding.sample_rng(5, 0, 0).bit_generator).bit_generator.random_raw(4)
    assert not np.array_equal(permutation, sample)
