"""The affine warp: fill modes, interpolation, exact cases, and agreement with ImageDataGenerator."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kloader.augment import _affine

# np.pad's names for kloader's (Keras's) fill modes.
PAD_MODE = {"constant": "constant", "nearest": "edge", "reflect": "symmetric", "wrap": "wrap"}


def shifted(image: np.ndarray, dx: int, dy: int, fill_mode: str, fill_value: float = 0) -> np.ndarray:
    """The image with its content moved right by dx and down by dy, extended by np.pad."""
    height, width = image.shape[:2]
    pad = max(abs(dx), abs(dy), 1)
    kwargs = {"constant_values": fill_value} if fill_mode == "constant" else {}
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode=PAD_MODE[fill_mode], **kwargs)  # type: ignore[call-overload]
    return padded[pad - dy : pad - dy + height, pad - dx : pad - dx + width]


@settings(max_examples=200)
@given(
    height=st.integers(1, 9),
    width=st.integers(1, 9),
    dx=st.integers(-20, 20),
    dy=st.integers(-20, 20),
    fill_mode=st.sampled_from(_affine.FILL_MODES),
    interpolation=st.sampled_from(_affine.INTERPOLATIONS),
    dtype=st.sampled_from([np.uint8, np.float32]),
)
def test_whole_pixel_shifts_match_numpy_padding(
    height: int, width: int, dx: int, dy: int, fill_mode: str, interpolation: str, dtype: type
) -> None:
    """A shift by whole pixels, in any fill mode, is np.pad with that mode, bit for bit,
    including shifts many times the image size (reflect and wrap repeat)."""
    image = np.random.default_rng(height * 100 + width).integers(0, 256, (height, width, 2)).astype(dtype)
    matrix = _affine.sampling_matrix(height, width, shift=(dx, dy))
    got = _affine.warp(image, matrix, interpolation=interpolation, fill_mode=fill_mode, fill_value=7)
    assert got.dtype == image.dtype
    np.testing.assert_array_equal(got, shifted(image, dx, dy, fill_mode, 7))


def test_fill_modes_on_a_hand_made_row() -> None:
    """Shifting a b c d right by 2 fills the left with k k / a a / b a / c d."""
    row = np.array([[10, 20, 30, 40]], dtype=np.uint8)[:, :, None]
    expected = {
        "constant": [99, 99, 10, 20],
        "nearest": [10, 10, 10, 20],
        "reflect": [20, 10, 10, 20],
        "wrap": [30, 40, 10, 20],
    }
    for fill_mode, values in expected.items():
        got = _affine.warp(
            row, _affine.sampling_matrix(1, 4, shift=(2, 0)), fill_mode=fill_mode, fill_value=99
        )
        assert got[0, :, 0].tolist() == values, fill_mode


def test_constant_fill_blends_over_one_pixel_like_keras_layers() -> None:
    """A half-pixel shift with fill 0 gives half the edge value in the first column,
    as keras.ops.image.affine_transform does on every backend."""
    image = np.full((4, 4, 1), 100.0, dtype=np.float32)
    got = _affine.warp(image, _affine.sampling_matrix(4, 4, shift=(0.5, 0)), fill_mode="constant")
    assert got[0, :, 0].tolist() == [50.0, 100.0, 100.0, 100.0]


def test_fill_value_is_clipped_to_the_integer_range() -> None:
    """fill_value=300 on uint8 fills with 255, -5 with 0."""
    image = np.zeros((3, 3, 1), dtype=np.uint8)
    matrix = _affine.sampling_matrix(3, 3, shift=(3, 0))
    assert (_affine.warp(image, matrix, fill_mode="constant", fill_value=300) == 255).all()
    assert (_affine.warp(image, matrix, fill_mode="constant", fill_value=-5) == 0).all()


@pytest.mark.parametrize("interpolation", _affine.INTERPOLATIONS)
@pytest.mark.parametrize(("degrees", "turns"), [(90, 1), (180, 2), (-90, -1), (270, 3)])
def test_quarter_turns_match_rot90(degrees: float, turns: int, interpolation: str) -> None:
    """Rotating a square image by a multiple of 90 degrees is np.rot90 (counter-clockwise)."""
    image = np.random.default_rng(0).integers(0, 256, (7, 7, 3), dtype=np.uint8)
    got = _affine.warp(image, _affine.sampling_matrix(7, 7, rotation=degrees), interpolation=interpolation)
    np.testing.assert_array_equal(got, np.rot90(image, turns))


def test_bilinear_rounds_uint8_and_interpolates_float() -> None:
    """Half a pixel between 0 and 3 is 1.5 in float32 and rounds to 2 (half to even) in uint8."""
    image = np.array([[0, 3, 3, 3]], dtype=np.uint8)[:, :, None]
    matrix = _affine.sampling_matrix(1, 4, shift=(-0.5, 0))
    assert _affine.warp(image.astype(np.float32), matrix)[0, :2, 0].tolist() == [1.5, 3.0]
    assert _affine.warp(image, matrix)[0, :2, 0].tolist() == [2, 3]


def test_large_images_are_done_in_chunks_with_the_same_result() -> None:
    """An image bigger than one chunk warps exactly as its rows would on their own grid."""
    image = np.random.default_rng(1).random((300, 200, 3)).astype(np.float32)
    matrix = _affine.sampling_matrix(300, 200, rotation=13, zoom=(0.9, 1.2), shift=(3.5, -2.25))
    whole = _affine.warp(image, matrix, fill_mode="reflect")
    assert _affine._CHUNK < 300 * 200
    # Reference: the same arithmetic without chunks.
    a, b, c, d, e, f = (np.float32(v) for v in matrix)
    x = (a * np.arange(200, dtype=np.float32))[None, :] + (b * np.arange(300, dtype=np.float32) + c)[:, None]
    y = (d * np.arange(200, dtype=np.float32))[None, :] + (e * np.arange(300, dtype=np.float32) + f)[:, None]
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    padded = np.pad(image, ((400, 400), (400, 400), (0, 0)), mode="symmetric")
    yi, xi = y0.astype(int) + 400, x0.astype(int) + 400
    top = padded[yi, xi] + (padded[yi, xi + 1] - padded[yi, xi]) * fx
    bottom = padded[yi + 1, xi] + (padded[yi + 1, xi + 1] - padded[yi + 1, xi]) * fx
    np.testing.assert_array_equal(whole, top + (bottom - top) * fy)


@pytest.mark.parametrize("fill_mode", ["nearest", "reflect"])
@pytest.mark.parametrize(
    "params",
    [
        {"theta": 17},
        {"shear": 12},
        {"zx": 0.8, "zy": 1.25},
        {"theta": -25, "shear": 8, "zx": 1.1, "zy": 0.9},
    ],
)
def test_matches_image_data_generators_apply_affine_transform(
    params: dict[str, float], fill_mode: str
) -> None:
    """On a square image, rotation, shear and zoom equal ImageDataGenerator's own warp
    (SciPy, float64) to within float32 rounding of the coordinates."""
    pytest.importorskip("scipy")
    from keras.src.legacy.preprocessing.image import apply_affine_transform

    image = np.random.default_rng(0).random((33, 33, 3)) * 255
    reference = apply_affine_transform(
        image, row_axis=0, col_axis=1, channel_axis=2, fill_mode=fill_mode, order=1, **params
    )
    matrix = _affine.sampling_matrix(
        33,
        33,
        rotation=params.get("theta", 0),
        shear=params.get("shear", 0),
        zoom=(params.get("zx", 1), params.get("zy", 1)),
    )
    got = _affine.warp(image, matrix, fill_mode=fill_mode)
    np.testing.assert_allclose(got, reference, atol=2e-3)
    assert np.abs(got - image).max() > 10  # the warp did move pixels


def test_rotation_is_about_the_centre_of_non_square_images() -> None:
    """A 180-degree turn of a 4x7 image is the image reversed along both axes."""
    image = np.arange(28, dtype=np.uint8).reshape(4, 7, 1)
    got = _affine.warp(image, _affine.sampling_matrix(4, 7, rotation=180), interpolation="nearest")
    np.testing.assert_array_equal(got, image[::-1, ::-1])
