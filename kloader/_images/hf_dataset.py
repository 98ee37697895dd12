"""`kloader.HFDataset`: a Hugging Face `datasets.Dataset` as a source, images decoded like ImageFolder.

A Hugging Face dataset returns each row as a dict of Python values: Pillow
images, ints, floats, strings, lists. Keras wants arrays in `(x, y)` batches.
This source picks the input and target columns, decodes image columns with the
same options (and the same code) as `kloader.ImageFolder`, and turns the other
columns into NumPy values of their declared dtype. It reads the column types
from `dataset.features`, so it never imports `datasets` itself.
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from kloader._core import checks
from kloader._core.errors import SampleError
from kloader._images import decode

_TARGET_NAMES = ("label", "labels")


def is_hf_dataset(obj: Any) -> bool:
    """True for a `datasets.Dataset` (checked by class, without importing `datasets`)."""
    return any(
        kind.__name__ == "Dataset" and kind.__module__.startswith("datasets.") for kind in type(obj).__mro__
    )


def refuse_other_hf_objects(dataset: Any) -> None:
    """A DatasetDict or a streaming dataset is refused with what to pass instead."""
    kind = type(dataset)
    if not kind.__module__.startswith("datasets."):
        return
    if kind.__name__ == "DatasetDict":
        raise TypeError(
            f"This is a DatasetDict with splits {sorted(dataset)}; pick one: "
            "kloader.HFDataset(dataset['train'], ...)."
        )
    if kind.__name__ in ("IterableDataset", "IterableDatasetDict"):
        raise TypeError(
            "A streaming (iterable) Hugging Face dataset has no random access, which a "
            "deterministic shuffle needs. Load it without streaming=True (or .take(n) and "
            "Dataset.from_generator) to get a datasets.Dataset."
        )


def _kind(feature: Any) -> str:
    """ "image", "string", "label" (ClassLabel) or "value" for one column's feature."""
    name = type(feature).__name__
    if name == "Image":
        return "image"
    if name == "ClassLabel":
        return "label"
    if name == "Value" and str(getattr(feature, "dtype", "")) in ("string", "large_string"):
        return "string"
    return "value"


