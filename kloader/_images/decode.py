"""Decoding one image file into an array of a fixed size, with Pillow and torch.

`decode(path, spec)` opens the file, refuses images over a pixel limit (a
decompression bomb), decodes JPEGs at reduced scale while the decoded image
still covers the target (libjpeg's DCT scaling through Pillow's draft mode),
converts the colour mode, resizes the image as stored (optionally cropping or
padding to the target's aspect ratio), applies the EXIF orientation to the
result, and returns a `(height, width, channels)` array. It never imports
Keras: it runs in worker processes.

Bilinear and bicubic resizes (and their stand-ins "gaussian" and
"mitchellcubic") run on uint8 pixels with torch's antialiased kernels, which
compute Pillow's filters (a port of Pillow-SIMD) several times faster than
Pillow does; outputs differ from Pillow's by at most 1 level on a few pixels in
a thousand (rounding). They are deterministic: the same bytes for any number of
threads, so for any number of workers (torch's DataLoader workers, which run
kloader's, use one thread each). Conversion to float32 happens once, on the
final small image. The other filters stay with Pillow.

`check(path, spec)` runs the same steps at thumbnail size and returns the
reason a file cannot be read, or None. Because it runs the very same code, a
file that passes the check decodes; that is what makes `on_error="skip"`
decidable once, up front.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import stat
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

# Pillow's own default decompression-bomb limit (about 89.5 megapixels).
DEFAULT_MAX_PIXELS = 89_478_485

COLOR_MODES = {"grayscale": ("L", 1), "rgb": ("RGB", 3), "rgba": ("RGBA", 4)}

# image_dataset_from_directory's names, mapped to the nearest Pillow filter.
# Pillow has no Gaussian or Mitchell filter and one Lanczos (a = 3). Every
# filter but NEAREST is antialiased when shrinking.
INTERPOLATIONS = {
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "bicubic": Image.Resampling.BICUBIC,
    "area": Image.Resampling.BOX,
    "lanczos3": Image.Resampling.LANCZOS,
    "lanczos5": Image.Resampling.LANCZOS,
    "gaussian": Image.Resampling.BILINEAR,
    "mitchellcubic": Image.Resampling.BICUBIC,
}

# The interpolations torch resizes (on uint8, antialiased, Pillow's filters).
TORCH_MODES = {
    "bilinear": "bilinear",
    "gaussian": "bilinear",
    "bicubic": "bicubic",
    "mitchellcubic": "bicubic",
}

DTYPES = ("float32", "uint8")

# JPEG draft: decode at 1/d scale while the decoded window stays at least this
# many times the size the resize makes of it (Pillow's own `draft(mode, size)`
# rule). The resize is told the window's exact extent in decoded pixels, so the
# result stays close to a full decode (README: Image folders, Quality;
# benchmarks/image_quality.py).
DRAFT_MARGIN = 1
_DRAFT_SCALES = (8, 4, 2)

_ORIENTATION_TAG = 0x0112
_INTEGER_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")
_CHECK_SIZE = (8, 8)


class UnreadableImageError(Exception):
    """A file that cannot be decoded into an image; `reason` says why, in words."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        # From a worker it arrives as itself, with its path and reason, as made here.
        return (type(self), (self.path, self.reason))


