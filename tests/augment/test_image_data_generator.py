"""from_image_data_generator: each ImageDataGenerator argument maps to the right transform."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from kloader import augment
from kloader.augment._image_data_generator import PreprocessingFunction


def steps(**kwargs: Any) -> list[Any]:
    return list(augment.from_image_data_generator(**kwargs).transforms)


def only(**kwargs: Any) -> Any:
    (step,) = steps(**kwargs)
    return step


@pytest.mark.parametrize(
    ("kwargs", "attribute", "value"),
    [
        ({"rotation_range": 20}, "rotation", (-20.0, 20.0)),
        ({"width_shift_range": 0.1}, "width_shift", (-0.1, 0.1)),
        ({"height_shift_range": 0.2}, "height_shift", (-0.2, 0.2)),
        ({"shear_range": 10}, "shear", (-10.0, 10.0)),
        ({"zoom_range": 0.2}, "zoom", (0.8, 1.2)),
        ({"zoom_range": [0.5, 1.5]}, "zoom", (0.5, 1.5)),
        ({"rotation_range": 5, "fill_mode": "reflect"}, "fill_mode", "reflect"),
        ({"rotation_range": 5, "fill_mode": "constant", "cval": 128}, "fill_value", 128.0),
        ({"rotation_range": 5}, "fill_mode", "nearest"),  # ImageDataGenerator's default
        ({"rotation_range": 5, "interpolation_order": 0}, "interpolation", "nearest"),
        ({"rotation_range": 5}, "interpolation", "bilinear"),
    ],
)
def test_geometric_arguments_map_to_one_random_affine(
    kwargs: dict[str, Any], attribute: str, value: Any
) -> None:
    """rotation / shift / shear / zoom / fill options become attributes of one RandomAffine."""
    affine = only(**kwargs)
    assert type(affine) is augment.RandomAffine
    assert getattr(affine, attribute) == value


def test_all_geometric_arguments_share_one_warp() -> None:
    """Several geometric options still give a single RandomAffine (one resampling)."""
    affine = only(
        rotation_range=20, width_shift_range=0.1, height_shift_range=0.1, shear_range=5, zoom_range=0.1
    )
    assert affine.rotation == (-20, 20) and affine.shear == (-5, 5) and affine.zoom == (0.9, 1.1)
    assert affine.shift_unit == "fraction"


@pytest.mark.parametrize(
    ("value", "expected", "unit"),
    [
        (0.25, (-0.25, 0.25), "fraction"),
        (1.0, (-1.0, 1.0), "pixels"),  # ImageDataGenerator: a float >= 1 is pixels
        (6.5, (-6.5, 6.5), "pixels"),
        (4, (-3.0, 3.0), "pixels"),  # an int n draws whole pixels in (-n, n)
    ],
)
def test_shift_ranges_are_fractions_or_pixels_like_image_data_generator(
    value: float, expected: tuple[float, float], unit: str
) -> None:
    """width_shift_range < 1 is a fraction of the width; >= 1 or an int is in pixels."""
    affine = only(width_shift_range=value)
    assert affine.width_shift == expected and affine.shift_unit == unit
    affine = only(height_shift_range=value)
    assert affine.height_shift == expected and affine.shift_unit == unit


def test_shift_ranges_that_kloader_cannot_express_are_refused() -> None:
    """Mixed units, or a list of allowed shifts, raise and say what to give instead."""
    with pytest.raises(ValueError, match="one unit for both"):
        steps(width_shift_range=0.1, height_shift_range=10)
    with pytest.raises(ValueError, match="continuous range"):
        steps(width_shift_range=[-2, 0, 2])


def test_other_arguments_map_to_their_transforms() -> None:
    """channel shift, flips, brightness, preprocessing_function and rescale."""
    assert only(channel_shift_range=30).intensity == 30
    flip = only(horizontal_flip=True)
    assert type(flip) is augment.RandomFlip and (flip.horizontal, flip.vertical) == (True, False)
    flip = only(vertical_flip=True)
    assert (flip.horizontal, flip.vertical) == (False, True)
    brightness = only(brightness_range=[0.5, 1.5])
    assert type(brightness) is augment.RandomBrightness and brightness.factor == (0.5, 1.5)
    assert brightness.value_range == (0, 255)
    rescale = only(rescale=1 / 255)
    assert type(rescale) is augment.Rescale and rescale.scale == 1 / 255
    assert type(only(preprocessing_function=np.sqrt)) is PreprocessingFunction


def test_steps_come_in_image_data_generators_order() -> None:
    """Affine, channel shift, flips, brightness, then preprocessing_function and rescale."""
    pipeline = steps(
        rescale=1 / 255,
        preprocessing_function=np.sqrt,
        brightness_range=(0.9, 1.1),
        horizontal_flip=True,
        channel_shift_range=5,
        zoom_range=0.1,
    )
    assert [type(step).__name__ for step in pipeline] == [
        "RandomAffine",
        "RandomChannelShift",
        "RandomFlip",
        "RandomBrightness",
        "PreprocessingFunction",
        "Rescale",
    ]


def test_a_step_turned_off_is_left_out_and_shifts_the_draws_after_it() -> None:
    """As the README says: channel_shift_range=0 leaves that step out, so the flips that
    follow it draw other values than with a channel shift (unlike a zero range in a Compose)."""
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    assert [type(step).__name__ for step in steps(channel_shift_range=0, horizontal_flip=True)] == [
        "RandomFlip"
    ]

    def flipped(pipeline: Any, seed: int) -> bool:
        out = pipeline(image, np.random.default_rng(seed))
        return bool(np.array_equal(out[:, ::-1], image) and not np.array_equal(out, image))

    without = augment.from_image_data_generator(horizontal_flip=True)
    composed = augment.Compose([augment.RandomChannelShift(0), augment.RandomFlip(horizontal=True)])
    flips_without = [flipped(without, seed) for seed in range(40)]
    assert flips_without != [flipped(composed, seed) for seed in range(40)]
    shifted = augment.from_image_data_generator(horizontal_flip=True, channel_shift_range=1e-9)
    assert [flipped(shifted, seed) for seed in range(40)] == [flipped(composed, seed) for seed in range(40)]


def test_defaults_given_explicitly_are_accepted() -> None:
    """Passing ImageDataGenerator's defaults (as saved configs do) adds nothing."""
    assert (
        steps(
            featurewise_center=False,
            samplewise_center=False,
            zca_whitening=False,
            zca_epsilon=1e-6,
            rotation_range=0,
            fill_mode="nearest",
            cval=0.0,
            rescale=None,
            validation_split=0.0,
            data_format="channels_last",
            interpolation_order=1,
        )
        == []
    )


