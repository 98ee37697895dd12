"""What every augmentation shares: finding the image in a sample, the base class, `Compose`.

A transform is `transform(sample, rng) -> sample`. The sample is an image
array, a tuple / list whose first element is the image (`(image, label)`), or a
dict with an "image" key; only the image changes, everything else is passed
through untouched. Images are HxWxC (or HxW) arrays of any integer or float
dtype, and come back in the dtype they came in (`Rescale` excepted).

Randomness: each transform draws a fixed number of values from `rng` on every
call, whatever its options and the image, and draws nothing from anywhere else.
So the output is a pure function of (sample, rng state); setting a range to
zero never changes what later transforms draw; adding or removing a transform
shifts the draws of the ones after it.

This module, like all of kloader's augmentation, never imports Keras: worker
processes unpickle transforms without loading a backend.
"""

from __future__ import annotations

import abc
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kloader._core.batches import Transform


def image_of(sample: Any) -> np.ndarray:
    """The image in `sample` (the sample itself, its first element, or its "image" entry)."""
    if isinstance(sample, (tuple, list)):
        if not sample:
            raise ValueError("The sample is an empty tuple; an image transform needs (image, ...).")
        image = sample[0]
    elif isinstance(sample, Mapping):
        if "image" not in sample:
            raise ValueError(
                f"The sample is a dict with keys {sorted(map(str, sample))}, but image transforms "
                'read the image from the "image" key. Rename the image entry to "image".'
            )
        image = sample["image"]
    else:
        image = sample
    image = np.asarray(image)
    if image.ndim not in (2, 3) or image.dtype.kind not in "uif":
        raise ValueError(
            f"Image transforms take an HxWxC or HxW array of integers or floats, got shape "
            f"{image.shape} and dtype {image.dtype}. A sample is an image, (image, label, ...) "
            'or a dict with an "image" key; transforms work on one sample, not on a batch.'
        )
    return image


def with_image(sample: Any, image: np.ndarray) -> Any:
    """`sample` with its image replaced by `image`, in the same structure."""
    if isinstance(sample, tuple):
        if hasattr(sample, "_fields"):  # a namedtuple
            return sample._replace(**{sample._fields[0]: image})  # type: ignore[attr-defined]
        return (image, *sample[1:])
    if isinstance(sample, list):
        return [image, *sample[1:]]
    if isinstance(sample, Mapping):
        return {**sample, "image": image}
    return image