@dataclasses.dataclass(frozen=True)
class DecodeSpec:
    """What every decoded image looks like. Validated on construction.

    Attributes:
        image_size: (height, width) of the output.
        color_mode: "grayscale" (1 channel), "rgb" (3) or "rgba" (4).
        interpolation: a name from `INTERPOLATIONS`.
        crop_to_aspect_ratio: crop the largest centred window with the target's
            aspect ratio, then resize (no distortion).
        pad_to_aspect_ratio: resize to fit inside the target and pad with zeros,
            centred (no distortion).
        dtype: "float32" (0..255, times `rescale`) or "uint8".
        rescale: factor for float32 output, e.g. 1/255; None for none.
        max_pixels: refuse images with more pixels (width * height); None for no
            limit of kloader's own (Pillow's global limit still applies).
        fast_decode: decode JPEGs at 1/2, 1/4 or 1/8 scale while the decoded
            image stays at least as large as the target (True), or always in
            full (False). "max" is accepted as another name for True.
    """

    image_size: tuple[int, int]
    color_mode: str = "rgb"
    interpolation: str = "bilinear"
    crop_to_aspect_ratio: bool = False
    pad_to_aspect_ratio: bool = False
    dtype: str = "float32"
    rescale: float | None = None
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    fast_decode: bool | str = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_size", _image_size(self.image_size))
        _one_of(self.color_mode, COLOR_MODES, "color_mode")
        _one_of(self.interpolation, INTERPOLATIONS, "interpolation")
        object.__setattr__(self, "dtype", _dtype_name(self.dtype))
        if not isinstance(self.fast_decode, bool) and self.fast_decode != "max":
            raise ValueError(
                f"`fast_decode` must be True or False, got {self.fast_decode!r}. True decodes "
                "JPEGs at the smallest DCT scale that still covers the target; False in full."
            )
        object.__setattr__(self, "fast_decode", bool(self.fast_decode))
        if self.crop_to_aspect_ratio and self.pad_to_aspect_ratio:
            raise ValueError(
                "Only one of `crop_to_aspect_ratio` and `pad_to_aspect_ratio` can be True: crop "
                "cuts the image to the target's aspect ratio, pad adds borders to reach it."
            )
        if self.rescale is not None:
            if not isinstance(self.rescale, numbers.Real) or isinstance(self.rescale, bool):
                raise TypeError(f"`rescale` must be a number such as 1/255 or None, got {self.rescale!r}.")
            if self.dtype != "float32":
                raise ValueError(
                    f"`rescale` needs dtype='float32', got dtype={self.dtype!r}: uint8 cannot hold "
                    "rescaled values. Drop rescale, or use dtype='float32'."
                )
        if self.max_pixels is not None and (
            isinstance(self.max_pixels, bool)
            or not isinstance(self.max_pixels, numbers.Integral)
            or self.max_pixels <= 0
        ):
            raise ValueError(f"`max_pixels` must be a positive int or None, got {self.max_pixels!r}.")

    @property
    def channels(self) -> int:
        return COLOR_MODES[self.color_mode][1]

    @property
    def shape(self) -> tuple[int, int, int]:
        """The shape of every decoded image: (height, width, channels)."""
        return (*self.image_size, self.channels)


def spec_from_arguments(
    *,
    image_size: Any,
    color_mode: str,
    interpolation: str,
    crop_to_aspect_ratio: Any,
    pad_to_aspect_ratio: Any,
    dtype: str,
    rescale: float | None,
    max_pixels: int | None,
    fast_decode: Any,
) -> DecodeSpec:
    """The DecodeSpec for the arguments ImageFolder and HFDataset take (truthy flags as bools)."""
    return DecodeSpec(
        image_size=image_size,  # validated and normalised by DecodeSpec
        color_mode=color_mode,
        interpolation=interpolation,
        crop_to_aspect_ratio=bool(crop_to_aspect_ratio),
        pad_to_aspect_ratio=bool(pad_to_aspect_ratio),
        dtype=dtype,
        rescale=rescale,
        max_pixels=max_pixels,
        fast_decode=fast_decode if isinstance(fast_decode, str) else bool(fast_decode),
    )


def _image_size(value: Any) -> tuple[int, int]:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value, value)
    try:
        height, width = value
        ok = all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and int(v) > 0 for v in value)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(
            f"`image_size` must be (height, width) with two positive ints, got {value!r}. "
            "For example image_size=(224, 224)."
        )
    return (int(height), int(width))


