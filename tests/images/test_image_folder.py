"""ImageFolder: scanning, labels and class order, label modes, the split, bad files, workers."""

from __future__ import annotations

import os
import pickle
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import kloader
from kloader._images.decode import UnreadableImageError

import image_files as images
from utils import assert_batches_equal, batches_with_workers_up, wait_until_a_worker_is_up

# ------------------------------------------------------------------- scan


def batches_with_0_and_2_workers(folder: kloader.ImageFolder, seed: int) -> list[list[object]]:
    """Two epochs of flipped batches of 3, with 0 and with 2 workers; asserts they are identical."""
    runs = []
    for num_workers in (0, 2):
        with kloader.Loader(
            folder, batch_size=3, seed=seed, transform=images.flip, num_workers=num_workers
        ) as loader:
            runs.append(
                batches_with_workers_up(loader, 2) if num_workers else [b for _ in range(2) for b in loader]
            )
    assert_batches_equal(runs[1], runs[0], what="2 workers vs 0")
    return runs


def test_classes_labels_and_source_order(tmp_path: Path) -> None:
    """Sorted subfolders are classes 0, 1, ...; files in source order, recursively, as found."""
    images.make_folder(tmp_path, {"dog": 2, "cat": 3})
    images.write_solid(tmp_path / "cat" / "indoor" / "b.PNG", (1, 2, 3))
    images.write_solid(tmp_path / "cat" / "indoor" / "a.jpeg", (1, 2, 3))
    folder = kloader.ImageFolder(tmp_path, image_size=8)
    assert folder.class_names == ["cat", "dog"]
    assert folder.filenames == [os.path.join("cat", name) for name in ["000.png", "001.png", "002.png"]] + [
        os.path.join("cat", "indoor", name) for name in ["a.jpeg", "b.PNG"]
    ] + [os.path.join("dog", name) for name in ["000.png", "001.png"]]
    assert folder.labels is not None and folder.labels.tolist() == [0, 0, 0, 0, 0, 1, 1]
    assert folder.file_paths == [os.path.join(str(tmp_path), name) for name in folder.filenames]
    assert len(folder) == 7
    image, label = folder[5]
    # make_folder colours classes in the order given: dog first
    assert image.shape == (8, 8, 3) and label == 1 and image[0, 0].tolist() == list(images.PALETTE[0])


def test_the_folder_may_be_named_by_str_path_or_bytes(tmp_path: Path) -> None:
    """As `os.listdir` takes them: the same files, and `directory` a str, whichever way."""
    images.make_folder(tmp_path, {"dog": 2, "cat": 1})
    named = [str(tmp_path), tmp_path, os.fsencode(tmp_path)]
    folders = [kloader.ImageFolder(directory, image_size=8) for directory in named]
    for folder in folders:
        assert folder.directory == str(tmp_path)
        assert folder.filenames == folders[0].filenames and len(folder) == 3
        assert folder.file_paths == folders[0].file_paths


def test_images_beside_the_class_folders_are_named_in_a_warning(tmp_path: Path) -> None:
    """Labels come from the class folders: loose images in the root are left out, as Keras
    leaves them out, but with a warning that names them; label_mode=None reads them."""
    images.make_folder(tmp_path, {"dog": 2, "cat": 1})
    images.write_solid(tmp_path / "stray.jpg", (1, 2, 3))
    images.write_solid(tmp_path / "other.png", (1, 2, 3))
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.warns(
        UserWarning, match=r"leaves out 2 image files directly in .*'other\.png', 'stray\.jpg'"
    ) as caught:
        folder = kloader.ImageFolder(tmp_path, image_size=8)
    assert "label_mode=None" in str(caught[0].message) and "cat/, dog/" in str(caught[0].message)
    assert caught[0].filename == __file__  # points at the user's line
    assert len(folder) == 3
    assert len(kloader.ImageFolder(tmp_path, image_size=8, label_mode=None)) == 5  # no warning


