"""Batched feed-forward inference for the ``adain`` and ``johnson`` methods (mixed into ``Engine``).

* Requests are prepared one by one (a bad item fails alone), then images of the same size and method
  run in forward passes of up to ``max_batch`` images and ``batch_pixels`` pixels (``batch_limit``); on a
  CUDA out-of-memory error a batch is split in halves and retried, and a single image that still does not
  fit is retried as smaller tiles.
* Each distinct style is encoded once per engine: its relu4_1 mean/std are cached, keyed by the
  request's style key (or a hash of its pixels), its size and the encoder spec.
* ``torch.inference_mode`` and channels_last; on CUDA bf16/fp16 autocast (AdaIN statistics stay fp32);
  fp32 on the CPU.
* Images whose longer side exceeds the tile size run as overlapping tiles (``stylecore.tiling``).
  AdaIN tiles use whole-image content statistics, accumulated over the tiles in a first pass; Johnson
  tiles normalise with InstanceNorm statistics from one pass over the image downscaled to the tile size.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from PIL import Image

from .adain import SCALE as ADAIN_SCALE, Stats, StatsAccumulator, adain_features, feature_labels, mask_labels, mean_std
from .color import combine_luminance, match_color_covariance
from .device import amp_dtype, autocast
from .errors import ImageError, OptionsError, StyleCoreError
from .fast_layers import channels_last_pads
from .ff_graphs import AdaINGraph, JohnsonGraph, compile_graph, to_uint8_hwc
from .johnson import SCALE as JOHNSON_SCALE, instance_norm_stats
from .options import MIN_TILE, StyleOptions, normalise_weights, parse_style_weights
from .style_cache import image_digest
from .tiling import Blender, default_overlap, plan_tiles

OOM = torch.cuda.OutOfMemoryError
# channels_last on every device for the feed-forward nets: tensor cores on CUDA, and oneDNN's NHWC
# convolutions measured 10-15% faster than NCHW on the CPU too.
FF_MEMORY_FORMAT = torch.channels_last
# Layer forms (stylecore.fast_layers): on the CPU the exact faster forms; on CUDA those plus layout-keeping
# reflection pads. STYLECORE_CUDA_LAYERS picks the CUDA forms (for measurement), words joined by "+": plain,
# fast, pads, fused (stylecore.fused_layers: conv+ReLU modules, batched instance norms, no bias before a norm;
# implies fast+pads), cudnn (fused, with cuDNN's one-call conv+bias+ReLU) and borders (fused, with 3×3 convs
# that apply their reflection pads by recomputing border strips). The default, fused+cudnn, against fast+pads on
# an H200 in one process (bench/results/2026-12-04-h200): AdaIN 1.11-1.34x faster (256 px batch 64: 2162 vs
# 1769 img/s; 512 px batch 16: 730 vs 544), Johnson 1.26-2.06x (256 px batch 64: 2752 vs 1348), and as close to
# the fp32 references (AdaIN 0.34 levels mean, fast+pads 0.38).
CUDA_LAYERS = os.environ.get("STYLECORE_CUDA_LAYERS", "fused+cudnn")
CUDA_LAYER_WORDS = ("plain", "fast", "pads", "fused", "cudnn", "borders")
CPU_BATCH_PIXELS = 1 << 16  # on the CPU a forward pass holds at most this many pixels (one 256² image)
# On GPUs 4 Mpx: 64 images of 256², 16 of 512². On an H200 batches of 64 at 256 px ran AdaIN at 2051 img/s
# against 1243 for batches of 16, Johnson 1296 against 966 (bench/results/2026-11-27-h200-compiled).
GPU_BATCH_PIXELS = 1 << 22
CPU_TILE = 1024  # automatic tile size on the CPU (about 1 GB of activations per AdaIN tile)
COLOR_SAMPLE_PIXELS = 1 << 20  # preserve_color estimates the content's colour statistics from ≤ 1 MP


@dataclass
class FFItem:
    """One prepared feed-forward request."""

    index: int
    method: str
    image: Image.Image  # the content
    options: StyleOptions
    targets: list[Stats] | None = None  # adain: one target per mask label (one without a mask)
    labels: torch.Tensor | None = None  # adain with a mask: (H, W) long
    tile: int = 0  # longest side run in one piece
    prep_ms: float = 0.0
    _pixels: torch.Tensor | None = None

    @property
    def hw(self) -> tuple[int, int]:
        return self.image.size[::-1]

    @property
    def pixels(self) -> torch.Tensor:
        """The content as a (1, 3, H, W) uint8 tensor on the CPU (converted on first use)."""
        if self._pixels is None:
            self._pixels = pixels(self.image)
        return self._pixels


# Shortest side each method runs on: AdaIN's encoder pools three times (ceil) and must leave at least 2x2 cells
# for its reflection pads and a standard deviation; Johnson's 9x9 convolution pads 4 by reflection.
MIN_SIDE = {"adain": 9, "johnson": 5}


def check_side(img: Image.Image, what: str, method: str) -> None:
    """An ``ImageError`` naming ``what`` when ``img`` is too small for ``method`` (``MIN_SIDE``)."""
    least = MIN_SIDE.get(method, 1)
    if min(img.size) < least:
        raise ImageError(f"{what}: {img.width}x{img.height} px is too small for method {method} "
                         f"(at least {least} px per side)")


def pixels(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> (1, 3, H, W) uint8 tensor (an HWC buffer, i.e. channels_last strides)."""
    arr = np.array(img.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0)


