"""Decoding one file: formats, colour modes, EXIF, resizing, dtypes, JPEG draft, bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from PIL.JpegImagePlugin import JpegImageFile

from kloader._images import decode as decoding
from kloader._images.decode import DecodeSpec, UnreadableImageError

import image_files as images


def decode(path: Path, size: int | tuple[int, int] = 24, **options: object) -> np.ndarray:
    return decoding.decode(str(path), DecodeSpec(size, **options))  # type: ignore[arg-type]


# ---------------------------------------------------------------- formats


@pytest.mark.parametrize("extension", ["jpg", "jpeg", "JPG", "png", "bmp", "gif", "tiff", "webp"])
@pytest.mark.parametrize(("color_mode", "channels"), [("rgb", 3), ("grayscale", 1), ("rgba", 4)])
def test_every_format_decodes_to_the_requested_shape(
    tmp_path: Path, extension: str, color_mode: str, channels: int
) -> None:
    """Each supported format gives (height, width, channels) float32 in 0..255."""
    path = images.write_pattern(tmp_path / f"picture.{extension}", size=(37, 23))
    array = decode(path, (16, 20), color_mode=color_mode)
    assert array.shape == (16, 20, channels) and array.dtype == np.float32
    assert array.min() >= 0 and array.max() <= 255 and array.std() > 10


def test_lossless_png_at_its_own_size_is_exact(tmp_path: Path) -> None:
    """No resize is done when the image already has the target size: pixels come through exactly."""
    pixels = images.pattern(30, 20, seed=3)
    path = images.write(tmp_path / "exact.png", Image.fromarray(pixels))
    np.testing.assert_array_equal(decode(path, (20, 30)), pixels.astype(np.float32))
    np.testing.assert_array_equal(decode(path, (20, 30), dtype="uint8"), pixels)


def test_dtype_and_rescale(tmp_path: Path) -> None:
    """float32 is 0..255 times rescale; uint8 is the raw bytes."""
    path = images.write_solid(tmp_path / "solid.png", (255, 51, 0))
    assert decode(path, dtype="uint8").dtype == np.uint8
    assert decode(path, dtype="uint8")[0, 0].tolist() == [255, 51, 0]
    np.testing.assert_allclose(decode(path, rescale=1 / 255)[0, 0], [1.0, 0.2, 0.0], rtol=1e-6)


# ------------------------------------------------------------ colour modes


def test_grayscale_to_rgb_and_rgb_to_grayscale(tmp_path: Path) -> None:
    """L becomes three equal channels; RGB becomes luminance (ITU-R 601-2)."""
    gray = images.write_solid(tmp_path / "gray.png", 77, mode="L")
    assert decode(gray, dtype="uint8")[0, 0].tolist() == [77, 77, 77]
    red = images.write_solid(tmp_path / "red.png", (200, 0, 0))
    assert decode(red, color_mode="grayscale", dtype="uint8")[0, 0].tolist() == [round(200 * 299 / 1000)]


def test_rgba_keeps_alpha_or_drops_it(tmp_path: Path) -> None:
    """color_mode="rgba" keeps alpha; "rgb" drops it, as Keras does."""
    path = images.write_solid(tmp_path / "rgba.png", (10, 20, 30, 40), mode="RGBA")
    assert decode(path, color_mode="rgba", dtype="uint8")[3, 3].tolist() == [10, 20, 30, 40]
    assert decode(path, color_mode="rgb", dtype="uint8")[3, 3].tolist() == [10, 20, 30]


def test_palette_images_with_and_without_transparency(tmp_path: Path) -> None:
    """P images convert through their palette; a transparent index becomes alpha 0."""
    image = Image.new("P", (8, 8), 1)
    image.putpalette([0, 0, 0, 250, 100, 5] + [0] * 762)
    image.paste(0, (0, 0, 4, 8))
    plain = images.write(tmp_path / "palette.png", image)
    assert decode(plain, 8, dtype="uint8")[0, 7].tolist() == [250, 100, 5]
    transparent = images.write(tmp_path / "transparent.png", image, transparency=0)
    rgba = decode(transparent, 8, color_mode="rgba", dtype="uint8")
    assert rgba[0, 0, 3] == 0 and rgba[0, 7].tolist() == [250, 100, 5, 255]
    assert decode(transparent, 8, dtype="uint8")[0, 7].tolist() == [250, 100, 5]
    gif = images.write(tmp_path / "palette.gif", image)
    assert decode(gif, 8, dtype="uint8")[0, 7].tolist() == [250, 100, 5]


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    """A CMYK JPEG (as print workflows write them) decodes to its RGB colour."""
    path = images.write_solid(tmp_path / "cmyk.jpg", (0, 255, 255, 0), mode="CMYK", quality=95)
    with Image.open(path) as opened:
        assert opened.mode == "CMYK"
    red = decode(path, dtype="uint8")[5, 5].astype(int)
    assert red[0] > 240 and red[1] < 15 and red[2] < 15


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path: Path) -> None:
    """A 16-bit PNG (mode I;16) maps 0..65535 onto 0..255 (Pillow's own convert would clip at 255)."""
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16).repeat(4, axis=0)
    path = images.write(tmp_path / "deep.png", Image.fromarray(values))
    with Image.open(path) as opened:
        assert opened.mode == "I;16"
    row = decode(path, (4, 4), color_mode="grayscale", dtype="uint8")[0, :, 0]
    assert row.tolist() == [0, 1, 128, 255]
    assert decode(path, (4, 4), dtype="uint8")[0, 2].tolist() == [128, 128, 128]


