"""What `Loader(...)` accepts from people who write Keras: `fit`-shaped calls, and helpful refusals.

`Loader(x, y, sample_weight, batch_size=32)` is read as `Loader((x, y,
sample_weight), ...)`, the shape of `model.fit(x, y)` and
`ImageDataGenerator.flow(x, y)`. Argument names of Keras, ImageDataGenerator
and torch's DataLoader that kloader spells differently are refused with
kloader's name, and a source that yields batches (a `keras.utils.PyDataset`, a
kloader `Loader`, a torch `DataLoader`) is refused with the way to migrate.
"""

from __future__ import annotations

from typing import Any

import keras

from kloader._core.sources import is_array_structure
from kloader._images import hf_dataset

# Another library's argument name -> what to write for kloader.Loader instead.
_ENQUEUER = (
    "Keras's enqueuer never runs for a kloader loader. Use num_workers=N for N worker processes "
    "(and prefetch=K for K batches in flight per worker)"
)
RENAMED = {
    "x": "the inputs are the first argument, `source`: Loader(x, y, batch_size=32)",
    "workers": _ENQUEUER,
    "use_multiprocessing": _ENQUEUER,
    "max_queue_size": _ENQUEUER,
    "drop_last": "use drop_remainder=True",
    "prefetch_factor": "use prefetch=K (batches in flight per worker)",
    "persistent_workers": "kloader's workers always live across epochs; leave it out",
    "multiprocessing_context": 'use start_method="forkserver" / "spawn" / "fork"',
    "worker_init_fn": "a transform(sample, rng) gets all the per-sample randomness it needs; "
    "set up per-process state lazily inside the source",
    "collate_fn": "samples are stacked into batches by structure; change samples with transform=",
    "sampler": "the order is a permutation of (seed, epoch); use shuffle=, seed= and shard=",
    "save_to_dir": "see what the model sees with kloader.save_preview(loader, 'preview.png')",
    "subset": "split the source: kloader.ImageFolder(..., validation_split=0.2, subset='training', "
    "seed=1) or .split(0.2, seed=1), then one Loader per side",
    "validation_split": "split the source: kloader.ImageFolder(..., validation_split=0.2, "
    "subset='training', seed=1) or .split(0.2, seed=1), then one Loader per side",
    "target_size": "image options go to kloader.ImageFolder(directory, image_size=(h, w))",
    "image_size": "image options go to kloader.ImageFolder(directory, image_size=(h, w))",
    "class_mode": "label options go to kloader.ImageFolder(directory, label_mode=...)",
    "label_mode": "label options go to kloader.ImageFolder(directory, label_mode=...)",
}


def check_keras_arguments(arguments: dict[str, Any]) -> None:
    """Refuses every argument `Loader` does not take, with kloader's name where it has one."""
    for name in arguments:
        if name in RENAMED:
            raise TypeError(f"kloader.Loader does not take `{name}=`: {RENAMED[name]}.")
    if arguments:
        raise TypeError(f"Loader() got unexpected keyword arguments: {sorted(arguments)}.")


def combine(source: Any, y: Any, sample_weight: Any) -> Any:
    """`source`, or `(x, y)` / `(x, y, sample_weight)` when called like `fit(x, y)`.

    A Hugging Face `datasets.Dataset` becomes a `kloader.HFDataset` with its defaults.
    """
    refuse_batch_sources(source)
    if y is None and sample_weight is None and hf_dataset.is_hf_dataset(source):
        return hf_dataset.HFDataset(source)
    if y is None and sample_weight is None:
        return source
    if y is None:
        raise ValueError(
            "`sample_weight` was given without `y`. Pass Loader(x, y, sample_weight, batch_size=...)."
        )
    if not is_array_structure(source):
        raise TypeError(
            f"Loader(x, y, ...) takes arrays for x (like model.fit(x, y)), got a {type(source).__name__}. "
            "A dataset returns its targets in each sample: pass Loader(dataset, batch_size=...) alone."
        )
    parts = (source, y) if sample_weight is None else (source, y, sample_weight)
    for name, part in zip(("y", "sample_weight"), parts[1:]):
        # A list, as fit(x, y) takes: read as one column per sample, as in Loader((x, y_list)).
        if not (is_array_structure(part) or isinstance(part, list)):
            raise TypeError(
                f"`{name}` must be an array (or a tuple / dict of arrays), like model.fit's, got a "
                f"{type(part).__name__}."
            )
    return parts


def refuse_batch_sources(source: Any) -> None:
    """A source yields samples; things that yield batches are refused with the migration."""
    if isinstance(source, keras.utils.PyDataset):
        if type(source).__module__.startswith("kloader."):
            raise TypeError(
                "The source is already a kloader.Loader: pass it to model.fit as it is. For other "
                "options (batch_size, seed, workers) build a new Loader from the same source."
            )
        raise TypeError(
            f"The source is a keras.utils.PyDataset ({type(source).__name__}), whose items are "
            "whole batches: kloader would read each batch as one sample. Migrate: give the class "
            "__len__ = the number of samples and __getitem__(i) = sample i (one (x, y), no batch "
            "axis), drop the shuffling in on_epoch_end, and pass it as "
            "kloader.Loader(dataset, batch_size=32, seed=42, num_workers=2). If its batches are "
            "slices of arrays, pass the arrays: kloader.Loader(x, y, batch_size=32, seed=42). To "
            "check what the PyDataset gives a model today, run "
            "`python -m kloader audit my_module:make_dataset`."
        )
    hf_dataset.refuse_other_hf_objects(source)
    kind = type(source)
    if kind.__name__ == "DataLoader" and kind.__module__.startswith("torch.") and hasattr(source, "dataset"):
        raise TypeError(
            "The source is a torch DataLoader, which yields batches. Pass its dataset: "
            "kloader.Loader(data_loader.dataset, batch_size=..., num_workers=...)."
        )