def _columns(value: str | Sequence[str] | None, name: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        return list(value)
    raise TypeError(f"`{name}` must be a column name or a list of column names, got {value!r}.")


class HFDataset:
    """A Hugging Face `datasets.Dataset` as a source for `kloader.Loader`.

    Sample i is `(x, y)`: the input column(s) and the target column(s) of row
    i, or `x` alone when there is no target. Image columns are decoded with
    Pillow exactly as `kloader.ImageFolder` decodes files (EXIF orientation,
    `color_mode`, resize to `image_size`, `dtype`, `rescale`, ...); class
    labels become int64, other columns NumPy values of their declared dtype.
    Columns of strings cannot be batched into arrays: left out of the default
    choice (listed in `dropped`), refused when named in `x` or `y`.

    `kloader.Loader(dataset, ...)` wraps a `datasets.Dataset` in an
    `HFDataset` with the defaults; build one yourself for other options.

    Args:
        dataset: a `datasets.Dataset` (one split; not streaming).
        x: the input column, or a list of them (the input is then a dict keyed
            by column name, as Keras's multi-input models take it). Default:
            every column except the targets and the string columns.
        y: the target column(s). Default: "label" or "labels" if the dataset
            has one, else its only ClassLabel column, else none. `y=()` for
            samples without targets.
        image_size: `(height, width)` of every image, or one int for a square.
            Default (256, 256), as in Keras.
        color_mode: "rgb", "grayscale" or "rgba".
        interpolation: as `ImageFolder`: "bilinear", "nearest", "bicubic",
            "area", "lanczos3", "lanczos5", "gaussian", "mitchellcubic".
        crop_to_aspect_ratio: resize without distortion, cropping.
        pad_to_aspect_ratio: resize without distortion, padding with zeros.
        dtype: "float32" (0..255, times `rescale`) or "uint8".
        rescale: factor applied to float32 images, e.g. 1/255.
        max_pixels: refuse larger images (decompression bombs).
        fast_decode: as `ImageFolder`: JPEGs decoded at a reduced DCT scale
            when much larger than needed.

    Example:
        ```python
        import datasets
        beans = datasets.load_dataset("beans", split="train")  # image, labels
        source = kloader.HFDataset(beans, image_size=(128, 128), rescale=1 / 255)
        model.fit(kloader.Loader(source, batch_size=32, seed=42, num_workers=2), epochs=5)
        ```
    """

    def __init__(
        self,
        dataset: Any,
        *,
        x: str | Sequence[str] | None = None,
        y: str | Sequence[str] | None = None,
        image_size: int | tuple[int, int] = (256, 256),
        color_mode: str = "rgb",
        interpolation: str = "bilinear",
        crop_to_aspect_ratio: bool = False,
        pad_to_aspect_ratio: bool = False,
        dtype: str = "float32",
        rescale: float | None = None,
        max_pixels: int | None = decode.DEFAULT_MAX_PIXELS,
        fast_decode: bool = True,
    ):
        refuse_other_hf_objects(dataset)
        if not is_hf_dataset(dataset):
            raise TypeError(
                f"kloader.HFDataset reads a Hugging Face datasets.Dataset, got a {type(dataset).__name__}."
            )
        self._spec = decode.spec_from_arguments(
            image_size=image_size,
            color_mode=color_mode,
            interpolation=interpolation,
            crop_to_aspect_ratio=crop_to_aspect_ratio,
            pad_to_aspect_ratio=pad_to_aspect_ratio,
            dtype=dtype,
            rescale=rescale,
            max_pixels=max_pixels,
            fast_decode=fast_decode,
        )
        features = dict(dataset.features)
        self._kinds = {name: _kind(feature) for name, feature in features.items()}
        self._dtypes = {name: _numpy_dtype(feature) for name, feature in features.items()}
        chosen_x, chosen_y = _columns(x, "x"), _columns(y, "y")
        for name in (chosen_x or []) + (chosen_y or []):
            if name not in features:
                raise ValueError(f"The dataset has no column {name!r}; its columns: {list(features)}.")
            if self._kinds[name] == "string":
                raise TypeError(
                    f"Column {name!r} holds strings, which cannot be batched into arrays. Turn it "
                    "into numbers first (e.g. dataset.map with a tokenizer, or "
                    "dataset.class_encode_column(name) for string labels)."
                )
        if chosen_y is None:
            chosen_y = _default_targets(self._kinds, exclude=chosen_x or [])
        strings = [name for name, kind in self._kinds.items() if kind == "string"]
        if chosen_x is None:
            chosen_x = [n for n in features if n not in (chosen_y or []) and self._kinds[n] != "string"]
            if not chosen_x:
                raise ValueError(
                    f"No column is left for the inputs (columns: {list(features)}; targets: "
                    f"{chosen_y}). Name them with x=..."
                )
        for name, feature in features.items():
            if self._kinds[name] == "image" and getattr(feature, "decode", False):
                # Read the encoded image and decode it here, as ImageFolder does a
                # file: datasets would decode it in full first, which both costs
                # time and rules out the reduced-scale JPEG decode (fast_decode).
                dataset = dataset.cast_column(name, dataclasses.replace(feature, decode=False))
        self._dataset = dataset
        self._x = chosen_x
        self._y = chosen_y or []
        self.dropped: list[str] = [n for n in strings if n not in self._x and n not in self._y]
        """The string columns left out of the default choice of columns."""

    @property
    def x_columns(self) -> list[str]:
        """The input columns, in order."""
        return list(self._x)

    @property
    def y_columns(self) -> list[str]:
        """The target columns (empty when samples have no target)."""
        return list(self._y)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) of every decoded image."""
        return self._spec.shape

    def __len__(self) -> int:
        return len(self._dataset)

    def __getitem__(self, index: int) -> Any:
        """Sample `index`: `(x, y)` (or `x` alone without targets) as NumPy values."""
        index = checks.position(index, len(self), of=f"a dataset of {len(self)} rows")
        row = self._dataset[index]
        x = self._pack([self._value(row, name, index) for name in self._x], self._x)
        if not self._y:
            return x
        return x, self._pack([self._value(row, name, index) for name in self._y], self._y)

    @staticmethod
    def _pack(values: list[Any], names: list[str]) -> Any:
        return values[0] if len(values) == 1 else dict(zip(names, values))

    def _value(self, row: dict[str, Any], name: str, index: int) -> Any:
        value = row[name]
        if value is None:
            raise SampleError(
                f"Sample {index}: column {name!r} is None (a missing value); fill or filter it."
            )
        if self._kinds[name] == "image":
            return self._image(value, name, index)
        declared = self._dtypes[name]
        try:
            array = np.asarray(value, dtype=declared)
        except (TypeError, ValueError) as error:
            raise SampleError(
                f"Sample {index}: column {name!r}: cannot make an array of {value!r}."
            ) from error
        if array.dtype == object or array.dtype.kind in "US":
            raise SampleError(
                f"Sample {index}: column {name!r} holds {type(value).__name__} values that are not "
                "numbers; turn them into numbers first (e.g. dataset.map)."
            )
        return array

    def _image(self, value: Any, name: str, index: int) -> np.ndarray:
        where = f"sample {index}, column {name!r}"
        try:
            image = _as_pillow_image(value)
        except decode.UnreadableImageError as error:
            raise SampleError(
                f"Sample {index}: cannot decode the image in column {name!r}: {error.reason}."
            ) from error
        except Exception as error:
            raise SampleError(
                f"Sample {index}: cannot decode the image in column {name!r}: {error}."
            ) from error
        if image is None:
            raise SampleError(f"Sample {index}: column {name!r} is not an image: {type(value).__name__}.")
        try:
            with image:
                return decode.decode_image(image, self._spec, where)
        except decode.UnreadableImageError as error:
            raise SampleError(
                f"Sample {index}: cannot decode the image in column {name!r}: {error.reason}."
            ) from error

    def __repr__(self) -> str:
        return (
            f"HFDataset({len(self)} rows, x={self._x}, y={self._y}, image_size={self._spec.image_size}"
            + (f", dropped={self.dropped}" if self.dropped else "")
            + ")"
        )


def _default_targets(kinds: dict[str, str], exclude: list[str]) -> list[str] | None:
    for name in _TARGET_NAMES:
        if name in kinds and name not in exclude and kinds[name] != "string":
            return [name]
    labels = [name for name, kind in kinds.items() if kind == "label" and name not in exclude]
    return labels if len(labels) == 1 else None


def _numpy_dtype(feature: Any) -> np.dtype[Any] | None:
    """The NumPy dtype a column declares (Value / ClassLabel / ArrayND, or the Value inside
    a Sequence / List), or None to let NumPy choose."""
    while not isinstance(getattr(feature, "dtype", None), str) and hasattr(feature, "feature"):
        feature = feature.feature  # Sequence(Value("float32")), List(...), nested
    declared = getattr(feature, "dtype", None)
    if not isinstance(declared, str):
        return None
    try:
        return np.dtype(declared)
    except TypeError:
        return None


def _as_pillow_image(value: Any) -> Image.Image | None:
    """An image column's value as a Pillow image (opened lazily where it can be), or None."""
    if isinstance(value, dict) and (value.get("bytes") or value.get("path")):
        # An Image feature with decode=False: the encoded bytes, or a file path.
        source: Any = io.BytesIO(value["bytes"]) if value.get("bytes") else os.fspath(value["path"])
        return Image.open(source)
    if isinstance(value, np.ndarray):
        return Image.fromarray(value)
    if isinstance(value, Image.Image):
        return value
    return None