def test_every_extension_in_any_case_and_nothing_else(tmp_path: Path) -> None:
    """All image extensions count, in any case; hidden files, hidden folders and other files do not."""
    names = ["a.jpg", "b.JPEG", "c.png", "d.Bmp", "e.gif", "f.tif", "g.TIFF", "h.webp"]
    for name in names:
        images.write_pattern(tmp_path / "only" / name, size=(10, 10))
    images.write_pattern(tmp_path / "only" / ".hidden.png", size=(10, 10))
    images.write_pattern(tmp_path / "only" / ".ipynb_checkpoints" / "copy.png", size=(10, 10))
    images.write_text(tmp_path / "only" / "notes.txt")
    images.write_pattern(tmp_path / ".trash" / "x.png", size=(10, 10))  # a hidden class folder
    folder = kloader.ImageFolder(tmp_path, image_size=4)
    assert folder.class_names == ["only"]
    assert folder.filenames == [os.path.join("only", name) for name in sorted(names)]


def test_class_names_choose_and_order_the_classes(tmp_path: Path) -> None:
    """class_names picks a subset of the subfolders, in the order given."""
    images.make_folder(tmp_path, {"a": 1, "b": 2, "c": 3})
    folder = kloader.ImageFolder(tmp_path, image_size=4, class_names=["c", "a"])
    assert folder.class_names == ["c", "a"]
    assert folder.labels is not None and folder.labels.tolist() == [0, 0, 0, 1]
    with pytest.raises(ValueError, match=r"class_names \['x'\] are not subfolders.*\['a', 'b', 'c'\]"):
        kloader.ImageFolder(tmp_path, image_size=4, class_names=["a", "x"])


def test_follow_links(tmp_path: Path) -> None:
    """Linked folders inside a class are entered only with follow_links, and a loop ends."""
    images.make_folder(tmp_path / "data", {"cat": 1})
    images.make_folder(tmp_path / "elsewhere", {"more": 2})
    os.symlink(tmp_path / "elsewhere" / "more", tmp_path / "data" / "cat" / "linked")
    os.symlink(tmp_path / "data" / "cat", tmp_path / "data" / "cat" / "loop")
    assert len(kloader.ImageFolder(tmp_path / "data", image_size=4)) == 1
    followed = kloader.ImageFolder(tmp_path / "data", image_size=4, follow_links=True)
    assert followed.filenames == [os.path.join("cat", "000.png")] + [
        os.path.join("cat", "linked", f"00{i}.png") for i in range(2)
    ]


@pytest.mark.parametrize("listed", ["sorted", "reversed"])
def test_a_folder_reached_twice_is_named_the_same_whatever_order_the_disk_lists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listed: str
) -> None:
    """follow_links=True and a real folder reachable by three paths in one class: its files
    are listed once, under the first path in sorted order, whatever order the file system
    lists entries in (tmpfs: creation order; ext4: a hash). Before, the path, and with it the
    validation split, changed with the listing order."""
    images.make_folder(tmp_path / "data", {"b": 2})
    images.make_folder(tmp_path / "data" / "a", {"m_real": 3})
    for link in ("a_link", "z_link"):
        os.symlink("m_real", tmp_path / "data" / "a" / link)
    real_scandir = os.scandir

    def listing(path: Any) -> list[os.DirEntry[str]]:
        entries = sorted(real_scandir(path), key=lambda entry: entry.name)
        return entries if listed == "sorted" else entries[::-1]

    monkeypatch.setattr(os, "scandir", listing)
    folder = kloader.ImageFolder(tmp_path / "data", image_size=4, follow_links=True)
    assert folder.filenames == [os.path.join("a", "a_link", f"00{i}.png") for i in range(3)] + [
        os.path.join("b", f"00{i}.png") for i in range(2)
    ]


def test_labels_none_means_images_without_labels_as_in_keras(tmp_path: Path) -> None:
    """image_dataset_from_directory(d, labels=None) gives images alone: so does ImageFolder
    (it gave (image, label) samples from the class folders, without a word)."""
    images.make_folder(tmp_path, {"x": 2, "y": 1})
    folder = kloader.ImageFolder(tmp_path, image_size=6, labels=None)
    assert folder.labels is None and folder[0].shape == (6, 6, 3)
    assert kloader.ImageFolder(tmp_path, image_size=6, labels="inferred").labels.tolist() == [0, 0, 1]
    with pytest.raises(
        ValueError, match=r"labels=None means images without labels.*label_mode='categorical'"
    ):
        kloader.ImageFolder(tmp_path, image_size=6, labels=None, label_mode="categorical")


