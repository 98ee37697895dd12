"""The per-sample work the other loaders run, as a user would write it (no framework imports).

Worker processes import the module that defines their dataset; keeping this
module free of Keras, TensorFlow, JAX and torch imports keeps every worker of
every loader under test light. (The same advice holds for your own scripts:
define datasets and transforms in a small module, and import frameworks inside
the functions that need them.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

BATCH_SIZE = 64
IMAGE_SIZE = (160, 160)  # height, width


def list_images(root: str | Path) -> tuple[list[str], np.ndarray]:
    """Paths (sorted) and int32 labels of an image folder with one subfolder per class."""
    classes = sorted(p.name for p in Path(root).iterdir() if p.is_dir())
    paths, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((Path(root) / name).glob("*.jpg")):
            paths.append(str(path))
            labels.append(label)
    return paths, np.array(labels, dtype=np.int32)


def load_image(path: str, size: tuple[int, int] = IMAGE_SIZE, draft: bool = False) -> np.ndarray:
    """Decode, resize (bilinear) to `size` and return float32 0..255; `draft`: Pillow's draft mode."""
    with Image.open(path) as image:
        if draft:
            image.draft("RGB", (size[1], size[0]))  # the largest 1/2, 1/4, 1/8 scale still >= size
        if image.mode != "RGB":  # convert() copies even when the mode is already right
            image = image.convert("RGB")
        image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32)


def random_flip(image: np.ndarray) -> np.ndarray:
    return image[:, ::-1] if np.random.random() < 0.5 else image


class FolderSamples:
    """Map-style dataset: sample i is (decoded, resized, randomly flipped image, label)."""

    def __init__(self, root: str | Path, draft: bool = False, size: tuple[int, int] = IMAGE_SIZE):
        self.paths, self.labels = list_images(root)
        self.draft = draft
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.int32]:
        image = load_image(self.paths[index], size=self.size, draft=self.draft)
        return np.ascontiguousarray(random_flip(image)), self.labels[index]
