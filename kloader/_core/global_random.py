"""Noticing a source or transform that draws from a global random generator.

A transform that calls `np.random.rand()` instead of using its `rng` gives
batches that differ per run, per `num_workers` and after a resume: the exact
bug kloader exists to remove, and invisible in the batches themselves. The
guard compares the global generators' states before and after a sample is
read and transformed, and reports which ones moved.

It must stay cheap enough to be on by default, so each generator is watched
as cheaply as it can be:

- NumPy's global generator (`np.random.*`): its MT19937 state is read in place
  through the bit generator's documented `ctypes.state_address` (the position
  in the key, and the key's first word): a fraction of a microsecond, for every
  sample. Every draw moves the position, and a position that comes back round
  means the key was regenerated, which changes its first word. A replaced bit
  generator (`np.random.set_bit_generator`) falls back to its `state` dict.
- Python's `random` and torch's default generator (only when torch is already
  imported) have no cheap view of their state (`random.getstate()` builds 625
  ints), so they are compared on the first `_ALWAYS_FIRST` samples and then on
  one sample in `_EVERY`: a transform that draws on every call, or on a good
  share of them, is caught within the first few batches.

Reseeding a global generator inside a transform (`np.random.seed(index)`)
moves it too, and is reported as well: it still shares state across threads
and hides the dependency that `rng` makes explicit. The states are global, so
a draw made by another thread of the same process while a sample is being
made would be reported too; kloader's own threads make none (its worker pool
draws torch's base seed from a private generator).
"""

from __future__ import annotations

import ctypes
import random
import sys
from typing import Any

import numpy as np

_ALWAYS_FIRST = 16
_EVERY = 64
# MT19937's state struct: uint32 key[624], then int pos.
_MT19937_WORDS = 624


def _numpy_bit_generator() -> Any:
    return np.random.mtrand._rand._bit_generator


_Words = ctypes.c_uint32 * (_MT19937_WORDS + 1)
# The bit generator last seen, and a view of its state in place (built once: about 10 us).
_view: tuple[Any, Any] = (None, None)


def _numpy_state() -> Any:
    global _view
    generator = _numpy_bit_generator()
    if type(generator).__name__ != "MT19937":
        return (id(generator), repr(generator.state))
    if _view[0] is not generator:
        _view = (generator, _Words.from_address(generator.ctypes.state_address))
    words = _view[1]
    return (id(generator), words[_MT19937_WORDS], words[0])


def _torch_state() -> Any:
    torch = sys.modules.get("torch")
    generator = getattr(torch, "default_generator", None)
    if generator is None:
        return None
    return generator.get_state().numpy().tobytes()


class GlobalRandomGuard:
    """Snapshots of the global generators, and which ones a piece of code moved."""

    def __init__(self) -> None:
        self.samples_seen = 0

    def snapshot(self) -> tuple[Any, ...]:
        """The generators' states now (the costly ones only on some samples)."""
        self.samples_seen += 1
        seen = self.samples_seen
        full = seen <= _ALWAYS_FIRST or seen % _EVERY == 0
        if not full:
            return (_numpy_state(), None, None)
        return (_numpy_state(), random.getstate(), _torch_state())

    @staticmethod
    def moved(before: tuple[Any, ...]) -> list[str]:
        """The generators whose state differs from `before`, by the names a user calls them."""
        numpy_state, python_state, torch_state = before
        names = []
        if _numpy_state() != numpy_state:
            names.append("NumPy's global generator (np.random.*)")
        if python_state is not None and random.getstate() != python_state:
            names.append("Python's random module")
        if torch_state is not None and _torch_state() != torch_state:
            names.append("torch's default generator (torch.rand*, torch.randn, ...)")
        return names


def advice(names: list[str], index: int, where: str) -> str:
    """The warning text for `where` ("the transform", "the source") moving `names` on sample `index`."""
    return (
        f"{where} drew from {' and '.join(names)} while making sample {index}. Global random "
        "state differs per run, per worker process and after a resume, so these batches are "
        "not a function of (seed, epoch): use the `rng` argument of transform(sample, rng) "
        "instead (e.g. rng.random(), rng.integers(...), rng.normal(...)). kloader warns once "
        "per loader."
    )
