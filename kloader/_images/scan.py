"""Finding the files of an image folder: class subfolders, a recursive walk, or explicit paths.

Each visible subfolder of the folder is a class (sorted names, or the order of
`class_names`); images are found recursively, by extension in any case;
hidden files and folders are ignored. Source order is
image_dataset_from_directory's: class by class, folders sorted by path, files
sorted by name. Every way this can find nothing raises an error that says
where it looked and for which extensions, and nothing is left out silently:
a folder that cannot be read, an image name that is not a regular file (a
named pipe would block the first read forever, so it is never opened) and,
with `follow_links`, a folder reached from two classes are refused by path.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from kloader._core import checks
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


@dataclasses.dataclass
class Walk:
    """What a recursive walk of one folder found.

    Attributes:
        images: image paths relative to the folder, in image_dataset_from_directory's
            order (folders sorted by path, files sorted by name).
        others: names of visible files without an image extension.
        problems: (path, why) of what the walk could not use and did not open:
            folders it cannot list, and image names that are not regular files
            (a named pipe would block the first read forever).
        folders: (device, inode) of every real folder entered.
    """

    images: list[str]
    others: list[str]
    problems: list[tuple[str, str]]
    folders: set[tuple[int, int]]


def _not_regular(path: str) -> str:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "a link to nothing (its target is missing)"
    for test, kind in (
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return f"{kind}, not a regular file"
    return "not a regular file"


def walk_images(directory: str, *, follow_links: bool) -> Walk:
    """Every image file under `directory`, recursively, and what could not be used.

    Hidden files and folders (names starting with ".") are left out. With
    `follow_links`, linked folders are entered, each real folder once (no
    endless loops), under the first of its paths in sorted order, depth first:
    the same on every machine, whatever order the file system lists entries in.
    Only regular files (or links to them) are listed as images: nothing else is
    ever opened.
    """
    walk = Walk([], [], [], set())
    folders: list[tuple[str, list[str]]] = []
    pending = [directory]
    while pending:
        root = pending.pop()
        try:
            status = os.stat(root)
            entries = sorted(os.scandir(root), key=lambda entry: entry.name)
        except OSError as error:
            walk.problems.append((root, f"folder cannot be read ({error.strerror or error})"))
            continue
        if (status.st_dev, status.st_ino) in walk.folders:
            continue
        walk.folders.add((status.st_dev, status.st_ino))
        names = []
        subfolders = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                if follow_links or not entry.is_symlink():
                    subfolders.append(entry.path)
            elif not is_image_name(entry.name):
                walk.others.append(entry.name)
            elif entry.is_file():
                names.append(entry.name)
            else:
                walk.problems.append((entry.path, _not_regular(entry.path)))
        folders.append((root, names))
        pending.extend(reversed(subfolders))  # the first in sorted order is visited next
    for root, names in sorted(folders, key=lambda folder: folder[0]):
        relative = os.path.relpath(root, directory)
        walk.images.extend(
            name if relative == "." else os.path.join(relative, name) for name in sorted(names)
        )
    return walk


def describe_problems(problems: list[tuple[str, str]]) -> str:
    listing = "; ".join(f"{path}: {why}" for path, why in problems[:5])
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    return f"{listing}{more}"


def refuse_problems(problems: list[tuple[str, str]]) -> None:
    if problems:
        raise ValueError(
            f"kloader cannot use {len(problems)} entries of the image folder, and will not leave "
            f"them out silently: {describe_problems(problems)}. Make folders readable (chmod), "
            "and move anything that is not an image file (named pipes, sockets, broken links) "
            "out of the folder or rename it without an image extension; or pass "
            "on_error='skip' to leave them out (listed in .skipped)."
        )


def refuse_shared_folders(walks: dict[str, Walk], root: str, *, follow_links: bool) -> None:
    """No real folder (so no file) may be reached from two classes, e.g. by a link back up the tree."""
    owner: dict[tuple[int, int], str] = {}
    for name, walk in walks.items():
        for folder in walk.folders:
            if folder in owner and owner[folder] != name:
                fix = (
                    "Remove the link (a link back up the tree, or into another class), or use "
                    "follow_links=False."
                    if follow_links
                    else "A class folder that is a link is always read: remove the link, or make "
                    "it a folder of its own."
                )
                raise ValueError(
                    f"The class folders {owner[folder]!r} and {name!r} of {root!r} reach the same "
                    f"folder through a link, so its images would be filed under both classes. {fix}"
                )
            owner[folder] = name


def refuse_empty_classes(walks: dict[str, Walk], root: str) -> None:
    """Every class folder must hold an image: a class without one cannot be learnt, and its
    label would be missing from every batch."""
    for name, walk in walks.items():
        if not walk.images:
            raise ValueError(
                f"Class folder {os.path.join(root, name)!r} has no images (searched it recursively "
                f"for {describe_extensions()}; found {_describe_others(walk.others)}). Add images, "
                "remove the folder, or pass class_names=[...] without it."
            )


def find_files(
    root: str | None,
    paths: Sequence[str | os.PathLike[str]] | None,
    labels: Sequence[Any] | np.ndarray | None,
    class_names: Sequence[str] | None,
    label_mode: str | None,
    follow_links: bool,
    *,
    on_error: str = "raise",
) -> tuple[FileIndex, list[str] | None, list[tuple[str, str]]]:
    """The files, the class names, and (path, why) of what the scan could not use.

    From explicit `paths`, or by scanning `root`. What the scan could not use
    (folders it cannot list, image names that are not regular files) is
    refused with on_error="raise", and returned to be listed as skipped with
    on_error="skip".
    """
    problems: list[tuple[str, str]] = []
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
        index, names = _scan_folder(root, class_names, label_mode, follow_links, problems)
        if on_error == "raise":
            refuse_problems(problems)
    if label_mode == "binary" and names is not None and len(names) != 2:
        raise ValueError(
            f'label_mode="binary" needs exactly 2 classes, found {len(names)}: {names}. Use '
            'label_mode="int" or "categorical" for more classes.'
        )
    return index, names, problems


def _scan_folder(
    root: str,
    class_names: Sequence[str] | None,
    label_mode: str | None,
    follow_links: bool,
    problems: list[tuple[str, str]],
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
        walk = walk_images(root, follow_links=follow_links)
        problems.extend(walk.problems)
        if not walk.images:
            raise ValueError(
                f"No images found in {root!r} or below it (looked for {extensions}; "
                f"found {_describe_others(walk.others)})."
            )
        return FileIndex.build(walk.images, None), None
    folders = list_class_folders(root)
    if not folders:
        walk = walk_images(root, follow_links=follow_links)
        loose = walk.images
        what = (
            f"{len(loose)} image files directly in it"
            if loose
            else f"no images ({_describe_others(walk.others)})"
        )
        raise ValueError(
            f"No class subfolders in {root!r} (found {what}). ImageFolder looks for one subfolder "
            f"per class holding {extensions} files: put the images of each class in their own "
            "subfolder (e.g. cats/, dogs/), or use label_mode=None for unlabelled images."
        )
    names = _select_classes(root, folders, class_names)
    _warn_of_loose_images(root, names)
    walks = {name: walk_images(os.path.join(root, name), follow_links=follow_links) for name in names}
    problems.extend(problem for walk in walks.values() for problem in walk.problems)
    refuse_shared_folders(walks, root, follow_links=follow_links)
    refuse_empty_classes(walks, root)
    found_paths: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(names):
        found = walks[name].images
        found_paths.extend(os.path.join(name, path) for path in found)
        labels.extend([label] * len(found))
    return FileIndex.build(found_paths, labels), names


def _warn_of_loose_images(root: str, names: list[str]) -> None:
    """Images directly in the root have no class: said, not dropped without a word."""
    loose = sorted(
        name
        for name in os.listdir(root)
        if not name.startswith(".") and is_image_name(name) and os.path.isfile(os.path.join(root, name))
    )
    if loose:
        examples = ", ".join(repr(name) for name in loose[:3])
        classes = ", ".join(f"{name}/" for name in names[:3]) + (", ..." if len(names) > 3 else "")
        warnings.warn(
            f"kloader.ImageFolder leaves out {len(loose)} image files directly in {root!r} (such as "
            f"{examples}): labels come from the class subfolders ({classes}), and these are in none. "
            "Move them into their class's folder, or pass label_mode=None to read every image "
            "unlabelled.",
            UserWarning,
            stacklevel=5,
        )


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
    if not all(checks.is_int(label) for label in label_list):
        raise TypeError("`labels` must be all ints (class ids from 0) or all strings (class names).")
    ids = [int(label) for label in label_list]
    if min(ids) < 0:
        raise ValueError(f"Integer labels must be >= 0, got {min(ids)}.")
    names = [str(i) for i in range(max(ids) + 1)] if class_names is None else list(class_names)
    if max(ids) >= len(names):
        raise ValueError(f"Label {max(ids)} has no class: class_names has {len(names)} names.")
    return FileIndex.build(path_list, ids), names
