"""Batched inference: style statistics cache, batching parity, bad items, out-of-memory splitting."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from stylecore.engine import Engine, Request
from stylecore.errors import ImageError
from stylecore.feedforward import GPU_BATCH_PIXELS
from stylecore.options import StyleOptions
from tests.conftest import make_photo, make_texture


def _diff(a, b) -> int:
    return int(np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).max())


def _engine(ff_weights) -> Engine:
    return Engine(encoder=ff_weights["vgg_normalised"], decoder=ff_weights["decoder"], model=ff_weights["johnson"],
                  device="cpu")


def _requests(n_contents: int, styles, size=(64, 48), method="adain", **opts):
    options = StyleOptions.make(size=0, **opts)
    return [Request(make_photo(*size, seed=i), [s], [f"s3://styles/{j}.png"], None, method, options, f"c{i}-s{j}")
            for i in range(n_contents) for j, s in enumerate(styles)]


def test_each_style_is_encoded_once_across_calls(ff_weights):
    engine = _engine(ff_weights)
    calls = []
    engine.adain_encoder.register_forward_hook(lambda m, inp, out: calls.append(tuple(inp[0].shape)))
    styles = [make_texture(48, seed=1), make_texture(48, seed=2)]
    results = engine.stylize_batch(_requests(10, styles, size=(48, 32)))
    assert [r.key for r in results] == [f"c{i}-s{j}" for i in range(10) for j in range(2)]
    assert all(r.error is None and r.image.size == (48, 32) for r in results)
    style_calls = [c for c in calls if c[-2:] == (48, 48)]
    content_images = sum(c[0] for c in calls if c[-2:] == (32, 48))
    assert len(style_calls) == 2 and content_images == 20  # 2 style encodings, not 20
    assert max(c[0] for c in calls) > 1  # contents ran as batches
    engine.stylize_batch(_requests(3, styles, size=(48, 32)))
    assert len([c for c in calls if c[-2:] == (48, 48)]) == 2  # cached across calls
    assert engine.style_cache.misses == 2 and engine.style_cache.hits == 2 * 10 - 2 + 6
    # a batch gives the same pixels as one-at-a-time stylization
    single = engine.stylize(make_photo(48, 32, seed=4), styles[1], method="adain", size=0)
    assert _diff(results[9].image, single) <= 1


def test_bad_items_fail_alone_with_one_line_errors(ff_weights):
    engine = _engine(ff_weights)
    good = _requests(2, [make_texture(64, seed=1)])
    opts = StyleOptions.make(size=0)
    bad = [
        Request(make_photo(64, 48), [], [], None, "adain", opts, "no-style"),
        Request(make_photo(2, 2), [make_texture(64)], ["t"], None, "adain", opts, "tiny"),
        Request(make_photo(64, 48), [make_texture(64)], ["t"], None, "cubism", opts, "method"),
        Request(make_photo(64, 48), [make_texture(64)], ["t"], [1.0, 2.0], "adain", opts, "weights"),
    ]
    results = engine.stylize_batch([good[0], *bad, good[1]])
    by_key = {r.key: r for r in results}
    assert by_key["c0-s0"].image is not None and by_key["c1-s0"].image is not None
    for key in ("no-style", "tiny", "method", "weights"):
        r = by_key[key]
        assert r.image is None and r.error and "\n" not in r.error, (key, r.error)
    assert "needs at least one style" in by_key["no-style"].error
    assert "cubism" in by_key["method"].error
    assert "2 weights for 1 style" in by_key["weights"].error


def test_unusable_images_fail_their_item_with_a_reason_and_the_batch_goes_on(ff_weights):
    """An empty content, a non-image, images below a method's smallest side and a mask for a method without
    spatial control each fail their item alone (they used to raise out of the whole call, give a raw padding
    RuntimeError, or be silently ignored)."""
    from PIL import Image

    engine = _engine(ff_weights)
    opts = StyleOptions.make(size=0)
    style = make_texture(32, seed=1)
    items = {
        "empty-adain": Request(Image.new("RGB", (0, 0)), [style], ["t"], None, "adain", opts),
        "empty-johnson": Request(Image.new("RGB", (0, 0)), [], [], None, "johnson", opts),
        "none-johnson": Request(None, [], [], None, "johnson", opts),
        "strip-adain": Request(make_photo(200, 8), [style], ["t"], None, "adain", opts),
        "small-style": Request(make_photo(64, 48), [make_texture(8)], ["small"], None, "adain", opts),
        "tiny-johnson": Request(make_photo(4, 40), [], [], None, "johnson", opts),
        "mask-johnson": Request(make_photo(64, 48), [], [], None, "johnson", opts, mask=Image.new("L", (64, 48))),
        "mask-gatys": Request(make_photo(64, 48), [style], [], None, "gatys", opts, mask=Image.new("L", (64, 48))),
        "smallest-adain": Request(make_photo(9, 40), [style], ["t"], None, "adain", opts),
        "smallest-johnson": Request(make_photo(40, 5), [], [], None, "johnson", opts),
    }
    results = engine.stylize_batch([dataclasses.replace(r, key=k) for k, r in items.items()])
    by_key = {r.key: r for r in results}
    assert by_key["empty-adain"].error == "content: empty image (0x0 px)"
    assert by_key["empty-johnson"].error == "content: empty image (0x0 px)"
    assert by_key["none-johnson"].error == "content: expected a decoded PIL image, got NoneType"
    assert by_key["strip-adain"].error == "content: 200x8 px is too small for method adain (at least 9 px per side)"
    assert by_key["small-style"].error == "style 1: 8x8 px is too small for method adain (at least 9 px per side)"
    assert by_key["tiny-johnson"].error == "content: 4x40 px is too small for method johnson (at least 5 px per side)"
    for key in ("mask-johnson", "mask-gatys"):
        assert by_key[key].error == f"mask: spatial control is available for method adain, not {key[5:]}"
    assert by_key["smallest-adain"].image.size == (9, 40) and by_key["smallest-johnson"].image.size == (40, 5)
    assert np.isfinite(np.asarray(by_key["smallest-adain"].image, dtype=float)).all()


def test_too_small_errors_name_the_file_and_the_resizing(ff_weights, tmp_path):
    """``stylize`` names the file in too-small errors, and says when --size, --style-size or the content's long
    side made it that small."""
    engine = _engine(ff_weights)
    c, tiny, s = str(tmp_path / "c.png"), str(tmp_path / "tiny.png"), str(tmp_path / "s.png")
    make_photo(64, 48).save(c)
    make_photo(7, 3).save(tiny)
    make_texture(40).save(s)
    cases = [
        ((tiny, s), dict(method="adain", size=0), f"{tiny}: 7x3 px is too small for method adain (at least 9 px per side)"),
        ((c, s), dict(method="adain", size=8),
         f"{c} (resized by --size 8): 8x6 px is too small for method adain (at least 9 px per side)"),
        ((c, [s, s]), dict(method="adain", size=0, style_size=8),
         f"{s} (resized by --style-size 8): 8x8 px is too small for method adain (at least 9 px per side)"),
        ((tiny,), dict(method="johnson", size=0), f"{tiny}: 7x3 px is too small for method johnson (at least 5 px per side)"),
    ]
    for args, kw, message in cases:
        with pytest.raises(ImageError) as ei:
            engine.stylize(*args, **kw)
        assert str(ei.value) == message
    # a style resized to a small content's long side: content 12x9 is fine, the 40x10 style becomes 12x3
    make_photo(40, 10).save(tmp_path / "wide.png")
    with pytest.raises(ImageError) as ei:
        engine.stylize(c, [s, str(tmp_path / "wide.png")], method="adain", size=12)
    assert str(ei.value) == (f"{tmp_path / 'wide.png'} (resized to the content's long side, 12 px): 12x3 px is too small "
                             f"for method adain (at least 9 px per side)")


def test_palette_and_transparent_images_are_read_as_stylize_reads_them(ff_weights):
    """Two palette styles with the same indices and different palettes are different styles (the cache key hashed
    only the indices), and a transparent content is composited on white in a batch as in ``stylize``."""
    from PIL import Image

    from stylecore.images import to_rgb

    engine = _engine(ff_weights)
    opts = StyleOptions.make(size=0)
    a = make_texture(32, seed=1).quantize(8)
    b = a.copy()
    b.putpalette([255 - v for v in a.getpalette()])
    content = make_photo(48, 40, seed=2)
    first, second = engine.stylize_batch([Request(content, [s], [], None, "adain", opts) for s in (a, b)])
    fresh = _engine(ff_weights).stylize_batch([Request(content, [b], [], None, "adain", opts)])[0]
    assert engine.style_cache.misses == 2 and _diff(second.image, fresh.image) <= 1 and _diff(first.image, second.image) > 10
    rgba = make_photo(48, 40, seed=3).convert("RGBA")
    alpha = Image.new("L", rgba.size, 255)
    alpha.paste(0, (0, 0, 24, 40))  # left half transparent
    rgba.putalpha(alpha)
    for method, styles in (("johnson", []), ("adain", [make_texture(48, seed=4)])):  # stylize: style at 48 px too
        batch = engine.stylize_batch([Request(rgba, styles, [], None, method, opts)])[0].image
        single = engine.stylize(rgba, styles, method=method, size=0)
        plain = engine.stylize(to_rgb(rgba), styles, method=method, size=0)
        assert _diff(batch, single) <= 1
        assert _diff(batch, plain) <= 1


def test_missing_networks_fail_items_not_the_call(ff_weights):
    engine = Engine(encoder=ff_weights["vgg_normalised"], device="cpu")
    reqs = _requests(1, [make_texture(64)]) + [Request(make_photo(), [], [], None, "johnson", StyleOptions.make(size=0), "j")]
    results = engine.stylize_batch(reqs)
    assert "needs a decoder" in results[0].error and "--decoder" in results[0].error
    assert "needs a model" in results[1].error and "--model" in results[1].error


class OOMAbove(nn.Module):
    """Wraps a network; raises CUDA's out-of-memory error for batches above ``max_batch`` or feature maps above ``max_cells``."""

    def __init__(self, inner: nn.Module, max_batch: int = 1 << 30, max_cells: int = 1 << 30):
        super().__init__()
        self.inner, self.max_batch, self.max_cells, self.seen = inner, max_batch, max_cells, []

    def forward(self, x):
        self.seen.append(tuple(x.shape))
        if x.shape[0] > self.max_batch or x.shape[-1] * x.shape[-2] > self.max_cells:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.inner(x)