def test_a_seed_without_a_split_is_refused_with_the_loaders_seed(tmp_path: Path) -> None:
    """ImageFolder(d, seed=1), as image_dataset_from_directory(d, seed=1) seeds Keras's shuffle,
    did nothing: the folder never shuffles. It is refused, pointing to the Loader's seed."""
    images.make_folder(tmp_path, {"x": 2})
    with pytest.raises(ValueError, match=r"never shuffles.*kloader.Loader\(folder, batch_size=..., seed=1\)"):
        kloader.ImageFolder(tmp_path, image_size=6, seed=1)


def test_unlabelled_reads_every_image_below_the_folder(tmp_path: Path) -> None:
    """label_mode=None: all images, class folders or not; samples are images alone."""
    images.make_folder(tmp_path, {"x": 2})
    images.write_solid(tmp_path / "loose.png", (0, 0, 0))
    folder = kloader.ImageFolder(tmp_path, image_size=6, label_mode=None)
    assert folder.filenames == ["loose.png", os.path.join("x", "000.png"), os.path.join("x", "001.png")]
    assert folder.labels is None and folder.class_names is None
    assert isinstance(folder[0], np.ndarray) and folder[0].shape == (6, 6, 3)


# ------------------------------------------------------------ label modes


def test_label_modes(tmp_path: Path) -> None:
    """int: int32 id; categorical: float32 one-hot; binary: float32 (1,)."""
    images.make_folder(tmp_path, {"a": 1, "b": 1})
    as_int = kloader.ImageFolder(tmp_path, image_size=4)[1][1]
    assert as_int.dtype == np.int32 and as_int.shape == () and int(as_int) == 1
    one_hot = kloader.ImageFolder(tmp_path, image_size=4, label_mode="categorical")[1][1]
    assert one_hot.dtype == np.float32 and one_hot.tolist() == [0.0, 1.0]
    binary = kloader.ImageFolder(tmp_path, image_size=4, label_mode="binary")[1][1]
    assert binary.dtype == np.float32 and binary.tolist() == [1.0]
    batch = kloader.Loader(
        kloader.ImageFolder(tmp_path, image_size=4, label_mode="binary"), batch_size=2, shuffle=False
    )[0]
    assert batch[0].shape == (2, 4, 4, 3) and batch[1].shape == (2, 1)


def test_binary_needs_two_classes(tmp_path: Path) -> None:
    """label_mode="binary" with three classes says how many it found."""
    images.make_folder(tmp_path, {"a": 1, "b": 1, "c": 1})
    with pytest.raises(ValueError, match=r"exactly 2 classes, found 3"):
        kloader.ImageFolder(tmp_path, image_size=4, label_mode="binary")


def test_explicit_paths_and_labels(tmp_path: Path) -> None:
    """paths + labels: int labels, or string labels mapped to sorted class names; order as given."""
    a = images.write_solid(tmp_path / "a.png", (255, 0, 0))
    b = images.write_solid(tmp_path / "sub" / "b.png", (0, 0, 255))
    folder = kloader.ImageFolder(paths=[str(b), str(a)], labels=["zebra", "ant"], image_size=4)
    assert folder.class_names == ["ant", "zebra"] and folder.filenames == [str(b), str(a)]
    assert folder.labels is not None and folder.labels.tolist() == [1, 0]
    assert folder[0][0][0, 0].tolist() == [0, 0, 255]
    relative = kloader.ImageFolder(tmp_path, paths=["a.png"], labels=[2], image_size=4)
    assert relative.class_names == ["0", "1", "2"] and relative[0][0][0, 0].tolist() == [255, 0, 0]
    with pytest.raises(ValueError, match="1 entries but `paths` has 2"):
        kloader.ImageFolder(paths=[a, b], labels=[0], image_size=4)
    with pytest.raises(ValueError, match="`paths` needs `labels`"):
        kloader.ImageFolder(paths=[a, b], image_size=4)
    with pytest.raises(ValueError, match="`labels` goes with `paths`"):
        kloader.ImageFolder(tmp_path, labels=[0, 1], image_size=4)


