"""Pixel-value augmentation: brightness, contrast, channel shift, and `Rescale`.

Arithmetic is done in float32 (float64 for float64 images); integer images are
rounded to the nearest value and clipped to their dtype's range, so uint8 in
gives uint8 out. Brightness and contrast clip to `value_range`, (0, 255) by
default like Keras's layers: pass value_range=(0, 1) for images already
rescaled to [0, 1].
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kloader.augment._base import (
    ImageTransform,
    draw,
    factor_range,
    finish,
    finite_number,
    value_range,
    work_dtype,
)


def _value_range(value: Any) -> tuple[float, float]:
    return value_range(value, "value_range", example="value_range=(0, 255) or (0, 1)")


class RandomBrightness(ImageTransform):
    """Multiplies the image by a random factor (ImageDataGenerator's `brightness_range`).

    Draws one value from `rng` per call. Every channel is scaled, then clipped
    to `value_range`.

    Args:
        factor: (low, high): the factor is uniform in it, as
            ImageDataGenerator's brightness_range=(low, high). A number f
            means (1 - f, 1 + f).
        value_range: the range pixel values are clipped to.

    Example:
        ```python
        brightness = augment.RandomBrightness((0.8, 1.2))
        ```
    """

    def __init__(
        self, factor: float | tuple[float, float], *, value_range: tuple[float, float] = (0.0, 255.0)
    ):
        self.factor = factor_range(factor, "factor", example="factor=(0.8, 1.2)")
        self.value_range = _value_range(value_range)

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        u = rng.random()
        if self.factor == (1.0, 1.0):
            return image
        work = work_dtype(image.dtype)
        values = image.astype(work)
        values *= work(draw(self.factor, u))
        return finish(values, image.dtype, self.value_range)


class RandomContrast(ImageTransform):
    """Scales each channel's deviation from its mean by a random factor (like Keras's RandomContrast).

    `out = (image - mean) * c + mean` (computed as `image * c + mean * (1 - c)`),
    with the mean over each channel, then
    clipped to `value_range`. Draws one value from `rng` per call.

    Args:
        factor: f means c uniform in [1 - f, 1 + f]; (low, high) is the range
            of c itself (Keras's layer reads a pair as (f_low, f_high) instead).
        value_range: the range pixel values are clipped to.

    Example:
        ```python
        contrast = augment.RandomContrast(0.2)
        ```
    """

    def __init__(
        self, factor: float | tuple[float, float], *, value_range: tuple[float, float] = (0.0, 255.0)
    ):
        self.factor = factor_range(factor, "factor", example="factor=0.2 or factor=(0.8, 1.2)")
        self.value_range = _value_range(value_range)

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        u = rng.random()
        if self.factor == (1.0, 1.0):
            return image
        work = work_dtype(image.dtype)
        # Channel means summed in float64 (exact for integer images), one channel at a
        # time: a reduction over the pixels of an HxWxC array is 8x slower.
        pixels = image.shape[0] * image.shape[1]
        means = [image[:, :, channel].sum(dtype=np.float64) / pixels for channel in range(image.shape[2])]
        contrast = draw(self.factor, u)
        values = image.astype(work)
        values *= work(contrast)
        for channel, mean in enumerate(means):  # per channel: broadcasting along C is slow
            values[:, :, channel] += work(mean * (1.0 - contrast))
        return finish(values, image.dtype, self.value_range)


class RandomChannelShift(ImageTransform):
    """Adds one random offset to every channel (ImageDataGenerator's `channel_shift_range`).

    As ImageDataGenerator does, the result is clipped to the image's own
    minimum and maximum. Draws one value from `rng` per call.

    Args:
        intensity: the offset is uniform in [-intensity, intensity], in pixel
            values (e.g. 0..255 units).

    Example:
        ```python
        shift = augment.RandomChannelShift(20.0)
        ```
    """

    def __init__(self, intensity: float):
        self.intensity = finite_number(intensity, "intensity")
        if self.intensity < 0:
            raise ValueError(f"`intensity` must be >= 0, got {intensity!r}. For example intensity=20.")

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        u = rng.random()
        if self.intensity == 0:
            return image
        work = work_dtype(image.dtype)
        values = image.astype(work)
        values += work(draw((-self.intensity, self.intensity), u))
        return finish(values, image.dtype, (float(image.min()), float(image.max())))


class Rescale(ImageTransform):
    """Multiplies by `scale` and adds `offset` (ImageDataGenerator's `rescale`; Keras's Rescaling).

    Returns float32 (float64 images stay float64), so it usually comes last:
    `Rescale(1 / 255)` maps uint8 0..255 to 0..1. Draws nothing from `rng`.

    Args:
        scale: the factor.
        offset: added after scaling.

    Example:
        ```python
        to_unit = augment.Rescale(1 / 255)
        to_symmetric = augment.Rescale(1 / 127.5, offset=-1.0)
        ```
    """

    def __init__(self, scale: float, *, offset: float = 0.0):
        self.scale = finite_number(scale, "scale")
        self.offset = finite_number(offset, "offset")

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        work = np.float64 if image.dtype == np.float64 else np.float32
        values = image.astype(work)
        values *= work(self.scale)
        if self.offset:
            values += work(self.offset)
        return values