def test_la_and_bilevel_images(tmp_path: Path) -> None:
    """LA (gray + alpha) and 1-bit images convert to every colour mode."""
    la = images.write_solid(tmp_path / "la.png", (90, 128), mode="LA")
    assert decode(la, color_mode="grayscale", dtype="uint8")[0, 0].tolist() == [90]
    assert decode(la, color_mode="rgba", dtype="uint8")[0, 0].tolist() == [90, 90, 90, 128]
    bilevel = images.write_solid(tmp_path / "one.bmp", 1, mode="1")
    assert decode(bilevel, dtype="uint8")[0, 0].tolist() == [255, 255, 255]


# -------------------------------------------------------------------- EXIF


@pytest.mark.parametrize(
    ("orientation", "top", "bottom"),
    [(1, None, None), (6, "red", "blue"), (8, "blue", "red"), (5, "red", "blue"), (7, "blue", "red")],
)
def test_exif_orientation_is_applied(
    tmp_path: Path, orientation: int, top: str | None, bottom: str | None
) -> None:
    """A JPEG stored left red / right blue, tagged to be shown rotated, decodes as shown."""
    path = images.write_exif_rotated(tmp_path / "rotated.jpg", orientation, size=(60, 40))
    array = decode(path, (60, 60), dtype="uint8").astype(int)
    colors = {"red": [255, 0, 0], "blue": [0, 0, 255]}

    def near(pixel: np.ndarray, name: str) -> bool:
        return bool(np.abs(pixel - colors[name]).max() < 40)

    if top is None:  # not rotated: left red, right blue
        assert near(array[30, 5], "red") and near(array[30, 55], "blue")
    else:
        assert near(array[5, 30], top) and near(array[55, 30], bottom)


