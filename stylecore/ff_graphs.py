"""The common feed-forward batches as single modules, from uint8 pixels in to uint8 pixels out.

``AdaINGraph`` (encoder, AdaIN toward per-sample target statistics, decoder) and ``JohnsonGraph``
(TransformerNet) take a (B, 3, H, W) uint8 batch on the engine's device and return (B, H, W, 3) uint8
images, so that the input scaling, the output clamp/round and the layout change are part of the graph.
They run eagerly, or compiled end to end with ``torch.compile`` (``compile_graph``): on CUDA that fuses
the reflection pads, ReLUs, residual adds, upsampling and dtype casts between the convolutions into a
few generated kernels, and ``reduce-overhead`` also replays the whole batch as one CUDA graph. On an H200
that was slower than the eager modules except for Johnson at 256 px (docs/gpu.md), so it is off by default.

Requests with a mask, Johnson's preserve_color, and tiles keep the eager module path of
``stylecore.feedforward``.
"""
from __future__ import annotations

import contextlib
import logging
import os

import torch
from torch import nn

from .adain import blend_alpha, mean_std
from .errors import OptionsError

log = logging.getLogger(__name__)

# off: eager modules. default / reduce-overhead / max-autotune: torch.compile (inductor) with that mode.
# eager: torch.compile's graph capture without code generation (for tests of the compiled path on any machine).
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune", "eager")
COMPILE_ENV = "STYLECORE_COMPILE"
# 1 (default): batch and image sizes compiled as symbols, one graph for a whole job. 0: one graph per shape,
# with constant sizes (for jobs of one image size; torch recompiles up to its cache limit, then runs eagerly).
DYNAMIC_ENV = "STYLECORE_COMPILE_DYNAMIC"


_SWITCH_WORDS = {"0": False, "false": False, "no": False, "off": False, "1": True, "true": True, "yes": True,
                 "on": True}


def _setting(value: str | None, env: str, default: str) -> str:
    return (value if value is not None else os.environ.get(env, default)).strip().lower() or default


def compile_mode(value: str | None = None) -> str:
    """The compile mode: ``value``, else ``$STYLECORE_COMPILE``, else ``off``; an unknown name is an error."""
    mode = _setting(value, COMPILE_ENV, "off")
    if mode in _SWITCH_WORDS:
        mode = "default" if _SWITCH_WORDS[mode] else "off"
    if mode not in COMPILE_MODES:
        raise OptionsError(f"compile mode {mode!r}: expected one of {', '.join(COMPILE_MODES)}")
    return mode


def compile_dynamic(value: str | None = None) -> bool:
    """Whether compiled graphs take symbolic sizes: ``value``, else ``$STYLECORE_COMPILE_DYNAMIC``, else yes."""
    text = _setting(value, DYNAMIC_ENV, "1")
    if text not in _SWITCH_WORDS:
        raise OptionsError(f"{DYNAMIC_ENV}={text!r}: expected 1 (one graph for all sizes) or 0 (one per shape)")
    return _SWITCH_WORDS[text]


def _amp(device_type: str, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=dtype)


def to_uint8_hwc(y: torch.Tensor, scale: float) -> torch.Tensor:
    """(B, 3, H, W) float in [0, scale] -> (B, H, W, 3) uint8, rounded to the nearest level."""
    y = y.float().clamp(0.0, scale)
    if scale != 255.0:
        y = y.mul(255.0 / scale)
    return y.round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


class AdaINGraph(nn.Module):
    """uint8 contents (B,3,H,W), target mean/std (B,C) and alpha (B,) -> uint8 (B,H,W,3) AdaIN images."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, dtype: torch.dtype | None):
        super().__init__()
        self.encoder, self.decoder, self.dtype = encoder, decoder, dtype

    def forward(self, x: torch.Tensor, t_mean: torch.Tensor, t_std: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        with _amp(x.device.type, self.dtype):
            f = self.encoder(x.float().div(255.0))
            cf = f.float()
            cm, cs = mean_std(cf)
            feat = (cf - cm) / cs * t_std[..., None, None] + t_mean[..., None, None]
            y = self.decoder(blend_alpha(feat, cf, alpha.view(-1, 1, 1, 1)))
        return to_uint8_hwc(y[..., :h, :w], 1.0)


class JohnsonGraph(nn.Module):
    """uint8 contents (B,3,H,W) -> uint8 (B,H,W,3) through a TransformerNet (which works in [0, 255])."""

    def __init__(self, model: nn.Module, dtype: torch.dtype | None):
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        with _amp(x.device.type, self.dtype):
            y = self.model(x.float())
        return to_uint8_hwc(y[..., :h, :w], 255.0)


class FallbackGraph:
    """A compiled graph that falls back to its eager module, for good, if compiling or running it fails.

    Out-of-memory errors propagate (the engine splits the batch); any other failure of the compiled
    graph is logged once as a warning and the batch is recomputed eagerly.
    """

    def __init__(self, module: nn.Module, compiled, dynamic: bool = True):
        self.module, self.compiled, self.failure, self.dynamic = module, compiled, None, dynamic

    def __call__(self, *args):
        if self.compiled is not None:
            for t in args if self.dynamic else ():  # batch and image sizes vary from call to call; channels do not
                torch._dynamo.maybe_mark_dynamic(t, 0)
                if t.dim() == 4:
                    torch._dynamo.maybe_mark_dynamic(t, 2)
                    torch._dynamo.maybe_mark_dynamic(t, 3)
            try:
                return self.compiled(*args)
            except torch.cuda.OutOfMemoryError:
                raise
            except Exception as e:  # noqa: BLE001 - any compiler/runtime failure: use the eager module
                first = (str(e).strip().splitlines() or [""])[0][:300]
                self.failure = f"{type(e).__name__}: {first}"
                log.warning("torch.compile of %s failed, running eagerly from now on: %s",
                            type(self.module).__name__, self.failure)
                self.compiled = None
        return self.module(*args)


def compile_graph(module: nn.Module, mode: str) -> FallbackGraph:
    """``module`` wrapped for ``mode`` (see ``COMPILE_MODES``); it compiles on its first call.

    By default the batch and image sizes are compiled as dynamic (a job sees many), so one graph serves them
    all (batches of one, and sides that are not multiples of the network's scale, may add a variant);
    ``reduce-overhead`` still records one CUDA graph per shape. ``$STYLECORE_COMPILE_DYNAMIC=0`` compiles one
    graph per shape instead, with constant sizes (``compile_dynamic``).
    """
    if mode == "off":
        return FallbackGraph(module, None)
    dynamic = compile_dynamic()
    kwargs = {"backend": "eager"} if mode == "eager" else {"mode": mode}
    return FallbackGraph(module, torch.compile(module, dynamic=None if dynamic else False, **kwargs), dynamic)
