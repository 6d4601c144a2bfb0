"""Generate the demo's style images (procedural, so they carry no licence terms).

    python examples/make_styles.py   # writes examples/styles/{waves,mosaic,strokes}.png
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

OUT = Path(__file__).parent / "styles"
SIZE = 256


def waves(rng: np.random.Generator) -> Image.Image:
    """Warped sinusoidal colour bands in a warm/cool palette."""
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    warp = 0.15 * np.sin(6 * math.pi * y + 1.3) + 0.1 * np.sin(4 * math.pi * x)
    t = np.sin(2 * math.pi * (5 * (x + warp) + 2 * y))
    palette = np.array([[230, 57, 70], [241, 196, 15], [29, 53, 87], [69, 123, 157], [244, 162, 97]], float)
    idx = (t + 1) / 2 * (len(palette) - 1)
    lo = np.floor(idx).astype(int)
    hi = np.minimum(lo + 1, len(palette) - 1)
    f = (idx - lo)[..., None]
    img = palette[lo] * (1 - f) + palette[hi] * f
    img += rng.normal(0, 6, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def mosaic(rng: np.random.Generator) -> Image.Image:
    """Voronoi tiles in bright colours with dark grout, like a stained-glass window."""
    n = 90
    pts = rng.uniform(0, SIZE, (n, 2))
    colors = rng.choice(np.array([[214, 40, 40], [247, 127, 0], [252, 191, 73], [0, 119, 182], [42, 157, 143],
                                  [106, 76, 147], [233, 196, 106]]), n)
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    d = (x[..., None] - pts[:, 0]) ** 2 + (y[..., None] - pts[:, 1]) ** 2
    order = np.argsort(d, axis=-1)
    nearest, second = order[..., 0], order[..., 1]
    d1 = np.take_along_axis(d, nearest[..., None], -1)[..., 0] ** 0.5
    d2 = np.take_along_axis(d, second[..., None], -1)[..., 0] ** 0.5
    img = colors[nearest].astype(float)
    img[(d2 - d1) < 2.2] = (40, 30, 30)
    return Image.fromarray(img.astype(np.uint8)).filter(ImageFilter.SMOOTH)


def strokes(rng: np.random.Generator) -> Image.Image:
    """Thousands of short oriented brush strokes over a blue-green field, loosely impressionist."""
    img = Image.new("RGB", (SIZE, SIZE), (40, 80, 140))
    draw = ImageDraw.Draw(img)
    palette = [(25, 60, 130), (60, 120, 190), (240, 200, 60), (250, 240, 200), (30, 120, 110), (200, 90, 40)]
    for _ in range(2600):
        x, y = rng.uniform(0, SIZE, 2)
        angle = math.sin(x / 30) + math.cos(y / 25) + rng.normal(0, 0.2)
        length = rng.uniform(6, 14)
        dx, dy = math.cos(angle) * length, math.sin(angle) * length
        color = palette[int(rng.integers(len(palette)))]
        jitter = tuple(int(np.clip(c + rng.normal(0, 12), 0, 255)) for c in color)
        draw.line([(x - dx, y - dy), (x + dx, y + dy)], fill=jitter, width=int(rng.integers(2, 5)))
    return img.filter(ImageFilter.SMOOTH_MORE)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for i, fn in enumerate((waves, mosaic, strokes)):
        path = OUT / f"{fn.__name__}.png"
        fn(np.random.default_rng(1000 + i)).save(path)
        print(path)


if __name__ == "__main__":
    main()
