"""Decoding one image file into an array of a fixed size, with Pillow and torch.

`decode(path, spec)` opens the file, refuses images over a pixel limit (a
decompression bomb), decodes JPEGs at reduced scale when the target is much
smaller than the file (libjpeg's DCT scaling through Pillow's draft mode),
applies the EXIF orientation, converts the colour mode, resizes (optionally
cropping or padding to the target's aspect ratio), and returns a
`(height, width, channels)` array. It never imports Keras: it runs in worker
processes.

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
import numbers
import os
import stat
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

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

# JPEG draft: decode at 1/d scale only while the decoded image stays at least
# this many times the size the final resize needs (see benchmarks/decode_draft.py).
# fast_decode="max" lets it shrink to the size the resize needs (margin 1), as
# Pillow's own `draft(mode, size)` does: faster, and a little softer.
DRAFT_MARGIN = 2
MAX_DRAFT_MARGIN = 1
_DRAFT_SCALES = (8, 4, 2)

_ORIENTATION_TAG = 0x0112
_TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)
_INTEGER_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")
_CHECK_SIZE = (8, 8)


class UnreadableImageError(Exception):
    """A file that cannot be decoded into an image; `reason` says why, in words."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


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
        fast_decode: decode JPEGs at 1/2, 1/4 or 1/8 scale when the target is
            much smaller than the file: True keeps the decoded image at least
            twice the target, "max" at least the target, False decodes in full.
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
        _one_of(self.dtype, DTYPES, "dtype")
        if not isinstance(self.fast_decode, bool) and self.fast_decode != "max":
            raise ValueError(
                f'`fast_decode` must be True, False or "max", got {self.fast_decode!r}. "max" '
                "decodes JPEGs at the smallest DCT scale that still covers the target."
            )
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
        if not stat.S_ISREG(os.stat(path).st_mode):
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
    _check_pixels(opened, spec.max_pixels)
    orientation = _orientation(opened)
    if spec.fast_decode and opened.format in ("JPEG", "MPO"):
        _draft(opened, spec, orientation)
    opened.load()
    image = _oriented(opened, orientation)
    image = _to_color_mode(image, spec.color_mode)
    if spec.interpolation in TORCH_MODES:
        pixels = _resize_pixels(_pixels(image), spec)
    else:
        pixels = _pixels(_resize(image, spec))
    return _to_array(pixels, spec)


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


def _check_pixels(image: Image.Image, max_pixels: int | None) -> None:
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


def _oriented(image: Image.Image, orientation: int) -> Image.Image:
    if orientation == 1:
        return image
    return ImageOps.exif_transpose(image)


# ------------------------------------------------------------------- draft


def draft_scale(stored_size: tuple[int, int], orientation: int, spec: DecodeSpec) -> int:
    """The JPEG draft divisor (1, 2, 4 or 8) for an image stored at `stored_size` (w, h).

    The largest d for which the part of the image that reaches the output,
    decoded at 1/d, is still at least `DRAFT_MARGIN` times the output size in
    both directions (`MAX_DRAFT_MARGIN` times with `fast_decode="max"`).
    """
    width, height = stored_size
    if orientation in _TRANSPOSED_ORIENTATIONS:
        width, height = height, width
    target_height, target_width = spec.image_size
    if spec.crop_to_aspect_ratio:
        crop_width, crop_height = _crop_box_size(width, height, target_width, target_height)
        needed = max(target_width / crop_width, target_height / crop_height)
    elif spec.pad_to_aspect_ratio:
        needed = min(target_width / width, target_height / height)
    else:
        needed = max(target_width / width, target_height / height)
    margin = MAX_DRAFT_MARGIN if spec.fast_decode == "max" else DRAFT_MARGIN
    for scale in _DRAFT_SCALES:
        if scale * margin * needed <= 1:
            return scale
    return 1