def test_out_of_memory_splits_the_batch(ff_weights):
    engine = _engine(ff_weights)
    reqs = _requests(8, [make_texture(32, seed=3)], size=(32, 24))
    expected = engine.stylize_batch(reqs)
    engine._decoder = OOMAbove(engine.decoder, max_batch=2)
    results = engine.stylize_batch(reqs)
    assert all(r.error is None for r in results)
    assert [s[0] for s in engine._decoder.seen] == [8, 4, 2, 2, 4, 2, 2]
    assert engine.oom_splits == 3
    assert max(_diff(a.image, b.image) for a, b in zip(results, expected)) <= 1


def test_the_failed_attempt_is_freed_before_the_retry(ff_weights):
    """A retry inside the except block would keep the failed batch's activations alive (real OOMs then cascade)."""
    import weakref

    engine = _engine(ff_weights)
    inner, alive = engine.decoder, []

    class Pinning(nn.Module):
        def forward(self, x):
            activation = torch.empty(x.shape[0], 1 << 16)  # stands in for the failed attempt's activations
            alive.append(weakref.ref(activation))
            if x.shape[0] > 2:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            assert all(ref() is None for ref in alive[:-1]), "an earlier attempt's tensors are still referenced"
            return inner(x)

    engine._decoder = Pinning()
    results = engine.stylize_batch(_requests(8, [make_texture(32, seed=3)], size=(32, 24)))
    assert all(r.error is None for r in results), results[0].error
    assert engine.oom_splits == 3


