"""The order of an epoch: pure functions of (seed, epoch, sizes), no state.

An epoch is a permutation of the source's indices. It is cut into *global
steps* of `num_shards * batch_size` positions; shard r takes the r-th slice of
every step. With one shard this is plain batching. With several, step j of
every shard comes from the same stretch of the permutation, exactly as if one
process had drawn a global batch and split it between the replicas.

Remainder policy (`drop_remainder=False`): the last step holds the leftover
positions and is split as evenly as possible between shards. If it holds fewer
positions than there are shards, one shard would get an empty batch, so the
last two steps are re-divided: the last step takes exactly `num_shards`
positions and the one before it gives them up. Every shard then has the same
number of non-empty batches, the shards are disjoint, and together they cover
the epoch. With `drop_remainder=True` every batch is full and the positions past
the last full step are left out of that epoch (a different subset each epoch
when shuffling).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from kloader._core import seeding


def epoch_permutation(seed: int, epoch: int, num_samples: int) -> np.ndarray:
    """The order of the source's indices in `epoch`.

    Built by sorting raw PCG64 output, a stream NumPy guarantees stable across
    releases, so the order does not change when NumPy is upgraded (unlike
    `Generator.permutation`, whose algorithm may change).
    """
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}.")
    keys = seeding.permutation_bits(seed, epoch).random_raw(num_samples)
    return np.argsort(keys, kind="stable")


def _step_sizes(num_samples: int, batch_size: int, num_shards: int, drop_remainder: bool) -> np.ndarray:
    step = batch_size * num_shards
    if drop_remainder:
        num_steps = num_samples // step
        if num_steps == 0:
            raise ValueError(
                f"drop_remainder=True leaves no batch: {num_samples} samples are fewer than "
                f"batch_size * num_shards = {batch_size} * {num_shards} = {step}. "
                "Use a smaller batch_size or drop_remainder=False."
            )
        return np.full(num_steps, step, dtype=np.int64)
    if num_samples < num_shards:
        raise ValueError(
            f"Cannot split {num_samples} samples into {num_shards} shards with at least one "
            "sample each. Use fewer shards or a larger dataset."
        )
    num_steps = -(-num_samples // step)
    sizes = np.full(num_steps, step, dtype=np.int64)
    sizes[-1] = num_samples - (num_steps - 1) * step
    if sizes[-1] < num_shards:
        missing = num_shards - int(sizes[-1])
        if step - missing < num_shards:
            raise ValueError(
                f"{num_samples} samples cannot be split into equal numbers of non-empty batches "
                f"of at most {batch_size} for {num_shards} shards. Use drop_remainder=True or a "
                "batch_size of at least 2."
            )
        sizes[-2] -= missing
        sizes[-1] = num_shards
    return sizes


@dataclasses.dataclass(frozen=True)
class BatchLayout:
    """Where each batch of one shard lies in the epoch's permutation.

    Batch b covers positions `starts[b]:stops[b]` of the permutation. The layout
    depends only on the sizes, so it is computed once per loader.
    """

    starts: np.ndarray
    stops: np.ndarray

    @classmethod
    def build(
        cls,
        num_samples: int,
        batch_size: int,
        *,
        num_shards: int = 1,
        shard_index: int = 0,
        drop_remainder: bool = False,
    ) -> BatchLayout:
        sizes = _step_sizes(num_samples, batch_size, num_shards, drop_remainder)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        base, extra = np.divmod(sizes, num_shards)
        starts = offsets + shard_index * base + np.minimum(shard_index, extra)
        stops = starts + base + (shard_index < extra)
        return cls(starts=starts, stops=stops)

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def num_positions(self) -> int:
        """How many samples this shard yields per epoch."""
        return int(np.sum(self.stops - self.starts))

    def positions(self, batch: int) -> slice:
        return slice(int(self.starts[batch]), int(self.stops[batch]))
