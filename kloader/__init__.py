"""kloader: deterministic, epoch-aware data loading for Keras 3 on every backend.

The batches of epoch e are a pure function of (seed, e): the same on the
TensorFlow, JAX and PyTorch backends, for any number of worker processes, on
every run and after a resume.

Names that need Keras are imported on first use, so that worker processes,
which import this package to unpickle their work, never import Keras (and with
it TensorFlow or JAX). The image names (`ImageFolder`, `save_preview`) are
imported on first use too, so that `import kloader` does not load Pillow;
neither imports Keras.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from kloader._core.errors import GlobalRandomWarning, SampleError, WorkerError

if TYPE_CHECKING:
    from kloader._images.folder import ImageFolder
    from kloader._images.hf_dataset import HFDataset
    from kloader._images.preview import save_preview
    from kloader._keras.callbacks import BackupAndRestore, EpochSync
    from kloader._keras.loader import Loader

__version__ = "0.1.0"

__all__ = [
    "BackupAndRestore",
    "EpochSync",
    "GlobalRandomWarning",
    "HFDataset",
    "ImageFolder",
    "Loader",
    "SampleError",
    "WorkerError",
    "augment",
    "save_preview",
]

_LAZY = {
    "BackupAndRestore": "kloader._keras.callbacks",
    "EpochSync": "kloader._keras.callbacks",
    "HFDataset": "kloader._images.hf_dataset",
    "ImageFolder": "kloader._images.folder",
    "Loader": "kloader._keras.loader",
    "save_preview": "kloader._images.preview",
}


def __getattr__(name: str) -> Any:
    if name == "augment":
        value: Any = importlib.import_module("kloader.augment")
        globals()[name] = value
        return value
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kloader' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
