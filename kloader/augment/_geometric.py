"""Geometric augmentation: flips, and rotation / shift / shear / zoom as one affine warp.

`RandomAffine` is ImageDataGenerator's geometric step: every option draws its
value, the four combine into one sampling matrix and the image is resampled
once. `RandomRotation`, `RandomShift`, `RandomShear` and `RandomZoom` are
`RandomAffine` with one option; composing several of them resamples several
times, so prefer one `RandomAffine` (as `from_image_data_generator` does).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kloader.augment import _affine
from kloader.augment._base import ImageTransform, draw, factor_range, symmetric_range

_SHIFT_UNITS = ("fraction", "pixels")


class RandomFlip(ImageTransform):
    """Flips the image left-right and / or up-down, each with probability 1/2.

    Draws two values from `rng` on every call, whichever flips are enabled.

    Args:
        horizontal: flip left-right (ImageDataGenerator's `horizontal_flip`).
        vertical: flip up-down (ImageDataGenerator's `vertical_flip`).

    Example:
        ```python
        flip = augment.RandomFlip(horizontal=True, vertical=True)
        image, label = flip((image, label), np.random.default_rng(0))
        ```
    """

    def __init__(self, *, horizontal: bool = True, vertical: bool = False):
        self.horizontal = bool(horizontal)
        self.vertical = bool(vertical)

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        u = rng.random(2)
        if self.horizontal and u[0] < 0.5:
            image = image[:, ::-1]
        if self.vertical and u[1] < 0.5:
            image = image[::-1]
        return image


class RandomAffine(ImageTransform):
    """Random rotation, shift, shear and zoom about the image centre, in one resampling.

    The options mean what ImageDataGenerator's `*_range` options mean, and
    rotation, shear and zoom combine as it combines them (one sampling matrix
    R @ S @ Z about the centre); the shift then moves the result by t pixels.
    That is, the output pixel at p (relative to the centre) is read from the
    input at `R @ S @ Z @ (p - t)`. Draws six values from
    `rng` on every call (rotation, shear, zx, zy, shift x, shift y), whichever
    options are set; with every range zero the image is returned unchanged.

    Args:
        rotation: degrees, counter-clockwise: r means uniform in [-r, r];
            (low, high) is a range.
        width_shift: horizontal shift of the content (positive: to the right),
            as a fraction of the width, or in pixels with
            `shift_unit="pixels"`: s means uniform in [-s, s]; or (low, high).
        height_shift: vertical shift (positive: down), like `width_shift`.
        shear: shear angle in degrees, counter-clockwise, like `rotation`.
        zoom: ImageDataGenerator's zoom factor, drawn independently for x and
            y: the output spans z times the input's extent, so z < 1 zooms in
            and z > 1 zooms out. z means [1 - z, 1 + z]; (low, high) a range.
        shift_unit: "fraction" (of the width / height) or "pixels".
        interpolation: "bilinear" or "nearest".
        fill_mode: how points outside the input are filled: "constant"
            (`fill_value`), "nearest" (the edge pixel), "reflect" (mirrored:
            d c b a | a b c d | d c b a) or "wrap" (tiled).
        fill_value: the value for fill_mode="constant".

    Example:
        ```python
        affine = augment.RandomAffine(rotation=20, width_shift=0.1, height_shift=0.1,
                                      shear=10, zoom=0.2, fill_mode="reflect")
        ```
    """

    def __init__(
        self,
        *,
        rotation: float | tuple[float, float] = 0.0,
        width_shift: float | tuple[float, float] = 0.0,
        height_shift: float | tuple[float, float] = 0.0,
        shear: float | tuple[float, float] = 0.0,
        zoom: float | tuple[float, float] = 0.0,
        shift_unit: str = "fraction",
        interpolation: str = "bilinear",
        fill_mode: str = "nearest",
        fill_value: float = 0.0,
    ):
        self.rotation = symmetric_range(rotation, "rotation", example="rotation=20")
        self.width_shift = symmetric_range(width_shift, "width_shift", example="width_shift=0.1")
        self.height_shift = symmetric_range(height_shift, "height_shift", example="height_shift=0.1")
        self.shear = symmetric_range(shear, "shear", example="shear=10")
        self.zoom = factor_range(zoom, "zoom", example="zoom=0.2 or zoom=(0.8, 1.2)", positive=True)
        if shift_unit not in _SHIFT_UNITS:
            raise ValueError(f"The shift unit must be one of {_SHIFT_UNITS}, got {shift_unit!r}.")
        self.shift_unit = shift_unit
        self.interpolation = _affine.check_interpolation(interpolation)
        self.fill_mode = _affine.check_fill_mode(fill_mode)
        self.fill_value = float(fill_value)
        self._same_zoom = False  # RandomZoom(keep_aspect=True): zy = zx

    def _matrix(self, height: int, width: int, u: list[float]) -> _affine.Matrix:
        """The sampling matrix for an image of this size and the six draws `u`."""
        zx = draw(self.zoom, u[2])
        zy = zx if self._same_zoom else draw(self.zoom, u[3])
        dx, dy = draw(self.width_shift, u[4]), draw(self.height_shift, u[5])
        if self.shift_unit == "fraction":
            dx, dy = dx * width, dy * height
        return _affine.sampling_matrix(
            height,
            width,
            rotation=draw(self.rotation, u[0]),
            shear=draw(self.shear, u[1]),
            zoom=(zx, zy),
            shift=(dx, dy),
        )

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        matrix = self._matrix(image.shape[0], image.shape[1], rng.random(6).tolist())
        if matrix == _affine.IDENTITY:
            return image
        return _affine.warp(
            image,
            matrix,
            interpolation=self.interpolation,
            fill_mode=self.fill_mode,
            fill_value=self.fill_value,
        )


class _OneAffine(RandomAffine):
    """A RandomAffine with one option; its repr shows only what was set."""

    _shown: tuple[str, ...] = ()

    def _options(self) -> dict[str, Any]:
        return {
            name: getattr(self, name) for name in (*self._shown, "interpolation", "fill_mode", "fill_value")
        }


class RandomRotation(_OneAffine):
    """Rotates the image about its centre by a random angle (ImageDataGenerator's `rotation_range`).

    Args:
        degrees: r means uniform in [-r, r] degrees, counter-clockwise;
            (low, high) is a range.
        interpolation, fill_mode, fill_value: as in `RandomAffine`.

    Example:
        ```python
        rotate = augment.RandomRotation(30, fill_mode="reflect")
        ```
    """

    _shown = ("rotation",)

    def __init__(
        self,
        degrees: float | tuple[float, float],
        *,
        interpolation: str = "bilinear",
        fill_mode: str = "nearest",
        fill_value: float = 0.0,
    ):
        super().__init__(
            rotation=degrees, interpolation=interpolation, fill_mode=fill_mode, fill_value=fill_value
        )


class RandomShear(_OneAffine):
    """Shears the image by a random angle (ImageDataGenerator's `shear_range`).

    Args:
        degrees: s means uniform in [-s, s] degrees, counter-clockwise;
            (low, high) is a range.
        interpolation, fill_mode, fill_value: as in `RandomAffine`.

    Example:
        ```python
        shear = augment.RandomShear(10)
        ```
    """

    _shown = ("shear",)

    def __init__(
        self,
        degrees: float | tuple[float, float],
        *,
        interpolation: str = "bilinear",
        fill_mode: str = "nearest",
        fill_value: float = 0.0,
    ):
        super().__init__(
            shear=degrees, interpolation=interpolation, fill_mode=fill_mode, fill_value=fill_value
        )


class RandomShift(_OneAffine):
    """Shifts the image by a random offset (ImageDataGenerator's `width_shift_range` / `height_shift_range`).

    Args:
        width: horizontal shift, positive to the right: w means uniform in
            [-w, w]; (low, high) is a range. A fraction of the width, or
            pixels with unit="pixels".
        height: vertical shift, positive down, like `width`.
        unit: "fraction" or "pixels".
        interpolation, fill_mode, fill_value: as in `RandomAffine`.

    Example:
        ```python
        shift = augment.RandomShift(width=0.1, height=0.1)           # up to 10 % each way
        shift_px = augment.RandomShift(width=4, height=4, unit="pixels")
        ```
    """

    _shown = ("width_shift", "height_shift", "shift_unit")

    def __init__(
        self,
        width: float | tuple[float, float] = 0.0,
        height: float | tuple[float, float] = 0.0,
        *,
        unit: str = "fraction",
        interpolation: str = "bilinear",
        fill_mode: str = "nearest",
        fill_value: float = 0.0,
    ):
        super().__init__(
            width_shift=width,
            height_shift=height,
            shift_unit=unit,
            interpolation=interpolation,
            fill_mode=fill_mode,
            fill_value=fill_value,
        )


class RandomZoom(_OneAffine):
    """Zooms the image about its centre by random factors (ImageDataGenerator's `zoom_range`).

    The factor is ImageDataGenerator's: the output spans z times the input's
    extent, so z < 1 zooms in and z > 1 zooms out. x and y are drawn
    independently, as ImageDataGenerator does, unless `keep_aspect=True`.

    Args:
        factor: z means [1 - z, 1 + z]; (low, high) is a range (> 0).
        keep_aspect: one factor for both axes.
        interpolation, fill_mode, fill_value: as in `RandomAffine`.

    Example:
        ```python
        zoom = augment.RandomZoom((0.8, 1.2), keep_aspect=True)
        ```
    """

    _shown = ("zoom", "keep_aspect")

    def __init__(
        self,
        factor: float | tuple[float, float],
        *,
        keep_aspect: bool = False,
        interpolation: str = "bilinear",
        fill_mode: str = "nearest",
        fill_value: float = 0.0,
    ):
        super().__init__(zoom=factor, interpolation=interpolation, fill_mode=fill_mode, fill_value=fill_value)
        self._same_zoom = bool(keep_aspect)

    @property
    def keep_aspect(self) -> bool:
        """One zoom factor for both axes."""
        return self._same_zoom