def test_out_of_memory_on_one_image_retries_as_tiles(ff_weights):
    engine = _engine(ff_weights)
    content, style = make_photo(112, 64, seed=5), make_texture(64, seed=6)
    tiled = engine.stylize(content, style, method="adain", size=0, style_size=64, tile_size=64)
    whole = engine.stylize(content, style, method="adain", size=0, style_size=64)
    engine._decoder = OOMAbove(engine.decoder, max_cells=8 * 8)  # only 64-pixel tiles fit
    out = engine.stylize(content, style, method="adain", size=0, style_size=64)
    assert _diff(out, tiled) == 0
    assert np.abs(np.asarray(out, float) - np.asarray(whole, float)).mean() < 4
    engine._decoder.max_cells = 1  # nothing fits: a clear error, not a crash
    r = engine.stylize_batch([Request(content, [style], ["s"], None, "adain", StyleOptions.make(size=0, style_size=64), "k")])[0]
    assert r.image is None and "out of memory" in r.error and "\n" not in r.error


def test_cpu_forward_passes_hold_at_most_batch_pixels(ff_weights):
    engine = _engine(ff_weights)
    sizes = []
    engine.model.register_forward_hook(lambda m, inp, out: sizes.append(inp[0].shape[0]))
    opts = StyleOptions.make(size=0)
    reqs = [Request(make_photo(32, 24, seed=i), [], [], None, "johnson", opts, f"j{i}") for i in range(6)]
    whole = engine.stylize_batch(reqs)
    assert sizes == [6]  # small images still batch on the CPU
    engine.batch_pixels = 2 * 32 * 24 + 1
    sizes.clear()
    parts = engine.stylize_batch(reqs)
    assert sizes == [2, 2, 2]
    assert max(_diff(a.image, b.image) for a, b in zip(whole, parts)) <= 1
    engine.batch_pixels = 1  # larger than the budget: one image per pass, never zero
    sizes.clear()
    engine.stylize_batch(reqs[:2])
    assert sizes == [1, 1]


def test_batch_limit_holds_max_batch_images_and_batch_pixels(ff_weights):
    engine = _engine(ff_weights)
    assert engine.batch_limit((256, 256)) == 1 and engine.batch_limit((64, 64)) == 16  # the CPU's 256² budget
    engine.batch_pixels = GPU_BATCH_PIXELS  # the GPUs' default budget
    assert [engine.batch_limit((s, s)) for s in (128, 256, 512, 1024, 4000)] == [64, 64, 16, 4, 1]
    engine.max_batch = 8
    assert engine.batch_limit((256, 256)) == 8