# ------------------------------------------------------- errors on folders


def test_missing_folder_and_file_instead_of_folder(tmp_path: Path) -> None:
    """A path that does not exist, or is a file, is named in the error."""
    with pytest.raises(FileNotFoundError, match="does not exist"):
        kloader.ImageFolder(tmp_path / "nope", image_size=4)
    file = images.write_solid(tmp_path / "file.png", 0, mode="L")
    with pytest.raises(NotADirectoryError, match="is a file"):
        kloader.ImageFolder(file, image_size=4)


def test_empty_folder_and_folder_without_class_subfolders(tmp_path: Path) -> None:
    """No subfolders: the error says so, and counts loose images if there are any."""
    with pytest.raises(
        ValueError, match=r"No class subfolders in .*found no images \(no files at all\)"
    ) as caught:
        kloader.ImageFolder(tmp_path, image_size=4)
    assert str(tmp_path) in str(caught.value) and ".jpg, .png" in str(caught.value)
    images.write_solid(tmp_path / "loose.jpg", (0, 0, 0))
    with pytest.raises(ValueError, match=r"found 1 image files directly in it.*label_mode=None"):
        kloader.ImageFolder(tmp_path, image_size=4)


def test_class_folder_without_images(tmp_path: Path) -> None:
    """A class folder with no images: the error names it and the extensions looked for."""
    images.make_folder(tmp_path, {"cat": 1})
    images.write_text(tmp_path / "dog" / "readme.txt")
    dog = os.path.join(str(tmp_path), "dog")
    with pytest.raises(ValueError, match=r"Class folder .*dog.* has no images") as caught:
        kloader.ImageFolder(tmp_path, image_size=4)
    message = str(caught.value)
    assert dog in message and ".jpeg" in message and ".webp" in message and "'readme.txt'" in message


def test_no_images_at_all_unlabelled(tmp_path: Path) -> None:
    """label_mode=None on a folder without images says where it looked and for what."""
    images.write_text(tmp_path / "a.txt")
    with pytest.raises(ValueError, match=r"No images found in .* \(looked for \.bmp, .*1 other files"):
        kloader.ImageFolder(tmp_path, image_size=4, label_mode=None)


# ------------------------------------------------------------------ split

# Frozen: the validation files seed 7 and validation_split 0.25 give the folder
# below. The split must not change between releases, machines or backends
# ("only update these if you know what you're doing").
GOLDEN_VALIDATION = ["a/000.png", "a/005.png", "b/001.png"]


def split_folder(root: Path) -> Path:
    return images.make_folder(root, {"a": 8, "b": 5}, size=(4, 4))


def test_split_is_disjoint_covering_stratified_and_golden(tmp_path: Path) -> None:
    """training + validation = the folder, no file in both, round(v * n) per class, frozen."""
    split_folder(tmp_path)
    every = kloader.ImageFolder(tmp_path, image_size=4)
    train = kloader.ImageFolder(tmp_path, image_size=4, validation_split=0.25, subset="training", seed=7)
    val = kloader.ImageFolder(tmp_path, image_size=4, validation_split=0.25, subset="validation", seed=7)
    assert not set(train.filenames) & set(val.filenames)
    assert sorted(train.filenames + val.filenames) == sorted(every.filenames)
    assert [name.replace(os.sep, "/") for name in val.filenames] == GOLDEN_VALIDATION
    assert val.labels is not None and val.labels.tolist() == [0, 0, 1]  # round(0.25 * 8), round(0.25 * 5)
    assert train.filenames == sorted(train.filenames), "each side keeps source order"


