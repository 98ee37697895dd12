"""Feeding batches to a CUDA device on the torch backend: pinned memory, copies without blocking.

Keras's torch backend turns each NumPy batch into a tensor with
`convert_to_tensor`, which copies it (`np.array`) and then moves it to the
device synchronously from pageable memory: the host waits for every copy.
On a CUDA device kloader instead copies each array of the batch once into
page-locked (pinned) memory and starts the transfer with `non_blocking=True`:
the host goes on to fetch the next batch while the copy runs, ordered before
the step on the same CUDA stream. The values, dtypes and shapes are those
`convert_to_tensor` gives (Keras's dtype mapping is applied; anything else goes
through `convert_to_tensor` itself). Without CUDA this module is never used:
Keras's own path runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
import torch.utils.data

from kloader._core import tree

# Plain numeric arrays are moved here; anything else goes through Keras's own conversion.
_DIRECT_KINDS = "biuf"


def to_device(array: Any, device: torch.device, convert: Any, torch_dtype: Any) -> Any:
    """One array of a batch as a tensor on `device`; on CUDA through pinned memory, without blocking.

    `torch_dtype` is Keras's dtype mapping (uint16 becomes int32, uint32 int64);
    `convert` (Keras's `convert_to_tensor`) takes what is not a plain numeric
    array, and dtypes Keras does not map (it raises its own error). None stays
    None, as in Keras.
    """
    if array is None:
        return None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in _DIRECT_KINDS:
        return convert(array)
    try:
        dtype = torch_dtype(array.dtype)
    except ValueError:
        return convert(array)
    host = torch.from_numpy(np.ascontiguousarray(array))
    if device.type != "cuda":
        return host.to(device=device, dtype=dtype, copy=True)
    # pin_memory() copies into page-locked memory: the one host copy (Keras's
    # convert_to_tensor makes one too, with np.array), after which the batch's
    # buffer is free; the transfer then runs while the host fetches the next batch.
    return host.pin_memory().to(device=device, dtype=dtype, non_blocking=True)


class _DeviceBatches(torch.utils.data.IterableDataset):  # type: ignore[type-arg]
    def __init__(self, batches: Iterable[Any], device: torch.device, convert: Any, torch_dtype: Any):
        self.batches = batches
        self.device = device
        self.convert = convert
        self.torch_dtype = torch_dtype

    def __iter__(self) -> Iterator[Any]:
        for batch in self.batches:
            leaves, structure = tree.flatten(batch)
            moved = [to_device(leaf, self.device, self.convert, self.torch_dtype) for leaf in leaves]
            yield tree.unflatten(structure, moved)


def device_dataloader(batches: Iterable[Any], device: torch.device, convert: Any, torch_dtype: Any) -> Any:
    """A DataLoader over `batches` (already batched) that yields them as tensors on `device`."""
    return torch.utils.data.DataLoader(_DeviceBatches(batches, device, convert, torch_dtype), batch_size=None)
