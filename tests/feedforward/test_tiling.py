"""Tiling: tile plans, seam blending, tiled vs untiled outputs, bounded network inputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from stylecore.tiling import Blender, blend_weights, plan_tiles
from tests.conftest import make_photo, make_texture


@pytest.mark.parametrize("h,w,tile,overlap,align", [(203, 150, 64, 32, 8), (4000, 6000, 1024, 128, 8), (97, 61, 64, 16, 4)])
def test_tiles_cover_the_image_and_own_disjoint_blocks(h, w, tile, overlap, align):
    tiles = plan_tiles(h, w, tile, overlap, align)
    owned = np.zeros((h, w), np.int32) if h * w < 1e6 else None
    for t in tiles:
        assert t.y0 % align == 0 and t.x0 % align == 0
        assert t.y1 - t.y0 < tile + align and t.x1 - t.x0 < tile + align
        assert t.y0 <= t.oy0 < t.oy1 <= t.y1 and t.x0 <= t.ox0 < t.ox1 <= t.x1
        assert t.oy0 % align == 0 and t.ox0 % align == 0  # owned blocks are whole feature cells
        if owned is not None:
            owned[t.oy0:t.oy1, t.ox0:t.ox1] += 1
    if owned is not None:
        assert (owned == 1).all()
    if h * w < 1e6:  # blend weights: a partition of unity where at most two tiles overlap per axis, never 0
        total, cy, cx = torch.zeros(h, w), torch.zeros(h), torch.zeros(w)
        for t in tiles:
            total[t.y0:t.y1, t.x0:t.x1] += blend_weights(t, tiles)
        for y0, y1 in {(t.y0, t.y1) for t in tiles}:
            cy[y0:y1] += 1
        for x0, x1 in {(t.x0, t.x1) for t in tiles}:
            cx[x0:x1] += 1
        two = (cy[:, None] <= 2) & (cx[None, :] <= 2)
        assert total.min() > 0.4 and two.float().mean() > 0.5
        assert torch.allclose(total[two], torch.ones(h, w)[two], atol=1e-5)


def test_blender_reassembles_a_smooth_image_exactly():
    h, w = 150, 203
    img = torch.rand(3, h, w)
    tiles = plan_tiles(h, w, 64, 32, 8)
    b = Blender(h, w, tiles)
    for t in tiles:
        b.add(t, img[:, t.y0:t.y1, t.x0:t.x1])
    out = b.result()
    assert out.shape == (h, w, 3) and out.dtype == torch.uint8
    assert (out.permute(2, 0, 1).int() - img.mul(255).round().int()).abs().max() <= 1


def _watch(module, seen):
    return module.register_forward_hook(lambda m, inp, out: seen.append(tuple(inp[0].shape[-2:])))


def _seam_ratio(img: np.ndarray, cuts: list[int]) -> float:
    """Mean horizontal-gradient magnitude at the given columns relative to the image's mean (1 = no seam)."""
    g = np.abs(np.diff(img.astype(float), axis=1)).mean(axis=(0, 2))
    return float(np.mean([g[c - 1] for c in cuts]) / g.mean())


def test_adain_tiled_matches_untiled(ff_engine):
    content, style = make_photo(224, 160, seed=2), make_texture(64, seed=3)
    whole = np.asarray(ff_engine.stylize(content, style, method="adain", size=0, style_size=64), float)
    seen = []
    hook = _watch(ff_engine.adain_encoder, seen)
    try:
        tiled = np.asarray(ff_engine.stylize(content, style, method="adain", size=0, style_size=64, tile_size=96), float)
    finally:
        hook.remove()
    assert max(max(s) for s in seen) <= 96 + 8  # the network never saw the whole image
    assert len(seen) == 6  # 3x2 tiles once each (features kept for the second pass; the style is cached)
    d = np.abs(tiled - whole)
    assert whole.std() > 10
    assert d.mean() < 2.0 and np.percentile(d, 99) < 25, (d.mean(), np.percentile(d, 99))
    tiles = plan_tiles(160, 224, 96, 32, 8)
    cuts = sorted({t.x0 for t in tiles if t.x0} | {t.x1 for t in tiles if t.x1 < 224})
    assert _seam_ratio(tiled.astype(np.uint8), cuts) < 1.5 * max(1.0, _seam_ratio(whole.astype(np.uint8), cuts))


def test_johnson_tiled_is_close_to_untiled(ff_engine):
    content = make_photo(224, 160, seed=4)
    whole = np.asarray(ff_engine.stylize(content, method="johnson", size=0), float)
    seen = []
    hook = _watch(ff_engine.model.conv1, seen)
    try:
        tiled = np.asarray(ff_engine.stylize(content, method="johnson", size=0, tile_size=128), float)
    finally:
        hook.remove()
    # tiles (+ conv1's reflection padding), and the statistics pass over the image downscaled to a tile's pixels
    assert max(h * w for h, w in seen) <= (128 + 4 + 8) ** 2
    d = np.abs(tiled - whole)
    assert whole.std() > 10
    # InstanceNorm statistics come from a downscaled whole-image pass: a small global shift, no seams
    assert d.mean() < 15, d.mean()
    tiles = plan_tiles(160, 224, 128, 32, 4)
    cuts = sorted({t.x0 for t in tiles if t.x0} | {t.x1 for t in tiles if t.x1 < 224})
    assert _seam_ratio(tiled.astype(np.uint8), cuts) < 1.5 * max(1.0, _seam_ratio(whole.astype(np.uint8), cuts))


def test_a_long_strip_tiles_with_johnson(ff_weights):
    """Johnson's whole-image norm statistics come from a pass over the image downscaled to the tile size: a 3000x12
    strip went down to 4 rows, too few for the 9x9 convolution's reflection pad, while untiled it ran."""
    from stylecore.engine import Engine

    engine = Engine(model=ff_weights["johnson"], device="cpu")
    strip = make_photo(3000, 12, seed=5)
    tiled = engine.stylize(strip, method="johnson", size=0, tile_size=1024)
    whole = engine.stylize(strip, method="johnson", size=0, tile_size=4096)
    assert tiled.size == whole.size == (3000, 12)
    assert np.abs(np.asarray(tiled, dtype=int) - np.asarray(whole, dtype=int)).mean() < 12


def test_style_statistics_cached_from_tiles_are_not_reused_untiled(ff_weights):
    """A large style encoded in tiles (a request's small tile_size) gives slightly different statistics; the cache
    keeps them apart, so a later request's output does not depend on the requests before it."""
    from stylecore.engine import Engine, Request
    from stylecore.options import StyleOptions

    def engine():
        return Engine(encoder=ff_weights["vgg_normalised"], decoder=ff_weights["decoder"], device="cpu")

    style, content = make_texture(160, seed=3), make_photo(48, 40, seed=1)
    small_tiles = Request(content, [style], ["s3://styles/big.png"], None, "adain", StyleOptions.make(size=0, tile_size=64))
    default = Request(content, [style], ["s3://styles/big.png"], None, "adain", StyleOptions.make(size=0))
    warm = engine()
    after = warm.stylize_batch([small_tiles, default])[1].image
    fresh = engine().stylize_batch([default])[0].image
    assert warm.style_cache.misses == 2
    assert np.array_equal(np.asarray(after), np.asarray(fresh))
