"""The engine: loads weights once, then stylizes many images.

``Engine`` is what a worker process keeps for its lifetime (see ``get_engine``); ``stylize`` is the
one-call convenience for scripts.
"""
from __future__ import annotations

import numbers
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from PIL import Image

from .adain import AdaINEncoder, load_adain_decoder, load_adain_encoder
from .device import memory_format, resolve_device
from .errors import ImageError, OptionsError
from .fast_layers import fast_decoder, fast_encoder, fast_transformer
from .feedforward import FF_MEMORY_FORMAT, FeedForwardMixin, _one_line, cuda_layer_forms
from .ff_graphs import compile_dynamic, compile_mode
from .fused_layers import fuse_sequential, fuse_transformer
from .gatys import StepInfo, stylize_gatys
from .images import (DEFAULT_MAX_PIXELS, ImageSource, load_image, load_resized, style_long_side, to_pil, to_rgb,
                     to_tensor)
from .johnson import load_transformer
from .options import StyleOptions, check_method, normalise_weights, parse_style_weights
from .style_cache import StyleCache
from .transformer_net import TransformerNet
from .vgg import VGG19Encoder, load_vgg19_encoder
from .weights import file_version, parse_spec


@dataclass(frozen=True)
class EngineConfig:
    """What an engine loads: weight specs per network and the device. Hashable: the per-process cache key."""

    encoder: str = "imagenet"
    decoder: str | None = None
    model: str | None = None
    device: str = "auto"


@dataclass
class Request:
    """One item of ``Engine.stylize_batch``: decoded RGB images, already resized by the caller."""

    content: Image.Image
    styles: list[Image.Image] = field(default_factory=list)
    style_keys: list[str] = field(default_factory=list)  # cache keys (e.g. URIs) for the style statistics
    style_weights: list[float] | None = None
    method: str = "gatys"
    options: StyleOptions = field(default_factory=StyleOptions.make)
    key: str = ""  # caller's identifier, echoed in the Result
    mask: Image.Image | None = None  # adain spatial control (see stylecore.adain.mask_labels)
    names: list[str] = field(default_factory=list)  # for error messages: the content's, then each style's

    def label(self, i: int) -> str:
        """The name of the content (``i`` 0) or of style ``i`` in error messages (default: content, style N)."""
        if i < len(self.names) and self.names[i]:
            return self.names[i]
        return f"style {i}" if i else "content"


@dataclass
class Result:
    """Outcome of one Request: an image, or a one-line error (a bad item never fails the batch)."""

    key: str
    image: Image.Image | None
    error: str | None
    compute_ms: float