class ImageTransform(abc.ABC):
    """Base class: applies `apply(image, rng)` to the image of each sample.

    `apply` gets an HxWxC array (an HxW image arrives with one channel and
    leaves without it) and returns an image of the same dtype.
    """

    def __call__(self, sample: Any, rng: np.random.Generator) -> Any:
        if not isinstance(rng, np.random.Generator):
            raise TypeError(
                f"{type(self).__name__} is called as transform(sample, rng) with rng a "
                f"numpy.random.Generator, got {type(rng).__name__}. kloader.Loader passes one; "
                "to call it yourself use rng=numpy.random.default_rng(seed)."
            )
        image = image_of(sample)
        if image.ndim == 2:  # HxW: one channel in, none out
            return with_image(sample, self.apply(image[:, :, None], rng)[:, :, 0])
        return with_image(sample, self.apply(image, rng))

    @abc.abstractmethod
    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The transformed HxWxC image; every subclass says what it does."""

    def _options(self) -> dict[str, Any]:
        """The constructor arguments, for repr: the public attributes."""
        return {name: value for name, value in vars(self).items() if not name.startswith("_")}

    def __repr__(self) -> str:
        options = ", ".join(f"{name}={value!r}" for name, value in self._options().items())
        return f"{type(self).__name__}({options})"


class Compose:
    """Applies transforms one after another, handing each the same `rng` in turn.

    Every kloader transform draws a fixed number of values from `rng`, so a
    pipeline's output depends only on the sample and `rng`: identical for any
    `num_workers`, on every run and after a resume. Plain functions
    `f(sample, rng) -> sample` can be mixed in (define them at module level so
    they can be sent to worker processes).

    Args:
        transforms: the transforms, applied in order.

    Example:
        ```python
        from kloader import augment

        pipeline = augment.Compose([
            augment.RandomFlip(horizontal=True),
            augment.RandomRotation(15),
            augment.Rescale(1 / 255),
        ])
        loader = kloader.Loader((images, labels), batch_size=32, seed=1, transform=pipeline)
        ```
    """

    def __init__(self, transforms: Sequence[Transform]):
        if isinstance(transforms, (str, bytes)) or not isinstance(transforms, Sequence):
            raise TypeError(f"Compose takes a list of transforms, got {transforms!r}.")
        for position, transform in enumerate(transforms):
            if not callable(transform):
                raise TypeError(
                    f"Compose: item {position} ({transform!r}) is not callable; every item must be a "
                    "transform(sample, rng)."
                )
        self.transforms: tuple[Transform, ...] = tuple(transforms)

    def __call__(self, sample: Any, rng: np.random.Generator) -> Any:
        for transform in self.transforms:
            sample = transform(sample, rng)
        return sample

    def __len__(self) -> int:
        return len(self.transforms)

    def __repr__(self) -> str:
        if not self.transforms:
            return "Compose([])"
        inner = "".join(f"    {transform!r},\n" for transform in self.transforms)
        return f"Compose([\n{inner}])"


# ------------------------------------------------------ argument checking


def finite_number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"`{name}` must be a finite number, got {value!r}.")
    return float(value)


def value_range(value: Any, name: str, *, example: str) -> tuple[float, float]:
    """(lo, hi) from a pair of finite numbers with lo <= hi."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(
            f"`{name}` must be a number or a pair (low, high), got {value!r}. For example {example}."
        )
    lo, hi = finite_number(value[0], name), finite_number(value[1], name)
    if lo > hi:
        raise ValueError(f"`{name}` = {value!r} has low > high; give (low, high), e.g. {example}.")
    return (lo, hi)


def symmetric_range(value: Any, name: str, *, example: str) -> tuple[float, float]:
    """A number r >= 0 means (-r, r); a pair is (low, high)."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        r = finite_number(value, name)
        if r < 0:
            raise ValueError(f"`{name}` must be >= 0 (it means the range (-{name}, {name})), got {value!r}.")
        return (-r, r) if r else (0.0, 0.0)  # not -0.0, which reads oddly in a repr
    return value_range(value, name, example=example)


def factor_range(value: Any, name: str, *, example: str, positive: bool = False) -> tuple[float, float]:
    """A number f >= 0 means (1 - f, 1 + f); a pair is (low, high). Factors must be >= 0 (> 0 if `positive`)."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        f = finite_number(value, name)
        if f < 0:
            raise ValueError(f"`{name}` must be >= 0 (it means the range (1 - f, 1 + f)), got {value!r}.")
        result = (1.0 - f, 1.0 + f)
    else:
        result = value_range(value, name, example=example)
    if result[0] < 0 or (positive and result[0] == 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(
            f"`{name}` = {value!r} gives factors in {result}, but factors must be {bound}. "
            f"For example {example}."
        )
    return result


def draw(bounds: tuple[float, float], u: float) -> float:
    """The point a fraction `u` in [0, 1) of the way through `bounds`; exactly `low` for an empty range."""
    lo, hi = bounds
    return lo + (hi - lo) * u


def finish(values: np.ndarray, like: np.dtype, clip: tuple[float, float] | None = None) -> np.ndarray:
    """Float results back to dtype `like`: clipped to `clip`, and for integers rounded and kept in range."""
    if clip is not None:
        np.clip(values, clip[0], clip[1], out=values)
    if np.issubdtype(like, np.integer):
        info = np.iinfo(like)
        np.rint(values, out=values)
        np.clip(values, info.min, info.max, out=values)
    return values.astype(like, copy=False)


def work_dtype(dtype: np.dtype) -> type[np.floating[Any]]:
    """The float type arithmetic on an image of `dtype` is done in: float64 for float64, else float32."""
    return np.float64 if dtype == np.float64 else np.float32
