"""`from_image_data_generator`: ImageDataGenerator's keyword arguments as a kloader pipeline.

The pipeline applies the steps in ImageDataGenerator's order: the affine warp
(rotation, shifts, shear, zoom), channel shift, flips, brightness, then
`preprocessing_function` and `rescale`. Options that need statistics of the
whole data set, or that belong to the data source, are refused with what to
do instead.
"""

from __future__ import annotations

import difflib
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from kloader._core.batches import Transform
from kloader.augment._base import Compose, ImageTransform
from kloader.augment._geometric import RandomAffine, RandomFlip
from kloader.augment._photometric import RandomBrightness, RandomChannelShift, Rescale

_DEFAULTS: dict[str, Any] = {
    "featurewise_center": False,
    "samplewise_center": False,
    "featurewise_std_normalization": False,
    "samplewise_std_normalization": False,
    "zca_whitening": False,
    "zca_epsilon": 1e-6,
    "rotation_range": 0,
    "width_shift_range": 0.0,
    "height_shift_range": 0.0,
    "brightness_range": None,
    "shear_range": 0.0,
    "zoom_range": 0.0,
    "channel_shift_range": 0.0,
    "fill_mode": "nearest",
    "cval": 0.0,
    "horizontal_flip": False,
    "vertical_flip": False,
    "rescale": None,
    "preprocessing_function": None,
    "data_format": None,
    "validation_split": 0.0,
    "interpolation_order": 1,
    "dtype": None,
}

_NORMALIZATION = (
    "needs the mean / std of the whole training set (ImageDataGenerator.fit). Normalize in the "
    "model instead: put keras.layers.Normalization() first and call its adapt(training_images), or "
    "pass mean= and variance= computed with NumPy."
)
_SAMPLEWISE = (
    "standardizes each image; kloader has no transform for it. Add your own after the pipeline, "
    "e.g. a module-level `def standardize(sample, rng): image, label = sample; image = "
    "image.astype('float32'); return (image - image.mean()) / (image.std() + 1e-6), label` and "
    "transform=augment.Compose([pipeline, standardize])."
)
_UNSUPPORTED = {
    "featurewise_center": _NORMALIZATION,
    "featurewise_std_normalization": _NORMALIZATION,
    "zca_whitening": (
        "needs a whitening matrix computed from the whole training set; kloader has none. Compute "
        "it with NumPy and apply it in the model or in your own transform(sample, rng)."
    ),
    "samplewise_center": _SAMPLEWISE,
    "samplewise_std_normalization": _SAMPLEWISE,
    "validation_split": (
        "belongs to the data source, not to augmentation. Split the data into a training and a "
        "validation source and give each its own kloader.Loader (augment only the training one)."
    ),
}


class PreprocessingFunction(ImageTransform):
    """Calls ImageDataGenerator's `preprocessing_function(image)` on the image, as float32.

    Draws nothing from `rng`. The function must be defined at module level to
    reach worker processes.
    """

    def __init__(self, function: Callable[[np.ndarray], Any]):
        if not callable(function):
            raise TypeError(f"`preprocessing_function` must be callable, got {function!r}.")
        self.function = function

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.asarray(self.function(image.astype(np.float32)))