class Engine(FeedForwardMixin):
    """Holds the networks on one device and runs every method. Thread-safe for sequential use per thread."""

    def __init__(self, encoder: str = "imagenet", decoder: str | None = None, model: str | None = None,
                 device: str = "auto", *, progress: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS,
                 compile: str | None = None, cuda_layers: str | None = None):
        # Parse specs now so that a malformed spec fails before any work; weights load lazily on first use.
        parse_spec(encoder, what="encoder")
        if decoder:
            parse_spec(decoder, allow_imagenet=False, what="decoder")
        if model:
            parse_spec(model, allow_imagenet=False, what="model")
        self.config = EngineConfig(str(encoder), decoder and str(decoder), model and str(model), str(device))
        self.device = resolve_device(device)
        self.progress = progress
        if isinstance(max_pixels, bool) or not isinstance(max_pixels, numbers.Integral) or max_pixels < 0:
            raise OptionsError(f"max_pixels: {max_pixels!r} is not a whole number of pixels >= 0 (0: no limit)")
        self.max_pixels = int(max_pixels)
        self._lock = threading.RLock()
        self._vgg: VGG19Encoder | None = None
        self._adain_encoder: AdaINEncoder | None = None
        self._decoder: torch.nn.Module | None = None
        self._model: TransformerNet | None = None
        self.style_cache = StyleCache()
        self.compile_mode = compile_mode(compile)  # feed-forward graphs: off, or a torch.compile mode
        if self.compile_mode != "off":
            compile_dynamic()  # a bad $STYLECORE_COMPILE_DYNAMIC fails here, not in the first batch
        # CUDA layer forms (feedforward.cuda_layer_forms): cuda_layers, else $STYLECORE_CUDA_LAYERS; checked here
        self.cuda_layers = cuda_layer_forms(cuda_layers)
        self._graphs: dict = {}

    # -- networks -------------------------------------------------------------------------------
    @property
    def vgg(self) -> VGG19Encoder:
        """The VGG19 encoder for the Gatys method (loaded once)."""
        with self._lock:
            if self._vgg is None:
                enc = load_vgg19_encoder(self.config.encoder, progress=self.progress)
                self._vgg = enc.to(self.device, memory_format=memory_format(self.device))
            return self._vgg

    @property
    def adain_encoder(self) -> AdaINEncoder:
        """The AdaIN encoder (normalised-VGG or torchvision layout, detected from the weights; loaded once)."""
        with self._lock:
            if self._adain_encoder is None:
                enc = load_adain_encoder(self.config.encoder, progress=self.progress)
                enc = self._fast(enc, fast_encoder, fuse_sequential)
                self._adain_encoder = enc.to(self.device, memory_format=FF_MEMORY_FORMAT)
            return self._adain_encoder

    @property
    def decoder(self) -> torch.nn.Module:
        """The AdaIN decoder named by the ``decoder`` spec (loaded once); there is no default."""
        with self._lock:
            if self._decoder is None:
                if not self.config.decoder:
                    raise OptionsError("method adain needs a decoder: pass --decoder SPEC (decoder= in Python): "
                                       "a decoder.pth path (pytorch-AdaIN's, or one from `stylize train adain`), "
                                       "file:// or s3:// URI; random:SEED is untrained (noise, for tests)")
                dec = self._fast(load_adain_decoder(self.config.decoder), fast_decoder, fuse_sequential)
                self._decoder = dec.to(self.device, memory_format=FF_MEMORY_FORMAT)
            return self._decoder

    @property
    def model(self) -> TransformerNet:
        """The Johnson TransformerNet named by the ``model`` spec (loaded once); there is no default."""
        with self._lock:
            if self._model is None:
                if not self.config.model:
                    raise OptionsError("method johnson needs a model: pass --model SPEC (model= in Python): "
                                       "builtin:johnson_mosaic (shipped, offline), a fast_neural_style .pth path, "
                                       "file:// or s3:// URI; random:SEED is untrained (noise, for tests)")
                net = self._fast(load_transformer(self.config.model), fast_transformer, fuse_transformer)
                self._model = net.to(self.device, memory_format=FF_MEMORY_FORMAT)
            return self._model

    _NETWORKS = {"gatys": ("vgg",), "adain": ("adain_encoder", "decoder"), "johnson": ("model",)}

    def load_networks(self, methods: Sequence[str]) -> dict[str, Exception]:
        """Load the networks that ``methods`` use now rather than inside the first timed call (so a row's
        ``compute_ms`` never includes reading weights). A network that fails to load is left to fail the rows
        that need it, with its own error; returns those errors by method."""
        failed: dict[str, Exception] = {}
        for method in dict.fromkeys(methods):
            for name in self._NETWORKS.get(str(method), ()):
                try:
                    getattr(self, name)
                except Exception as e:  # noqa: BLE001 - reported per row by stylize_batch
                    failed.setdefault(str(method), e)
        return failed

    # -- inputs ---------------------------------------------------------------------------------
    def load(self, source: ImageSource | Image.Image, size: int, *, name: str | None = None) -> Image.Image:
        """Decode ``source`` to RGB and resize its longer side to ``size`` (0 keeps it)."""
        return load_resized(source, size, name=name, max_pixels=self.max_pixels)

    def _tensor(self, img: Image.Image) -> torch.Tensor:
        return to_tensor(img).to(self.device)

    # -- methods --------------------------------------------------------------------------------
    def stylize(
        self,
        content: ImageSource | Image.Image,
        styles: ImageSource | Sequence[ImageSource] = (),
        *,
        method: str = "gatys",
        style_weights: Sequence[float] | str | None = None,
        options: StyleOptions | None = None,
        callback: Callable[[StepInfo], None] | None = None,
        mask: ImageSource | Image.Image | None = None,
        **overrides,
    ) -> Image.Image:
        """Stylize one content image with one or more style images; returns an RGB PIL image.

        ``options`` and keyword overrides take the names in ``stylecore.options.SPECS``. ``mask`` (adain,
        two or more styles) assigns styles to regions by grey level: white takes the first style, black the last.
        """
        method = check_method(method)
        opts = StyleOptions.make(options, **overrides)
        if isinstance(styles, (str, bytes, Image.Image)) or hasattr(styles, "read") or hasattr(styles, "__fspath__"):
            styles = [styles]
        if styles is None or not hasattr(styles, "__iter__"):
            raise ImageError(f"styles: expected a style image or a list of them, got {type(styles).__name__}")
        styles = list(styles)
        content_name = _name(content, "content")
        content_img = self.load(content, opts.size, name=content_name)
        style_long = style_long_side(content_img.size, opts.style_size)
        style_names = [_name(s, f"style {i + 1}") for i, s in enumerate(styles)]
        style_imgs = [self.load(s, style_long, name=n) for s, n in zip(styles, style_names)]
        mask_img = None
        if mask is not None:
            _check_mask(method)
            mask_img = load_image(mask, name=_name(mask, "mask"), max_pixels=self.max_pixels)
        # names for "too small" errors, saying when the size comes from resizing
        names = [f"{content_name} (resized by --size {opts.size})" if opts.size else content_name]
        how = (f"by --style-size {opts.style_size}" if opts.style_size else
               f"to the content's long side, {style_long} px" if style_long == max(content_img.size) else
               f"to {style_long} px, the default for a {content_img.width}x{content_img.height} content")
        names += [n if opts.style_size == 0 else f"{n} (resized {how})" for n in style_names]
        req = Request(content_img, style_imgs, [], style_weights, method, opts, mask=mask_img, names=names)
        return self._run(req, callback)

    def _run(self, req: Request, callback=None) -> Image.Image:
        if req.method == "gatys":
            styles = list(req.styles)
            if not styles:
                raise OptionsError("method gatys needs at least one style image")
            blend = normalise_weights(parse_style_weights(req.style_weights, len(styles)), len(styles))
            with self._lock:
                out = stylize_gatys(self.vgg, self._tensor(req.content), [self._tensor(s) for s in styles],
                                    blend, req.options, callback, names=[req.label(i) for i in range(len(styles) + 1)])
            return to_pil(out)
        img, _ = self._ff_batch([req])[0]
        if isinstance(img, BaseException):
            raise img
        return img

    def stylize_batch(self, requests: Sequence[Request]) -> list[Result]:
        """Stylize many requests; results come back in order, and a bad item fails alone (one-line error).

        adain/johnson requests of the same size run as batches with cached style statistics (see
        ``stylecore.feedforward``); gatys requests run one by one.
        """
        results: list[Result | None] = [None] * len(requests)
        ff: list[tuple[int, Request]] = []
        for i, req in enumerate(requests):
            t0 = time.perf_counter()
            try:
                method = check_method(req.method)
                req = _checked(req, method)
                if method != "gatys":
                    ff.append((i, req))
                    continue
                img = self._run(req)
                results[i] = Result(req.key, img, None, (time.perf_counter() - t0) * 1000)
            except Exception as e:  # noqa: BLE001 - a bad item never fails the batch
                results[i] = Result(req.key, None, _one_line(e), (time.perf_counter() - t0) * 1000)
        if ff:
            for (i, req), (img, ms) in zip(ff, self._ff_batch([r for _, r in ff])):
                if isinstance(img, BaseException):
                    results[i] = Result(req.key, None, _one_line(img), ms)
                else:
                    results[i] = Result(req.key, img, None, ms)
        return results


