"""Procedural content images for training without a photo collection (deterministic for a seed).

Each scene is a two-tone gradient "sky" over a "ground", with shaded ellipses, polygons, lines and
fine noise, then a mild blur: smooth regions, hard edges and a range of scales, like simple photos.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def _color(rng: np.random.Generator) -> tuple[int, int, int]:
    base = rng.uniform(0, 1, 3)
    sat = rng.uniform(0.1, 0.8)
    rgb = (base * sat + base.mean() * (1 - sat)) * rng.uniform(0.3, 1.0) * 255
    return tuple(int(v) for v in np.clip(rgb, 0, 255))


def scene(seed: int, size: int = 256) -> Image.Image:
    """One procedural RGB scene of ``size``×``size`` pixels."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    top, bottom, ground = (np.array(_color(rng), float) for _ in range(3))
    horizon = rng.uniform(0.35, 0.8) + 0.08 * np.sin(2 * np.pi * (x * rng.uniform(0.5, 2) + rng.uniform()))
    sky = top * (1 - y[..., None]) + bottom * y[..., None]
    img = np.where((y < horizon)[..., None], sky, ground * (0.7 + 0.3 * y[..., None]))
    img += rng.normal(0, rng.uniform(2, 10), img.shape)
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for _ in range(int(rng.integers(3, 12))):
        kind = rng.integers(0, 3)
        cx, cy = rng.uniform(0, size, 2)
        r = rng.uniform(0.04, 0.3) * size
        fill = _color(rng)
        if kind == 0:
            aspect = rng.uniform(0.4, 1.6)
            for k in range(6, 0, -1):  # concentric rings: a crude shading
                f = k / 6
                shade = tuple(int(c * (0.6 + 0.4 * (1 - f))) for c in fill)
                draw.ellipse([cx - r * f, cy - r * f * aspect, cx + r * f, cy + r * f * aspect], fill=shade)
        elif kind == 1:
            n = int(rng.integers(3, 7))
            ang = np.sort(rng.uniform(0, 2 * np.pi, n))
            pts = [(cx + r * np.cos(a) * rng.uniform(0.6, 1), cy + r * np.sin(a) * rng.uniform(0.6, 1)) for a in ang]
            draw.polygon(pts, fill=fill, outline=_color(rng))
        else:
            for _ in range(int(rng.integers(1, 5))):
                x1, y1 = rng.uniform(0, size, 2)
                draw.line([(cx, cy), (x1, y1)], fill=fill, width=int(rng.integers(1, 6)))
    return pil.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.5))))


def write_scenes(folder: str | Path, count: int, *, seed: int = 0, size: int = 256) -> list[Path]:
    """Write ``count`` scenes as PNGs into ``folder`` (seeds seed..seed+count-1)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        p = folder / f"scene_{seed + i:05d}.png"
        scene(seed + i, size).save(p)
        paths.append(p)
    return paths