@pytest.mark.parametrize("fit", [{}, {"crop_to_aspect_ratio": True}, {"pad_to_aspect_ratio": True}])
@pytest.mark.parametrize("extension", ["png", "tiff", "webp"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_format_is_shown_upright_once(
    tmp_path: Path, orientation: int, extension: str, fit: dict
) -> None:
    """A lossless file with an orientation tag decodes to its upright copy saved without one,
    within 1 level (the resize runs on the stored rows and columns, so its two passes round
    in the other order). Pillow transposes a TIFF itself when it loads it: kloader once turned
    it a second time, and sized the crop and pad windows from the stored, unturned size."""
    stored = Image.fromarray(images.pattern(50, 30))
    exif = Image.Exif()
    exif[0x0112] = orientation
    save = {"lossless": True} if extension == "webp" else {}
    tagged = images.write(tmp_path / f"tagged.{extension}", stored, exif=exif, **save)
    stored.info["exif"] = exif.tobytes()
    upright = images.write(tmp_path / "upright.png", ImageOps.exif_transpose(stored))
    for options in ({"interpolation": "bilinear"}, {"interpolation": "lanczos3"}):
        got = decode(tagged, (20, 36), dtype="uint8", **options, **fit).astype(int)
        expected = decode(upright, (20, 36), dtype="uint8", **options, **fit).astype(int)
        assert np.abs(got - expected).max() <= 1, (options, np.abs(got - expected).max())


def test_exif_orientation_with_draft_decoding(tmp_path: Path) -> None:
    """A large rotated JPEG, decoded at reduced scale, is still rotated and matches a full decode."""
    path = images.write_exif_rotated(tmp_path / "big.jpg", 6, size=(800, 400))
    with Image.open(path) as opened:
        assert decoding.draft_scale(opened.size, 6, DecodeSpec((60, 30))) == 8  # shown 400 x 800
    fast = decode(path, (60, 30), dtype="uint8").astype(int)
    full = decode(path, (60, 30), dtype="uint8", fast_decode=False).astype(int)
    assert np.abs(fast[5, 15] - [255, 0, 0]).max() < 40 and np.abs(fast[55, 15] - [0, 0, 255]).max() < 40
    assert np.abs(fast - full).mean() < 1.5


# ------------------------------------------------------------------ resize


@pytest.mark.parametrize("interpolation", sorted(decoding.INTERPOLATIONS))
def test_every_interpolation_name_resizes(tmp_path: Path, interpolation: str) -> None:
    """All of image_dataset_from_directory's interpolation names are accepted."""
    path = images.write_pattern(tmp_path / "p.png", size=(50, 40))
    assert decode(path, (13, 17), interpolation=interpolation).shape == (13, 17, 3)


def test_nearest_upscaling_repeats_pixels(tmp_path: Path) -> None:
    """nearest turns each pixel of a 2x2 image into a 3x3 block."""
    pixels = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [255, 255, 255]]], dtype=np.uint8)
    path = images.write(tmp_path / "tiny.png", Image.fromarray(pixels))
    expected = pixels.repeat(3, axis=0).repeat(3, axis=1)
    np.testing.assert_array_equal(decode(path, 6, interpolation="nearest", dtype="uint8"), expected)


def test_crop_to_aspect_ratio_keeps_the_centre(tmp_path: Path) -> None:
    """A 300x100 image of red | green | blue thirds, cropped to a square, is all green."""
    array = np.zeros((100, 300, 3), np.uint8)
    array[:, :100], array[:, 100:200], array[:, 200:] = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    path = images.write(tmp_path / "thirds.png", Image.fromarray(array))
    cropped = decode(path, 32, crop_to_aspect_ratio=True, dtype="uint8")
    assert (cropped == [0, 255, 0]).all()
    stretched = decode(path, 32, dtype="uint8")
    assert stretched[16, 0].tolist() == [255, 0, 0] and stretched[16, 31].tolist() == [0, 0, 255]


def test_pad_to_aspect_ratio_adds_centred_zero_borders(tmp_path: Path) -> None:
    """A 100x50 white image padded into 64x64: 16 black rows above and below 32 white ones."""
    path = images.write_solid(tmp_path / "wide.png", (255, 255, 255), size=(100, 50))
    padded = decode(path, 64, pad_to_aspect_ratio=True, dtype="uint8")
    assert (padded[:16] == 0).all() and (padded[48:] == 0).all()
    assert (padded[16:48] == 255).all()


# ----------------------------------------------------------- torch resize


