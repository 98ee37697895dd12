"""The Loader's own API: construction, order, random access, iteration, epochs, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import kloader

from utils import IdDataset, assert_batches_equal, id_arrays


def ids_of(loader: kloader.Loader) -> list[list[int]]:
    return [batch[1].astype(int).tolist() for batch in loader]


# ------------------------------------------------------------------ order


def test_epoch_order_is_the_pure_order() -> None:
    """Iterating yields batches made of `indices(b, epoch)`, epoch after epoch."""
    loader = kloader.Loader(id_arrays(10), batch_size=4, seed=3)
    for epoch in range(3):
        assert loader.epoch == epoch
        assert ids_of(loader) == [loader.indices(b, epoch).tolist() for b in range(3)]
    assert loader.epoch == 3


def test_each_epoch_is_a_new_permutation() -> None:
    """Every epoch holds each sample once, in a different order."""
    loader = kloader.Loader(id_arrays(50), batch_size=8, seed=1)
    orders = [[i for batch in ids_of(loader) for i in batch] for _ in range(3)]
    assert all(sorted(order) == list(range(50)) for order in orders)
    assert orders[0] != orders[1] != orders[2]


def test_same_seed_same_batches_other_seed_other_batches() -> None:
    """Two loaders with one seed agree batch for batch; another seed does not."""
    a, b, c = (kloader.Loader(IdDataset(30), batch_size=7, seed=s) for s in (9, 9, 10))
    assert ids_of(a) == ids_of(b)
    assert ids_of(a) != ids_of(c)


def test_no_shuffle_is_source_order_every_epoch() -> None:
    """shuffle=False yields the source in order, every epoch."""
    loader = kloader.Loader(id_arrays(10), batch_size=4, shuffle=False)
    assert ids_of(loader) == ids_of(loader) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_seed_none_draws_and_exposes_a_seed() -> None:
    """seed=None draws a seed; a loader built with it repeats the run."""
    first = kloader.Loader(IdDataset(40), batch_size=8)
    assert isinstance(first.seed, int)
    again = kloader.Loader(IdDataset(40), batch_size=8, seed=first.seed)
    assert ids_of(first) == ids_of(again)
    assert kloader.Loader(IdDataset(40), batch_size=8).seed != first.seed


def test_drop_remainder() -> None:
    """drop_remainder=True keeps only full batches."""
    loader = kloader.Loader(id_arrays(10), batch_size=4, seed=0, drop_remainder=True)
    assert len(loader) == 2
    assert all(len(ids) == 4 for ids in ids_of(loader))


# ------------------------------------------------------------ manual use


def test_len_and_random_access() -> None:
    """len() is batches per epoch; loader[i] is batch i of the current epoch, also from the end."""
    loader = kloader.Loader(id_arrays(10), batch_size=4, seed=2)
    assert len(loader) == 3
    loader.set_epoch(5)
    for i in range(3):
        assert loader[i][1].astype(int).tolist() == loader.indices(i, 5).tolist()
    assert_batches_equal([loader[-1]], [loader[2]])
    assert loader.epoch == 5, "random access does not move the epoch"


def test_random_access_out_of_range() -> None:
    """Indexing past the end raises IndexError, a non-int raises TypeError."""
    loader = kloader.Loader(id_arrays(10), batch_size=4)
    with pytest.raises(IndexError, match="out of range for a loader of 3 batches"):
        loader[3]
    with pytest.raises(TypeError, match="must be an int"):
        loader[1.0]  # type: ignore[index]


def test_set_epoch() -> None:
    """set_epoch(e) makes the next pass yield epoch e from its start."""
    loader = kloader.Loader(IdDataset(20), batch_size=5, seed=4)
    reference = kloader.Loader(IdDataset(20), batch_size=5, seed=4)
    for _ in range(3):
        expected = ids_of(reference)
    loader.set_epoch(2)
    assert ids_of(loader) == expected
    with pytest.raises(ValueError, match="`epoch` must be an int >= 0"):
        loader.set_epoch(-1)


@pytest.mark.parametrize("epoch", [-1, 1.5, True, 2**63, 2**64 + 1])
def test_every_way_to_name_an_epoch_refuses_what_is_not_one(epoch: object) -> None:
    """Epochs are ints in [0, 2**63): past that they enter the random streams as smaller ones."""
    loader = kloader.Loader(IdDataset(20), batch_size=5, seed=4)
    for name_an_epoch in (
        loader.set_epoch,
        lambda epoch: loader.batch(0, epoch=epoch),
        lambda epoch: loader.indices(0, epoch=epoch),
        lambda epoch: loader.state_at(epoch, 0),
    ):
        with pytest.raises(ValueError, match=r"`epoch` must be an int >= 0 \(and below 2\*\*63\)"):
            name_an_epoch(epoch)
    with pytest.raises(ValueError, match="`batch` must be an int >= 0"):
        loader.state_at(1, -1)
    assert loader.state_at(2**63 - 2, 4)["epoch"] == 2**63 - 1  # carried into the last epoch
    with pytest.raises(ValueError, match="`epoch` must be an int >= 0"):
        loader.state_at(2**63 - 1, 4)  # the batch carries it into epoch 2**63


def test_batches_keep_the_source_structure() -> None:
    """Tuples stay tuples, dicts stay dicts, nested structures are kept."""
    x, y = id_arrays(6)
    as_dict = kloader.Loader({"features": x, "label": y}, batch_size=4, shuffle=False)[0]
    assert set(as_dict) == {"features", "label"} and as_dict["features"].shape == (4, 2)
    nested = kloader.Loader(({"a": x, "b": x * 2}, y), batch_size=4, shuffle=False)[0]
    assert nested[0]["b"].tolist() == (x[:4] * 2).tolist() and nested[1].tolist() == [0, 1, 2, 3]
    single = kloader.Loader(x, batch_size=4, shuffle=False)[1]
    assert isinstance(single, np.ndarray) and single.shape == (2, 2)
    listed = kloader.Loader([x, y], batch_size=4, shuffle=False)[0]
    assert isinstance(listed, tuple) and len(listed) == 2


class DictDataset:
    def __len__(self) -> int:
        return 5

    def __getitem__(self, i: int) -> dict[str, object]:
        return {"image": np.full((2, 2), i, np.uint8), "label": i, "weight": 0.5}


def test_map_style_samples_are_stacked() -> None:
    """Dict samples with arrays and Python scalars become a dict of stacked arrays."""
    batch = kloader.Loader(DictDataset(), batch_size=5, shuffle=False)[0]
    assert batch["image"].shape == (5, 2, 2) and batch["image"].dtype == np.uint8
    assert batch["label"].tolist() == [0, 1, 2, 3, 4]
    assert batch["weight"].dtype == np.float64


def test_torch_dataset_source() -> None:
    """A torch TensorDataset works as a source; batches are NumPy."""
    dataset = torch.utils.data.TensorDataset(torch.arange(12).reshape(6, 2), torch.arange(6))
    x, y = kloader.Loader(dataset, batch_size=3, shuffle=False)[1]
    assert isinstance(x, np.ndarray) and x.tolist() == [[6, 7], [8, 9], [10, 11]]
    assert y.tolist() == [3, 4, 5]


def test_transform_gets_a_reproducible_rng() -> None:
    """transform(sample, rng): the same (seed, epoch, index) always gets the same stream."""
    seen: dict[tuple[int, int], float] = {}

    def remember(
        sample: tuple[np.ndarray, np.float32], rng: np.random.Generator
    ) -> tuple[np.ndarray, np.float32]:
        value = rng.random()
        key = (loader.epoch, int(sample[1]))
        assert seen.setdefault(key, value) == value
        return sample[0] + value, sample[1]

    loader = kloader.Loader(IdDataset(8), batch_size=3, seed=1, transform=remember)
    first = [loader[i] for i in range(3)]
    again = [loader[i] for i in range(3)]
    assert_batches_equal(first, again)
    loader.set_epoch(1)
    assert not np.array_equal(loader[0][0], first[0][0])


# ----------------------------------------------------------------- errors


@pytest.mark.parametrize("batch_size", [0, -3, 2.5, "8", True])
def test_bad_batch_size(batch_size: object) -> None:
    """batch_size must be a positive int."""
    with pytest.raises(ValueError, match="`batch_size` must be a positive int"):
        kloader.Loader(id_arrays(4), batch_size=batch_size)  # type: ignore[arg-type]


@pytest.mark.parametrize("num_workers", [-1, 1.5, None])
def test_bad_num_workers(num_workers: object) -> None:
    """num_workers must be an int >= 0."""
    with pytest.raises(ValueError, match="`num_workers` must be an int >= 0"):
        kloader.Loader(id_arrays(4), batch_size=2, num_workers=num_workers)  # type: ignore[arg-type]


def test_bad_seed() -> None:
    """A negative or non-integer seed is refused with the accepted range."""
    with pytest.raises(ValueError, match="must be in"):
        kloader.Loader(id_arrays(4), batch_size=2, seed=-5)
    with pytest.raises(TypeError, match="must be an int"):
        kloader.Loader(id_arrays(4), batch_size=2, seed="x")  # type: ignore[arg-type]


def test_arrays_of_different_lengths() -> None:
    """Arrays of different lengths name each length."""
    with pytest.raises(ValueError, match=r"source\[0\] has 10, source\[1\] has 9"):
        kloader.Loader((np.zeros((10, 2)), np.zeros(9)), batch_size=2)


def test_empty_source() -> None:
    """An empty source is refused."""
    with pytest.raises(ValueError, match="The source is empty"):
        kloader.Loader(np.zeros((0, 3)), batch_size=2)
    with pytest.raises(ValueError, match="The source is empty"):
        kloader.Loader([], batch_size=2)


def test_unreadable_sources() -> None:
    """Generators, strings and long lists of arrays are refused with what to pass instead."""
    with pytest.raises(TypeError, match="Iterable-only datasets and generators"):
        kloader.Loader((i for i in range(3)), batch_size=2)
    with pytest.raises(TypeError, match=r"kloader\.ImageFolder"):
        kloader.Loader("images/", batch_size=2)
    with pytest.raises(ValueError, match=r"np\.stack"):
        kloader.Loader([np.zeros(3)] * 40, batch_size=2)


def test_keras_enqueuer_arguments_are_refused() -> None:
    """Keras's workers / use_multiprocessing / max_queue_size point to num_workers."""
    for name in ("workers", "use_multiprocessing", "max_queue_size"):
        with pytest.raises(TypeError, match="Use num_workers=N"):
            kloader.Loader(id_arrays(4), batch_size=2, **{name: 2})