def _dtype_name(value: Any) -> str:
    """ "uint8" or "float32" from a name or a NumPy dtype (np.uint8, np.dtype("float32"))."""
    try:
        name: str | None = str(np.dtype(value).name) if value is not None else None
    except TypeError:
        name = None
    if name is None or name not in DTYPES:
        raise ValueError(f"`dtype` must be one of {sorted(DTYPES)} (or np.uint8, np.float32), got {value!r}.")
    return name


def _one_of(value: Any, allowed: Any, name: str) -> None:
    if value not in allowed:
        raise ValueError(f"`{name}` must be one of {sorted(allowed)}, got {value!r}.")


# ------------------------------------------------------------------ decode


def decode(path: str, spec: DecodeSpec) -> np.ndarray:
    """The image at `path` as an array of `spec.shape` and `spec.dtype`.

    Raises:
        UnreadableImageError: naming the path and Pillow's reason.
    """
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            raise UnreadableImageError(path, "a directory, not an image file")
        if not stat.S_ISREG(mode):
            # A named pipe would block the read forever; a device could be endless.
            raise UnreadableImageError(
                path, "not a regular file (a named pipe, socket or device); never opened"
            )
        with Image.open(path) as opened:
            return _decode_opened(opened, spec)
    except UnreadableImageError as error:
        raise UnreadableImageError(path, error.reason) from None
    except Exception as error:
        # Pillow's plugins fail on broken files with many exception types
        # (OSError, SyntaxError, struct.error, ...); and a DecompressionBombWarning
        # arrives here as an exception when warnings are errors.
        raise UnreadableImageError(path, _reason(error)) from error


def decode_image(image: Image.Image, spec: DecodeSpec, where: str) -> np.ndarray:
    """A Pillow image (opened lazily or loaded) as `decode` makes a file; `where` names it in errors."""
    try:
        return _decode_opened(image, spec)
    except UnreadableImageError as error:
        raise UnreadableImageError(where, error.reason) from None
    except Exception as error:
        raise UnreadableImageError(where, _reason(error)) from error


def _decode_opened(opened: Image.Image, spec: DecodeSpec) -> np.ndarray:
    check_pixels(opened, spec.max_pixels)
    orientation = _orientation(opened)
    geometry = _geometry(opened.size, orientation, spec)
    scale = 1
    if spec.fast_decode and opened.format in ("JPEG", "MPO"):
        scale = _draft(opened, spec, geometry)
    opened.load()
    if orientation != 1 and _orientation(opened) == 1:
        # Pillow turned it upright as it loaded it (its TIFF plugin does, and drops the tag).
        orientation = 1
        geometry = _geometry(opened.size, orientation, spec)
    image = _to_color_mode(opened, spec.color_mode)
    pixels = _orient(_resize(image, spec, geometry, scale), orientation)
    return _to_array(_on_canvas(pixels, geometry, spec), spec)


def check(path: str, spec: DecodeSpec) -> str | None:
    """Why `decode(path, spec)` would fail, or None when it succeeds.

    Runs the same steps as `decode` at thumbnail size: the whole file is still
    read and entropy-decoded (so truncation and corruption show), but JPEGs
    are decoded at 1/8 scale and the resize is tiny.
    """
    thumbnail = dataclasses.replace(spec, image_size=_CHECK_SIZE, fast_decode=True)
    try:
        decode(path, thumbnail)
    except UnreadableImageError as error:
        return error.reason
    return None


