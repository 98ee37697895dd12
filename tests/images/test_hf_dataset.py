"""A Hugging Face datasets.Dataset as a source: built in the test, never downloaded."""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

import kloader

import image_files as images
from utils import assert_batches_equal, batches_with_workers_up


def pictures(n: int) -> list[Image.Image]:
    """n pattern pictures of different sizes, as Pillow images."""
    return [Image.fromarray(images.pattern(30 + 7 * i, 20 + 3 * i, seed=i)) for i in range(n)]


def image_dataset(n: int = 6) -> datasets.Dataset:
    return datasets.Dataset.from_dict(
        {
            "image": pictures(n),
            "label": [i % 3 for i in range(n)],
            "caption": [f"picture {i}" for i in range(n)],
        }
    )


def test_a_dataset_is_a_source_with_keras_defaults() -> None:
    """Loader(hf_dataset) gives (image, label) batches: 256x256 float32 images, int64 labels; strings left out."""
    loader = kloader.Loader(image_dataset(), batch_size=4, shuffle=False)
    images_batch, labels = loader[0]
    assert images_batch.shape == (4, 256, 256, 3) and images_batch.dtype == np.float32
    assert labels.dtype == np.int64 and labels.tolist() == [0, 1, 2, 0]
    source = kloader.HFDataset(image_dataset())
    assert source.x_columns == ["image"] and source.y_columns == ["label"] and source.dropped == ["caption"]


def test_images_decode_exactly_as_image_folder_with_the_same_options(tmp_path: Path) -> None:
    """Same files, same options (size, interpolation, colour, dtype, JPEG draft): the same pixels."""
    paths = [
        images.write_pattern(tmp_path / "a" / f"{i}.jpg", size=(400 + 50 * i, 300), seed=i, quality=90)
        for i in range(3)
    ] + [images.write_pattern(tmp_path / "b" / "3.png", size=(90, 60), seed=3)]
    opened = [Image.open(path) for path in paths]
    dataset = datasets.Dataset.from_dict({"image": opened, "label": [0, 0, 0, 1]})
    for image in opened:
        image.close()
    for options in (
        {"image_size": (48, 64), "interpolation": "bicubic", "dtype": "uint8"},
        {"image_size": 32, "color_mode": "grayscale", "rescale": 1 / 255, "crop_to_aspect_ratio": True},
        {"image_size": (40, 40), "pad_to_aspect_ratio": True, "fast_decode": "max"},
    ):
        folder = kloader.ImageFolder(
            paths=[str(p) for p in paths], labels=[0, 0, 0, 1], verbose=False, **options
        )
        source = kloader.HFDataset(dataset, **options)  # type: ignore[arg-type]
        for i in range(len(paths)):
            np.testing.assert_array_equal(source[i][0], folder[i][0], err_msg=f"{options}, image {i}")
            assert source[i][1] == folder[i][1]


def test_columns_by_name_multi_input_and_no_targets() -> None:
    """x as a list gives a dict keyed by column; a single ClassLabel is the target; y=() gives x alone."""
    dataset = datasets.Dataset.from_dict(
        {"a": [1.5, 2.5, 3.5], "b": [[1, 2], [3, 4], [5, 6]], "kind": [0, 1, 1]},
        features=datasets.Features(
            {
                "a": datasets.Value("float32"),
                "b": datasets.Sequence(datasets.Value("int32")),
                "kind": datasets.ClassLabel(names=["cat", "dog"]),
            }
        ),
    )
    source = kloader.HFDataset(dataset, x=["a", "b"])
    x, y = source[1]
    assert x["a"].dtype == np.float32 and x["a"] == np.float32(2.5)
    assert x["b"].tolist() == [3, 4] and int(y) == 1
    assert x["b"].dtype == np.int32, "a Sequence column keeps the dtype of its Value"
    assert kloader.HFDataset(dataset).y_columns == ["kind"]
    alone = kloader.HFDataset(dataset, x="a", y=())
    assert alone[2] == np.float32(3.5)
    batch = kloader.Loader(source, batch_size=3, shuffle=False)[0]
    assert (
        batch[0]["b"].shape == (3, 2) and batch[0]["b"].dtype == np.int32 and batch[1].tolist() == [0, 1, 1]
    )
    nested = datasets.Dataset.from_dict(
        {"points": [[[0.5, 1.5]], [[2.5, 3.5]]]},
        features=datasets.Features(
            {"points": datasets.Sequence(datasets.Sequence(datasets.Value("float32")))}
        ),
    )
    assert kloader.HFDataset(nested, x="points", y=())[1].dtype == np.float32


def test_strings_missing_columns_and_other_hf_objects_are_refused() -> None:
    """A string column named as input, an unknown column, a DatasetDict: each a clear error."""
    dataset = image_dataset(2)
    with pytest.raises(TypeError, match=r"Column 'caption' holds strings.*tokenizer"):
        kloader.HFDataset(dataset, x="caption")
    with pytest.raises(ValueError, match=r"no column 'labels'.*\['image', 'label', 'caption'\]"):
        kloader.HFDataset(dataset, y="labels")
    with pytest.raises(TypeError, match=r"DatasetDict with splits \['train'\]; pick one"):
        kloader.Loader(datasets.DatasetDict({"train": dataset}), batch_size=2)
    with pytest.raises(TypeError, match="streaming"):
        kloader.Loader(dataset.to_iterable_dataset(), batch_size=2)


def test_a_bad_image_names_the_sample_and_column() -> None:
    """Undecodable image bytes raise SampleError with the sample index and the column."""
    dataset = datasets.Dataset.from_dict(
        {"image": [{"bytes": b"not an image", "path": None}], "label": [0]},
        features=datasets.Features({"image": datasets.Image(decode=False), "label": datasets.Value("int64")}),
    )
    with pytest.raises(kloader.SampleError, match=r"Sample 0: cannot decode the image in column 'image'"):
        kloader.HFDataset(dataset)[0]


def test_two_workers_give_the_batches_of_none() -> None:
    """The dataset reaches worker processes: 2 workers give exactly the batches of 0."""
    dataset = image_dataset(7)
    runs = []
    for num_workers in (0, 2):
        source = kloader.HFDataset(dataset, image_size=(24, 32), dtype="uint8")
        with kloader.Loader(
            source, batch_size=3, seed=5, transform=images.flip, num_workers=num_workers
        ) as loader:
            runs.append(
                batches_with_workers_up(loader, 2) if num_workers else [b for _ in range(2) for b in loader]
            )
    assert_batches_equal(runs[1], runs[0], what="2 workers vs 0")
