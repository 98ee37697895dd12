"""The affine warp behind every geometric augmentation, in NumPy.

`warp(image, matrix, ...)` maps each output pixel back into the input
(inverse mapping): output pixel (x, y) — x the column, y the row — takes the
input value at `matrix @ (x, y, 1)`. Points outside the image are read from the
image extended to the whole plane by `fill_mode`, with Keras's meanings:

    constant  k k k k | a b c d | k k k k   (k = fill_value)
    nearest   a a a a | a b c d | d d d d
    reflect   d c b a | a b c d | d c b a
    wrap      a b c d | a b c d | a b c d

and then interpolated ("bilinear": the four neighbours, "nearest": the
closest). The extension is done with lookup tables over the range of rows and
columns actually read (plus one fill row and column for "constant"), so any
shift, however large, costs the same.

The work goes in chunks of output pixels, in per-thread scratch arrays, with
in-place arithmetic over (pixels, channels) rows and the weights repeated per
channel: NumPy broadcasts slowly along a short last axis, and freshly
allocated temporaries cost page faults on every call. Every step is
elementwise IEEE arithmetic or integer indexing, so the result is a pure
function of the inputs: bit for bit the same in any process.
"""

from __future__ import annotations

import math
import threading

import numpy as np

FILL_MODES = ("constant", "nearest", "reflect", "wrap")
INTERPOLATIONS = ("bilinear", "nearest")

# A 2x3 matrix, row-major: x_in = a*x + b*y + c, y_in = d*x + e*y + f.
Matrix = tuple[float, float, float, float, float, float]
IDENTITY: Matrix = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def check_fill_mode(fill_mode: object) -> str:
    if fill_mode not in FILL_MODES:
        raise ValueError(
            f"`fill_mode` must be one of {FILL_MODES}, got {fill_mode!r}. ImageDataGenerator's "
            'default is "nearest"; use "constant" with fill_value=... for a solid border.'
        )
    return str(fill_mode)


def check_interpolation(interpolation: object) -> str:
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"`interpolation` must be one of {INTERPOLATIONS}, got {interpolation!r}.")
    return str(interpolation)


def sampling_matrix(
    height: int,
    width: int,
    *,
    rotation: float = 0.0,
    shear: float = 0.0,
    zoom: tuple[float, float] = (1.0, 1.0),
    shift: tuple[float, float] = (0.0, 0.0),
) -> Matrix:
    """The inverse map of an image transformed about its centre, as ImageDataGenerator composes it.

    `rotation` and `shear` are in degrees, counter-clockwise as displayed.
    `zoom` = (zx, zy) is ImageDataGenerator's factor: the output spans zx times
    the input's width (zx > 1 zooms out). `shift` = (dx, dy) moves the content
    right / down by that many pixels. Sampling matrix: rotation @ shear @ zoom.
    """
    theta, phi = math.radians(rotation), math.radians(shear)
    cos_t, sin_t = math.cos(theta), math.sin(theta)
    zx, zy = zoom
    # rotation [[cos, -sin], [sin, cos]] @ shear [[1, -sin(phi)], [0, cos(phi)]] @ diag(zx, zy)
    s00, s01 = 1.0, -math.sin(phi)
    s11 = math.cos(phi)
    a = cos_t * s00 * zx
    b = (cos_t * s01 - sin_t * s11) * zy
    d = sin_t * s00 * zx
    e = (sin_t * s01 + cos_t * s11) * zy
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    # x_in - cx = A @ (x_out - cx - dx, y_out - cy - dy)
    ox, oy = cx + shift[0], cy + shift[1]
    return (a, b, cx - a * ox - b * oy, d, e, cy - d * ox - e * oy)


def _index_table(lo: int, hi: int, size: int, fill_mode: str) -> np.ndarray:
    """Where indices lo..hi (inclusive) read from in an axis of `size`; `size` is the fill slot."""
    index = np.arange(lo, hi + 1, dtype=np.intp)
    if fill_mode == "constant":
        return np.where((index >= 0) & (index < size), index, size)
    if fill_mode == "nearest":
        return np.clip(index, 0, size - 1)
    if fill_mode == "wrap":
        return np.mod(index, size)
    folded = np.mod(index, 2 * size)  # reflect: period 2*size, mirrored in the second half
    return np.where(folded >= size, 2 * size - 1 - folded, folded)


