"""Overlapping tiles for feed-forward inference on images larger than a memory budget.

Tiles start on multiples of the network's stride (8 for AdaIN, 4 for Johnson), so every tile's
feature grid lines up with the whole image's. Each tile also *owns* a disjoint block of the image
(cut in the middle of each overlap) for streaming whole-image statistics, and is blended into the
output with raised-cosine ramps across the overlaps (weight 1 at the image border), so seams vanish.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Tile:
    """A tile ``[y0:y1, x0:x1]`` of the image and the block ``[oy0:oy1, ox0:ox1]`` it owns."""

    y0: int
    y1: int
    x0: int
    x1: int
    oy0: int
    oy1: int
    ox0: int
    ox1: int


def _spans(length: int, tile: int, overlap: int, align: int) -> list[tuple[int, int, int, int]]:
    """1-D tiles as (start, end, own_start, own_end); starts are multiples of ``align``."""
    if length <= tile:
        return [(0, length, 0, length)]
    n = math.ceil((length - overlap) / (tile - overlap))
    last = ((length - tile) // align) * align
    starts = sorted({min(last, (round(i * last / (n - 1)) // align) * align) for i in range(n)})
    spans = [(s, min(s + tile, length)) for s in starts]
    spans[-1] = (spans[-1][0], length)  # the aligned last tile may be up to align-1 pixels longer
    cuts = [0]
    for (a0, a1), (b0, _) in zip(spans, spans[1:]):
        cuts.append(max(b0, min(a1, ((a1 + b0) // 2 // align) * align)))
    cuts.append(length)
    return [(s, e, cuts[i], cuts[i + 1]) for i, (s, e) in enumerate(spans)]


def plan_tiles(height: int, width: int, tile: int, overlap: int, align: int) -> list[Tile]:
    """Tiles of at most ``tile``×``tile`` pixels covering the image, overlapping by about ``overlap``."""
    if tile <= overlap or tile % align or overlap % align:
        raise ValueError(f"tile {tile} and overlap {overlap} must be multiples of {align} with tile > overlap")
    return [Tile(y0, y1, x0, x1, oy0, oy1, ox0, ox1)
            for (y0, y1, oy0, oy1) in _spans(height, tile, overlap, align)
            for (x0, x1, ox0, ox1) in _spans(width, tile, overlap, align)]


def default_overlap(tile: int, align: int) -> int:
    """Overlap for a tile size: a quarter of the tile, between 32 and 128 pixels, a multiple of ``align``."""
    return max(align, (max(32, min(128, tile // 4)) // align) * align)


def _ramp(n: int, lead: int, trail: int) -> torch.Tensor:
    """1-D weights: raised-cosine rise over ``lead`` pixels, flat, fall over ``trail`` pixels (never 0)."""
    w = torch.ones(n)
    if lead > 0:
        t = (torch.arange(lead, dtype=torch.float32) + 0.5) / lead
        w[:lead] = 0.5 - 0.5 * torch.cos(math.pi * t)
    if trail > 0:
        t = (torch.arange(trail, dtype=torch.float32) + 0.5) / trail
        w[n - trail:] = torch.minimum(w[n - trail:], (0.5 - 0.5 * torch.cos(math.pi * t)).flip(0))
    return w


def blend_weights(tile: Tile, tiles: list[Tile]) -> torch.Tensor:
    """(h, w) blend weights of ``tile``: ramps across its overlaps with neighbouring tiles only."""
    top = max((t.y1 - tile.y0 for t in tiles if t.y0 < tile.y0 < t.y1 and t.x0 == tile.x0), default=0)
    bottom = max((tile.y1 - t.y0 for t in tiles if tile.y0 < t.y0 < tile.y1 and t.x0 == tile.x0), default=0)
    left = max((t.x1 - tile.x0 for t in tiles if t.x0 < tile.x0 < t.x1 and t.y0 == tile.y0), default=0)
    right = max((tile.x1 - t.x0 for t in tiles if tile.x0 < t.x0 < tile.x1 and t.y0 == tile.y0), default=0)
    wy = _ramp(tile.y1 - tile.y0, top, bottom)
    wx = _ramp(tile.x1 - tile.x0, left, right)
    return wy[:, None] * wx[None, :]


class Blender:
    """Accumulates weighted tile outputs into a (3, H, W) float32 canvas on the CPU."""

    def __init__(self, height: int, width: int, tiles: list[Tile]):
        self.tiles = tiles
        self.acc = torch.zeros(3, height, width)
        self.wsum = torch.zeros(1, height, width)

    def add(self, tile: Tile, out: torch.Tensor) -> None:
        """Add a tile's output (3, h, w), already cropped to the tile's extent."""
        w = blend_weights(tile, self.tiles)
        self.acc[:, tile.y0:tile.y1, tile.x0:tile.x1].addcmul_(out.float().cpu(), w)
        self.wsum[:, tile.y0:tile.y1, tile.x0:tile.x1] += w

    def result(self) -> torch.Tensor:
        """The blended image as (H, W, 3) uint8, rounded to the nearest level; the canvas is consumed in place."""
        self.acc.div_(self.wsum).clamp_(0, 1).mul_(255).round_()
        del self.wsum
        return self.acc.to(torch.uint8).permute(1, 2, 0)
