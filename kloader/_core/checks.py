"""Checks of user arguments that many modules share: one rule each, one wording each.

Booleans are ints to Python; to kloader `True` is never a size or a count.
"""

from __future__ import annotations

import numbers
from typing import Any, TypeGuard

import numpy as np


def is_int(value: Any) -> TypeGuard[int]:
    """An integer (a Python or NumPy int: typed as int), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def flag(value: Any, *, name: str) -> bool:
    """`value` as a bool if it is one (Python's or NumPy's), else a TypeError naming `name`:
    `shuffle="false"` is truthy, and `None` falsy, and neither says what was meant."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be True or False, got {value!r} of type {type(value).__name__}.")
    return bool(value)


def int_at_least(value: Any, minimum: int, *, name: str, example: str) -> int:
    """`value` as an int if it is one and >= `minimum`, else a ValueError naming `name`.

    Example:
        ```python
        batch_size = int_at_least(batch_size, 1, name="batch_size", example="batch_size=32")
        ```
    """
    if not is_int(value) or int(value) < minimum:
        wanted = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"`{name}` must be {wanted}, got {value!r}. For example {example}.")
    return int(value)


def height_width(value: Any, *, name: str, example: str) -> tuple[int, int]:
    """(height, width) from one positive int (a square) or a pair of them.

    Example:
        ```python
        assert height_width(224, name="size", example="size=224") == (224, 224)
        ```
    """
    pair = (value, value) if is_int(value) else value
    try:
        height, width = pair
        ok = is_int(height) and is_int(width) and int(height) > 0 and int(width) > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(
            f"`{name}` must be a positive int or (height, width) with two positive ints, got "
            f"{value!r}. For example {example}."
        )
    return (int(height), int(width))


# An epoch enters the random streams as two 32-bit words, as a seed does
# (seeding._sequence): larger epochs would reuse the streams of smaller ones.
MAX_EPOCH = 2**63 - 1


def epoch(value: Any, *, name: str = "epoch") -> int:
    """`value` as an epoch number (an int in [0, MAX_EPOCH]), else a ValueError naming `name`."""
    if not is_int(value) or not 0 <= int(value) <= MAX_EPOCH:
        raise ValueError(f"`{name}` must be an int >= 0 (and below 2**63), got {value!r}.")
    return int(value)


def position(index: Any, length: int, *, of: str) -> int:
    """`index` into `length` items, negative from the end, as a position in [0, length).

    `of` names what is indexed, for the errors: "a loader of 3 batches".

    Example:
        ```python
        assert position(-1, 5, of="a loader of 5 batches") == 4
        ```
    """
    if not is_int(index):
        raise TypeError(f"An index must be an int, got {index!r} for {of}.")
    if not -length <= index < length:
        raise IndexError(f"Index {index} is out of range for {of}.")
    return int(index) % length