@pytest.mark.parametrize(
    ("argument", "guidance"),
    [
        ("featurewise_center", "keras.layers.Normalization"),
        ("featurewise_std_normalization", "adapt"),
        ("zca_whitening", "whitening matrix"),
        ("samplewise_center", "def standardize"),
        ("samplewise_std_normalization", "Compose"),
        ("validation_split", "own kloader.Loader"),
    ],
)
def test_unsupported_arguments_raise_with_what_to_do(argument: str, guidance: str) -> None:
    """Options needing data-set statistics or belonging to the source are refused with guidance."""
    value = 0.2 if argument == "validation_split" else True
    with pytest.raises(ValueError, match=guidance) as error:
        steps(**{argument: value})
    assert argument in str(error.value)


def test_other_refusals() -> None:
    """Unknown names (with a suggestion), channels_first, other dtypes, interpolation_order > 1."""
    with pytest.raises(TypeError, match="Did you mean 'rotation_range'"):
        steps(rotation_rang=10)
    with pytest.raises(ValueError, match="channels_last"):
        steps(data_format="channels_first")
    with pytest.raises(ValueError, match="Cast in the model"):
        steps(dtype="float16")
    with pytest.raises(ValueError, match="order 1"):
        steps(rotation_range=5, interpolation_order=3)
    with pytest.raises(ValueError, match="pair"):
        steps(brightness_range=1.2)


def test_dtype_float32_gives_float32_like_image_data_generator() -> None:
    """dtype="float32" turns uint8 images into float32 without rescaling them."""
    image = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    out = augment.from_image_data_generator(dtype="float32")(image, np.random.default_rng(0))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, image)


def test_preprocessing_function_gets_float32_images() -> None:
    """Like ImageDataGenerator, preprocessing_function sees a float32 image; its result is used."""
    pipeline = augment.from_image_data_generator(preprocessing_function=np.sqrt, rescale=2.0)
    out = pipeline(np.full((2, 2, 1), 16, np.uint8), np.random.default_rng(0))
    assert out.dtype == np.float32 and (out == 8.0).all()


# ------------------------------------- agreement with ImageDataGenerator itself


@pytest.fixture
def generator() -> Any:
    pytest.importorskip("scipy")
    from keras.src.legacy.preprocessing.image import ImageDataGenerator

    return ImageDataGenerator


def test_fixed_warp_matches_image_data_generator(generator: Any) -> None:
    """With each range pinned to one value, RandomAffine equals ImageDataGenerator.apply_transform."""
    image = np.random.default_rng(0).random((21, 21, 3)) * 255
    parameters = {"theta": 12.0, "shear": -7.0, "zx": 0.85, "zy": 0.85}
    reference = generator(fill_mode="reflect").apply_transform(image, parameters)
    affine = augment.RandomAffine(rotation=(12, 12), shear=(-7, -7), zoom=(0.85, 0.85), fill_mode="reflect")
    np.testing.assert_allclose(affine(image, np.random.default_rng(0)), reference, atol=2e-3)


def test_flips_and_channel_shift_match_image_data_generator(generator: Any) -> None:
    """Flip axes and the clipped channel shift are ImageDataGenerator's, exactly."""
    image = np.random.default_rng(1).random((6, 5, 3)) * 255
    flipped = generator().apply_transform(image, {"flip_horizontal": True, "flip_vertical": True})
    np.testing.assert_array_equal(flipped, image[::-1, ::-1])
    intensity = augment.RandomChannelShift(40)
    for seed in range(5):
        offset = -40 + 80 * np.random.default_rng(seed).random()
        reference = generator().apply_transform(image, {"channel_shift_intensity": offset})
        np.testing.assert_array_equal(intensity(image, np.random.default_rng(seed)), reference)


def test_brightness_matches_image_data_generator_within_rounding(generator: Any) -> None:
    """ImageDataGenerator goes through an 8-bit Pillow image; kloader rounds in float: within 1."""
    image = np.random.default_rng(2).integers(0, 256, (8, 8, 3)).astype(np.float32)
    for factor in (0.5, 0.8, 1.3):
        reference = generator().apply_transform(image, {"brightness": factor})
        ours = augment.RandomBrightness((factor, factor))(image, np.random.default_rng(0))
        assert np.abs(ours - reference).max() <= 1.0
