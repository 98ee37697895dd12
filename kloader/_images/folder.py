"""`kloader.ImageFolder`: a folder of images (one subfolder per class) as a map-style source."""

from __future__ import annotations

import numbers
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from kloader._core import checks, memory, seeding
from kloader._core.errors import SampleError
from kloader._images import decode, file_index, scan
from kloader._images.file_index import FileIndex

LABEL_MODES = ("int", "categorical", "binary", None)
ON_ERROR = ("raise", "skip")
SUBSETS = ("training", "validation")
_CHECK_THREADS = 8


class ImageFolder:
    """Images in a folder, one subfolder per class, as a source for `kloader.Loader`.

    Sample i is `(image, label)` (just `image` with `label_mode=None`): the i-th
    file in source order, decoded with Pillow, EXIF orientation applied,
    converted to `color_mode` and resized to `image_size`, as a
    `(height, width, channels)` array. Names and meanings follow
    `keras.utils.image_dataset_from_directory`; the order and the split are
    kloader's: `shuffle` and `seed` of the `Loader` decide the order of every
    epoch, identically on every backend and for any `num_workers`.

    Source order: classes in label order (sorted folder names, or `class_names`),
    within a class the folders sorted by path and their files by name; the file
    list is `filenames`. Subfolders are searched recursively; hidden files and
    folders (".name") are ignored; extensions .bmp .gif .jpeg .jpg .png .tif
    .tiff .webp in any case.

    Args:
        directory: the folder. With `label_mode=None` every image below it is
            used (class subfolders or not); otherwise each visible subfolder is
            a class. With `paths`, the folder the paths are relative to.
        image_size: `(height, width)` of every image, or one int for a square.
            Default (256, 256), as in Keras.
        label_mode: "int" (int32 class id), "categorical" (float32 one-hot),
            "binary" (float32 0/1 of shape (1,), needs exactly two classes) or
            None (images only, for `predict`).
        class_names: the classes to use, in label order; a subset of the
            subfolders (default: all, sorted). With `paths` and string labels,
            the order of the labels.
        color_mode: "rgb" (3 channels), "grayscale" (1) or "rgba" (4). Palette,
            CMYK, 16-bit, LA and other modes are converted; alpha is dropped for
            "rgb", as Keras does.
        interpolation: "bilinear", "nearest", "bicubic", "area", "lanczos3",
            "lanczos5", "gaussian" or "mitchellcubic", mapped to Pillow's
            filters (area is BOX; lanczos5 is Lanczos-3; gaussian is bilinear;
            mitchellcubic is bicubic). Every filter but nearest antialiases
            when shrinking. Bilinear and bicubic (the default's path) run as
            torch's antialiased uint8 resize: Pillow's filter, several times
            faster, at most 1 level of 255 from Pillow's output on a few
            pixels in a thousand, and the same bytes in every process.
        crop_to_aspect_ratio: resize without distortion, cropping the largest
            centred window with the target's aspect ratio.
        pad_to_aspect_ratio: resize without distortion, padding with zeros.
        dtype: "float32" (values 0..255, times `rescale`) or "uint8".
        rescale: factor applied to float32 images, e.g. 1/255.
        validation_split: fraction of the files to hold out (needs `seed` and
            `subset`); see `split` for the exact rule.
        subset: "training" or "validation": which side of the split this
            folder reads. For both at once use `split` (Keras's "both").
        seed: the split's seed (the Loader has its own for the order).
        on_error: "raise" (default): reading a bad file raises
            `kloader.SampleError` naming the file and Pillow's reason. "skip":
            every file is checked once, here (a 1/8-scale decode for JPEGs, a
            full decode for other formats), and unreadable ones are left out;
            they are listed in `skipped` and counted in a warning. The same
            files are skipped on every backend, worker count and run. Folders
            the scan cannot list, and image names that are not regular files
            (never opened: a named pipe would block), are refused by path
            with "raise" and listed in `skipped` with "skip".
        max_pixels: refuse images with more pixels (decompression bombs).
            Default: Pillow's limit, about 89.5 megapixels.
        fast_decode: decode JPEGs at 1/2, 1/4 or 1/8 scale (libjpeg DCT
            scaling) while the decoded image stays at least as large as
            needed, then resize: two to three times faster, and close to a
            full decode (README: Image folders, Quality). False: always
            decode in full. ("max", an older name for True, is accepted.)
        follow_links: enter folders that are symbolic links (each real folder
            once). Class folders that are links are always used. A link that
            lets two classes reach the same folder (a link back up the tree)
            is refused: no image is filed under two classes.
        paths: explicit image paths (relative to `directory` if given) instead
            of a scan, in the order given.
        labels: with `paths`: one label per path, ints from 0 or strings.
            "inferred" (the default, as in Keras) means from the class
            subfolders; None, as in Keras, means images without labels (as
            `label_mode=None`).
        verbose: print what was found, as `image_dataset_from_directory`
            does: "Found N files belonging to C classes." and, for a split,
            "Using M files for training." (kloader's split sizes).

    Arguments of `image_dataset_from_directory` and `flow_from_directory` that
    kloader names differently (`target_size`, `class_mode`, `classes`,
    `batch_size`, ...) raise a TypeError that names kloader's argument.

    Example:
        ```python
        folder = kloader.ImageFolder("flowers/", image_size=(180, 180), seed=1,
                                     validation_split=0.2, subset="training")
        train = kloader.Loader(folder, batch_size=32, seed=42, num_workers=4)
        model.fit(train, epochs=10)
        print(folder.class_names)  # ['daisy', 'roses', ...], label 0, 1, ...
        ```
    """

    def __init__(
        self,
        directory: str | bytes | os.PathLike[str] | os.PathLike[bytes] | None = None,
        *,
        image_size: int | tuple[int, int] = (256, 256),
        label_mode: str | None = "int",
        class_names: Sequence[str] | None = None,
        color_mode: str = "rgb",
        interpolation: str = "bilinear",
        crop_to_aspect_ratio: bool = False,
        pad_to_aspect_ratio: bool = False,
        dtype: str = "float32",
        rescale: float | None = None,
        validation_split: float | None = None,
        subset: str | None = None,
        seed: int | None = None,
        on_error: str = "raise",
        max_pixels: int | None = decode.DEFAULT_MAX_PIXELS,
        fast_decode: bool = True,
        follow_links: bool = False,
        paths: Sequence[str | os.PathLike[str]] | None = None,
        labels: Sequence[Any] | np.ndarray | str | None = "inferred",
        verbose: bool | int = True,
        **other_arguments: Any,
    ):
        _refuse_other_arguments(other_arguments)
        if labels is None:
            # As in Keras's image_dataset_from_directory: images without labels.
            if label_mode not in (None, "int"):
                raise ValueError(
                    f"labels=None means images without labels (as in Keras), but label_mode="
                    f"{label_mode!r} asks for labels. Drop one of the two: labels='inferred' (the "
                    "default) takes them from the class subfolders."
                )
            label_mode = None
        elif isinstance(labels, str) and labels == "inferred":
            labels = None  # Keras's default: labels from the class subfolders
        if isinstance(verbose, bool) or verbose in (0, 1):
            verbose = bool(verbose)
        else:
            raise ValueError(f"`verbose` must be True / False (or 1 / 0), got {verbose!r}.")
        spec = decode.spec_from_arguments(
            image_size=image_size,
            color_mode=color_mode,
            interpolation=interpolation,
            crop_to_aspect_ratio=crop_to_aspect_ratio,
            pad_to_aspect_ratio=pad_to_aspect_ratio,
            dtype=dtype,
            rescale=rescale,
            max_pixels=max_pixels,
            fast_decode=fast_decode,
        )
        height, width, channels = spec.shape
        pixels = height * width * channels
        memory.check_fits(
            pixels * np.dtype(spec.dtype).itemsize + pixels,  # the output, and Pillow's uint8 image
            f"image_size={spec.image_size}: one decoded image ({height} x {width} x {channels}, "
            f"{spec.dtype})",
            "Use a smaller image_size: it is the size every image is resized to, not the size of the files.",
        )
        if label_mode not in LABEL_MODES:
            raise ValueError(f"`label_mode` must be one of {LABEL_MODES}, got {label_mode!r}.")
        if on_error not in ON_ERROR:
            raise ValueError(
                f"`on_error` must be 'raise' or 'skip', got {on_error!r}. 'skip' checks every file "
                "once and leaves unreadable ones out."
            )
        split = _validate_split(validation_split, subset, seed)
        root = None if directory is None else os.fsdecode(directory)  # bytes as os.listdir takes them
        index, names, unreachable = scan.find_files(
            root, paths, labels, class_names, label_mode, bool(follow_links), on_error=on_error
        )
        found = len(index)
        if split is not None:
            fraction, subset_name, split_seed = split
            training, validation = _split(index, fraction, split_seed, root)
            index = index.take(training if subset_name == "training" else validation)
        self._root = root
        self._spec = spec
        self._label_mode = label_mode
        self._class_names = names
        self._on_error = on_error
        self._split = split
        self._index = index
        self._kept = np.arange(len(index))
        # What on_error="skip" left out: entries no scan could use (never opened), skipped by
        # every subset alike, then the files of this index that cannot be read.
        self._unreachable: list[tuple[str, str]] = []
        self._unreadable: list[tuple[str, str]] = []
        self._verbose = verbose
        if on_error == "skip":
            self._unreachable = list(unreachable)
            self._skip_unreadable()
        if verbose:
            classes = "" if label_mode is None or names is None else f" belonging to {len(names)} classes"
            print(f"Found {found} files{classes}.")
            if split is not None:
                self._print_using()

    def _print_using(self) -> None:
        assert self._split is not None
        skipped = f" ({len(self._skipped)} unreadable left out)" if self._skipped else ""
        print(f"Using {len(self)} files for {self._split[1]}{skipped}.")

    # ------------------------------------------------------------- files

    @property
    def _skipped(self) -> list[tuple[str, str]]:
        return self._unreachable + self._unreadable

    def _skip_unreadable(self) -> None:
        """Checks every file once and leaves out those that fail."""
        paths = [self._full_path(p) for p in range(len(self._index))]
        with ThreadPoolExecutor(max_workers=min(_CHECK_THREADS, os.cpu_count() or 1)) as pool:
            reasons = list(pool.map(lambda path: decode.check(path, self._spec), paths))
        bad = [position for position, reason in enumerate(reasons) if reason is not None]
        self._unreadable = [(paths[p], reasons[p] or "") for p in bad]
        self._kept = np.flatnonzero(np.array([reason is None for reason in reasons], dtype=bool))
        if len(self._kept) == 0:
            raise ValueError(
                f"None of the {len(paths)} image files in {self._where()} can be read; the first: "
                f"{self._skipped[0][0]}: {self._skipped[0][1]}."
            )
        if self._skipped:
            first_path, first_reason = self._skipped[0]
            total = len(paths) + len(self._unreachable)
            warnings.warn(
                f"kloader.ImageFolder skipped {len(self._skipped)} of {total} files that cannot be read "
                f"(listed in .skipped); the first: {first_path}: {first_reason}",
                UserWarning,
                stacklevel=3,
            )

    def _where(self) -> str:
        return repr(self._root) if self._root is not None else "the given paths"

    def _full_path(self, position: int) -> str:
        relative = self._index.path(position)
        return relative if self._root is None else os.path.join(self._root, relative)

    @property
    def directory(self) -> str | None:
        """The folder the file names are relative to (None for absolute `paths`)."""
        return self._root

    @property
    def filenames(self) -> list[str]:
        """The files of the samples, in source order, relative to `directory`, as found."""
        return [self._index.path(int(p)) for p in self._kept]

    @property
    def file_paths(self) -> list[str]:
        """The paths that are opened: `directory` joined with each of `filenames`."""
        return [self._full_path(int(p)) for p in self._kept]

    @property
    def labels(self) -> np.ndarray | None:
        """The class id of every sample (int32, source order); None with label_mode=None."""
        if self._label_mode is None or self._index.labels is None:
            return None
        return self._index.labels[self._kept]

    @property
    def class_names(self) -> list[str] | None:
        """Class names in label order (label i is class_names[i]); None with label_mode=None."""
        return None if self._label_mode is None or self._class_names is None else list(self._class_names)

    @property
    def label_mode(self) -> str | None:
        """ "int", "categorical", "binary" or None: what the label of a sample is."""
        return self._label_mode

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """(path, reason) of each file left out by on_error="skip", in source order."""
        return list(self._skipped)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) of every image."""
        return self._spec.shape

    @property
    def rescale(self) -> float | None:
        """The factor float32 images were multiplied by (None for none)."""
        return self._spec.rescale

    # ----------------------------------------------------------- samples

    def __len__(self) -> int:
        return len(self._kept)

    def __getitem__(self, index: int) -> Any:
        """Sample `index`: `(image, label)`, or the image alone with label_mode=None."""
        kept = checks.position(index, len(self), of=f"an ImageFolder of {len(self)} images")
        position = int(self._kept[kept])
        path = self._full_path(position)
        try:
            image = decode.decode(path, self._spec)
        except decode.UnreadableImageError as error:
            raise SampleError(
                f"Sample {int(index) % len(self)}: cannot read image {path}: {error.reason}. "
                + self._fix_hint()
            ) from error
        if self._label_mode is None or self._index.labels is None:
            return image
        return image, self._label(int(self._index.labels[position]))

    def _fix_hint(self) -> str:
        if self._on_error == "skip":
            return "It passed the check when the ImageFolder was built, so it changed or went missing since."
        return (
            "Replace or remove the file, or build the ImageFolder with on_error='skip' to leave "
            "unreadable files out (decided once, the same everywhere)."
        )

    def _label(self, label: int) -> Any:
        if self._label_mode == "int":
            return np.int32(label)
        if self._label_mode == "binary":
            return np.array([label], dtype=np.float32)
        assert self._class_names is not None
        one_hot = np.zeros(len(self._class_names), dtype=np.float32)
        one_hot[label] = 1.0
        return one_hot

    # ------------------------------------------------------------- split

    def split(self, validation_split: float, *, seed: int) -> tuple[ImageFolder, ImageFolder]:
        """(training, validation): both sides of a split at once (Keras's `subset="both"`).

        `ImageFolder(d, ..., validation_split=v, subset="training", seed=s)` is
        exactly `ImageFolder(d, ...).split(v, seed=s)[0]`, and "validation" is
        `[1]`. Rule: each file gets a key that depends only on the seed and its
        path relative to `directory`; the validation side holds int(v * N) of
        the N files, as Keras's, each class (all files together without labels) giving its
        share, floor(v * n) or one more (largest remainders), of the files with
        the smallest keys. Stratified, as large as asked, disjoint, covering
        every file, the same on every backend and run; adding or removing files
        does not reshuffle the split, only files near a class's cut-off can
        change sides. Files that
        on_error="skip" left out stay out of both sides.

        Example:
            ```python
            train, validation = kloader.ImageFolder("photos/", image_size=224).split(0.2, seed=1)
            ```
        """
        if self._split is not None:
            raise ValueError(
                "This ImageFolder is already one side of a split (validation_split="
                f"{self._split[0]}, subset={self._split[1]!r}); split the whole folder instead."
            )
        checked = _validate_split(validation_split, "training", seed)
        assert checked is not None  # a subset was given
        fraction, _, split_seed = checked
        training, validation = _split(self._index, fraction, split_seed, self._root)
        sides = (
            self._subset(training, (fraction, "training", split_seed)),
            self._subset(validation, (fraction, "validation", split_seed)),
        )
        if self._verbose:
            for side in sides:
                side._print_using()
        return sides

    def _subset(self, positions: np.ndarray, split: tuple[float, str, int]) -> ImageFolder:
        subset = object.__new__(ImageFolder)
        subset.__dict__.update(self.__dict__)
        subset._split = split
        subset._index = self._index.take(positions)
        kept = np.isin(positions, self._kept)
        subset._kept = np.flatnonzero(kept)
        skipped_paths = {self._full_path(int(p)) for p in positions[~kept]}
        subset._unreadable = [item for item in self._unreadable if item[0] in skipped_paths]
        return subset

    def __repr__(self) -> str:
        classes = "" if self.class_names is None else f", {len(self.class_names)} classes"
        split = "" if self._split is None else f", subset={self._split[1]!r}"
        skipped = f", {len(self._skipped)} skipped" if self._skipped else ""
        return (
            f"ImageFolder({self._where()}, {len(self)} images{classes}, image_size={self._spec.image_size}, "
            f"label_mode={self._label_mode!r}{split}{skipped})"
        )


# --------------------------------------------------------------- helpers

_AUGMENTATION = (
    "augmentation is a transform of the Loader: kloader.Loader(folder, batch_size=32, "
    "transform=kloader.augment.from_image_data_generator({name}=...))"
)
_LOADER = "`{name}` belongs to the Loader: kloader.Loader(folder, {name}=...)"
# Names of image_dataset_from_directory / flow_from_directory / ImageDataGenerator
# that ImageFolder spells differently, with what to write instead.
_RENAMED = {
    "target_size": "use image_size=(height, width)",
    "class_mode": 'use label_mode: "sparse" -> "int", "categorical", "binary", None; "input" -> '
    "label_mode=None and a transform that returns (image, image)",
    "classes": "use class_names=[...]",
    "keep_aspect_ratio": "use crop_to_aspect_ratio=True",
    "data_format": "images are channels last; transpose in a transform for channels first",
    "batch_size": _LOADER,
    "shuffle": _LOADER,
    "workers": "workers belong to the Loader: kloader.Loader(folder, num_workers=N)",
    "use_multiprocessing": "workers belong to the Loader: kloader.Loader(folder, num_workers=N)",
    "save_to_dir": "see what the model sees with kloader.save_preview(loader, 'preview.png')",
    "preprocessing_function": "pass your function as a transform: kloader.Loader(folder, "
    "transform=lambda sample, rng: ...)",
}
_AUGMENTATION_ARGUMENTS = (
    "rotation_range",
    "width_shift_range",
    "height_shift_range",
    "shear_range",
    "zoom_range",
    "channel_shift_range",
    "brightness_range",
    "horizontal_flip",
    "vertical_flip",
    "fill_mode",
    "cval",
)


def _refuse_other_arguments(arguments: dict[str, Any]) -> None:
    for name in arguments:
        fix = _RENAMED.get(name) or (_AUGMENTATION if name in _AUGMENTATION_ARGUMENTS else None)
        if fix is not None:
            raise TypeError(f"kloader.ImageFolder does not take `{name}=`: {fix.format(name=name)}.")
    if arguments:
        raise TypeError(f"ImageFolder() got unexpected keyword arguments: {sorted(arguments)}.")


def _validate_split(
    validation_split: float | None, subset: str | None, seed: int | None
) -> tuple[float, str, int] | None:
    if validation_split is None and subset is None:
        if seed is not None:
            raise ValueError(
                f"seed={seed!r} without a validation_split: an ImageFolder's seed only draws its "
                "split, and it never shuffles. The order, and the augmentation, are the Loader's: "
                f"pass kloader.Loader(folder, batch_size=..., seed={seed!r}) (in Keras, "
                "image_dataset_from_directory's seed seeds its shuffle)."
            )
        return None
    if subset == "both":
        raise ValueError(
            'subset="both" returns two datasets, which a constructor cannot: use '
            "train, validation = kloader.ImageFolder(directory, ...).split(validation_split, seed=...)."
        )
    if validation_split is None or subset is None:
        raise ValueError(
            "`validation_split` and `subset` go together: pass validation_split=0.2 with "
            'subset="training" or "validation" (or use .split(0.2, seed=...) for both).'
        )
    if (
        isinstance(validation_split, bool)
        or not isinstance(validation_split, numbers.Real)
        or not 0 < validation_split < 1
    ):
        raise ValueError(f"`validation_split` must be a number in (0, 1), got {validation_split!r}.")
    if subset not in SUBSETS:
        raise ValueError(f'`subset` must be "training" or "validation", got {subset!r}.')
    if seed is None:
        raise ValueError(
            "`validation_split` needs a `seed`, so that the training and validation subsets are "
            "built from the same split and never share a file. Pass e.g. seed=1337 to both."
        )
    return float(validation_split), subset, seeding.validate_seed(seed)


def _split(index: FileIndex, fraction: float, seed: int, root: str | None) -> tuple[np.ndarray, np.ndarray]:
    training, validation = file_index.split_positions(index, fraction, seed)
    where = repr(root) if root is not None else "the given paths"
    for name, side in (("training", training), ("validation", validation)):
        if len(side) == 0:
            raise ValueError(
                f"validation_split={fraction} leaves the {name} subset of the {len(index)} images in "
                f"{where} empty. Use a validation_split closer to 0.5, or more images."
            )
    return training, validation
