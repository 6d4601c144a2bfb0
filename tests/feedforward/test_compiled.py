"""The compiled feed-forward graphs (stylecore.ff_graphs): torch.compile's capture of the whole batch must
give the eager engine's pixels, across batch and image sizes, and a failing compiler must fall back.

Inductor's code generation takes about a minute per network on these 2-core machines, so the tests here
use torch.compile's ``eager`` backend (the same graph capture, without code generation); tests/gpu runs
the real compiler on CUDA against the independent references.
"""
from __future__ import annotations

import logging

import numpy as np
import pytest

from stylecore.engine import Engine, Request
from stylecore.errors import OptionsError
from stylecore.ff_graphs import COMPILE_ENV, DYNAMIC_ENV, compile_mode
from stylecore.options import StyleOptions
from tests.conftest import make_photo, make_texture


def _engine(ff_weights, mode: str) -> Engine:
    return Engine(encoder=ff_weights["vgg_normalised"], decoder=ff_weights["decoder"], model=ff_weights["johnson"],
                  device="cpu", compile=mode)


def _requests(method: str, size, n: int, seed: int = 0):
    styles = [make_texture(40, seed=1), make_texture(40, seed=2)]
    reqs = []
    for i in range(n):
        opts = StyleOptions.make(size=0, alpha=0.6 if i % 3 == 1 else 1.0)
        reqs.append(Request(make_photo(*size, seed=seed + i), [styles[i % 2]] if method == "adain" else [],
                            [f"style{i % 2}"], None, method, opts, f"k{i}"))
    return reqs


def _pixels(results) -> list[np.ndarray]:
    assert all(r.error is None for r in results), [r.error for r in results]
    return [np.asarray(r.image) for r in results]


@pytest.mark.parametrize("method", ["adain", "johnson"])
def test_the_captured_graph_gives_the_eager_pixels_for_every_size(ff_weights, method):
    eager, compiled = _engine(ff_weights, "off"), _engine(ff_weights, "eager")
    # a batch of 3, then another image size with a batch of 2 (one graph, compiled with dynamic shapes)
    for size, n, seed in [((48, 40), 3, 0), ((56, 32), 2, 10)]:
        reqs = _requests(method, size, n, seed)
        want, got = _pixels(eager.stylize_batch(reqs)), _pixels(compiled.stylize_batch(reqs))
        assert [g.shape for g in got] == [(size[1], size[0], 3)] * n
        diff = np.abs(np.stack(want).astype(int) - np.stack(got).astype(int))
        # Under capture the Winograd convolutions and Johnson's instance norms take their plain forms, which
        # round differently from the eager CPU forms: at most one level, rarely.
        assert diff.max() <= 1 and diff.mean() < 0.05
    graph = next(iter(compiled._graphs.values()))
    assert graph.compiled is not None and graph.failure is None  # it really ran compiled


def test_a_failing_compiler_falls_back_to_the_eager_modules(ff_weights, caplog):
    engine = _engine(ff_weights, "eager")
    reqs = _requests("johnson", (40, 32), 2)
    want = _pixels(_engine(ff_weights, "off").stylize_batch(reqs))
    graph = engine._graph("johnson")
    calls = []

    def broken(*args):
        calls.append(args)
        raise RuntimeError("InductorError: no working C compiler\nlong compiler log ...")

    graph.compiled = broken
    with caplog.at_level(logging.WARNING, logger="stylecore.ff_graphs"):
        got = _pixels(engine.stylize_batch(reqs))
        again = _pixels(engine.stylize_batch(reqs))
    assert all(np.array_equal(a, b) for a, b in zip(want + want, got + again))  # the eager modules' own pixels
    assert len(calls) == 1 and graph.compiled is None  # tried once, then eager for good
    assert graph.failure == "RuntimeError: InductorError: no working C compiler"
    assert [r.message for r in caplog.records].count(
        "torch.compile of JohnsonGraph failed, running eagerly from now on: "
        "RuntimeError: InductorError: no working C compiler") == 1


def test_compile_mode_comes_from_the_argument_or_the_environment(monkeypatch):
    monkeypatch.delenv(COMPILE_ENV, raising=False)
    assert compile_mode() == "off"
    monkeypatch.setenv(COMPILE_ENV, "reduce-overhead")
    assert compile_mode() == "reduce-overhead"
    assert compile_mode("on") == "default" and compile_mode("0") == "off"
    monkeypatch.setenv(COMPILE_ENV, "fastest")
    with pytest.raises(OptionsError, match="compile mode 'fastest': expected one of off, default, reduce-overhead"):
        Engine(encoder="random:0", device="cpu")


@pytest.mark.parametrize("dynamic, graphs", [("1", 1), ("0", 2)])
def test_static_compilation_captures_one_graph_per_shape(ff_weights, monkeypatch, dynamic, graphs):
    import torch
    from torch._dynamo.utils import counters

    monkeypatch.setenv(DYNAMIC_ENV, dynamic)
    torch._dynamo.reset()
    counters.clear()
    eager, compiled = _engine(ff_weights, "off"), _engine(ff_weights, "eager")
    for size, seed in [((48, 40), 0), ((56, 32), 10)]:  # two shapes, batches of 2
        reqs = _requests("johnson", size, 2, seed)
        want, got = _pixels(eager.stylize_batch(reqs)), _pixels(compiled.stylize_batch(reqs))
        assert np.abs(np.stack(want).astype(int) - np.stack(got).astype(int)).max() <= 1
    assert counters["stats"]["unique_graphs"] == graphs
    assert next(iter(compiled._graphs.values())).failure is None


def test_the_dynamic_setting_is_checked_when_the_engine_is_made(monkeypatch):
    monkeypatch.setenv(DYNAMIC_ENV, "sometimes")
    with pytest.raises(OptionsError, match="STYLECORE_COMPILE_DYNAMIC='sometimes': expected 1"):
        Engine(encoder="random:0", device="cpu", compile="default")
    Engine(encoder="random:0", device="cpu", compile="off")  # not compiling: the setting is not read