def _pixels(image: np.ndarray, fill_mode: str, fill_value: float, scratch: _Scratch) -> np.ndarray:
    """The image as (pixels, channels); with a fill row and column appended for "constant"."""
    height, width, channels = image.shape
    if fill_mode != "constant":
        return np.ascontiguousarray(image).reshape(-1, channels)
    padded = scratch.padded((height + 1, width + 1, channels), image.dtype)
    padded[:height, :width] = image
    padded[height, :] = fill_value
    padded[:, width] = fill_value
    return padded.reshape(-1, channels)


class _Scratch:
    """Arrays for one chunk of output pixels, reused call after call, one set per thread.

    Fresh temporaries of this size are handed back to the OS and faulted in
    again on every call, which can cost more than the arithmetic.
    """

    def __init__(self, size: int) -> None:
        self.size = size  # output pixels per chunk
        self.x, self.y, self.floor_x, self.floor_y = (np.empty(size, np.float32) for _ in range(4))
        self.x0, self.y0, self.row0, self.row1, self.column0, self.column1 = (
            np.empty(size, np.intp) for _ in range(6)
        )
        self._values: dict[tuple[int, np.dtype, np.dtype], tuple[np.ndarray, ...]] = {}
        self._padded = np.empty((0, 0, 0))

    def padded(self, shape: tuple[int, int, int], dtype: np.dtype) -> np.ndarray:
        """An uninitialised array for the padded image, kept for the next image of this shape."""
        if self._padded.shape != shape or self._padded.dtype != dtype:
            self._padded = np.empty(shape, dtype)
        return self._padded

    def values(self, channels: int, source: np.dtype, work: np.dtype) -> tuple[np.ndarray, ...]:
        """(raw, top, bottom, other, dx, dy): (chunk, channels) arrays, raw of `source`, the rest of `work`."""
        key = (channels, source, work)
        values = self._values.get(key)
        if values is None:
            if len(self._values) >= 4:
                self._values.clear()
            raw = np.empty((self.size, channels), source)
            values = (raw, *(np.empty((self.size, channels), work) for _ in range(5)))
            self._values[key] = values
        return values


_CHUNK = 16384  # output pixels per step (or one row, if wider): bounds the scratch memory
_local = threading.local()


def _scratch(size: int) -> _Scratch:
    """This thread's scratch arrays for chunks of `size` output pixels."""
    scratch: _Scratch | None = getattr(_local, "scratch", None)
    if scratch is None or scratch.size != size:
        scratch = _local.scratch = _Scratch(size)
    return scratch