def antialiased_bilinear(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The exact result the default resize approximates: Pillow's antialiased bilinear
    (triangle) filter, in float64 with NumPy, separably, never rounded."""

    def weights(source: int, target: int) -> np.ndarray:
        scale = source / target
        support = max(scale, 1.0)
        centres = (np.arange(target) + 0.5) * scale
        distance = (np.arange(source)[np.newaxis, :] + 0.5 - centres[:, np.newaxis]) / support
        matrix = np.clip(1 - np.abs(distance), 0, None)
        return matrix / matrix.sum(axis=1, keepdims=True)

    values = pixels.astype(np.float64)
    rows = np.einsum("ij,jkc->ikc", weights(values.shape[0], size[0]), values)
    return np.einsum("kj,ijc->ikc", weights(values.shape[1], size[1]), rows)


def psnr(output: np.ndarray, reference: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((output.astype(np.float64) - reference) ** 2)))


@pytest.mark.parametrize(
    ("source", "target", "fast_decode", "bound"),
    [
        ((500, 375), (160, 160), True, 50.0),
        ((500, 375), (128, 96), True, 50.0),
        ((1024, 768), (64, 64), True, 48.0),
    ],
)
def test_default_decode_is_close_to_a_float64_reference(
    tmp_path: Path, source: tuple[int, int], target: tuple[int, int], fast_decode: bool, bound: float
) -> None:
    """Full decode + the triangle filter in float64 is the reference; the default path (draft
    decode where the file is at least twice the target, torch's uint8 resize, float32) stays
    above `bound` dB PSNR (measured 55-58 dB; a non-antialiased resize gives 28-45 dB)."""
    path = images.write(tmp_path / "photo.jpg", Image.fromarray(images.photo(*source)), quality=90)
    with Image.open(path) as opened:
        reference = antialiased_bilinear(np.asarray(opened.convert("RGB")), target)
    output = decode(path, target, fast_decode=fast_decode)
    assert output.dtype == np.float32 and output.flags["C_CONTIGUOUS"]
    assert psnr(output, reference) > bound


def upright_reference(path: Path, target: tuple[int, int], fit: str) -> np.ndarray:
    """Full decode, shown upright (Pillow's exif_transpose), then cropped / fitted / padded and
    resized by the float64 triangle filter: what every decode path should come close to."""
    with Image.open(path) as opened:
        pixels = np.asarray(ImageOps.exif_transpose(opened).convert("RGB"))
    height, width = pixels.shape[:2]
    if fit == "crop":
        crop_width, crop_height = decoding._crop_box_size(width, height, target[1], target[0])
        top, left = (height - crop_height) // 2, (width - crop_width) // 2
        return antialiased_bilinear(pixels[top : top + crop_height, left : left + crop_width], target)
    if fit == "pad":
        scale = min(target[1] / width, target[0] / height)
        inner = (round(height * scale), round(width * scale))
        canvas = np.zeros((*target, 3))
        top, left = (target[0] - inner[0]) // 2, (target[1] - inner[1]) // 2
        canvas[top : top + inner[0], left : left + inner[1]] = antialiased_bilinear(pixels, inner)
        return canvas
    return antialiased_bilinear(pixels, target)


@pytest.mark.parametrize("fit", ["stretch", "crop", "pad"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_draft_decode_keeps_the_geometry_of_a_full_decode(tmp_path: Path, orientation: int, fit: str) -> None:
    """A JPEG whose height the draft scale does not divide (500x375 at 1/2 is 250x187.5 pixels,
    stored in 250x188), in every EXIF orientation, stretched, cropped or padded: the default path
    samples the places the full decode does. Resizing the 250x188 pixels as if they were the whole
    image shifts the output by up to a source pixel (about 46 dB instead of over 50)."""
    image = Image.fromarray(images.photo(500, 375))
    exif = image.getexif()
    exif[0x0112] = orientation
    path = images.write(tmp_path / "photo.jpg", image, exif=exif, quality=90)
    target = (120, 150)
    options = {"crop_to_aspect_ratio": fit == "crop", "pad_to_aspect_ratio": fit == "pad"}
    with Image.open(path) as opened:
        assert decoding.draft_scale(opened.size, orientation, DecodeSpec(target, **options)) >= 2
    output = decode(path, target, **options)
    full = decode(path, target, fast_decode=False, **options)
    reference = upright_reference(path, target, fit)
    assert psnr(full, reference) > 55
    assert psnr(output, reference) > 50


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
@pytest.mark.parametrize("bands", [1, 3, 4])
@pytest.mark.parametrize(
    ("shape", "extent", "size"),
    [
        ((188, 250), (188, 250), (160, 160)),
        ((188, 250), (187.5, 250), (160, 120)),
        ((30, 40), (30, 40), (64, 90)),
    ],
)
def test_torch_resize_is_f_interpolate_bit_for_bit(
    interpolation: str,
    bands: int,
    shape: tuple[int, int],
    extent: tuple[float, float],
    size: tuple[int, int],
) -> None:
    """The antialiased kernel called with out= (to write (height, width, bands) memory directly)
    gives F.interpolate's bytes, with a size or with the scale of a partial extent."""
    pixels = np.random.default_rng(0).integers(0, 256, (*shape, bands), dtype=np.uint8)
    batch = torch.from_numpy(pixels[np.newaxis]).permute(0, 3, 1, 2)
    if extent == shape:
        expected = torch.nn.functional.interpolate(batch, size=size, mode=interpolation, antialias=True)
    else:
        scale = (size[0] / extent[0], size[1] / extent[1])
        expected = torch.nn.functional.interpolate(
            batch, scale_factor=scale, recompute_scale_factor=False, mode=interpolation, antialias=True
        )[:, :, : size[0], : size[1]]
    output = decoding._torch_resize(pixels, extent, size, interpolation)
    assert output.flags["C_CONTIGUOUS"] and output.shape == (*size, bands)
    np.testing.assert_array_equal(output, expected[0].permute(1, 2, 0).numpy())


@pytest.mark.parametrize(("interpolation", "filter"), [("bilinear", "BILINEAR"), ("bicubic", "BICUBIC")])
@pytest.mark.parametrize("color_mode", ["rgb", "grayscale", "rgba"])
@pytest.mark.parametrize("size", [(40, 56), (96, 64), (300, 250)])
def test_torch_resize_is_pillows_filter_within_one_level(
    tmp_path: Path, interpolation: str, filter: str, color_mode: str, size: tuple[int, int]
) -> None:
    """Torch resizes bilinear and bicubic: the same filter as Pillow's, at most 1 level apart on
    under 1 % of the values (rounding), shrinking and enlarging, in every colour mode."""
    path = images.write(tmp_path / "photo.png", Image.fromarray(images.photo(200, 150)).convert("RGBA"))
    mode = decoding.COLOR_MODES[color_mode][0]
    with Image.open(path) as opened:
        expected = np.asarray(opened.convert(mode).resize(size[::-1], getattr(Image.Resampling, filter)))
    output = decode(path, size, interpolation=interpolation, color_mode=color_mode, dtype="uint8")
    difference = np.abs(output.astype(int) - expected.reshape(output.shape))
    assert difference.max() <= 1 and (difference > 0).mean() < 0.01


def test_crop_and_pad_with_torch_match_pillow(tmp_path: Path) -> None:
    """crop_to_aspect_ratio and pad_to_aspect_ratio give Pillow's window and borders."""
    path = images.write(tmp_path / "wide.png", Image.fromarray(images.photo(120, 50)))
    with Image.open(path) as opened:
        window = opened.crop((35, 0, 85, 50)).resize((32, 32), Image.Resampling.BILINEAR)
        canvas = Image.new("RGB", (32, 32))
        canvas.paste(opened.resize((32, 13), Image.Resampling.BILINEAR), (0, 9))
    for options, expected in (
        ({"crop_to_aspect_ratio": True}, window),
        ({"pad_to_aspect_ratio": True}, canvas),
    ):
        output = decode(path, 32, dtype="uint8", **options)
        assert np.abs(output.astype(int) - np.asarray(expected)).max() <= 1


def test_resize_is_the_same_for_any_torch_thread_count(tmp_path: Path) -> None:
    """The main process resizes with torch's default threads, workers with one: same bytes."""
    path = images.write(tmp_path / "photo.jpg", Image.fromarray(images.photo(640, 480)), quality=90)
    threads = torch.get_num_threads()
    try:
        outputs = []
        for count in (1, 2, 4):
            torch.set_num_threads(count)
            outputs.append(decode(path, (150, 220), interpolation="bicubic"))
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(outputs[1], outputs[0])
    np.testing.assert_array_equal(outputs[2], outputs[0])


# -------------------------------------------------------------- JPEG draft


def test_draft_scale_covers_the_target_and_follows_orientation() -> None:
    """The draft divisor leaves the decoded window at least as large as the target, rotated or not."""
    spec = DecodeSpec((100, 50))
    assert decoding.draft_scale((800, 400), 1, spec) == 4  # needs 100 rows of 400: 1/4 leaves 100
    assert decoding.draft_scale((800, 400), 6, spec) == 8  # shown 400 wide, 800 tall
    assert decoding.draft_scale((4000, 4000), 1, DecodeSpec(64)) == 8
    assert decoding.draft_scale((120, 120), 1, DecodeSpec(64)) == 1
    assert decoding.draft_scale((500, 375), 1, DecodeSpec(160)) == 2  # 187.5 rows >= 160
    assert decoding.draft_scale((500, 375), 1, DecodeSpec(188)) == 1
    crop = DecodeSpec(64, crop_to_aspect_ratio=True)
    assert decoding.draft_scale((2048, 512), 1, crop) == 8  # the 512x512 centre window, 1/8 -> 64


def test_draft_scale_divides_the_crop_offset() -> None:
    """A crop window must start on a whole decoded pixel: an offset of 1 rules every draft out."""
    crop = DecodeSpec(64, crop_to_aspect_ratio=True)
    assert decoding.draft_scale((1026, 1024), 1, crop) == 1  # window starts at column 1
    assert decoding.draft_scale((1028, 1024), 1, crop) == 2  # at column 2
    assert decoding.draft_scale((1032, 1024), 1, crop) == 4  # at column 4
    assert decoding.draft_scale((1040, 1024), 1, crop) == 8  # at column 8


def test_fast_decode_uses_draft_and_stays_close_to_a_full_decode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 1024x768 JPEG to 64x64: decoded at 1/8 scale, within 1.5 levels of the full decode."""
    path = images.write_pattern(tmp_path / "big.jpg", size=(1024, 768), quality=92)
    requests: list[tuple[int, int] | None] = []
    draft = JpegImageFile.draft

    def recording_draft(self: JpegImageFile, mode: str | None, size: tuple[int, int] | None) -> object:
        requests.append(size)
        return draft(self, mode, size)

    monkeypatch.setattr(JpegImageFile, "draft", recording_draft)
    fast = decode(path, 64)
    assert requests == [(128, 96)]
    full = decode(path, 64, fast_decode=False)
    assert requests == [(128, 96)]
    assert np.abs(fast - full).mean() < 1.5


def test_an_image_already_loaded_is_resized_whole(tmp_path: Path) -> None:
    """A JPEG that was loaded before it reaches the decoder (a Pillow image in a dataset column)
    can no longer be drafted: it is resized in full, never cut to the part a draft would keep."""
    path = images.write(tmp_path / "photo.jpg", Image.fromarray(images.photo(500, 375)), quality=90)
    spec = DecodeSpec(160)
    with Image.open(path) as opened:
        opened.load()
        output = decoding.decode_image(opened, spec, "a loaded image")
    np.testing.assert_array_equal(output, decode(path, 160, fast_decode=False))


def test_fast_decode_grayscale_decodes_luminance_only(tmp_path: Path) -> None:
    """Grayscale with draft decodes the JPEG's Y channel; close to the full decode + convert."""
    path = images.write_pattern(tmp_path / "big.jpg", size=(800, 600), quality=92)
    fast = decode(path, 50, color_mode="grayscale")
    full = decode(path, 50, color_mode="grayscale", fast_decode=False)
    assert fast.shape == (50, 50, 1) and np.abs(fast - full).mean() < 1.5


# --------------------------------------------------------------- bad files


@pytest.mark.parametrize(
    ("maker", "words"),
    [
        (lambda d: images.write_truncated_jpeg(d / "truncated.jpg"), "truncated"),
        (lambda d: images.write_truncated_jpeg(d / "big_truncated.jpg", size=(640, 480)), "truncated"),
        (lambda d: images.write_zero_bytes(d / "empty.png"), "not an image"),
        (lambda d: images.write_text(d / "notes.jpg"), "not an image"),
        (lambda d: images.write_bomb_png(d / "bomb.png"), "decompression bomb"),
        (lambda d: d / "missing.png", "not found"),
    ],
)
def test_bad_files_name_the_path_and_the_reason(tmp_path: Path, maker: object, words: str) -> None:
    """decode raises UnreadableImageError with path and reason; check returns the same reason."""
    path = maker(tmp_path)  # type: ignore[operator]
    with pytest.raises(UnreadableImageError) as caught:
        decode(path, 16)
    assert str(path) in str(caught.value) and words in caught.value.reason
    assert decoding.check(str(path), DecodeSpec(16)) == caught.value.reason


def test_max_pixels_limit(tmp_path: Path) -> None:
    """Images over max_pixels are refused with their size; under it they decode."""
    path = images.write_pattern(tmp_path / "p.png", size=(40, 30))
    with pytest.raises(UnreadableImageError, match=r"40x30 = 1200 pixels is over max_pixels=1000"):
        decode(path, 8, max_pixels=1000)
    assert decode(path, 8, max_pixels=1200).shape == (8, 8, 3)
    assert decoding.check(str(path), DecodeSpec(8, max_pixels=1200)) is None


def test_check_accepts_good_files(tmp_path: Path) -> None:
    """A good JPEG and PNG pass the check."""
    for name in ("good.jpg", "good.png"):
        assert (
            decoding.check(str(images.write_pattern(tmp_path / name, size=(300, 200))), DecodeSpec(64))
            is None
        )


# -------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"image_size": (0, 10)}, "image_size"),
        ({"image_size": "big"}, "image_size"),
        ({"image_size": (10, 10), "color_mode": "cmyk"}, "color_mode"),
        ({"image_size": 8, "interpolation": "cubic"}, "interpolation"),
        ({"image_size": 8, "dtype": "float16"}, "dtype"),
        ({"image_size": 8, "dtype": None}, "dtype"),
        ({"image_size": 8, "dtype": "pixels"}, "dtype"),
        ({"image_size": 8, "crop_to_aspect_ratio": True, "pad_to_aspect_ratio": True}, "Only one"),
        ({"image_size": 8, "dtype": "uint8", "rescale": 1 / 255}, "rescale"),
        ({"image_size": 8, "max_pixels": 0}, "max_pixels"),
    ],
)
def test_bad_options_are_refused(options: dict[str, object], message: str) -> None:
    """Invalid decode options raise a ValueError naming the option."""
    with pytest.raises(ValueError, match=message):
        DecodeSpec(**options)  # type: ignore[arg-type]


@pytest.mark.parametrize("dtype", [np.uint8, np.dtype("uint8"), "u1", np.float32, np.dtype("float32")])
def test_numpy_dtypes_name_the_two_dtypes(dtype: object) -> None:
    """dtype=np.uint8 was refused though it names "uint8"; the spec keeps the name."""
    spec = DecodeSpec(8, dtype=dtype)  # type: ignore[arg-type]
    assert spec.dtype == np.dtype(dtype).name  # type: ignore[call-overload]
    assert spec == DecodeSpec(8, dtype=np.dtype(dtype).name)  # type: ignore[call-overload]


def test_fast_decode_max_is_another_name_for_true() -> None:
    """fast_decode="max" (the name of the margin-1 rule before it was the default) is True."""
    assert DecodeSpec(160, fast_decode="max") == DecodeSpec(160, fast_decode=True)
    with pytest.raises(ValueError, match="must be True or False"):
        DecodeSpec(64, fast_decode="fast")


def test_fast_decode_down_to_the_target_stays_close_to_a_full_decode(tmp_path: Path) -> None:
    """A 1024x768 JPEG to 256x192 at 1/4 scale: within 3 levels of the full decode."""
    path = images.write_pattern(tmp_path / "big.jpg", size=(1024, 768), quality=92)
    fast = decode(path, (192, 256))
    full = decode(path, (192, 256), fast_decode=False)
    assert np.abs(fast - full).mean() < 3
