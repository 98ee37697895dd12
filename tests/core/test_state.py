"""Checkpoint state: small, versioned, JSON; restoring after any batch yields exactly the rest."""

from __future__ import annotations

import json

import pytest

import kloader

from utils import IdDataset, assert_state_restores_rest, id_arrays, jitter


@pytest.mark.parametrize("shuffle", [True, False])
def test_restore_after_every_batch_yields_the_rest(shuffle: bool) -> None:
    """For every batch of two epochs, a loader restored from the state after it yields the rest."""
    assert_state_restores_rest(
        lambda: kloader.Loader(IdDataset(11), batch_size=3, seed=5, shuffle=shuffle, transform=jitter)
    )


def test_restore_with_workers_yields_the_rest() -> None:
    """The same holds when worker processes make the batches."""
    assert_state_restores_rest(
        lambda: kloader.Loader(IdDataset(9), batch_size=4, seed=6, transform=jitter, num_workers=2), epochs=2
    )


def test_restore_of_a_shard() -> None:
    """A shard's state restores that shard's rest."""
    assert_state_restores_rest(lambda: kloader.Loader(id_arrays(13), batch_size=2, seed=1, shard=(1, 3)))


def test_state_is_small_json() -> None:
    """The state round-trips through JSON and stays small."""
    loader = kloader.Loader(IdDataset(100), batch_size=10, seed=123)
    next(iter(loader))
    state = loader.state_dict()
    text = json.dumps(state)
    assert len(text) < 400
    assert json.loads(text) == state
    assert (state["version"], state["epoch"], state["batch"], state["seed"]) == (1, 0, 1, 123)


def test_state_carries_a_drawn_seed() -> None:
    """A loader built with seed=None adopts the seed of the state it loads."""
    original = kloader.Loader(IdDataset(20), batch_size=5)
    restored = kloader.Loader(IdDataset(20), batch_size=5)
    restored.load_state_dict(original.state_dict())
    assert restored.seed == original.seed


def _state(**changes: object) -> dict[str, object]:
    state = kloader.Loader(IdDataset(20), batch_size=5, seed=1).state_dict()
    state.update(changes)
    return state


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"version": 99}, "Unknown kloader state version 99"),
        ({"format": "other"}, "Not a kloader.Loader state"),
        ({"num_samples": 21}, "num_samples=21 but this loader has num_samples=20"),
        ({"batch_size": 4}, "batch_size=4 but this loader has batch_size=5"),
        ({"shuffle": False}, "shuffle=False"),
        ({"num_shards": 2, "shard_index": 0}, "num_shards=2"),
        ({"seed": 2}, "saved with seed=2 but this loader was built with seed=1"),
        ({"batch": 4}, "not valid for a loader of 4 batches"),
        ({"epoch": -1}, "not valid"),
        # Values of another type that == would let through (True == 1 == 1.0): an edited state.
        ({"version": True}, "Unknown kloader state version True"),
        ({"version": 1.0}, "Unknown kloader state version 1.0"),
        ({"shuffle": 1}, "shuffle=1 but this loader has shuffle=True"),
        ({"num_samples": 20.0}, "num_samples=20.0 but this loader has num_samples=20"),
        ({"epoch": True}, "not valid"),
        ({"batch": 1.0}, "not valid"),
        # Epochs past 2**63 - 1 would replay the random streams of smaller ones.
        ({"epoch": 2**64 + 1}, "not valid"),
        ({"seed": "42"}, r"The state's seed, '42', is not a seed kloader writes"),
        ({"seed": -1}, r"The state's seed, -1, is not a seed kloader writes"),
    ],
)
def test_bad_states_are_refused(changes: dict[str, object], message: str) -> None:
    """Unknown versions and states from another source or layout are refused, with the reason."""
    loader = kloader.Loader(IdDataset(20), batch_size=5, seed=1)
    with pytest.raises(ValueError, match=message):
        loader.load_state_dict(_state(**changes))


def test_missing_keys_are_refused() -> None:
    """A truncated state is refused."""
    state = _state()
    del state["epoch"]
    with pytest.raises(ValueError, match="missing"):
        kloader.Loader(IdDataset(20), batch_size=5, seed=1).load_state_dict(state)
