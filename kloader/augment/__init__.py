"""Seeded image augmentation for `kloader.Loader(..., transform=...)`.

Every transform is `transform(sample, rng) -> sample`: it changes the image of
a sample (an HxWxC array, `(image, label, ...)`, or a dict with an "image"
key) using only `rng`, the generator the loader derives from (seed, epoch,
sample index). So augmented batches are identical for any `num_workers`, on
every run and after a resume. Transforms are plain picklable objects and never
import Keras, so they run in worker processes.

Example:
    ```python
    import kloader
    from kloader import augment

    pipeline = augment.Compose([
        augment.RandomAffine(rotation=20, width_shift=0.1, height_shift=0.1, zoom=0.2),
        augment.RandomFlip(horizontal=True),
        augment.RandomBrightness((0.8, 1.2)),
        augment.Rescale(1 / 255),
    ])
    # or: pipeline = augment.from_image_data_generator(rotation_range=20, ..., rescale=1 / 255)
    train = kloader.Loader((images, labels), batch_size=32, seed=42, transform=pipeline, num_workers=2)
    model.fit(train, epochs=10)
    ```
"""

from __future__ import annotations

from kloader.augment._base import Compose
from kloader.augment._crop import RandomCrop, RandomResizedCrop
from kloader.augment._geometric import (
    RandomAffine,
    RandomFlip,
    RandomRotation,
    RandomShear,
    RandomShift,
    RandomZoom,
)
from kloader.augment._image_data_generator import from_image_data_generator
from kloader.augment._photometric import RandomBrightness, RandomChannelShift, RandomContrast, Rescale

__all__ = [
    "Compose",
    "RandomAffine",
    "RandomBrightness",
    "RandomChannelShift",
    "RandomContrast",
    "RandomCrop",
    "RandomFlip",
    "RandomResizedCrop",
    "RandomRotation",
    "RandomShear",
    "RandomShift",
    "RandomZoom",
    "Rescale",
    "from_image_data_generator",
]

assert sorted(__all__) == __all__, "keep __all__ sorted"
