"""Feeding an accelerator: on torch with CUDA, pinned memory and non-blocking copies (the same
tensors as Keras's conversion); on JAX, Keras puts batches on the device one step ahead.

On a CPU machine (CI) they check that the CPU path is Keras's own, that the CUDA path's
conversion gives exactly Keras's tensors (run on a CPU device), and the Keras behaviour
kloader relies on for JAX; benchmarks/gpu_checks.sh runs them, with the other Keras tests, on
a GPU, where the first one checks the CUDA path itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import kloader

from utils import assert_batches_equal


def source(n: int) -> dict[str, np.ndarray]:
    ids = np.arange(n)
    return {
        "bool": ids % 3 == 0,
        "int8": (ids - 5).astype(np.int8),
        "uint8": np.broadcast_to(ids.astype(np.uint8)[:, None, None], (n, 4, 3)).copy(),
        "uint16": (ids * 1000).astype(np.uint16),
        "uint32": (ids * 7).astype(np.uint32),
        "int64": ids * 2**40,
        "float16": (ids / 3).astype(np.float16),
        "float32": np.stack([ids / 7, -ids / 7], axis=1).astype(np.float32),
        "float64": ids / 9,
    }


def as_numpy(batch: Any) -> Any:
    return {key: value.cpu().numpy() for key, value in batch.items()}


@pytest.mark.backend("torch")
def test_the_torch_backend_feeds_through_pinned_memory_exactly_when_the_device_is_cuda() -> None:
    """With a CUDA device the loader hands Keras batches already on it (pinned, copied without
    blocking; checked on a GPU by benchmarks/gpu_checks.sh); on any other device it hands Keras
    its own DataLoader wrapper: nothing is pinned and nothing about the CPU path changes."""
    import torch
    from keras.src.backend.torch.core import get_device

    from kloader._keras import feeding

    with kloader.Loader(source(10), batch_size=4, seed=1) as loader:
        expected = list(loader.get_numpy_iterator())
    with kloader.Loader(source(10), batch_size=4, seed=1) as loader:
        dataloader = loader.get_torch_dataloader()
        got = list(dataloader)
    device = torch.device(get_device())
    if device.type == "cuda":
        assert isinstance(dataloader.dataset, feeding._DeviceBatches)
        assert all(value.device.type == "cuda" for batch in got for value in batch.values())
    else:
        assert not isinstance(dataloader.dataset, feeding._DeviceBatches)
        assert type(dataloader.dataset).__name__ == "ConverterIterableDataset"  # Keras's
        assert all(value.device == device for batch in got for value in batch.values())
    assert len(got) == len(expected) == 3
    for i, (mine, want) in enumerate(zip(got, expected)):
        for key, value in want.items():  # Keras's dtype mapping changes uint16 and uint32, not values
            np.testing.assert_array_equal(mine[key].cpu().numpy(), value, err_msg=f"batch {i}: {key}")


@pytest.mark.backend("torch")
def test_the_device_path_gives_kerass_tensors() -> None:
    """The CUDA feeding path (run here on a CPU device, so without pinning) yields, batch by batch,
    the dtypes, shapes and values Keras's own conversion gives, for every dtype."""
    import torch
    from keras.src.backend.torch.core import convert_to_tensor, to_torch_dtype

    from kloader._keras import feeding

    cpu = torch.device("cpu")
    with kloader.Loader(source(10), batch_size=4, seed=1) as loader:
        keras_batches = list(loader.get_torch_dataloader())
    with kloader.Loader(source(10), batch_size=4, seed=1) as loader:
        ours = list(
            feeding.device_dataloader(loader.get_numpy_iterator(), cpu, convert_to_tensor, to_torch_dtype)
        )
    assert len(ours) == len(keras_batches) == 3
    for mine, theirs in zip(ours, keras_batches):
        assert {k: v.dtype for k, v in mine.items()} == {k: v.dtype for k, v in theirs.items()}
    assert_batches_equal([as_numpy(b) for b in ours], [as_numpy(b) for b in keras_batches])
    assert feeding.to_device(None, cpu, convert_to_tensor, to_torch_dtype) is None


@pytest.mark.backend("jax")
def test_keras_puts_jax_batches_on_the_accelerator_one_step_ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a JAX accelerator Keras's epoch iterator moves each batch to the device while the
    previous one trains (kloader hands it NumPy batches and relies on this); on CPU it does not."""
    import jax
    from keras.src.backend.jax.trainer import JAXEpochIterator

    pulled: list[int] = []

    class Counting(kloader.Loader):
        def _batch(self, epoch: int, batch: int) -> Any:
            pulled.append(batch)
            return super()._batch(epoch, batch)

    loader = Counting(source(12), batch_size=4, seed=1)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    iterator = JAXEpochIterator(x=loader, steps_per_epoch=None)
    steps = iter(iterator)
    batches = next(steps)[-1]  # (step, batches) before Keras 3.14, (step, count, batches) after
    first = next(iter(batches))
    assert isinstance(first["uint8"], jax.Array) and not isinstance(first["uint8"], np.ndarray)
    assert pulled == [0, 1]  # the second batch is already on its way while the first is used
    monkeypatch.undo()
    loader.close()