@pytest.mark.parametrize(
    ("classes", "per_class", "fraction"), [(40, 7, 0.2), (50, 5, 0.1), (30, 3, 0.2), (3, 10, 0.25)]
)
def test_the_validation_side_is_as_large_as_asked(classes: int, per_class: int, fraction: float) -> None:
    """int(v * N) files in all, as in Keras, each class giving floor or ceil of v * n: with a
    rounding per class, 50 classes of 5 files at 0.1 held out 50 files (20 %), Keras 25."""
    paths = [f"c{c:02d}/{i}.png" for c in range(classes) for i in range(per_class)]
    labels = [c for c in range(classes) for _ in range(per_class)]
    folder = kloader.ImageFolder(paths=paths, labels=labels, image_size=4, verbose=False)
    _, validation = folder.split(fraction, seed=3)
    assert len(validation) == int(fraction * len(paths))  # Keras's size
    assert validation.labels is not None
    per = np.bincount(validation.labels, minlength=classes)
    assert set(per.tolist()) <= {int(np.floor(fraction * per_class)), int(np.ceil(fraction * per_class))}


def test_split_method_equals_the_constructor_and_depends_on_the_seed(tmp_path: Path) -> None:
    """.split(v, seed=s) gives exactly the two subsets; another seed gives another split."""
    split_folder(tmp_path)
    train, val = kloader.ImageFolder(tmp_path, image_size=4).split(0.25, seed=7)
    assert [name.replace(os.sep, "/") for name in val.filenames] == GOLDEN_VALIDATION
    again = kloader.ImageFolder(tmp_path, image_size=4, validation_split=0.25, subset="training", seed=7)
    assert train.filenames == again.filenames
    other = kloader.ImageFolder(tmp_path, image_size=4, validation_split=0.25, subset="validation", seed=8)
    assert other.filenames != val.filenames and len(other) == len(val)


def test_split_does_not_reshuffle_when_files_are_added(tmp_path: Path) -> None:
    """Adding files keeps the old files' ranking: the old files on the validation side before
    and after are nested sets (one contains the other); only the cut-off moves."""
    images.make_folder(tmp_path, {"a": 40}, size=(2, 2))

    def validation() -> set[str]:
        return set(
            kloader.ImageFolder(
                tmp_path, image_size=2, validation_split=0.2, subset="validation", seed=3
            ).filenames
        )

    before = validation()
    for j in range(40, 60):
        images.write_solid(tmp_path / "a" / f"{j:03d}.png", (0, 0, 0), size=(2, 2))
    after = validation()
    old_after = {name for name in after if int(name[-7:-4]) < 40}
    assert len(before) == 8 and len(after) == 12
    assert old_after <= before or before <= old_after, (sorted(before), sorted(old_after))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"validation_split": 0.2, "subset": "training"}, "needs a `seed`"),
        ({"validation_split": 0.2}, "go together"),
        ({"subset": "training", "seed": 1}, "go together"),
        ({"validation_split": 1.5, "subset": "training", "seed": 1}, r"in \(0, 1\)"),
        ({"validation_split": 0.2, "subset": "test", "seed": 1}, "training"),
        ({"validation_split": 0.2, "subset": "both", "seed": 1}, r"\.split\(validation_split"),
        ({"validation_split": 0.01, "subset": "training", "seed": 1}, "validation subset .* empty"),
    ],
)
def test_bad_split_arguments(tmp_path: Path, options: dict[str, object], message: str) -> None:
    """Split arguments are checked with a message that says how to fix them."""
    split_folder(tmp_path)
    with pytest.raises(ValueError, match=message):
        kloader.ImageFolder(tmp_path, image_size=4, **options)  # type: ignore[arg-type]


# -------------------------------------------------------------- bad files


def bad_folder(root: Path) -> dict[str, str]:
    """A folder with good images and one of each kind of bad file; returns bad name -> reason words."""
    images.make_folder(root, {"cat": 3, "dog": 3}, ext="jpg", size=(40, 30))
    images.write_truncated_jpeg(root / "cat" / "truncated.jpg", size=(90, 100))
    images.write_zero_bytes(root / "dog" / "empty.jpg")
    images.write_text(root / "dog" / "text.png")
    images.write_bomb_png(root / "cat" / "bomb.png")
    images.write_pattern(root / "dog" / "huge.png", size=(120, 100))  # over max_pixels below
    return {
        os.path.join("cat", "truncated.jpg"): "truncated",
        os.path.join("cat", "bomb.png"): "decompression bomb",
        os.path.join("dog", "empty.jpg"): "not an image",
        os.path.join("dog", "huge.png"): "over max_pixels=10000",
        os.path.join("dog", "text.png"): "not an image",
    }


