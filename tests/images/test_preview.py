"""save_preview: the contact sheet shows the batch the model gets, captioned with class names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import kloader
from kloader._images import preview

import image_files as images


def folder_loader(root: Path, transform: object = images.invert, **options: object) -> kloader.Loader:
    images.make_folder(root / "data", {"apple": 3, "banana": 2}, size=(16, 16))
    images.write_pattern(root / "data" / "banana" / "pattern.png", size=(16, 16))
    folder = kloader.ImageFolder(root / "data", image_size=16, **options)  # type: ignore[arg-type]
    return kloader.Loader(folder, batch_size=4, seed=3, transform=transform)  # type: ignore[arg-type]


def cells(sheet: np.ndarray, count: int, height: int, width: int | None = None) -> list[np.ndarray]:
    """The image tiles of a sheet: 4 px padding, an 18 px caption under each tile."""
    width = height if width is None else width
    columns = int(np.ceil(np.sqrt(count)))
    tops = [4 + (i // columns) * (height + 18 + 4) for i in range(count)]
    lefts = [4 + (i % columns) * (width + 4) for i in range(count)]
    return [sheet[top : top + height, left : left + width] for top, left in zip(tops, lefts)]


def test_sheet_shows_the_augmented_batch_with_class_captions(tmp_path: Path) -> None:
    """Each tile is the transformed image of the batch (enlarged 8x), captioned below."""
    loader = folder_loader(tmp_path)
    written = kloader.save_preview(loader, tmp_path / "preview.png")
    sheet = np.asarray(Image.open(written).convert("RGB"))
    batch_images, _ = loader[0]
    assert sheet.shape == (2 * (128 + 18 + 4) + 4, 2 * (128 + 4) + 4, 3)
    for tile, image in zip(cells(sheet, 4, 128), batch_images):
        np.testing.assert_array_equal(tile[::8, ::8], image.astype(np.uint8))
    folder = loader.source
    originals = [folder[i][0] for i in loader.indices(0)]
    assert any((image != original).any() for image, original in zip(batch_images, originals)), (
        "the transform changed some images, and the sheet shows them changed"
    )
    caption = sheet[4 + 128 : 4 + 128 + 18, 4 : 4 + 128]
    assert (caption > 150).any(), "a caption is drawn under the tile"
    assert loader.epoch == 0, "previewing does not move the epoch"


def test_captions_name_the_class_and_sample() -> None:
    """Class ids, one-hot rows and binary values become class names; the sample index follows."""
    names = ["apple", "banana"]
    assert preview._caption(np.int32(1), names, 7) == "banana #7"
    assert preview._caption(np.array([0.0, 1.0]), names, None) == "banana"
    assert preview._caption(np.array([0.0]), names, 3) == "apple #3"
    assert preview._caption(None, None, 4) == "#4"


def test_other_epochs_and_rescaled_images(tmp_path: Path) -> None:
    """epoch= previews another epoch's batch; a folder's rescale is undone for display."""
    loader = folder_loader(tmp_path, transform=None, rescale=1 / 255)
    kloader.save_preview(loader, tmp_path / "e1.png", epoch=1, batch=1)
    sheet = np.asarray(Image.open(tmp_path / "e1.png").convert("RGB"))
    epoch_1 = loader.batch(1, epoch=1)[0]
    tile = cells(sheet, 1, 128)[0]
    np.testing.assert_array_equal(tile[::8, ::8], np.round(epoch_1[0] * 255).astype(np.uint8))
    assert loader.epoch == 0


def test_a_batch_of_grayscale_floats_in_unit_range(tmp_path: Path) -> None:
    """A plain batch works too: (N, H, W, 1) floats in [0, 1] are shown times 255."""
    batch = np.linspace(0, 1, 3 * 20 * 10).reshape(3, 20, 10, 1).astype(np.float32)
    kloader.save_preview((batch, np.array([0, 1, 0])), tmp_path / "g.png", class_names=["no", "yes"])
    sheet = np.asarray(Image.open(tmp_path / "g.png").convert("L"))
    tile = cells(sheet, 3, 120, 60)[1]  # 20 x 10 images are enlarged 6x
    np.testing.assert_array_equal(tile[::6, ::6], np.round(batch[1, :, :, 0] * 255).astype(np.uint8))


def test_bad_batches_are_refused(tmp_path: Path) -> None:
    """Dict batches and arrays that are not images raise with the shape or keys."""
    with pytest.raises(TypeError, match="dict"):
        kloader.save_preview({"x": np.zeros((2, 4, 4, 3))}, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"shape \(2, 4\)"):
        kloader.save_preview(np.zeros((2, 4)), tmp_path / "x.png")