def _shift(value: Any, name: str) -> tuple[float, str]:
    """ImageDataGenerator's shift range: a float < 1 is a fraction, a float >= 1 is pixels,
    an int n is whole pixels in (-n, n)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(
            f"`{name}`={value!r}: kloader takes a number here. For a list of allowed shifts use "
            f"the largest as a continuous range, e.g. {name}=max(abs(v) for v in values)."
        )
    if value < 0:
        raise ValueError(f"`{name}` must be >= 0, got {value!r}.")
    if isinstance(value, numbers.Integral):
        return (max(int(value) - 1, 0), "pixels")
    return (float(value), "fraction" if value < 1 else "pixels")


def _affine(options: dict[str, Any]) -> RandomAffine | None:
    width, width_unit = _shift(options["width_shift_range"], "width_shift_range")
    height, height_unit = _shift(options["height_shift_range"], "height_shift_range")
    if width and height and width_unit != height_unit:
        raise ValueError(
            f"width_shift_range={options['width_shift_range']!r} is in {width_unit} but "
            f"height_shift_range={options['height_shift_range']!r} is in {height_unit}; kloader "
            "needs one unit for both. Give both as fractions of the image size (< 1) or both in pixels."
        )
    zoom = options["zoom_range"]
    if isinstance(zoom, (Sequence, np.ndarray)) and not isinstance(zoom, str):
        zoom = tuple(zoom)  # ImageDataGenerator takes a list, tuple or array [low, high]
    order = options["interpolation_order"]
    if order not in (0, 1):
        raise ValueError(
            f"interpolation_order={order!r} is not supported: kloader interpolates with order 1 "
            "(bilinear, the default) or 0 (nearest)."
        )
    affine = RandomAffine(
        rotation=options["rotation_range"],
        width_shift=width,
        height_shift=height,
        shear=options["shear_range"],
        zoom=zoom,
        shift_unit=width_unit if width else height_unit,
        interpolation="nearest" if order == 0 else "bilinear",
        fill_mode=options["fill_mode"],
        fill_value=options["cval"],
    )
    ranges = (affine.rotation, affine.width_shift, affine.height_shift, affine.shear)
    if all(r == (0.0, 0.0) for r in ranges) and affine.zoom == (1.0, 1.0):
        return None
    return affine


def _check(options: dict[str, Any]) -> None:
    for name in options:
        if name not in _DEFAULTS:
            close = difflib.get_close_matches(name, _DEFAULTS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise TypeError(f"from_image_data_generator() got an unknown argument {name!r}.{hint}")
    for name, why in _UNSUPPORTED.items():
        if options.get(name):
            raise ValueError(f"ImageDataGenerator's `{name}` is not supported: it {why}")
    if options.get("data_format") not in (None, "channels_last"):
        raise ValueError(
            f"data_format={options['data_format']!r} is not supported: kloader's transforms take "
            "HxWxC images (channels_last). Move the channels axis in the model if it needs them first."
        )
    if options.get("dtype") not in (None, "float32", np.float32):
        raise ValueError(
            f"dtype={options['dtype']!r} is not supported: the pipeline keeps the images' dtype "
            "(rescale makes them float32). Cast in the model instead."
        )


def from_image_data_generator(**kwargs: Any) -> Compose:
    """The kloader pipeline equivalent to `ImageDataGenerator(**kwargs)`.

    Takes ImageDataGenerator's keyword arguments and returns a `Compose` that
    augments one sample per call, in ImageDataGenerator's order. Unlike
    ImageDataGenerator's, its randomness comes only from the `rng` the loader
    passes, so the batches are identical for any `num_workers`, run and resume.

    Differences: the image keeps its dtype until `rescale` (ImageDataGenerator
    returns float32; `dtype="float32"` gives float32 too); rotation is about the
    true centre of non-square images; each shift moves the content along the
    axis its name says; an int shift range n draws a continuous shift in
    [-(n - 1), n - 1] pixels rather than whole pixels; brightness is computed in
    float and rounded rather than through an 8-bit Pillow image.

    Steps whose options are all off (a zero range, no flip) are left out of
    the pipeline, so turning one on or off shifts what the steps after it
    draw, as adding or removing a transform does.

    Args:
        **kwargs: ImageDataGenerator's arguments. Supported: rotation_range,
            width_shift_range, height_shift_range, shear_range, zoom_range,
            channel_shift_range, fill_mode, cval, horizontal_flip,
            vertical_flip, brightness_range, rescale, preprocessing_function,
            interpolation_order (0 or 1), data_format ("channels_last") and
            dtype ("float32"). The others raise a ValueError that says what to
            do instead.

    Example:
        ```python
        pipeline = augment.from_image_data_generator(
            rotation_range=20, width_shift_range=0.1, height_shift_range=0.1,
            zoom_range=0.2, horizontal_flip=True, rescale=1 / 255)
        loader = kloader.Loader((images, labels), batch_size=32, seed=0, transform=pipeline)
        ```
    """
    _check(kwargs)
    options = {**_DEFAULTS, **kwargs}
    steps: list[Transform] = []
    affine = _affine(options)
    if affine is not None:
        steps.append(affine)
    if options["channel_shift_range"]:
        steps.append(RandomChannelShift(options["channel_shift_range"]))
    if options["horizontal_flip"] or options["vertical_flip"]:
        steps.append(RandomFlip(horizontal=options["horizontal_flip"], vertical=options["vertical_flip"]))
    if options["brightness_range"] is not None:
        brightness = options["brightness_range"]
        if isinstance(brightness, numbers.Real) or len(brightness) != 2:
            raise ValueError(f"`brightness_range` must be a pair (low, high), got {brightness!r}.")
        steps.append(RandomBrightness(tuple(brightness)))
    if options["preprocessing_function"] is not None:
        steps.append(PreprocessingFunction(options["preprocessing_function"]))
    if options["rescale"]:
        steps.append(Rescale(options["rescale"]))
    elif options["dtype"] is not None:
        steps.append(Rescale(1.0))
    return Compose(steps)
