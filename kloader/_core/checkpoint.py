"""The loader's checkpoint state: small, versioned, JSON-serialisable.

A state names a position (epoch, batch) and everything that gives that
position its meaning: the seed, the number of samples, the batch layout. A
state from another source or another layout is refused with a message, never
applied to the wrong data.
"""

from __future__ import annotations

from typing import Any

from kloader._core import checks, seeding

VERSION = 1
_FORMAT = "kloader.Loader"

# The keys that must match between the state and the loader, with how to fix a mismatch.
LAYOUT_KEYS = {
    "num_samples": "the state was saved for a source with a different number of samples",
    "batch_size": "build the loader with the batch_size the state was saved with",
    "shuffle": "build the loader with the shuffle setting the state was saved with",
    "drop_remainder": "build the loader with the drop_remainder setting the state was saved with",
    "num_shards": "resume with the number of shards (processes) the state was saved with",
    "shard_index": "load each shard's own state into that shard's loader",
}


def make(*, seed: int, epoch: int, batch: int, layout: dict[str, Any]) -> dict[str, Any]:
    """The state of a loader with this `layout` (the `LAYOUT_KEYS` values) at (epoch, batch)."""
    return {
        "format": _FORMAT,
        "version": VERSION,
        "seed": int(seed),
        "epoch": int(epoch),
        "batch": int(batch),
        **layout,
    }


def check(
    state: Any, *, layout: dict[str, Any], seed: int, seed_was_given: bool, batches_per_epoch: int
) -> tuple[int, int, int]:
    """Returns (seed, epoch, batch) from `state`, or raises a ValueError that says why not."""
    if not isinstance(state, dict) or state.get("format") != _FORMAT:
        raise ValueError(
            f"Not a kloader.Loader state: {str(state)[:80]!r}. Pass what loader.state_dict() returned."
        )
    if not _same(state.get("version"), VERSION):
        raise ValueError(
            f"Unknown kloader state version {state.get('version')!r}; this kloader reads version "
            f"{VERSION}. The state was written by another kloader release: load it with that release."
        )
    missing = [key for key in ("seed", "epoch", "batch", *LAYOUT_KEYS) if key not in state]
    if missing:
        raise ValueError(f"The kloader state is missing {missing}; it may have been edited or truncated.")
    for key, fix in LAYOUT_KEYS.items():
        mine = layout[key]
        if not _same(state[key], mine):
            raise ValueError(f"The state has {key}={state[key]!r} but this loader has {key}={mine!r}: {fix}.")
    try:
        saved_seed = seeding.validate_seed(state["seed"])
    except (TypeError, ValueError):
        raise ValueError(
            f"The state's seed, {state['seed']!r}, is not a seed kloader writes (an int in "
            "[0, 2**63 - 1]): the state was edited or damaged. Pass what loader.state_dict() returned."
        ) from None
    if seed_was_given and saved_seed != seed:
        raise ValueError(
            f"The state was saved with seed={saved_seed} but this loader was built with seed={seed}. "
            f"Build it with seed={saved_seed}, or with seed=None to take the seed from the state."
        )
    epoch, batch = state["epoch"], state["batch"]
    valid = _is_count(epoch) and _is_count(batch) and batch < batches_per_epoch
    if not valid:
        raise ValueError(
            f"The state's position (epoch={epoch!r}, batch={batch!r}) is not valid for a loader of "
            f"{batches_per_epoch} batches per epoch."
        )
    return saved_seed, epoch, batch


def _is_count(value: Any) -> bool:
    # A Python int, as state_dict() writes it (JSON gives one back); epochs stop at MAX_EPOCH.
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= checks.MAX_EPOCH


def _same(saved: Any, expected: Any) -> bool:
    """Equal, and a bool where a bool is expected, an integer (not a bool) where an integer
    is: an edited state's True, 1.0 or 1 is not a loader's 1, 1 or True (1 == 1.0 == True)."""
    if isinstance(expected, bool):
        return isinstance(saved, bool) and saved == expected
    if checks.is_int(expected):
        return checks.is_int(saved) and saved == expected
    return bool(saved == expected)
