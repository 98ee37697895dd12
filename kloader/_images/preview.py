"""`kloader.save_preview`: one batch as a contact sheet, to see what the model sees."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

_CELL_TARGET = 128  # small images are enlarged (by a whole factor) towards this size
_CELL_MAX = 256  # large images are shrunk to this size
_PAD = 4
_FONT_SIZE = 12
_BACKGROUND = (32, 32, 32)
_TEXT = (235, 235, 235)


def save_preview(
    loader: Any,
    path: str | os.PathLike[str],
    *,
    batch: int = 0,
    epoch: int | None = None,
    class_names: list[str] | None = None,
    max_images: int = 64,
) -> str:
    """Writes one batch as a PNG grid of images captioned with their class names.

    The batch is exactly what the model gets in that epoch: the same samples,
    with the loader's transform (augmentation) applied with the same random
    numbers, since both are pure functions of (seed, epoch, index). It is made
    in this process and does not move the loader's epoch.

    Float images in [0, 1] are shown times 255, images in [0, 255] as they
    are, anything else stretched from its minimum to its maximum; an
    ImageFolder's `rescale` is undone first. Labels may be class ids, one-hot
    rows or binary (N, 1) values.

    Args:
        loader: a `kloader.Loader` whose batches are `(images, labels, ...)` or
            `images`; or such a batch itself.
        path: the PNG file to write (missing parent folders are created).
        batch: which batch of the epoch.
        epoch: which epoch (default: the loader's current epoch).
        class_names: captions for label ids (default: the `class_names` of the
            loader's ImageFolder, if it has one).
        max_images: show at most this many images of the batch.

    Returns:
        The path written, as a string.

    Example:
        ```python
        train = kloader.Loader(folder, batch_size=32, seed=42, transform=augment)
        kloader.save_preview(train, "preview.png")  # batch 0 of the current epoch
        ```
    """
    source_indices = None
    rescale = None
    if hasattr(loader, "indices") and hasattr(loader, "batch"):
        source_indices = loader.indices(batch, epoch)
        data = loader.batch(batch, epoch)  # made here; the loader's cursor stays
        dataset = getattr(loader, "source", None)
        rescale = getattr(dataset, "rescale", None)
        if class_names is None:
            class_names = getattr(dataset, "class_names", None)
    else:
        data = loader
    images, labels = _images_and_labels(data)
    count = min(len(images), max_images)
    if count == 0:
        raise ValueError("The batch holds no images to preview.")
    pictures = _to_uint8(images[:count], rescale)
    captions = [
        _caption(
            None if labels is None else labels[i],
            class_names,
            None if source_indices is None else int(source_indices[i]),
        )
        for i in range(count)
    ]
    sheet = _contact_sheet(pictures, captions)
    target = os.fspath(path)
    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    sheet.save(target, format="PNG")
    return target


def _images_and_labels(data: Any) -> tuple[np.ndarray, np.ndarray | None]:
    if isinstance(data, dict):
        raise TypeError(
            "save_preview needs batches of images or (images, labels, ...); this batch is a dict "
            f"with keys {sorted(data, key=str)}. Pass the images batch instead."
        )
    if isinstance(data, (tuple, list)):
        images = np.asarray(data[0])
        labels = np.asarray(data[1]) if len(data) > 1 else None
    else:
        images, labels = np.asarray(data), None
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if images.ndim == 4 and images.shape[-1] not in (1, 3, 4) and images.shape[1] in (1, 3, 4):
        images = np.transpose(images, (0, 2, 3, 1))  # channels first
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"save_preview needs images of shape (N, height, width, channels) with 1, 3 or 4 "
            f"channels, got shape {images.shape}."
        )
    return images, labels


def _to_uint8(images: np.ndarray, rescale: float | None) -> np.ndarray:
    if images.dtype == np.uint8:
        return images
    values = images.astype(np.float64)
    if rescale:
        values = values / rescale
    low, high = float(np.min(values)), float(np.max(values))
    if low >= 0 and high <= 1:
        values = values * 255
    elif low < 0 or high > 255:
        values = (values - low) * (255 / max(high - low, 1e-12))
    return np.clip(np.round(values), 0, 255).astype(np.uint8)


def _caption(label: np.ndarray | None, class_names: list[str] | None, index: int | None) -> str:
    parts = []
    if label is not None:
        values = np.asarray(label).ravel()
        class_id = round(float(values[0])) if values.size == 1 else int(np.argmax(values))
        if class_names is not None and 0 <= class_id < len(class_names):
            parts.append(class_names[class_id])
        else:
            parts.append(str(class_id))
    if index is not None:
        parts.append(f"#{index}")
    return " ".join(parts)


def _contact_sheet(pictures: np.ndarray, captions: list[str]) -> Image.Image:
    height, width = pictures.shape[1:3]
    longest = max(height, width)
    scale = max(1, _CELL_TARGET // longest) if longest <= _CELL_MAX else _CELL_MAX / longest
    cell = (max(1, round(width * scale)), max(1, round(height * scale)))
    font = ImageFont.load_default(size=_FONT_SIZE)
    caption_height = _FONT_SIZE + 6
    columns = math.ceil(math.sqrt(len(pictures)))
    rows = math.ceil(len(pictures) / columns)
    sheet = Image.new(
        "RGB",
        (columns * (cell[0] + _PAD) + _PAD, rows * (cell[1] + caption_height + _PAD) + _PAD),
        _BACKGROUND,
    )
    draw = ImageDraw.Draw(sheet)
    for i, (picture, caption) in enumerate(zip(pictures, captions)):
        left = _PAD + (i % columns) * (cell[0] + _PAD)
        top = _PAD + (i // columns) * (cell[1] + caption_height + _PAD)
        tile = _tile(picture).resize(cell, Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.BOX)
        sheet.paste(tile, (left, top))
        draw.text(
            (left + 2, top + cell[1] + 2), _fit(draw, caption, font, cell[0] - 4), fill=_TEXT, font=font
        )
    return sheet


def _tile(picture: np.ndarray) -> Image.Image:
    if picture.shape[-1] == 1:
        return Image.fromarray(picture[:, :, 0]).convert("RGB")
    if picture.shape[-1] == 3:
        return Image.fromarray(picture)
    # RGBA: show transparency over a checkerboard.
    rgba = Image.fromarray(picture)
    y, x = np.mgrid[0 : picture.shape[0], 0 : picture.shape[1]]
    checks = np.where(((y // 8 + x // 8) % 2)[..., None] == 0, 200, 140).astype(np.uint8)
    board = Image.fromarray(np.repeat(checks, 3, axis=2)).convert("RGBA")
    return Image.alpha_composite(board, rgba).convert("RGB")


def _fit(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"