def warp(
    image: np.ndarray,
    matrix: Matrix,
    *,
    interpolation: str = "bilinear",
    fill_mode: str = "nearest",
    fill_value: float = 0.0,
) -> np.ndarray:
    """Warps an HxWxC image by the inverse map `matrix`; same shape and dtype.

    Integer images are interpolated in float32 (float64 images in float64) and
    rounded to the nearest integer; `fill_value` is clipped to the dtype's range.
    """
    height, width, channels = image.shape
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        fill_value = float(np.clip(np.rint(fill_value), info.min, info.max))
    grid = _Grid(matrix, height, width, interpolation == "nearest")
    step = max(1, _CHUNK // width)  # rows per chunk
    scratch = _scratch(max(_CHUNK, width))
    pixels = _pixels(image, fill_mode, fill_value, scratch)
    columns = _index_table(grid.x_lo, grid.x_hi + 1, width, fill_mode)
    rows = _index_table(grid.y_lo, grid.y_hi + 1, height, fill_mode)
    rows *= width + 1 if fill_mode == "constant" else width
    work = np.dtype(np.float64 if image.dtype == np.float64 else np.float32)
    values = scratch.values(channels, image.dtype, work)
    # C order whatever the input's layout, so that flat_out is a view of out.
    out = np.empty(image.shape, image.dtype)
    flat_out = out.reshape(-1, channels)
    for first in range(0, height, step):
        last = min(height, first + step)
        n = (last - first) * width
        grid.fill(scratch, first, last)
        if interpolation == "nearest":
            np.take(columns, scratch.x0[:n], out=scratch.column0[:n], mode="clip")
            np.take(rows, scratch.y0[:n], out=scratch.row0[:n], mode="clip")
            index = np.add(scratch.row0[:n], scratch.column0[:n], out=scratch.x0[:n])
            np.take(pixels, index, axis=0, out=flat_out[first * width : last * width], mode="clip")
        else:
            result = _bilinear(scratch, values, pixels, rows, columns, n)
            np.copyto(flat_out[first * width : last * width], result, casting="unsafe")
    return out


class _Grid:
    """Source coordinates of the output pixels, chunk by chunk, always computed the same way."""

    def __init__(self, matrix: Matrix, height: int, width: int, nearest: bool):
        a, b, c, d, e, f = (np.float32(v) for v in matrix)
        columns = np.arange(width, dtype=np.float32)
        rows = np.arange(height, dtype=np.float32)
        # x_in = (a * column) + (b * row + c) in float32, whichever chunk the pixel is in;
        # "nearest" reads the pixel at floor(x_in + 0.5).
        half = np.float32(0.5 if nearest else 0.0)
        self.x_terms = (a * columns, b * rows + (c + half))
        self.y_terms = (d * columns, e * rows + (f + half))
        self.x_lo, self.x_hi = _floor_bounds(*self.x_terms)
        self.y_lo, self.y_hi = _floor_bounds(*self.y_terms)

    def fill(self, scratch: _Scratch, first: int, last: int) -> None:
        """Writes floor(x_in) - x_lo to scratch.x0 and x_in - floor(x_in) to scratch.x (same for y)."""
        n = (last - first) * len(self.x_terms[0])
        for terms, lo, value, floor, integer in (
            (self.x_terms, self.x_lo, scratch.x, scratch.floor_x, scratch.x0),
            (self.y_terms, self.y_lo, scratch.y, scratch.floor_y, scratch.y0),
        ):
            column_term, row_term = terms
            grid = value[:n].reshape(last - first, len(column_term))
            np.add(column_term[None, :], row_term[first:last, None], out=grid)
            np.floor(value[:n], out=floor[:n])
            value[:n] -= floor[:n]
            np.copyto(integer[:n], floor[:n], casting="unsafe")
            integer[:n] -= lo


def _floor_bounds(column_term: np.ndarray, row_term: np.ndarray) -> tuple[int, int]:
    # An affine map takes its extremes at the corners; one more on each side against rounding.
    corners = [float(column_term[i] + row_term[j]) for i in (0, -1) for j in (0, -1)]
    return math.floor(min(corners)) - 1, math.floor(max(corners)) + 1


def _bilinear(
    scratch: _Scratch,
    values: tuple[np.ndarray, ...],
    pixels: np.ndarray,
    rows: np.ndarray,
    columns: np.ndarray,
    n: int,
) -> np.ndarray:
    """Interpolates one chunk of n output pixels; `scratch` holds their coordinates."""
    x0, y0 = scratch.x0[:n], scratch.y0[:n]
    row0, row1 = scratch.row0[:n], scratch.row1[:n]
    column0, column1 = scratch.column0[:n], scratch.column1[:n]
    np.take(rows, y0, out=row0, mode="clip")
    np.take(rows[1:], y0, out=row1, mode="clip")
    np.take(columns, x0, out=column0, mode="clip")
    np.take(columns[1:], x0, out=column1, mode="clip")
    raw, top, bottom, other, dx, dy = (value[:n] for value in values)
    # The weights, repeated for every channel, so that the arithmetic below runs
    # over long contiguous rows instead of broadcasting along the short channel axis.
    for weights, fractions in ((dx, scratch.x[:n]), (dy, scratch.y[:n])):
        if weights.shape[1] <= 4:
            for channel in range(weights.shape[1]):
                weights[:, channel] = fractions  # faster than a broadcast along a short axis
        else:
            np.copyto(weights, fractions[:, None])
    index = x0  # free once the column indices are known

    def gather(row: np.ndarray, column: np.ndarray, into: np.ndarray) -> None:
        np.add(row, column, out=index)
        if raw.dtype == into.dtype:
            np.take(pixels, index, axis=0, out=into, mode="clip")
        else:
            np.take(pixels, index, axis=0, out=raw, mode="clip")
            np.copyto(into, raw)

    # top = v00 + (v01 - v00) * dx; bottom likewise; then top + (bottom - top) * dy.
    gather(row0, column0, top)
    gather(row0, column1, other)
    other -= top
    other *= dx
    top += other
    gather(row1, column0, bottom)
    gather(row1, column1, other)
    other -= bottom
    other *= dx
    bottom += other
    bottom -= top
    bottom *= dy
    top += bottom
    if np.issubdtype(pixels.dtype, np.integer):
        # A convex combination stays within its four values; rounding is all that is left.
        np.rint(top, out=top)
    return top