class ShapeShifter:
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return np.zeros((3 if i == 2 else 2,)), i


def test_samples_of_different_shapes() -> None:
    """Samples of different shapes name both indices and both shapes."""
    loader = kloader.Loader(ShapeShifter(), batch_size=4, shuffle=False)
    with pytest.raises(
        kloader.SampleError, match=r"Sample 2 has shape \(3,\) at sample\[0\], but sample 0 has shape \(2,\)"
    ):
        loader[0]


class NoneAt:
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> object:
        return None if i == 1 else (np.zeros(2), i)


def test_source_returning_none() -> None:
    """A source that returns None names the index."""
    with pytest.raises(kloader.SampleError, match="The source returned None for sample 1"):
        kloader.Loader(NoneAt(), batch_size=4, shuffle=False)[0]


def test_transform_that_raises_names_the_sample_and_keeps_the_cause() -> None:
    """A failing transform names the sample and epoch; the original error is the cause."""

    def fail_on_three(sample: tuple[np.ndarray, np.float32], rng: np.random.Generator) -> object:
        if sample[1] == 3:
            raise KeyError("no crop for you")
        return sample

    loader = kloader.Loader(IdDataset(6), batch_size=6, shuffle=False, transform=fail_on_three)
    with pytest.raises(kloader.SampleError, match=r"failed on sample 3 \(epoch 0\) with KeyError") as error:
        loader[0]
    assert isinstance(error.value.__cause__, KeyError)