def cuda_layer_forms(text: str | None = None) -> frozenset[str]:
    """The CUDA layer forms that ``text`` (default ``CUDA_LAYERS``) names, e.g. ``fast+pads`` or ``fused+cudnn``,
    with what they imply (cudnn and borders → fused → fast and pads); an unknown word is an ``OptionsError``."""
    text = CUDA_LAYERS if text is None else text
    words = {w for w in text.strip().lower().replace(" ", "").split("+") if w}
    unknown = sorted(words - set(CUDA_LAYER_WORDS))
    if unknown:
        raise OptionsError(f"STYLECORE_CUDA_LAYERS={text!r}: unknown form {unknown[0]!r}; expected words of "
                           f"{', '.join(CUDA_LAYER_WORDS)} joined by '+', e.g. fast+pads or fused+cudnn")
    if words & {"cudnn", "borders"}:
        words.add("fused")
    if "fused" in words:
        words |= {"fast", "pads"}
    return frozenset(words - {"plain"})


def _one_line(e: BaseException) -> str:
    if isinstance(e, StyleCoreError):
        return str(e)
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300]}" if text else type(e).__name__


def _align_down(n: int, align: int) -> int:
    return max(align, (n // align) * align)


class FeedForwardMixin:
    """The feed-forward half of ``Engine``: needs ``device``, ``cuda_layers``, ``style_cache``, ``config``,
    ``_lock`` and the ``adain_encoder`` / ``decoder`` / ``model`` properties."""

    max_batch: int = 64
    batch_pixels: int | None = None  # pixels per forward pass; None: CPU_BATCH_PIXELS / GPU_BATCH_PIXELS
    oom_splits: int = 0

    # -- networks ---------------------------------------------------------------------------------
    def _fast(self, net, convert, fuse):
        """``convert(net)`` (the exact faster layer forms of ``stylecore.fast_layers``) on the CPU; on CUDA the
        forms that ``self.cuda_layers`` names (``fuse``: the ``fused`` forms of ``stylecore.fused_layers``)."""
        if self.device.type != "cuda":
            return convert(net, winograd=True)
        forms = self.cuda_layers
        if "fast" in forms:
            net = convert(net, winograd=False)  # cuDNN picks its own algorithms on CUDA
        if "pads" in forms:
            net = channels_last_pads(net)
        if "fused" in forms:
            net = fuse(net, cudnn="cudnn" in forms, borders="borders" in forms)
        return net

    # -- tensors ----------------------------------------------------------------------------------
    def _input(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (B,3,H,W) on the CPU (or float in [0,1]) -> float32 channels_last on the engine's device."""
        x = self._upload(x)
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        return x.contiguous(memory_format=FF_MEMORY_FORMAT)

    def _release(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def tile_limit(self, options: StyleOptions, align: int) -> int:
        """Longest side processed in one piece: ``tile_size``, or 1024 on the CPU / 1024–2048 by GPU memory."""
        tile = options.tile_size  # 0 or at least MIN_TILE (checked by the option table)
        if not tile:
            tile = CPU_TILE
            if self.device.type == "cuda":
                total = torch.cuda.get_device_properties(self.device).total_memory
                tile = 2048 if total >= 20 * 2**30 else 1024
        return _align_down(tile, align)

    # -- preparation ------------------------------------------------------------------------------
    def _prepare(self, index: int, req) -> FFItem:
        t0 = time.perf_counter()
        opts = req.options
        check_side(req.content, req.label(0), req.method)
        if req.method == "johnson":
            self.model  # noqa: B018 - load now so that a missing/bad model fails here
            item = FFItem(index, "johnson", req.content, opts)
        else:
            item = self._prepare_adain(index, req)
        item.tile = self.tile_limit(opts, ADAIN_SCALE if item.method == "adain" else JOHNSON_SCALE)
        item.prep_ms = (time.perf_counter() - t0) * 1000
        return item

    def _prepare_adain(self, index: int, req) -> FFItem:
        opts = req.options
        styles = list(req.styles)
        if not styles:
            raise OptionsError("method adain needs at least one style image")
        for i, style in enumerate(styles):
            check_side(style, req.label(i + 1), "adain")
        self.decoder  # noqa: B018 - a missing decoder is an error before any encoding
        n = len(styles)
        labels = None
        mask = getattr(req, "mask", None)
        if mask is not None:
            if n < 2:
                raise OptionsError("mask: spatial control needs at least two style images (one per mask region)")
            if req.style_weights:
                raise OptionsError("mask and style weights cannot be combined: the mask gives each region one style")
            labels = mask_labels(mask, n, req.content.size)
        item = FFItem(index, "adain", req.content, opts, labels=labels)
        stats = []
        keys = list(req.style_keys or [])
        tile = self.tile_limit(opts, ADAIN_SCALE)
        for i, style in enumerate(styles):
            if opts.preserve_color:
                stats.append(self._recoloured_style_stats(style, item.pixels, opts))
                continue
            key = ("adain", self.config.encoder, keys[i] if i < len(keys) and keys[i] else image_digest(style),
                   style.size, tile if max(style.size) > tile else 0)  # tiled statistics differ a little
            stats.append(self.style_cache.get_or_compute(key, lambda s=style: self._style_stats(pixels(s), opts)))
        if labels is not None:
            targets = stats
        else:
            weights = normalise_weights(parse_style_weights(req.style_weights, n), n)
            targets = [Stats.blend(stats, weights)]
        item.targets = targets
        return item

    def _recoloured_style_stats(self, style: Image.Image, content: torch.Tensor, opts: StyleOptions) -> Stats:
        """preserve_color: match the style's colour mean/covariance to the content's, then encode it (not cached)."""
        h, w = content.shape[-2:]
        step = max(1, math.ceil(math.sqrt(h * w / COLOR_SAMPLE_PIXELS)))
        with torch.inference_mode():
            target = self._input(content[..., ::step, ::step])
            recoloured = match_color_covariance(self._input(pixels(style)), target)
        return self._style_stats(recoloured, opts)

    def _style_stats(self, x: torch.Tensor, opts: StyleOptions) -> Stats:
        """relu4_1 mean/std of one style image (uint8 or float (1,3,H,W)); tiled when large or out of memory."""
        tile = self.tile_limit(opts, ADAIN_SCALE)
        while True:
            try:
                with torch.inference_mode():
                    if max(x.shape[-2:]) <= tile:
                        with autocast(self.device):
                            m, s = mean_std(self.adain_encoder(self._input(x)))
                        return Stats(m[0, :, 0, 0], s[0, :, 0, 0])
                    st = self._tiled_content_stats(x, None, 1, tile)[0][0]  # summed on the CPU
                    return Stats(st.mean.to(self.device), st.std.to(self.device))
            except OOM:
                self._release()
                tile = self._smaller_tile(min(tile, max(x.shape[-2:])), ADAIN_SCALE)

    def _smaller_tile(self, tile: int, align: int) -> int:
        """Half the tile size (at least MIN_TILE); out-of-memory at the minimum is a one-line error."""
        if tile <= MIN_TILE:
            raise StyleCoreError(f"out of memory on {self.device} even with {tile}-pixel tiles")
        return max(MIN_TILE, _align_down(tile // 2, align))

    # -- running ----------------------------------------------------------------------------------
    def _ff_batch(self, requests) -> list:
        """Run feed-forward requests; returns, in order, (PIL image or the exception, compute ms) per request.

        Batches are pipelined on CUDA: the next batch is launched before the previous one's images are
        copied out and converted, so the host work overlaps the device's.
        """
        out: list = [None] * len(requests)
        items: list[FFItem] = []
        with self._lock:
            for i, req in enumerate(requests):
                t0 = time.perf_counter()
                try:
                    items.append(self._prepare(i, req))
                except Exception as e:  # noqa: BLE001 - a bad item fails alone
                    out[i] = (e, (time.perf_counter() - t0) * 1000)
            groups: dict[tuple, list[FFItem]] = {}
            for it in items:
                solo = it.labels is not None or max(it.hw) > it.tile
                groups.setdefault((it.method, it.hw, it.index if solo else -1), []).append(it)
            pending = None
            for group in groups.values():
                step = self.batch_limit(group[0].hw)
                for start in range(0, len(group), step):
                    launched = self._run_chunk(group[start:start + step], out)
                    if pending is not None:
                        pending()
                    pending = launched
            if pending is not None:
                pending()
        return out

    def batch_limit(self, hw: tuple[int, int]) -> int:
        """Images of size ``hw`` per forward pass: at most ``max_batch`` images and ``batch_pixels`` pixels.

        GPUs keep their arithmetic units busy only with large batches (4 Mpx by default). On the CPU batching
        saves no arithmetic, and a batch's larger working set measured slower than one image at a time from
        256² pixels up (64 px: batches of 4 were ~20% faster, 128 px: even), so the budget is one 256² image.
        """
        budget = self.batch_pixels or (CPU_BATCH_PIXELS if self.device.type == "cpu" else GPU_BATCH_PIXELS)
        return max(1, min(self.max_batch, budget // (hw[0] * hw[1])))

    def _run_chunk(self, chunk: list[FFItem], out: list) -> Callable[[], None]:
        """Launch one chunk; returns the function that waits for it and fills ``out`` (failures fill it at once)."""
        t0 = time.perf_counter()
        failure = None
        try:
            waits = self._split_on_oom(chunk)
        except Exception as e:  # noqa: BLE001
            failure = e.with_traceback(None)  # a live traceback would pin the failed attempt's tensors
        if failure is not None:
            if len(chunk) > 1:  # isolate the failing item(s)
                for it in chunk:
                    self._run_chunk([it], out)()
            else:
                out[chunk[0].index] = (failure, chunk[0].prep_ms + (time.perf_counter() - t0) * 1000)
            return lambda: None
        launch_ms = (time.perf_counter() - t0) * 1000

        def finish() -> None:
            t1 = time.perf_counter()
            try:
                images = [img for wait in waits for img in wait()]
            except Exception as e:  # noqa: BLE001 - an asynchronous device error: the whole chunk failed
                images = [e.with_traceback(None)] * len(chunk)
            share = (launch_ms + (time.perf_counter() - t1) * 1000) / len(chunk)
            for it, img in zip(chunk, images):
                out[it.index] = (img, it.prep_ms + share)

        return finish

    def _split_on_oom(self, items: list[FFItem]) -> list[Callable[[], list[Image.Image]]]:
        """Launch a batch; on out-of-memory split it in halves, and retry a single image as smaller tiles.

        Returns functions that wait for the launched parts and give their images, in order.
        """
        try:
            return [self._forward(items)]
        except OOM:
            pass  # retry after the handler: its traceback pins the failed attempt's activations until it ends
        self._release()
        if len(items) == 1:
            image = self._forward_tiles_retry(items[0])
            return [lambda: [image]]
        self.oom_splits += 1
        mid = len(items) // 2
        return self._split_on_oom(items[:mid]) + self._split_on_oom(items[mid:])

    def _forward_tiles_retry(self, item: FFItem) -> Image.Image:
        align = ADAIN_SCALE if item.method == "adain" else JOHNSON_SCALE
        tile = self._smaller_tile(min(item.tile, max(item.hw)), align)
        while True:
            try:
                return self._forward_tiled(item, tile)
            except OOM:
                self._release()
                tile = self._smaller_tile(tile, align)

    def _graph(self, method: str):
        """The uint8-to-uint8 module for plain batches of ``method``, compiled per ``compile_mode`` (built once per
        set of networks)."""
        nets = (self.adain_encoder, self.decoder) if method == "adain" else (self.model,)
        key = (method, *map(id, nets))  # rebuilt if a network is replaced
        graph = self._graphs.get(key)
        if graph is None:
            dtype = amp_dtype(self.device)
            module = AdaINGraph(*nets, dtype) if method == "adain" else JohnsonGraph(*nets, dtype)
            graph = self._graphs[key] = compile_graph(module, self.compile_mode)
        return graph

    def _forward(self, items: list[FFItem]) -> Callable[[], list[Image.Image]]:
        """Launch one batch of same-size, same-method items (or one item, tiled when larger than its tile size);
        returns the function that waits for it and gives the images."""
        first = items[0]
        if len(items) == 1 and max(first.hw) > first.tile:
            image = self._forward_tiled(first, first.tile)
            return lambda: [image]
        if first.labels is not None or (first.method == "johnson" and any(it.options.preserve_color for it in items)):
            return self._forward_modules(items)
        with torch.inference_mode():
            x = self._batch_pixels(items)
            if first.method == "adain":
                t_mean = self._upload(torch.stack([it.targets[0].mean.float() for it in items]))
                t_std = self._upload(torch.stack([it.targets[0].std.float() for it in items]))
                alpha = self._upload(torch.tensor([float(it.options.alpha) for it in items], dtype=torch.float32))
                y = self._graph("adain")(x, t_mean, t_std, alpha)
            else:
                y = self._graph("johnson")(x)
            return _host_images(y)

    def _upload(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` on the engine's device; from the CPU to CUDA through page-locked memory without blocking (a
        blocking upload would wait for the previous batch to finish; pinned buffers are cached by torch)."""
        if self.device.type == "cuda" and t.device.type == "cpu" and not t.is_pinned():
            t = t.pin_memory()
        return t.to(self.device, non_blocking=True)

    def _batch_pixels(self, items: list[FFItem]) -> torch.Tensor:
        """Same-size contents as one uint8 (B,3,H,W) channels_last batch on the device.

        Each image is copied once into one (page-locked, on CUDA) buffer, which is uploaded without blocking.
        Contents are converted here, when their batch launches, so on CUDA this overlaps the previous batch.
        """
        h, w = items[0].hw
        cuda = self.device.type == "cuda"
        buf = torch.empty((len(items), h, w, 3), dtype=torch.uint8, pin_memory=cuda)
        dst = buf.numpy()
        for i, it in enumerate(items):
            if it._pixels is not None:
                dst[i] = it._pixels[0].permute(1, 2, 0).numpy()
            else:
                dst[i] = np.asarray(it.image if it.image.mode == "RGB" else it.image.convert("RGB"))
        return self._upload(buf.permute(0, 3, 1, 2))  # channels_last strides

    def _forward_modules(self, items: list[FFItem]) -> Callable[[], list[Image.Image]]:
        """Launch a batch through the eager modules (AdaIN with a mask, Johnson with preserve_color); returns the
        function that waits for it and gives the images."""
        first = items[0]
        h, w = first.hw
        with torch.inference_mode():
            x = self._input(torch.cat([it.pixels for it in items]))
            with autocast(self.device):
                if first.method == "adain":
                    y = self._adain_masked(first, x)[..., :h, :w].float().clamp_(0, 1)  # masked items run alone
                else:
                    y = self.model(x * 255.0)[..., :h, :w].float().clamp_(0, 255).div_(255.0)
            if first.method == "johnson":
                y = self._johnson_color(items, y, x)
            return _host_images(to_uint8_hwc(y, 1.0))

    def _adain_masked(self, item: FFItem, x: torch.Tensor) -> torch.Tensor:
        """AdaIN with spatial control: each mask region normalised with its own statistics toward its style."""
        f = self.adain_encoder(x)
        fl = feature_labels(item.labels, *f.shape[-2:])
        acc = StatsAccumulator(f.shape[1], len(item.targets))
        acc.add(f[0], fl)
        cstats = [acc.stats(k) for k in range(len(item.targets))]
        return self.decoder(adain_features(f, item.targets, item.options.alpha, cstats, fl.to(f.device)))

    def _johnson_color(self, items: list[FFItem], y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """preserve_color for Johnson: the output's luminance with the content's chrominance (per pixel)."""
        keep = [i for i, it in enumerate(items) if it.options.preserve_color]
        if keep:
            y = y.clone()
            y[keep] = combine_luminance(y[keep], x[keep].float())
        return y

    # -- tiles ------------------------------------------------------------------------------------
    def _tile_input(self, x: torch.Tensor, t) -> torch.Tensor:
        return self._input(x[..., t.y0:t.y1, t.x0:t.x1])

    def _tiled_content_stats(self, x: torch.Tensor, labels: torch.Tensor | None, n_labels: int, tile: int,
                             keep_bytes: int = 0):
        """Whole-image relu4_1 statistics per label, streamed over tiles; also returns up to ``keep_bytes`` of tile features."""
        h, w = x.shape[-2:]
        tiles = plan_tiles(h, w, tile, default_overlap(tile, ADAIN_SCALE), ADAIN_SCALE)
        acc = StatsAccumulator(512, n_labels)
        kept: dict = {}
        for t in tiles:
            with autocast(self.device):
                f = self.adain_encoder(self._tile_input(x, t))
            fh, fw = f.shape[-2:]
            a, b = (t.oy0 - t.y0) // ADAIN_SCALE, -(-(t.oy1 - t.y0) // ADAIN_SCALE)
            c, d = (t.ox0 - t.x0) // ADAIN_SCALE, -(-(t.ox1 - t.x0) // ADAIN_SCALE)
            fl = None if labels is None else feature_labels(labels[t.y0:t.y1, t.x0:t.x1], fh, fw)
            acc.add(f[0][:, a:b, c:d], None if fl is None else fl[a:b, c:d])
            size = f.numel() * f.element_size()
            if size <= keep_bytes:
                kept[t], keep_bytes = f, keep_bytes - size
        return [acc.stats(k) for k in range(n_labels)], tiles, kept

    def _forward_tiled(self, item: FFItem, tile: int) -> Image.Image:
        """Stylize one image as overlapping tiles blended with cosine ramps."""
        h, w = item.hw
        x = item.pixels
        with torch.inference_mode():
            if item.method == "adain":
                n = len(item.targets) if item.labels is not None else 1
                cstats, tiles, kept = self._tiled_content_stats(x, item.labels, n, tile, keep_bytes=256 << 20)
                blender = Blender(h, w, tiles)
                for t in tiles:
                    with autocast(self.device):
                        f = kept.pop(t) if t in kept else self.adain_encoder(self._tile_input(x, t))
                        fl = None
                        if item.labels is not None:
                            fl = feature_labels(item.labels[t.y0:t.y1, t.x0:t.x1], *f.shape[-2:]).to(f.device)
                        feat = adain_features(f, item.targets, item.options.alpha, cstats, fl)
                        y = self.decoder(feat)[..., :t.y1 - t.y0, :t.x1 - t.x0].float().clamp_(0, 1)
                    blender.add(t, y[0])
            else:
                frozen = self._johnson_norm_stats(x, tile)
                tiles = plan_tiles(h, w, tile, default_overlap(tile, JOHNSON_SCALE), JOHNSON_SCALE)
                blender = Blender(h, w, tiles)
                with instance_norm_stats(self.model, frozen):
                    for t in tiles:
                        xt = self._tile_input(x, t)
                        with autocast(self.device):
                            y = self.model(xt * 255.0)[..., :t.y1 - t.y0, :t.x1 - t.x0].float().clamp_(0, 255).div_(255.0)
                        blender.add(t, self._johnson_color([item], y, xt)[0])
            return Image.fromarray(blender.result().numpy(), mode="RGB")

    def _johnson_norm_stats(self, x: torch.Tensor, tile: int) -> dict:
        """InstanceNorm statistics of the whole image, from one pass over it downscaled to a tile's pixel count.

        Every tile then normalises with these statistics, so all tiles compute the same function and no
        seams appear (per-tile statistics would differ from tile to tile).
        """
        h, w = x.shape[-2:]
        scale = min(1.0, tile / math.sqrt(h * w))  # the pixels of one tile: a long strip keeps its rows
        least = MIN_SIDE["johnson"]
        size = (max(least, round(w * scale)), max(least, round(h * scale)))
        small = Image.fromarray(x[0].permute(1, 2, 0).numpy(), mode="RGB").resize(size, Image.Resampling.BOX)
        with instance_norm_stats(self.model) as record, autocast(self.device):
            self.model(self._input(pixels(small)) * 255.0)
        return record


def _host_images(y: torch.Tensor) -> Callable[[], list[Image.Image]]:
    """Start copying a (B, H, W, 3) uint8 batch to the host; returns the function that waits and gives PIL images.

    On CUDA the copy goes to page-locked memory without blocking, so the host can launch the next batch.
    """
    if y.device.type != "cuda":
        arr = y.cpu().numpy()
        return lambda: [Image.fromarray(a, mode="RGB") for a in arr]
    host = torch.empty(y.shape, dtype=torch.uint8, pin_memory=True)
    host.copy_(y, non_blocking=True)
    done = torch.cuda.Event()
    done.record(torch.cuda.current_stream(y.device))  # the copy's stream, on cuda:N too (not the current device's)

    def wait() -> list[Image.Image]:
        done.synchronize()
        return [Image.fromarray(a, mode="RGB") for a in host.numpy()]

    return wait