def _reason(error: BaseException) -> str:
    if isinstance(error, UnidentifiedImageError) or "cannot identify image file" in str(error):
        return "not an image Pillow can identify (empty, truncated at the header, or another file type)"
    if isinstance(error, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return (
            f"{error} (Pillow's limit, PIL.Image.MAX_IMAGE_PIXELS; if the file is trusted, raise "
            "it and max_pixels)"
        )
    if isinstance(error, FileNotFoundError):
        return "file not found (it was moved or deleted after the folder was scanned)"
    message = str(error) or type(error).__name__
    return f"{type(error).__name__}: {message}"


def check_pixels(image: Image.Image, max_pixels: int | None) -> None:
    """Raises UnreadableImageError (with no path) when `image` has more than `max_pixels`."""
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        raise UnreadableImageError(
            "",
            f"{width}x{height} = {width * height} pixels is over max_pixels={max_pixels} "
            "(decompression-bomb limit); raise max_pixels if the file is trusted",
        )


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # a broken EXIF block is no reason to lose the image
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


# Each EXIF orientation as what shows the stored image upright (Pillow's
# exif_transpose): flip the stored rows, flip the stored columns, then
# transpose.
_FLIPS_THEN_TRANSPOSE = {
    1: (False, False, False),
    2: (False, True, False),
    3: (True, True, False),
    4: (True, False, False),
    5: (False, False, True),
    6: (True, False, True),
    7: (True, True, True),
    8: (False, True, True),
}


def _orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """A stored (height, width, bands) array shown upright, as a view."""
    flip_rows, flip_columns, transpose = _FLIPS_THEN_TRANSPOSE[orientation]
    if flip_rows:
        pixels = pixels[::-1]
    if flip_columns:
        pixels = pixels[:, ::-1]
    return pixels.transpose(1, 0, 2) if transpose else pixels


# ---------------------------------------------------------------- geometry


@dataclasses.dataclass(frozen=True)
class _Window:
    """A box of the stored image, in its pixels: rows [top, top + height), columns [left, left + width)."""

    top: int
    left: int
    height: int
    width: int


@dataclasses.dataclass(frozen=True)
class _Geometry:
    """What to resize to what, worked out on the image as stored (before its EXIF orientation).

    The resize runs on the stored image and the orientation is applied to the
    small result, so a flip only moves output pixels, and the partial last
    row or column of a draft decode (375 rows at 1/2 are 187.5 rows, stored in
    188) stays at the end, where the resize can allow for it.

    Attributes:
        window: the part of the stored image that reaches the output.
        size: (height, width) the window is resized to, in the stored orientation.
        canvas_offset: where the upright resized window goes on a zero canvas of
            the target size (pad_to_aspect_ratio), or None when it is the output.
    """

    window: _Window
    size: tuple[int, int]
    canvas_offset: tuple[int, int] | None


def _geometry(stored_size: tuple[int, int], orientation: int, spec: DecodeSpec) -> _Geometry:
    """The window, resize and padding that give `spec`'s output for an image stored at (w, h)."""
    stored_width, stored_height = stored_size
    transpose = _FLIPS_THEN_TRANSPOSE[orientation][2]
    width, height = (stored_height, stored_width) if transpose else (stored_width, stored_height)
    target_height, target_width = spec.image_size
    window = _Window(0, 0, stored_height, stored_width)
    size, offset = (target_height, target_width), None
    if spec.crop_to_aspect_ratio:
        crop_width, crop_height = _crop_box_size(width, height, target_width, target_height)
        upright = _Window((height - crop_height) // 2, (width - crop_width) // 2, crop_height, crop_width)
        window = _stored_window(upright, (height, width), orientation)
    elif spec.pad_to_aspect_ratio:
        scale = min(target_width / width, target_height / height)
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        offset = ((target_height - size[0]) // 2, (target_width - size[1]) // 2)
    if transpose:
        size = (size[1], size[0])
    return _Geometry(window, size, offset)


def _stored_window(upright: _Window, upright_size: tuple[int, int], orientation: int) -> _Window:
    """The box of the stored image that shows as `upright` once oriented."""
    flip_rows, flip_columns, transpose = _FLIPS_THEN_TRANSPOSE[orientation]
    height, width = upright_size
    top, left, box_height, box_width = upright.top, upright.left, upright.height, upright.width
    if transpose:  # undo the transpose first: it was applied last
        top, left, box_height, box_width = left, top, box_width, box_height
        height, width = width, height
    if flip_rows:
        top = height - top - box_height
    if flip_columns:
        left = width - left - box_width
    return _Window(top, left, box_height, box_width)


# ------------------------------------------------------------------- draft


def draft_scale(stored_size: tuple[int, int], orientation: int, spec: DecodeSpec) -> int:
    """The JPEG draft divisor (1, 2, 4 or 8) for an image stored at `stored_size` (w, h).

    The largest d for which the part of the image that reaches the output,
    decoded at 1/d, is still at least `DRAFT_MARGIN` times the size it is
    resized to in both directions, and starts on a whole decoded pixel (a
    centred crop window whose offset d does not divide is decoded at a
    smaller scale instead).
    """
    return _draft_scale_of(_geometry(stored_size, orientation, spec))


def _draft_scale_of(geometry: _Geometry) -> int:
    window = geometry.window
    for scale in _DRAFT_SCALES:
        large_enough = (
            window.height >= scale * DRAFT_MARGIN * geometry.size[0]
            and window.width >= scale * DRAFT_MARGIN * geometry.size[1]
        )
        if large_enough and window.top % scale == 0 and window.left % scale == 0:
            return scale
    return 1


def _draft(image: Image.Image, spec: DecodeSpec, geometry: _Geometry) -> int:
    """Asks Pillow to decode `image` at reduced scale; returns the scale it will decode at."""
    scale = _draft_scale_of(geometry)
    if scale == 1:
        return 1
    width, height = image.size
    # Pillow picks the largest of 8, 4, 2 not above min(w // rw, h // rh):
    # requesting (w // d, h // d) yields exactly d.
    mode = "L" if spec.color_mode == "grayscale" else None
    image.draft(mode, (width // scale, height // scale))
    # An image already loaded (or drafted) keeps its size: then it is not scaled.
    drafted = image.size == (math.ceil(width / scale), math.ceil(height / scale))
    return scale if drafted else 1


# ------------------------------------------------------------- colour mode


def _to_color_mode(image: Image.Image, color_mode: str) -> Image.Image:
    target = COLOR_MODES[color_mode][0]
    if image.mode == target:
        return image
    if image.mode in _INTEGER_MODES or image.mode == "F":
        image = _to_8_bit(image)
    elif image.mode == "P":
        # Palette transparency survives only through RGBA (and Pillow warns otherwise).
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode not in ("1", "L", "LA", "RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.mode else "RGB")  # CMYK, YCbCr, PA, ...
    return image if image.mode == target else image.convert(target)


def _to_8_bit(image: Image.Image) -> Image.Image:
    # Pillow's own conversion clips 16-bit values at 255 instead of scaling them.
    values = np.asarray(image)
    if image.mode == "F":
        scaled = np.clip(np.nan_to_num(values), 0, 255).round()
    else:
        scaled = (np.clip(values.astype(np.int64), 0, 65535) * 255 + 32767) // 65535
    return Image.fromarray(scaled.astype(np.uint8))


# ------------------------------------------------------------------ resize


def _crop_box_size(width: int, height: int, target_width: int, target_height: int) -> tuple[int, int]:
    # The same window as keras.preprocessing.image.smart_resize.
    crop_height = max(min(height, int(width * target_height / target_width)), 1)
    crop_width = max(min(width, int(height * target_width / target_height)), 1)
    return crop_width, crop_height


def _resize(image: Image.Image, spec: DecodeSpec, geometry: _Geometry, scale: int) -> np.ndarray:
    """The window of the stored image resized to `geometry.size`: (height, width, bands) uint8.

    `image` is the stored image decoded at 1/`scale`. The window's far edges
    may fall inside a decoded pixel; the resize is told the window's exact
    extent, so a draft decode samples the same places a full decode does.
    """
    window = geometry.window
    # draft_scale only picks scales that divide the window's offsets.
    top, left = window.top // scale, window.left // scale
    extent = (window.height / scale, window.width / scale)
    bottom, right = top + math.ceil(extent[0]), left + math.ceil(extent[1])
    if spec.interpolation in TORCH_MODES:
        pixels = _pixels(image)[top:bottom, left:right]
        return _torch_resize(pixels, extent, geometry.size, spec.interpolation)
    if (left, top, right, bottom) != (0, 0, *image.size):
        # crop, then resize: resize(box=...) would blend in pixels from outside the window
        image = image.crop((left, top, right, bottom))
    target_height, target_width = geometry.size
    if image.size != (target_width, target_height) or extent != (image.height, image.width):
        resample = INTERPOLATIONS[spec.interpolation]
        image = image.resize((target_width, target_height), resample, box=(0, 0, extent[1], extent[0]))
    return _pixels(image)


def _pixels(image: Image.Image) -> np.ndarray:
    """The pixels as a writable (height, width, bands) uint8 array."""
    width, height = image.size
    # bytearray: torch refuses (with a warning) to wrap read-only memory.
    raw = bytearray(image.tobytes())
    return np.frombuffer(raw, np.uint8).reshape(height, width, len(image.getbands()))


def _torch_resize(
    pixels: np.ndarray, extent: tuple[float, float], size: tuple[int, int], interpolation: str
) -> np.ndarray:
    """`pixels`, of which the first `extent` (height, width) rows and columns belong to the image, resized."""
    whole = extent == pixels.shape[:2]
    if whole and pixels.shape[:2] == size:
        return pixels
    import torch  # here, not at the top: ImageFolder and `python -m kloader` load without torch

    # (1, bands, height, width) views of (height, width, bands) memory: torch's
    # vectorised uint8 path reads it, and writes the result straight into the
    # array returned. (F.interpolate returns channels-first memory, and turning
    # that back into (height, width, bands) costs more than the resize.)
    source = torch.from_numpy(np.ascontiguousarray(pixels)[np.newaxis]).permute(0, 3, 1, 2)
    result = np.empty((*size, pixels.shape[2]), np.uint8)
    target = torch.from_numpy(result[np.newaxis]).permute(0, 3, 1, 2)
    # A partial last row or column: the scale comes from the extent, not from the
    # array's size (the output is the first `size` of what F.interpolate's
    # scale_factor would give).
    scales = (None, None) if whole else (size[0] / extent[0], size[1] / extent[1])
    resize = getattr(torch._C._nn, _TORCH_KERNELS[TORCH_MODES[interpolation]])
    resize(source, size, False, *scales, out=target)
    return result


# The antialiased kernels behind F.interpolate(mode=..., antialias=True),
# called directly for their out= argument (pinned by tests/images/test_decode.py).
_TORCH_KERNELS = {"bilinear": "_upsample_bilinear2d_aa", "bicubic": "_upsample_bicubic2d_aa"}


def _on_canvas(pixels: np.ndarray, geometry: _Geometry, spec: DecodeSpec) -> np.ndarray:
    """The upright resized window, on a zero canvas of the target size where it is padded."""
    if geometry.canvas_offset is None:
        return pixels
    top, left = geometry.canvas_offset
    canvas = np.zeros((*spec.image_size, pixels.shape[2]), np.uint8)
    canvas[top : top + pixels.shape[0], left : left + pixels.shape[1]] = pixels
    return canvas


def _to_array(pixels: np.ndarray, spec: DecodeSpec) -> np.ndarray:
    """The final (height, width, channels) array of `spec.dtype`, C-contiguous."""
    pixels = pixels[:, :, : spec.channels]  # drops the padding band of RGBX
    if spec.dtype == "uint8":
        return np.ascontiguousarray(pixels)
    result = pixels.astype(np.float32, order="C")
    if spec.rescale is not None:
        result *= np.float32(spec.rescale)
    return result
