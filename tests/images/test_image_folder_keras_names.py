"""ImageFolder for people coming from image_dataset_from_directory / flow_from_directory."""

from __future__ import annotations

from pathlib import Path

import pytest

import kloader

import image_files as images


def test_default_image_size_is_keras_256(tmp_path: Path) -> None:
    """Without image_size, images are 256 x 256, as image_dataset_from_directory makes them."""
    images.make_folder(tmp_path, {"a": 1, "b": 1})
    folder = kloader.ImageFolder(tmp_path, verbose=False)
    assert folder.image_shape == (256, 256, 3)
    assert folder[0][0].shape == (256, 256, 3)


def test_reports_what_it_found_like_keras(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """'Found N files belonging to C classes.' and, for a split, kloader's sizes of each side."""
    images.make_folder(tmp_path, {"a": 8, "b": 5}, size=(4, 4))
    kloader.ImageFolder(tmp_path, image_size=4)
    assert capsys.readouterr().out == "Found 13 files belonging to 2 classes.\n"
    kloader.ImageFolder(tmp_path, image_size=4, validation_split=0.25, subset="training", seed=7)
    # round(0.25 * 8) + round(0.25 * 5) = 2 + 1 validation files: 10 for training.
    assert capsys.readouterr().out == "Found 13 files belonging to 2 classes.\nUsing 10 files for training.\n"
    kloader.ImageFolder(tmp_path, image_size=4).split(0.25, seed=7)
    assert capsys.readouterr().out == (
        "Found 13 files belonging to 2 classes.\nUsing 10 files for training.\nUsing 3 files for validation.\n"
    )
    kloader.ImageFolder(tmp_path, image_size=4, label_mode=None)
    assert capsys.readouterr().out == "Found 13 files.\n"


def test_verbose_false_or_0_prints_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """verbose=False (or 0) silences the report, splits included."""
    images.make_folder(tmp_path, {"a": 4, "b": 4}, size=(4, 4))
    kloader.ImageFolder(tmp_path, image_size=4, verbose=False).split(0.25, seed=1)
    kloader.ImageFolder(tmp_path, image_size=4, verbose=0)
    assert capsys.readouterr().out == ""
    with pytest.raises(ValueError, match="`verbose` must be"):
        kloader.ImageFolder(tmp_path, image_size=4, verbose="yes")  # type: ignore[arg-type]


def test_labels_inferred_is_the_default(tmp_path: Path) -> None:
    """labels="inferred" (Keras's default) reads labels from the class folders."""
    images.make_folder(tmp_path, {"a": 2, "b": 1}, size=(4, 4))
    folder = kloader.ImageFolder(tmp_path, image_size=4, labels="inferred", verbose=False)
    assert folder.labels is not None and folder.labels.tolist() == [0, 0, 1]


@pytest.mark.parametrize(
    ("name", "value", "hint"),
    [
        ("target_size", (8, 8), r"image_size=\(height, width\)"),
        ("class_mode", "sparse", r'"sparse" -> "int"'),
        ("classes", ["a"], r"class_names=\[\.\.\.\]"),
        ("keep_aspect_ratio", True, "crop_to_aspect_ratio=True"),
        ("batch_size", 32, r"kloader\.Loader\(folder, batch_size=\.\.\.\)"),
        ("shuffle", True, r"kloader\.Loader\(folder, shuffle=\.\.\.\)"),
        ("rotation_range", 20, r"from_image_data_generator\(rotation_range=\.\.\.\)"),
        ("data_format", "channels_first", "channels last"),
    ],
)
def test_keras_names_point_to_kloaders(tmp_path: Path, name: str, value: object, hint: str) -> None:
    """Keras / ImageDataGenerator argument names that kloader spells differently name kloader's."""
    images.make_folder(tmp_path, {"a": 1}, size=(4, 4))
    with pytest.raises(TypeError, match=rf"does not take `{name}=`: .*{hint}"):
        kloader.ImageFolder(tmp_path, **{name: value})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"unexpected keyword arguments: \['colour_mode'\]"):
        kloader.ImageFolder(tmp_path, colour_mode="rgb")  # type: ignore[call-arg]