def _draft(image: Image.Image, spec: DecodeSpec, orientation: int) -> None:
    scale = draft_scale(image.size, orientation, spec)
    if scale > 1:
        width, height = image.size
        # Pillow picks the largest of 8, 4, 2 not above min(w // rw, h // rh):
        # requesting (w // d, h // d) yields exactly d.
        mode = "L" if spec.color_mode == "grayscale" else None
        image.draft(mode, (width // scale, height // scale))


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


def _resize(image: Image.Image, spec: DecodeSpec) -> Image.Image:
    target_height, target_width = spec.image_size
    resample = INTERPOLATIONS[spec.interpolation]
    width, height = image.size
    if spec.crop_to_aspect_ratio:
        crop_width, crop_height = _crop_box_size(width, height, target_width, target_height)
        left, top = (width - crop_width) // 2, (height - crop_height) // 2
        # crop, then resize: resize(box=...) would blend in pixels from outside the window
        window = image.crop((left, top, left + crop_width, top + crop_height))
        if window.size == (target_width, target_height):
            return window
        return window.resize((target_width, target_height), resample)
    if spec.pad_to_aspect_ratio:
        scale = min(target_width / width, target_height / height)
        inner = (max(1, round(width * scale)), max(1, round(height * scale)))
        canvas = Image.new(image.mode, (target_width, target_height), 0)
        offset = ((target_width - inner[0]) // 2, (target_height - inner[1]) // 2)
        canvas.paste(image.resize(inner, resample), offset)
        return canvas
    if image.size == (target_width, target_height):
        return image
    return image.resize((target_width, target_height), resample)


def _pixels(image: Image.Image) -> np.ndarray:
    """The pixels as a writable (height, width, bands) uint8 array; RGB comes as RGBX.

    Pillow stores RGB with 4 bytes per pixel: copying them out as RGBX is a
    plain copy, where RGB repacks every pixel, and torch's
    fast resize works on 4 channels anyway. The 4th band is dropped at the end.
    """
    width, height = image.size
    if image.mode == "RGB":
        raw, bands = image.tobytes("raw", "RGBX"), 4
    else:
        raw, bands = image.tobytes(), len(image.getbands())
    # bytearray: torch refuses (with a warning) to wrap read-only memory.
    return np.frombuffer(bytearray(raw), np.uint8).reshape(height, width, bands)


def _torch_resize(pixels: np.ndarray, size: tuple[int, int], interpolation: str) -> np.ndarray:
    if pixels.shape[:2] == size:
        return pixels
    import torch  # here, not at the top: ImageFolder and `python -m kloader` load without torch

    # (1, bands, height, width) in channels-last memory: torch's vectorised uint8 path.
    batch = torch.from_numpy(np.ascontiguousarray(pixels)[np.newaxis]).permute(0, 3, 1, 2)
    resized = torch.nn.functional.interpolate(
        batch, size=size, mode=TORCH_MODES[interpolation], antialias=True, align_corners=False
    )
    result: np.ndarray = resized[0].permute(1, 2, 0).numpy()
    return result


def _resize_pixels(pixels: np.ndarray, spec: DecodeSpec) -> np.ndarray:
    """`_resize` on a (height, width, bands) uint8 array, with torch."""
    target_height, target_width = spec.image_size
    height, width = pixels.shape[:2]
    if spec.crop_to_aspect_ratio:
        crop_width, crop_height = _crop_box_size(width, height, target_width, target_height)
        left, top = (width - crop_width) // 2, (height - crop_height) // 2
        window = pixels[top : top + crop_height, left : left + crop_width]
        return _torch_resize(window, spec.image_size, spec.interpolation)
    if spec.pad_to_aspect_ratio:
        scale = min(target_width / width, target_height / height)
        inner = (max(1, round(height * scale)), max(1, round(width * scale)))
        canvas = np.zeros((target_height, target_width, pixels.shape[2]), np.uint8)
        top, left = (target_height - inner[0]) // 2, (target_width - inner[1]) // 2
        canvas[top : top + inner[0], left : left + inner[1]] = _torch_resize(
            pixels, inner, spec.interpolation
        )
        return canvas
    return _torch_resize(pixels, spec.image_size, spec.interpolation)


def _to_array(pixels: np.ndarray, spec: DecodeSpec) -> np.ndarray:
    """The final (height, width, channels) array of `spec.dtype`, C-contiguous."""
    pixels = pixels[:, :, : spec.channels]  # drops the padding band of RGBX
    if spec.dtype == "uint8":
        return np.ascontiguousarray(pixels)
    result = pixels.astype(np.float32, order="C")
    if spec.rescale is not None:
        result *= np.float32(spec.rescale)
    return result