def test_transform_returning_none() -> None:
    """A transform that forgets to return names the sample."""
    loader = kloader.Loader(IdDataset(3), batch_size=3, transform=lambda s, rng: None)
    with pytest.raises(kloader.SampleError, match="returned None for sample"):
        loader[0]


def test_transform_cannot_write_into_the_source() -> None:
    """Rows handed to a transform are read-only views: the source cannot be corrupted."""
    x, y = id_arrays(4)

    def in_place(sample: tuple[np.ndarray, np.float32], rng: np.random.Generator) -> object:
        sample[0][:] = 0
        return sample

    with pytest.raises(kloader.SampleError, match="read-only"):
        kloader.Loader((x, y), batch_size=2, transform=in_place)[0]
    assert x[1].tolist() == [1, -1]


def test_bad_shard() -> None:
    """shard must be (index, count) with 0 <= index < count."""
    for shard in [(2, 2), (-1, 2), (0, 0), "0/2", (0.5, 2), np.array([2, 2]), np.array([1])]:
        with pytest.raises(ValueError, match="`shard` must be"):
            kloader.Loader(id_arrays(10), batch_size=2, shard=shard)  # type: ignore[arg-type]
    as_array = kloader.Loader(id_arrays(10), batch_size=2, seed=1, shard=np.array([1, 2]))  # type: ignore[arg-type]
    assert (as_array.shard_index, as_array.num_shards) == (1, 2)


def test_shards_split_each_epoch_of_the_global_order() -> None:
    """Shard loaders: disjoint, same number of batches, together the epoch, each
    batch a slice of the single-process loader's global step."""
    whole = kloader.Loader(IdDataset(23), batch_size=6, seed=8)
    shards = [kloader.Loader(IdDataset(23), batch_size=3, seed=8, shard=(r, 2)) for r in range(2)]
    for epoch in range(2):
        per_shard = [ids_of(shard) for shard in shards]
        assert len(per_shard[0]) == len(per_shard[1])
        taken = [i for ids in per_shard for batch in ids for i in batch]
        assert sorted(taken) == list(range(23))
        for step, global_batch in enumerate(ids_of(whole)):
            assert per_shard[0][step] + per_shard[1][step] == global_batch, f"epoch {epoch} step {step}"


def test_sharded_loader_without_shuffling_needs_no_seed() -> None:
    """shuffle=False (a validation or predict loader): the shards are disjoint whatever the seed."""
    shards = [kloader.Loader(id_arrays(10), batch_size=2, shuffle=False, shard=(i, 2)) for i in (0, 1)]
    ids = sorted(int(i) for shard in shards for batch in range(len(shard)) for i in shard.indices(batch))
    assert ids == list(range(10))


def test_sharded_loader_needs_a_seed() -> None:
    """Shards with seed=None would each draw their own seed and overlap: refused."""
    with pytest.raises(ValueError, match="Pass the same seed in every process"):
        kloader.Loader(id_arrays(10), batch_size=2, shard=(0, 2))