def _check_mask(method: str) -> None:
    if method != "adain":
        raise OptionsError(f"mask: spatial control is available for method adain, not {method}")


def _checked(req: Request, method: str) -> Request:
    """``req`` for ``method`` with its images in RGB (alpha composited on white and palettes applied, as
    ``stylize`` loads them); an item that is not an image, or a mask for a method without spatial control,
    is an error of that item."""
    from dataclasses import replace

    mask = req.mask
    if mask is not None:
        _check_mask(method)
        mask = _rgb(mask, "mask")  # as ``stylize`` loads it: alpha on white, 16-bit scaled to 8
    if not isinstance(req.styles, (list, tuple)):  # a single PIL image included
        raise ImageError(f"styles: expected a list of PIL images, got {type(req.styles).__name__}")
    if not isinstance(req.options, StyleOptions):
        raise OptionsError(f"options: expected StyleOptions (StyleOptions.make(...)), got {type(req.options).__name__}")
    return replace(req, method=method, content=_rgb(req.content, req.label(0)), mask=mask,
                   styles=[_rgb(s, req.label(i + 1)) for i, s in enumerate(req.styles)])


def _rgb(img, what: str) -> Image.Image:
    if not isinstance(img, Image.Image):
        raise ImageError(f"{what}: expected a decoded PIL image, got {type(img).__name__}")
    if img.width < 1 or img.height < 1:
        raise ImageError(f"{what}: empty image ({img.width}x{img.height} px)")
    return to_rgb(img)


def _name(source, default: str) -> str | None:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return default  # bytes, a file object, a PIL image (or not an image at all: load_image says so)


_ENGINES: dict[tuple, tuple[Engine, tuple]] = {}  # (config, other Engine arguments) -> (engine, file versions)
_ENGINES_LOCK = threading.Lock()


def get_engine(encoder: str = "imagenet", decoder: str | None = None, model: str | None = None,
               device: str = "auto", **kwargs) -> Engine:
    """The process-wide engine for this config: built on first use, then reused by every caller.

    A local weights file that was replaced since (a retrained decoder.pth, say) gets a new engine, so a
    long-lived process never keeps stylizing with the old weights.
    """
    config = EngineConfig(str(encoder), decoder and str(decoder), model and str(model), str(device))
    # the other Engine arguments are part of the key: a caller's pixel limit must not become everyone's
    key = (config, tuple(sorted((k, v if isinstance(v, (str, int, float, bool, type(None))) else repr(v))
                                for k, v in kwargs.items())))
    versions = tuple(file_version(spec) for spec in (config.encoder, config.decoder, config.model))
    with _ENGINES_LOCK:
        cached = _ENGINES.get(key)
        if cached is None or cached[1] != versions:
            cached = _ENGINES[key] = (Engine(encoder, decoder, model, device, **kwargs), versions)
        return cached[0]


def stylize(content: ImageSource, styles: ImageSource | Sequence[ImageSource] = (), *, method: str = "gatys",
            encoder: str = "imagenet", decoder: str | None = None, model: str | None = None, device: str = "auto",
            **options) -> Image.Image:
    """One-call API: ``stylecore.stylize("photo.jpg", "starry.jpg", encoder="random:0", steps=100)``."""
    engine = get_engine(encoder, decoder, model, device)
    return engine.stylize(content, styles, method=method, **options)
