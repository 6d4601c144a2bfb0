"""The compiled feed-forward graphs on CUDA (torch.compile with inductor), against the independent fp32
references and the eager engine, for an aligned and an unaligned image size in one call.

With GPU_TEST_DEVICE=cpu this dry-runs with torch.compile's ``eager`` backend (inductor's CPU code
generation takes minutes on small machines).
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from stylecore.engine import Engine, Request
from stylecore.options import StyleOptions
from tests.conftest import make_photo, make_texture
from tests.feedforward.conftest import (adain_decoder_state, adain_encoder_state, johnson_state, ref_johnson,
                                        ref_style_transfer, to_input)
from tests.gpu.conftest import DEVICE, level_diff

CUDA = DEVICE == "cuda"
MODE = "default" if CUDA else "eager"
MEAN_LEVELS, P99_LEVELS = (2.5, 12) if CUDA else (0.5, 1)


def _engine(w, mode: str) -> Engine:
    return Engine(encoder=w["vgg_normalised"], decoder=w["decoder"], model=w["johnson"], device=DEVICE,
                  progress=False, compile=mode)


@pytest.mark.parametrize("method", ["adain", "johnson"])
def test_compiled_graphs_match_the_references_and_the_eager_engine(gpu_weights, record, method):
    style = make_texture(64, seed=2)
    reqs = []
    for size, n in [((64, 64), 16), ((62, 46), 5)]:  # sides aligned to the networks' scale, then not
        for i in range(n):
            reqs.append(Request(make_photo(*size, seed=len(reqs)), [style] if method == "adain" else [], ["style"],
                                None, method, StyleOptions.make(size=0, alpha=0.5 if i == 1 else 1.0),
                                f"{size}-{i}"))
    compiled, eager = _engine(gpu_weights, MODE), _engine(gpu_weights, "off")
    t0 = time.perf_counter()
    got = compiled.stylize_batch(reqs)
    first_s = time.perf_counter() - t0
    want = eager.stylize_batch(reqs)
    assert all(r.error is None for r in got + want), [r.error for r in got + want if r.error]
    graph = compiled._graph(method)
    assert graph.compiled is not None and graph.failure is None  # it ran compiled, not the fallback
    d_eager = np.concatenate([level_diff(a.image, b.image).ravel() for a, b in zip(got, want)])
    refs = []
    for k in (0, len(reqs) - 1):  # an aligned and an unaligned image against the fp32 reference computation
        c = reqs[k].content
        ref = (ref_style_transfer(adain_encoder_state(), adain_decoder_state(), to_input(c), to_input(style))
               if method == "adain" else ref_johnson(johnson_state(), np.asarray(c)))
        refs.append(level_diff(got[k].image, np.asarray(ref)[:c.height, :c.width]).ravel())  # decoder pads to ×8
    d_ref = np.concatenate(refs)
    record(f"{method} compiled ({MODE}) vs eager", mean_levels=d_eager.mean(), p99_levels=np.percentile(d_eager, 99),
           max_levels=d_eager.max(), first_call_s=first_s)
    record(f"{method} compiled ({MODE}) vs reference", mean_levels=d_ref.mean(), p99_levels=np.percentile(d_ref, 99))
    assert d_eager.mean() <= MEAN_LEVELS and np.percentile(d_eager, 99) <= P99_LEVELS
    assert d_ref.mean() <= MEAN_LEVELS and np.percentile(d_ref, 99) <= P99_LEVELS
