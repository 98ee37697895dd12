"""JPEG draft decoding: speed and quality against a full decode, and the cost of the skip scan.

    python benchmarks/decode_draft.py            (about 10 seconds)

Writes photo-like synthetic JPEGs (smooth shading, sharp-edged shapes, fine
texture and sensor noise; quality 90) at a few sizes, then for a few targets
decodes each file (a) in full and (b) with `fast_decode` (libjpeg DCT scaling
at 1/2, 1/4 or 1/8 before the same final resize). Reports the time per image,
the speed-up, the scale that was used, and the difference between the two
outputs: mean absolute difference in 0..255 levels, and PSNR in dB. Also times
`check` (what `on_error="skip"` runs once per file at construction).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from kloader._images import decode

SOURCE_SIZES = [(4032, 3024), (2048, 1536), (1024, 768), (500, 375)]
TARGETS = [(224, 224), (128, 128), (64, 64)]


def photo_like(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """Shading, edges, texture at many frequencies, and noise: what makes resizing hard."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.zeros((height, width, 3), np.float32)
    for channel in range(3):
        base = 128 + 60 * np.sin(x / width * rng.uniform(1, 4) + rng.uniform(0, 6))
        base += 40 * np.cos(y / height * rng.uniform(1, 4) + rng.uniform(0, 6))
        for period in (3.0, 7.0, 19.0):  # fine texture in pixels of the source
            phase = rng.uniform(0, 6)
            base += 12 * np.sin((x * rng.uniform(0.5, 1) + y * rng.uniform(0.5, 1)) / period + phase)
        image[:, :, channel] = base
    image += rng.normal(0, 6, size=image.shape)
    picture = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for _ in range(30):
        x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
        w, h = rng.uniform(0.02, 0.3) * width, rng.uniform(0.02, 0.3) * height
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x0 + w, y0 + h), fill=color)
        else:
            draw.rectangle((x0, y0, x0 + w, y0 + h), outline=color, width=max(1, int(width / 400)))
    return picture


def timed(function, repeats: int) -> tuple[float, np.ndarray]:
    best = float("inf")
    result = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3, help="images per source size")
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats (best is kept)")
    parser.add_argument("--interpolation", default="bilinear")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as directory:
        files = {}
        for width, height in SOURCE_SIZES:
            files[(width, height)] = []
            for i in range(args.images):
                path = Path(directory) / f"{width}x{height}_{i}.jpg"
                photo_like(width, height, rng).save(path, quality=90)
                files[(width, height)].append(str(path))
        print(f"margin {decode.DRAFT_MARGIN}, interpolation {args.interpolation}, best of {args.repeats}")
        print(
            f"{'source':>10} {'target':>8} {'scale':>5} {'full ms':>8} {'draft ms':>8} {'speed-up':>8} "
            f"{'mean|d|':>8} {'PSNR dB':>8}"
        )
        for source, paths in files.items():
            for target in TARGETS:
                full = decode.DecodeSpec(target, interpolation=args.interpolation, fast_decode=False)
                fast = decode.DecodeSpec(target, interpolation=args.interpolation, fast_decode=True)
                t_full, t_fast, diffs, psnrs = 0.0, 0.0, [], []
                for path in paths:
                    tf, a = timed(lambda p=path, s=full: decode.decode(p, s), args.repeats)
                    tq, b = timed(lambda p=path, s=fast: decode.decode(p, s), args.repeats)
                    t_full, t_fast = t_full + tf, t_fast + tq
                    diffs.append(float(np.mean(np.abs(a - b))))
                    psnrs.append(psnr(a, b))
                with Image.open(paths[0]) as image:
                    scale = decode.draft_scale(image.size, 1, fast)
                n = len(paths)
                print(
                    f"{'x'.join(map(str, source)):>10} {'x'.join(map(str, target)):>8} {'1/' + str(scale):>5} "
                    f"{1000 * t_full / n:8.1f} {1000 * t_fast / n:8.1f} {t_full / t_fast:7.1f}x "
                    f"{np.mean(diffs):8.2f} {np.mean(psnrs):8.1f}"
                )
        spec = decode.DecodeSpec((224, 224))
        for source, paths in files.items():
            elapsed, _ = timed(lambda ps=paths: [decode.check(p, spec) for p in ps], args.repeats)
            print(
                f"skip-scan check, {'x'.join(map(str, source))} JPEG: {1000 * elapsed / len(paths):.1f} ms per file"
            )
        png = Path(directory) / "one.png"
        Image.open(files[(1024, 768)][0]).save(png)
        elapsed, _ = timed(lambda: decode.check(str(png), spec), args.repeats)
        print(f"skip-scan check, 1024x768 PNG: {1000 * elapsed:.1f} ms per file")


if __name__ == "__main__":
    main()
