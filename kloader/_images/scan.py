"""Finding the files of an image folder: class subfolders, a recursive walk, or explicit paths.

Each visible subfolder of the folder is a class (sorted names, or the order of
`class_names`); images are found recursively, by extension in any case;
hidden files and folders are ignored. Source order is
image_dataset_from_directory's: class by class, folders sorted by path, files
sorted by name. Every way this can find nothing raises an error that says
where it looked and for which extensions.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from kloader._images.file_index import FileIndex

EXTENSIONS = ("bmp", "gif", "jpeg", "jpg", "png", "tif", "tiff", "webp")
_SUFFIXES = tuple("." + extension for extension in EXTENSIONS)


def is_image_name(name: str) -> bool:
    """True for a visible file with an image extension (any case)."""
    return not name.startswith(".") and name.lower().endswith(_SUFFIXES)


def describe_extensions() -> str:
    return ", ".join("." + extension for extension in EXTENSIONS) + " (any case)"


def list_class_folders(directory: str) -> list[str]:
    """Visible subfolders of `directory` (links to folders included), sorted by name."""
    return sorted(
        name
        for name in os.listdir(directory)
        if not name.startswith(".") and os.path.isdir(os.path.join(directory, name))
    )


def walk_images(directory: str, *, follow_links: bool) -> tuple[list[str], list[str]]:
    """(image paths, other file names) under `directory`, recursively.

    Image paths are relative to `directory`, in image_dataset_from_directory's
    order (folders sorted by path, files sorted by name). Hidden files and
    folders (names starting with ".") are left out. With `follow_links`, linked
    folders are entered, each real folder once (no endless loops).
    """
    seen: set[tuple[int, int]] = set()
    folders: list[tuple[str, list[str]]] = []
    others: list[str] = []
    for root, dirnames, filenames in os.walk(directory, followlinks=follow_links):
        if follow_links:
            status = os.stat(root)
            if (status.st_dev, status.st_ino) in seen:
                dirnames[:] = []
                continue
            seen.add((status.st_dev, status.st_ino))
        dirnames[:] = [name for name in dirnames if not name.startswith(".")]
        folders.append((root, [name for name in filenames if is_image_name(name)]))
        others.extend(name for name in filenames if not name.startswith(".") and not is_image_name(name))
    paths: list[str] = []
    for root, names in sorted(folders, key=lambda folder: folder[0]):
        relative = os.path.relpath(root, directory)
        paths.extend(name if relative == "." else os.path.join(relative, name) for name in sorted(names))
    return paths, others


def find_files(
    root: str | None,
    paths: Sequence[str | os.PathLike[str]] | None,
    labels: Sequence[Any] | np.ndarray | None,
    class_names: Sequence[str] | None,
    label_mode: str | None,
    follow_links: bool,
) -> tuple[FileIndex, list[str] | None]:
    """The files and class names: from explicit `paths`, or by scanning `root`."""
    if paths is not None:
        index, names = _explicit_index(root, paths, labels, class_names, label_mode)
    else:
        if labels is not None:
            raise ValueError(
                "`labels` goes with `paths`: pass paths=[...] and labels=[...] together. With a "
                "directory alone, labels come from the class subfolders."
            )
        if root is None:
            raise TypeError("ImageFolder needs a `directory` (or `paths`).")
        index, names = _scan_folder(root, class_names, label_mode, follow_links)
    if label_mode == "binary" and names is not None and len(names) != 2:
        raise ValueError(
            f'label_mode="binary" needs exactly 2 classes, found {len(names)}: {names}. Use '
            'label_mode="int" or "categorical" for more classes.'
        )
    return index, names


def _scan_folder(
    root: str, class_names: Sequence[str] | None, label_mode: str | None, follow_links: bool
) -> tuple[FileIndex, list[str] | None]:
    if not os.path.exists(root):
        raise FileNotFoundError(
            f"Image folder {root!r} does not exist (looked at {os.path.abspath(root)!r})."
        )
    if not os.path.isdir(root):
        raise NotADirectoryError(f"Image folder {root!r} is a file, not a folder.")
    extensions = describe_extensions()
    if label_mode is None:
        if class_names is not None:
            raise ValueError("`class_names` needs labels; with label_mode=None leave it out.")
        paths, others = walk_images(root, follow_links=follow_links)
        if not paths:
            raise ValueError(
                f"No images found in {root!r} or below it (looked for {extensions}; "
                f"found {_describe_others(others)})."
            )
        return FileIndex.build(paths, None), None
    folders = list_class_folders(root)
    if not folders:
        loose, others = walk_images(root, follow_links=follow_links)
        what = (
            f"{len(loose)} image files directly in it" if loose else f"no images ({_describe_others(others)})"
        )
        raise ValueError(
            f"No class subfolders in {root!r} (found {what}). ImageFolder looks for one subfolder "
            f"per class holding {extensions} files: put the images of each class in their own "
            "subfolder (e.g. cats/, dogs/), or use label_mode=None for unlabelled images."
        )
    names = _select_classes(root, folders, class_names)
    found_paths: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(names):
        found, others = walk_images(os.path.join(root, name), follow_links=follow_links)
        if not found:
            raise ValueError(
                f"Class folder {os.path.join(root, name)!r} has no images (searched it recursively "
                f"for {extensions}; found {_describe_others(others)}). Add images, remove the "
                "folder, or pass class_names=[...] without it."
            )
        found_paths.extend(os.path.join(name, path) for path in found)
        labels.extend([label] * len(found))
    return FileIndex.build(found_paths, labels), names


def _describe_others(others: list[str]) -> str:
    if not others:
        return "no files at all"
    examples = ", ".join(repr(name) for name in sorted(others)[:3])
    return f"{len(others)} other files, such as {examples}"


def _select_classes(root: str, folders: list[str], class_names: Sequence[str] | None) -> list[str]:
    if class_names is None:
        return folders
    if isinstance(class_names, str):
        raise TypeError(f"`class_names` must be a list of folder names, got the string {class_names!r}.")
    names = [str(name) for name in class_names]
    missing = [name for name in names if name not in folders]
    if missing:
        raise ValueError(
            f"class_names {missing} are not subfolders of {root!r}; its subfolders are {folders}."
        )
    if len(set(names)) != len(names):
        raise ValueError(f"class_names has duplicates: {names}.")
    return names


def _explicit_index(
    root: str | None,
    paths: Sequence[str | os.PathLike[str]],
    labels: Sequence[Any] | np.ndarray | None,
    class_names: Sequence[str] | None,
    label_mode: str | None,
) -> tuple[FileIndex, list[str] | None]:
    if isinstance(paths, (str, bytes)):
        raise TypeError("`paths` must be a list of paths, not a single string.")
    path_list = [os.fspath(path) for path in paths]
    if not path_list:
        raise ValueError("`paths` is empty: there are no images to read.")
    if label_mode is None:
        return FileIndex.build(path_list, None), None
    if labels is None:
        raise ValueError(
            "`paths` needs `labels` (one per path), or label_mode=None for images without labels."
        )
    label_list = list(labels)
    if len(label_list) != len(path_list):
        raise ValueError(f"`labels` has {len(label_list)} entries but `paths` has {len(path_list)}.")
    if all(isinstance(label, str) for label in label_list):
        names = sorted(set(label_list)) if class_names is None else [str(name) for name in class_names]
        lookup = {name: i for i, name in enumerate(names)}
        unknown = sorted(set(label_list) - set(lookup))
        if unknown:
            raise ValueError(f"labels {unknown} are not in class_names {names}.")
        return FileIndex.build(path_list, [lookup[label] for label in label_list]), names
    if not all(isinstance(label, numbers.Integral) and not isinstance(label, bool) for label in label_list):
        raise TypeError("`labels` must be all ints (class ids from 0) or all strings (class names).")
    ids = [int(label) for label in label_list]
    if min(ids) < 0:
        raise ValueError(f"Integer labels must be >= 0, got {min(ids)}.")
    names = [str(i) for i in range(max(ids) + 1)] if class_names is None else list(class_names)
    if max(ids) >= len(names):
        raise ValueError(f"Label {max(ids)} has no class: class_names has {len(names)} names.")
    return FileIndex.build(path_list, ids), names