def test_bad_file_raises_naming_the_file_and_the_reason(tmp_path: Path) -> None:
    """on_error="raise": SampleError names the sample, the path and Pillow's reason, for each kind."""
    expected = bad_folder(tmp_path)
    folder = kloader.ImageFolder(tmp_path, image_size=8, max_pixels=10_000)
    for name, words in expected.items():
        position = folder.filenames.index(name)
        with pytest.raises(kloader.SampleError) as caught:
            folder[position]
        message = str(caught.value)
        assert f"Sample {position}:" in message and os.path.join(str(tmp_path), name) in message
        assert words in message and "on_error='skip'" in message
    loader = kloader.Loader(folder, batch_size=len(folder), shuffle=False)
    with pytest.raises(kloader.SampleError, match=r"Sample 3: cannot read image .*bomb\.png"):
        loader[0]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_the_cause_of_a_bad_file_is_the_same_from_a_worker(tmp_path: Path, num_workers: int) -> None:
    """SampleError.__cause__ is the UnreadableImageError with the path and the reason, whichever
    process made the batch (from a worker it once came as an UnpicklableError stand-in)."""
    images.make_folder(tmp_path, {"a": 2, "b": 2})
    bad = images.write_zero_bytes(tmp_path / "a" / "empty.png")
    folder = kloader.ImageFolder(tmp_path, image_size=8)
    loader = kloader.Loader(folder, batch_size=len(folder), shuffle=False, num_workers=num_workers)
    # The one batch fails in this process first, then is made again by a worker, whose error is raised.
    with loader, pytest.raises(kloader.SampleError) as caught:
        next(iter(loader))
    if num_workers:
        assert "worker" in str(caught.value)
    cause = caught.value.__cause__
    assert isinstance(cause, UnreadableImageError), type(cause)
    assert cause.path == str(bad) and "not an image Pillow can identify" in cause.reason


def test_skip_leaves_out_exactly_the_bad_files_and_warns(tmp_path: Path) -> None:
    """on_error="skip": every kind of bad file is listed with its reason; a warning counts them."""
    expected = bad_folder(tmp_path)
    with pytest.warns(UserWarning, match=r"skipped 5 of 11 files"):
        folder = kloader.ImageFolder(tmp_path, image_size=8, on_error="skip", max_pixels=10_000)
    skipped = {os.path.relpath(path, tmp_path): reason for path, reason in folder.skipped}
    assert sorted(skipped) == sorted(expected)
    for name, words in expected.items():
        assert words in skipped[name], (name, skipped[name])
    assert len(folder) == 6 and all(name.endswith(".jpg") for name in folder.filenames)
    assert folder.labels is not None and folder.labels.tolist() == [0, 0, 0, 1, 1, 1]
    batch = kloader.Loader(folder, batch_size=6, seed=0)[0]
    assert batch[0].shape == (6, 8, 8, 3)


