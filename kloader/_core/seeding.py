"""Seeds: validation, drawing, and the derivation of every random stream.

Every random stream kloader uses is derived from the user's seed with
`numpy.random.SeedSequence`, never from a global RNG and never by arithmetic
such as `seed + epoch` (seed 42 at epoch 1 must not equal seed 43 at epoch 0).

Each stream gets a distinct tag, and every field is written as two 32-bit
words, so the entropy has a fixed layout: `SeedSequence([1, 2])` and
`SeedSequence([1, 2, 0])` produce the same state, and a variable layout would
let two different (seed, epoch, index) triples collide.
"""

from __future__ import annotations

import secrets

import numpy as np

from kloader._core import checks

MAX_SEED = 2**63 - 1

# Stream tags: one per use, so no two uses can ever share a stream.
_PERMUTATION = 1
_SAMPLE = 2
_SPLIT = 3


def validate_seed(seed: object, *, name: str = "seed") -> int:
    """Returns `seed` as a Python int, or raises a ValueError/TypeError that says how to fix it."""
    if not checks.is_int(seed):
        raise TypeError(
            f"`{name}` must be an int in [0, 2**63 - 1] or None, got {seed!r} "
            f"of type {type(seed).__name__}. Pass a whole number such as {name}=42, "
            f"or {name}=None to draw one."
        )
    value = int(seed)
    if not 0 <= value <= MAX_SEED:
        raise ValueError(
            f"`{name}` must be in [0, 2**63 - 1], got {value}. "
            f"Use a non-negative seed, for example {name}={abs(value) % (MAX_SEED + 1)}."
        )
    return value


def draw_seed() -> int:
    """Draws a fresh seed from the operating system's entropy source."""
    return secrets.randbits(63)


def _words(value: int) -> list[int]:
    return [value & 0xFFFFFFFF, (value >> 32) & 0xFFFFFFFF]


def _sequence(tag: int, *fields: int) -> np.random.SeedSequence:
    entropy = [tag]
    for field in fields:
        entropy.extend(_words(field))
    return np.random.SeedSequence(entropy)


def permutation_bits(seed: int, epoch: int) -> np.random.PCG64:
    """The bit generator that orders epoch `epoch` of a loader seeded with `seed`."""
    return np.random.PCG64(_sequence(_PERMUTATION, seed, epoch))


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator handed to `transform(sample, rng)` for sample `index` in `epoch`.

    It depends on nothing else: not on the worker, the batch, the shard or the
    order in which samples are computed.
    """
    return np.random.Generator(np.random.PCG64(_sequence(_SAMPLE, seed, epoch, index)))


def split_bits(seed: int) -> np.random.PCG64:
    """The bit generator behind a deterministic train/validation split."""
    return np.random.PCG64(_sequence(_SPLIT, seed))
