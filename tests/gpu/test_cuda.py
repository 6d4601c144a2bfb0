"""The CUDA paths of the engine, measured against independent CPU references (skipped without a GPU).

Feed-forward methods run under bf16 autocast on CUDA, so they are compared with the fp32 references within
a few 8-bit levels (the figures are recorded); Gatys runs in exact fp32 there and must be reproducible.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from stylecore.engine import Engine, Request
from stylecore.options import StyleOptions
from tests.conftest import make_photo, make_texture
from tests.feedforward.conftest import (adain_decoder_state, adain_encoder_state, johnson_state, ref_johnson,
                                        ref_style_transfer, to_input)
from tests.gpu.conftest import DEVICE, level_diff

CUDA = DEVICE == "cuda"
# bf16 autocast on CUDA against fp32 references: mean and 99th-percentile level differences allowed.
MEAN_LEVELS, P99_LEVELS = (2.5, 12) if CUDA else (0.5, 1)
cuda_only = pytest.mark.skipif(not CUDA, reason="needs a CUDA device (real out-of-memory errors)")


def _engine(w, device=DEVICE) -> Engine:
    return Engine(encoder=w["vgg_normalised"], decoder=w["decoder"], model=w["johnson"], device=device, progress=False)


def _req(content, styles=(), method="adain", key="k", weights=None, mask=None, **opts) -> Request:
    return Request(content, list(styles), [], weights, method,  # style cache keyed by pixel hashes
                   StyleOptions.make(size=0, **opts), key, mask)


def _one(engine, req) -> Image.Image:
    res = engine.stylize_batch([req])[0]
    assert res.error is None, res.error
    return res.image


def _check_close(record, name, out, ref):
    d = level_diff(out, ref)
    record(name, mean_levels=d.mean(), p99_levels=np.percentile(d, 99), max_levels=d.max())
    assert d.mean() <= MEAN_LEVELS and np.percentile(d, 99) <= P99_LEVELS, (d.mean(), np.percentile(d, 99))


@pytest.mark.parametrize("method", ["adain", "johnson"])
def test_outputs_match_the_independent_references(gpu_weights, record, method):
    engine = _engine(gpu_weights)
    content, style = make_photo(192, 128, seed=3), make_texture(96, seed=2)
    if method == "adain":
        out = _one(engine, _req(content, [style]))
        ref = ref_style_transfer(adain_encoder_state(), adain_decoder_state(), to_input(content), to_input(style))
    else:
        out = _one(engine, _req(content, method="johnson"))
        ref = ref_johnson(johnson_state(), np.asarray(content))
    _check_close(record, f"{method} vs reference", out, ref)


@pytest.mark.parametrize("method", ["adain", "johnson"])
def test_a_batch_gives_the_pixels_of_single_images(gpu_weights, record, method):
    engine = _engine(gpu_weights)
    style = make_texture(96, seed=1)
    reqs = [_req(make_photo(160, 120, seed=i), [style] if method == "adain" else [], method, f"c{i}") for i in range(8)]
    engine.max_batch = 8
    batched = engine.stylize_batch(reqs)
    engine.max_batch = 1
    single = engine.stylize_batch(reqs)
    assert all(r.error is None for r in batched + single)
    d = np.stack([level_diff(a.image, b.image) for a, b in zip(batched, single)])
    record(f"{method} batch 8 vs batch 1", mean_levels=d.mean(), max_levels=d.max())
    assert d.mean() <= (0.5 if CUDA else 0.0) and d.max() <= (16 if CUDA else 1)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device (the engine uses the fused forms only there)")
@pytest.mark.parametrize("forms", ["fused", "fused+borders", "fused+cudnn", "fused+cudnn+borders"])
@pytest.mark.parametrize("method", ["adain", "johnson"])
def test_fused_layer_forms_give_the_default_forms_pixels(gpu_weights, record, forms, method):
    """The fused CUDA forms (stylecore.fused_layers; cuDNN's conv+bias+ReLU with ``cudnn``) against the default
    forms, on a batch of 8, and against the fp32 reference on one image."""
    from stylecore import fused_layers

    style = make_texture(96, seed=1)
    reqs = [_req(make_photo(160, 128, seed=i), [style] if method == "adain" else [], method, f"c{i}") for i in range(8)]
    outs = {}
    for name in ("fast+pads", forms):
        engine = Engine(encoder=gpu_weights["vgg_normalised"], decoder=gpu_weights["decoder"],
                        model=gpu_weights["johnson"], device=DEVICE, progress=False, cuda_layers=name)
        res = engine.stylize_batch(reqs)
        assert all(r.error is None for r in res), [r.error for r in res if r.error]
        outs[name] = [r.image for r in res]
    record(f"{method} {forms}: cuDNN fused call", failure=fused_layers._cudnn_failure or "none")
    assert fused_layers._cudnn_failure is None, fused_layers._cudnn_failure
    d = np.stack([level_diff(a, b) for a, b in zip(outs[forms], outs["fast+pads"])])
    record(f"{method} {forms} vs fast+pads", mean_levels=d.mean(), p99_levels=np.percentile(d, 99), max_levels=d.max())
    # both run bf16 with other rounding orders (no bias before the norms, batched statistics): the bounds of the
    # comparisons with the fp32 reference; the figures are recorded
    assert d.mean() <= MEAN_LEVELS and np.percentile(d, 99) <= P99_LEVELS
    content = reqs[0].content
    if method == "adain":
        ref = ref_style_transfer(adain_encoder_state(), adain_decoder_state(), to_input(content), to_input(style))
    else:
        ref = ref_johnson(johnson_state(), np.asarray(content))
    _check_close(record, f"{method} {forms} vs reference", outs[forms][0], ref)


def test_each_style_is_encoded_once_on_the_device(gpu_weights):
    engine = _engine(gpu_weights)
    shapes = []
    engine.adain_encoder.register_forward_hook(lambda m, inp, out: shapes.append(tuple(inp[0].shape)))
    styles = [make_texture(80, seed=1), make_texture(80, seed=2)]
    reqs = [_req(make_photo(96, 64, seed=i), [s], key=f"{i}{j}") for i in range(6) for j, s in enumerate(styles)]
    assert all(r.error is None for r in engine.stylize_batch(reqs) + engine.stylize_batch(reqs[:4]))
    assert len([s for s in shapes if s[-2:] == (80, 80)]) == 2
    assert sum(s[0] for s in shapes if s[-2:] == (64, 96)) == 16
    assert all(str(p.device).startswith(DEVICE) for p in engine.adain_encoder.parameters())


CASES = {
    "alpha 0.4": dict(alpha=0.4),
    "preserve_color": dict(preserve_color=True),
    "style weights": dict(weights=[0.7, 0.3], two=True),
    "mask": dict(mask=True, two=True),
    "johnson preserve_color": dict(method="johnson", preserve_color=True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_options_on_the_device_match_the_cpu_engine(gpu_weights, record, case):
    spec = dict(CASES[case])
    method = spec.pop("method", "adain")
    styles = [make_texture(96, seed=1)] + ([make_texture(96, seed=5)] if spec.pop("two", False) else [])
    content = make_photo(160, 112, seed=4)
    mask = None
    if spec.pop("mask", False):
        mask = Image.new("L", content.size, 0)
        mask.paste(255, (0, 0, content.size[0] // 2, content.size[1]))
    weights = spec.pop("weights", None)
    req = _req(content, styles if method == "adain" else [], method, weights=weights, mask=mask, **spec)
    out, cpu = _one(_engine(gpu_weights), req), _one(_engine(gpu_weights, "cpu"), req)
    _check_close(record, f"{case}: device vs cpu engine", out, cpu)


def test_tiled_output_is_close_to_untiled(gpu_weights, record):
    engine = _engine(gpu_weights)
    content, style = make_photo(512, 384, seed=6), make_texture(128, seed=3)
    whole = _one(engine, _req(content, [style]))
    tiled = _one(engine, _req(content, [style], tile_size=256))
    d = level_diff(whole, tiled)
    record("adain tiled (256) vs untiled at 512x384", mean_levels=d.mean(), max_levels=d.max())
    assert d.mean() <= 2.0


def _limit_memory(extra_bytes: int) -> None:
    """Cap the caching allocator at what is allocated now plus ``extra_bytes``."""
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, (torch.cuda.memory_allocated() + extra_bytes) / total))


def _peak_of(fn) -> int:
    """Peak bytes allocated beyond the current allocation while ``fn`` runs."""
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


@cuda_only
def test_a_real_out_of_memory_error_splits_the_batch(gpu_weights, record):
    engine = _engine(gpu_weights)
    style = make_texture(128, seed=2)
    reqs = [_req(make_photo(768, 512, seed=i), [style], key=str(i)) for i in range(16)]
    expected = engine.stylize_batch(reqs)  # no limit: one batch of 16
    assert engine.oom_splits == 0
    engine.max_batch = 1
    one = _peak_of(lambda: engine.stylize_batch(reqs[:1]))
    engine.max_batch = 16
    try:
        _limit_memory(4 * one)
        got = engine.stylize_batch(reqs)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    record("oom split", single_peak_mb=one / 2**20, splits=engine.oom_splits)
    assert engine.oom_splits >= 2 and all(r.error is None for r in got)
    d = np.stack([level_diff(a.image, b.image) for a, b in zip(got, expected)])
    assert d.mean() <= 0.5 and d.max() <= 16


@cuda_only
def test_a_real_out_of_memory_error_on_one_image_falls_back_to_tiles(gpu_weights, record):
    engine = _engine(gpu_weights)
    content, style = make_photo(2048, 1536, seed=7), make_texture(128, seed=2)
    req = _req(content, [style])
    _one(engine, req)  # the style statistics are cached now
    peak = _peak_of(lambda: _one(engine, req))
    whole = _one(engine, req)
    try:
        _limit_memory(peak // 3)
        tiled = _one(engine, req)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    d = level_diff(whole, tiled)
    record("oom -> tiles at 2048x1536", whole_peak_mb=peak / 2**20, mean_levels=d.mean(), max_levels=d.max())
    assert d.mean() <= 2.0


def test_gatys_is_reproducible_on_the_device_and_the_loss_falls(record):
    content, style = make_photo(64, 48, seed=1), make_texture(64, seed=3)
    runs = {}
    for device in dict.fromkeys([DEVICE, "cpu"]):
        engine = Engine(encoder="random:0", device=device, progress=False)
        outs, losses = [], []
        for _ in range(2):
            losses = []
            outs.append(engine.stylize(content, style, method="gatys", size=0, steps=30, seed=7,
                                       callback=lambda s: losses.append(s.loss)))
        assert np.array_equal(np.asarray(outs[0]), np.asarray(outs[1])), f"gatys not reproducible on {device}"
        assert losses[-1] < 0.5 * losses[0], losses
        runs[device] = (outs[0], losses)
    d = level_diff(runs[DEVICE][0], runs["cpu"][0])
    record("gatys 30 steps", device_final_loss=runs[DEVICE][1][-1], cpu_final_loss=runs["cpu"][1][-1],
           mean_levels_vs_cpu=d.mean())
    assert math.isfinite(runs[DEVICE][1][-1])


def test_training_steps_on_the_device(tmp_path, record):
    from stylecore.training.adain import AdaINTrainConfig, train_adain
    from stylecore.training.johnson import JohnsonTrainConfig, train_johnson

    content, style = tmp_path / "content", tmp_path / "style"
    content.mkdir()
    style.mkdir()
    for i in range(4):
        make_photo(64, 48, seed=i).save(content / f"p{i}.png")
    make_texture(64, seed=1).save(style / "t1.png")
    j = train_johnson(JohnsonTrainConfig(str(content), str(style / "t1.png"), str(tmp_path / "j"), loss_network="random:0",
                                         steps=12, batch_size=2, crop=32, log_every=1, workers=1, device=DEVICE), on_log=None)
    a = train_adain(AdaINTrainConfig(str(content), str(style), str(tmp_path / "a"), encoder="random:0", steps=16,
                                     batch_size=2, crop=32, load_size=48, log_every=1, workers=1, device=DEVICE), on_log=None)
    for name, result in (("johnson", j), ("adain", a)):
        totals = [float(r["total"]) for r in result.rows]
        record(f"{name} training", first=totals[0], last=totals[-1])
        assert sum(totals[-3:]) / 3 < 0.8 * sum(totals[:3]) / 3, totals
    img = Engine(model=str(j.weights), device="cpu", progress=False).stylize(content / "p0.png", method="johnson", size=0)
    assert img.size == (64, 48) and np.asarray(img).std() > 1


def test_quality_metrics_do_not_depend_on_the_device(record):
    from stylecore.quality import QualityEvaluator

    content, style = make_photo(128, 96, seed=2), make_texture(96, seed=4)
    output = Image.blend(content, make_texture(128, seed=4).resize(content.size), 0.5)
    rows = {d: QualityEvaluator("random:0", device=d).evaluate(content, [style], output) for d in dict.fromkeys([DEVICE, "cpu"])}
    worst = 0.0
    for k, v in rows["cpu"].items():
        if isinstance(v, float) and math.isfinite(v):
            rel = abs(rows[DEVICE][k] - v) / max(abs(v), 1e-6)
            worst = max(worst, rel)
            record(f"quality {k}", cpu=v, on_device=rows[DEVICE][k], rel_diff=rel)
    assert worst <= 1e-3, worst