def test_skip_is_decided_once_and_the_same_for_any_worker_count(tmp_path: Path) -> None:
    """Two builds skip the same files; batches with 0 and 2 workers are identical."""
    bad_folder(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        first = kloader.ImageFolder(tmp_path, image_size=8, on_error="skip")
        second = kloader.ImageFolder(tmp_path, image_size=8, on_error="skip")
    assert first.skipped == second.skipped and first.filenames == second.filenames
    batches_with_0_and_2_workers(first, seed=5)


@pytest.fixture
def pillow_settings() -> Any:
    """Restores Pillow's module-level settings that a test changes."""
    from PIL import Image, ImageFile

    saved = (ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS)
    yield
    ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS = saved


def test_workers_load_truncated_images_when_this_process_says_so(
    tmp_path: Path, pillow_settings: Any
) -> None:
    """PIL.ImageFile.LOAD_TRUNCATED_IMAGES = True, set in a script or notebook, holds in the
    worker processes too: the same batches for any worker count (a forkserver worker
    started with Pillow's default and failed on the file that this process loads)."""
    from PIL import ImageFile

    images.make_folder(tmp_path, {"a": 3, "b": 3}, ext="jpg")
    images.write_truncated_jpeg(tmp_path / "a" / "truncated.jpg")
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    folder = kloader.ImageFolder(tmp_path, image_size=8, on_error="skip")
    assert folder.skipped == [] and len(folder) == 7
    batches_with_0_and_2_workers(folder, seed=3)


def test_workers_keep_pillows_pixel_limit_of_this_process(tmp_path: Path, pillow_settings: Any) -> None:
    """A lowered PIL.Image.MAX_IMAGE_PIXELS refuses the same file in a worker as here."""
    from PIL import Image

    images.make_folder(tmp_path, {"a": 2, "b": 2}, size=(60, 50))
    Image.MAX_IMAGE_PIXELS = 1000  # 60 x 50 = 3000 pixels, over twice the limit: an error
    folder = kloader.ImageFolder(tmp_path, image_size=8, max_pixels=None)
    loader = kloader.Loader(folder, batch_size=2, seed=0, num_workers=2)
    try:
        with pytest.raises(kloader.SampleError, match=r"MAX_IMAGE_PIXELS") as caught:
            batches_with_workers_up(loader, 1)
        assert "worker" in str(caught.value)  # made by a worker, not in this process
    finally:
        loader.close()


def test_skip_then_split_keeps_the_split_of_every_file(tmp_path: Path) -> None:
    """With skip, each side of a split is the raise-mode side minus its bad files."""
    bad_folder(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        skipping = kloader.ImageFolder(
            tmp_path, image_size=8, on_error="skip", validation_split=0.5, subset="training", seed=2
        )
        train, _ = kloader.ImageFolder(tmp_path, image_size=8, on_error="skip").split(0.5, seed=2)
    raising = kloader.ImageFolder(tmp_path, image_size=8, validation_split=0.5, subset="training", seed=2)
    skipped = {path for path, _ in skipping.skipped}
    assert skipping.filenames == [n for n in raising.filenames if os.path.join(tmp_path, n) not in skipped]
    assert train.filenames == skipping.filenames and train.skipped == skipping.skipped


def test_an_entry_never_opened_is_skipped_alike_by_the_constructor_and_split(tmp_path: Path) -> None:
    """A named pipe (never opened, so in no subset's files) is in `.skipped` of both sides,
    whether the split came from the constructor or from .split() (which dropped it)."""
    bad_folder(tmp_path)
    os.mkfifo(tmp_path / "cat" / "pipe.png")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        sides = [
            kloader.ImageFolder(
                tmp_path, image_size=8, on_error="skip", validation_split=0.5, subset=subset, seed=2
            )
            for subset in ("training", "validation")
        ]
        split = kloader.ImageFolder(tmp_path, image_size=8, on_error="skip").split(0.5, seed=2)
    for side, other in zip(sides, split):
        assert side.filenames == other.filenames and side.skipped == other.skipped
        assert str(tmp_path / "cat" / "pipe.png") in {path for path, _ in side.skipped}


# ---------------------------------------------------- workers and pickling


def test_pickles_small_as_arrays(tmp_path: Path) -> None:
    """The file index travels to workers as a few arrays: a small pickle, and unpickling it
    allocates a handful of objects, not one per file (so forked workers share its pages)."""
    paths = [f"class_{i % 10}/image_{i:06d}.jpg" for i in range(20_000)]
    folder = kloader.ImageFolder(tmp_path, paths=paths, labels=[i % 10 for i in range(20_000)], image_size=8)
    data = pickle.dumps(folder, protocol=pickle.HIGHEST_PROTOCOL)
    assert len(data) < 50 * len(paths), f"{len(data)} bytes for {len(paths)} files"
    blocks = sys.getallocatedblocks()
    restored = pickle.loads(data)
    assert sys.getallocatedblocks() - blocks < 500
    assert restored.filenames[12345] == paths[12345] and restored.labels is not None
    assert restored.labels[12345] == 5


def test_mixed_files_batch_alike_and_augmentation_is_the_same_for_any_worker_count(tmp_path: Path) -> None:
    """JPEG, PNG, gray, RGBA, palette, 16-bit, EXIF-rotated, mixed sizes: one batch shape; 0 and 2
    workers give bit-identical augmented batches, and epochs differ."""
    images.write_pattern(tmp_path / "a" / "photo.jpg", size=(300, 200), seed=1)
    images.write_pattern(tmp_path / "a" / "wide.png", size=(90, 20), seed=2)
    images.write_solid(tmp_path / "a" / "gray.png", 100, size=(33, 33), mode="L")
    images.write_solid(tmp_path / "a" / "rgba.png", (5, 6, 7, 100), mode="RGBA")
    images.write_exif_rotated(tmp_path / "b" / "rotated.jpg", 6)
    images.write(tmp_path / "b" / "deep.png", images.Image.fromarray(np.full((9, 9), 40000, np.uint16)))
    images.write(tmp_path / "b" / "palette.gif", images.Image.new("P", (12, 7), 3))
    images.write_solid(tmp_path / "b" / "cmyk.jpg", (0, 0, 0, 0), mode="CMYK")
    folder = kloader.ImageFolder(tmp_path, image_size=(12, 16))
    runs = batches_with_0_and_2_workers(folder, seed=11)
    assert all(batch[0].shape[1:] == (12, 16, 3) and batch[0].dtype == np.float32 for batch in runs[0])
    epoch_0 = np.concatenate([batch[0] for batch in runs[0][:3]])
    epoch_1 = np.concatenate([batch[0] for batch in runs[0][3:]])
    assert not np.array_equal(epoch_0, epoch_1)


def test_bicubic_crop_and_draft_are_the_same_for_any_worker_count(tmp_path: Path) -> None:
    """torch's resize (bicubic, cropped, after a draft decode, rescaled) gives identical batches
    with 0 and 2 workers."""
    for i in range(6):
        photo = images.Image.fromarray(images.photo(400 + 40 * i, 300, seed=i))
        images.write(tmp_path / f"c{i % 2}" / f"{i}.jpg", photo, quality=90)
    folder = kloader.ImageFolder(
        tmp_path, image_size=(48, 64), interpolation="bicubic", crop_to_aspect_ratio=True, rescale=1 / 255
    )
    runs = batches_with_0_and_2_workers(folder, seed=3)
    assert runs[0][0][0].shape[1:] == (48, 64, 3)


def test_workers_resize_with_one_torch_thread(tmp_path: Path) -> None:
    """Each worker runs torch with one intra-op thread (torch's DataLoader worker loop sets it), so
    2 workers resizing never run more than 2 threads."""
    for i in range(8):
        images.write_pattern(tmp_path / "a" / f"{i}.jpg", size=(300, 200), seed=i)
    folder = kloader.ImageFolder(tmp_path, image_size=32)
    with kloader.Loader(
        folder, batch_size=2, seed=0, transform=images.torch_threads, num_workers=2
    ) as loader:
        # This process makes batches until a worker is up: start them, wait, then read on.
        batches = iter(loader)
        made = [next(batches)[2]]
        wait_until_a_worker_is_up(loader)
        made += [batch[2] for batch in batches] + [batch[2] for _ in range(2) for batch in loader]
    made = np.concatenate(made)
    in_workers = made[made[:, 1] != os.getpid()]
    assert len(in_workers) > 0 and (in_workers[:, 0] == 1).all(), made


def test_index_errors_and_repr(tmp_path: Path) -> None:
    """Out-of-range and non-int indices raise; negative indices count from the end; repr summarises."""
    images.make_folder(tmp_path, {"a": 2})
    folder = kloader.ImageFolder(tmp_path, image_size=4)
    with pytest.raises(IndexError):
        folder[2]
    with pytest.raises(TypeError):
        folder["0"]  # type: ignore[index]
    np.testing.assert_array_equal(folder[-1][0], folder[1][0])
    assert "2 images, 1 classes" in repr(folder)
