"""Random crops: `RandomCrop` (a window of fixed size) and `RandomResizedCrop` (scale and aspect jitter).

Resizing uses Pillow, whose bilinear filter widens with the reduction factor
(antialiasing), as torchvision's RandomResizedCrop on PIL images does.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image

from kloader._core import checks
from kloader.augment._base import ImageTransform, finish, value_range

_RESAMPLING = {"bilinear": Image.Resampling.BILINEAR, "nearest": Image.Resampling.NEAREST}
_ATTEMPTS = 10


def _size(size: Any) -> tuple[int, int]:
    """(height, width) from an int or a pair of positive ints."""
    return checks.height_width(size, name="size", example="size=224")


class RandomCrop(ImageTransform):
    """Cuts a window of `size` at a uniformly random position.

    Draws two values from `rng` per call. The image must be at least `size`.

    Args:
        size: (height, width) of the crop, or one int for a square.

    Example:
        ```python
        crop = augment.RandomCrop(224)
        ```
    """

    def __init__(self, size: int | tuple[int, int]):
        self.size = _size(size)

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        u = rng.random(2)
        (height, width), (crop_height, crop_width) = image.shape[:2], self.size
        if crop_height > height or crop_width > width:
            raise ValueError(
                f"RandomCrop(size={self.size}) cannot crop an image of {height}x{width}. Resize the "
                "images first (e.g. ImageFolder(..., image_size=...)) or use RandomResizedCrop."
            )
        top = min(int(u[0] * (height - crop_height + 1)), height - crop_height)
        left = min(int(u[1] * (width - crop_width + 1)), width - crop_width)
        return image[top : top + crop_height, left : left + crop_width]


class RandomResizedCrop(ImageTransform):
    """Crops a random area and aspect ratio, resized to `size` (torchvision's RandomResizedCrop).

    The crop covers a fraction of the image's area uniform in `scale`, with an
    aspect ratio (width / height) log-uniform in `ratio`; after 10 attempts
    that do not fit, the largest centred crop within `ratio` is used. Draws 40
    values from `rng` per call, however many attempts are needed.

    Args:
        size: output (height, width), or one int for a square.
        scale: range of the crop's area, as a fraction of the image's.
        ratio: range of the crop's aspect ratio (width / height).
        interpolation: "bilinear" (antialiased when shrinking) or "nearest".

    Example:
        ```python
        crop = augment.RandomResizedCrop(224, scale=(0.25, 1.0))
        ```
    """

    def __init__(
        self,
        size: int | tuple[int, int],
        *,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        interpolation: str = "bilinear",
    ):
        self.size = _size(size)
        self.scale = value_range(scale, "scale", example="scale=(0.08, 1.0)")
        self.ratio = value_range(ratio, "ratio", example="ratio=(3 / 4, 4 / 3)")
        if self.scale[0] <= 0 or self.scale[1] > 1 or self.ratio[0] <= 0:
            raise ValueError(
                f"RandomResizedCrop needs 0 < scale <= 1 and ratio > 0, got scale={scale!r}, "
                f"ratio={ratio!r}. For example scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)."
            )
        if interpolation not in _RESAMPLING:
            raise ValueError(f"`interpolation` must be one of {tuple(_RESAMPLING)}, got {interpolation!r}.")
        self.interpolation = interpolation

    def _window(self, height: int, width: int, u: np.ndarray) -> tuple[int, int, int, int]:
        """(top, left, crop height, crop width) for an image of this size and the draws `u` (10 x 4)."""
        area = height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for attempt in u:
            target = area * (self.scale[0] + (self.scale[1] - self.scale[0]) * attempt[0])
            aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * attempt[1])
            crop_width = round(math.sqrt(target * aspect))
            crop_height = round(math.sqrt(target / aspect))
            if 0 < crop_width <= width and 0 < crop_height <= height:
                top = int(attempt[2] * (height - crop_height + 1))
                left = int(attempt[3] * (width - crop_width + 1))
                return top, left, crop_height, crop_width
        aspect = width / height
        if aspect < self.ratio[0]:
            crop_width, crop_height = width, max(1, round(width / self.ratio[0]))
        elif aspect > self.ratio[1]:
            crop_width, crop_height = max(1, round(height * self.ratio[1])), height
        else:
            crop_width, crop_height = width, height
        return (height - crop_height) // 2, (width - crop_width) // 2, crop_height, crop_width

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        top, left, crop_height, crop_width = self._window(
            image.shape[0], image.shape[1], rng.random((_ATTEMPTS, 4))
        )
        crop = image[top : top + crop_height, left : left + crop_width]
        return resize(crop, self.size, _RESAMPLING[self.interpolation])


def resize(image: np.ndarray, size: tuple[int, int], resample: Image.Resampling) -> np.ndarray:
    """An HxWxC image resized to `size` = (height, width) by Pillow, in its own dtype."""
    height, width = size
    channels = image.shape[2]
    if image.shape[:2] == size:
        return image
    if image.dtype == np.uint8 and channels in (1, 3, 4):
        pixels = np.ascontiguousarray(image[:, :, 0] if channels == 1 else image)
        resized = np.asarray(Image.fromarray(pixels).resize((width, height), resample))
        return resized.reshape(height, width, channels)
    # Other layouts and dtypes: one plane at a time, as 8-bit ("L") or float32 ("F").
    plane_type = np.uint8 if image.dtype == np.uint8 else np.float32
    out = np.empty((height, width, channels), dtype=plane_type)
    for channel in range(channels):
        plane = np.ascontiguousarray(image[:, :, channel], dtype=plane_type)
        out[:, :, channel] = np.asarray(Image.fromarray(plane).resize((width, height), resample))
    if out.dtype == image.dtype:
        return out
    return finish(out.astype(np.float64 if image.dtype == np.float64 else np.float32), image.dtype)
