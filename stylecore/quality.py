"""Per-row quality metrics of a stylized output, computed cheaply (downscaled, batched) with one fixed
evaluator network so that numbers compare across methods, weight specs and runs.

Metrics (one dict per row: the keys in ``METRICS`` plus ``evaluator`` (the network's weight spec) and
``evaluator_size``, so that every metrics row says what measured it):

- ``content_loss``: the engine's ``ContentLoss`` (L2 at relu4_2, normalised by the target's mean square)
  between the output and the content;
- ``style_loss``: the engine's ``StyleLoss`` (Gram matrices at relu1_1..relu5_1, equal layer weights,
  normalised) between the output and the blend-weighted style targets;
- ``ssim``: SSIM between the luminance (Y of YIQ) of the output and of the content; Gaussian window 11,
  sigma 1.5, C1 = (0.01 L)², C2 = (0.03 L)², L = 1, mean over the valid (unpadded) windows;
- ``color_distance``: sliced Wasserstein-2 distance between the CIE Lab pixel distributions of the
  output and of the (blended) styles, in Lab units (L* spans 0..100); 64 fixed projections, at most
  4096 evenly strided pixels per image.

All images are downscaled so that their longer side is at most ``size`` pixels (default 96) before measuring;
the output is resized to the content's evaluation size so that both align pixel for pixel.

The evaluator network is a weight spec (see ``stylecore.weights``); ``"auto"`` resolves to ``imagenet``
when torchvision's cached VGG19 file exists and to ``random:0`` otherwise. ``QualityEvaluator.describe()``
records which one ran; every metrics row and the run summary store it. ``get_evaluator()`` reads its
defaults from ``STYLIZE_QUALITY_ENCODER`` (a weight spec or ``auto``) and ``STYLIZE_QUALITY_SIZE``, so a
deployment can pin one evaluator for all its workers.
"""
from __future__ import annotations

import hashlib
import math
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from .color import luminance
from .device import exact_math, memory_format, resolve_device
from .images import to_tensor
from .losses import ContentLoss, StyleLoss, gram_matrix
from .options import normalise_weights
from .vgg import CONTENT_LAYER, STYLE_LAYERS, VGG19Encoder, load_vgg19_encoder

METRICS = ("content_loss", "style_loss", "ssim", "color_distance")
DEFAULT_SIZE = 96  # long side; keeps the cost under 10% of a 512 px feed-forward run (bench/bench_quality.py)
DEFAULT_PROJECTIONS = 64
_QUANTILES = 128
MAX_COLOR_SAMPLES = 4096
_FEATURE_LAYERS = tuple(dict.fromkeys((*STYLE_LAYERS, CONTENT_LAYER)))


# -- colour ---------------------------------------------------------------------------------------
_RGB2XYZ = torch.tensor([[0.4124564, 0.3575761, 0.1804375],
                         [0.2126729, 0.7151522, 0.0721750],
                         [0.0193339, 0.1191920, 0.9503041]])
_WHITE_D65 = (0.95047, 1.0, 1.08883)


def rgb_to_lab(x: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) sRGB in [0, 1] -> CIE L*a*b* (D65 white): L in [0, 100], a/b roughly [-128, 127]."""
    x = x.float().clamp(0, 1)
    lin = torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055).pow(2.4))
    xyz = torch.einsum("ij,bjhw->bihw", _RGB2XYZ.to(x.device), lin)
    white = torch.tensor(_WHITE_D65, device=x.device).view(1, 3, 1, 1)
    t = xyz / white
    eps, kappa = 216 / 24389, 24389 / 27
    f = torch.where(t > eps, t.clamp_min(1e-12).pow(1 / 3), (kappa * t + 16) / 116)
    fx, fy, fz = f[:, 0], f[:, 1], f[:, 2]
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=1)


def _projections(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    d = torch.randn(3, n, generator=gen)
    return d / d.norm(dim=0, keepdim=True)


def _quantiles(samples: torch.Tensor, n: int) -> torch.Tensor:
    """(..., N, K) projected samples -> (..., n, K) values at quantiles (i + 0.5)/n, linear interpolation."""
    s, _ = samples.sort(dim=-2)
    m = s.shape[-2]
    pos = (torch.arange(n, device=s.device, dtype=torch.float32) + 0.5) / n * (m - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp_max(m - 1)
    w = (pos - lo.float()).unsqueeze(1)
    return s[..., lo, :] * (1 - w) + s[..., hi, :] * w


def lab_quantiles(img: torch.Tensor, dirs: torch.Tensor, max_samples: int = MAX_COLOR_SAMPLES) -> torch.Tensor:
    """(B, 128, K) quantiles of the Lab pixels of each image of ``img`` (B,3,H,W RGB) projected on ``dirs`` (3, K).

    Above ``max_samples`` pixels an evenly strided subset is used (no averaging, so colours stay as they are).
    """
    lab = rgb_to_lab(img).flatten(2)  # (B, 3, N)
    n = lab.shape[-1]
    if max_samples and n > max_samples:
        lab = lab[..., torch.linspace(0, n - 1, max_samples, device=lab.device).round().long()]
    return _quantiles(lab.transpose(1, 2) @ dirs.to(lab.device), _QUANTILES)


def swd_from_quantiles(qa: torch.Tensor, qb: Sequence[torch.Tensor], weights: Sequence[float] | None = None) -> torch.Tensor:
    """Sliced Wasserstein-2 from (n, K) quantiles of ``a`` and of each target (mixed by ``weights``)."""
    blend = normalise_weights(list(weights) if weights else None, len(qb))
    mixed = sum(w * q for q, w in zip(qb, blend))
    return (qa - mixed).pow(2).mean(dim=0).mean().sqrt()


def sliced_wasserstein_lab(a: torch.Tensor, b: Sequence[torch.Tensor], weights: Sequence[float] | None = None, *,
                           projections: int = DEFAULT_PROJECTIONS, seed: int = 0) -> float:
    """Sliced Wasserstein-2 distance between the Lab pixels of ``a`` (1,3,H,W RGB) and the mixture of ``b``.

    Each image is projected on ``projections`` fixed random unit directions in Lab; the 1-D distributions
    are compared at 128 quantiles. A blend of several targets mixes their quantile functions by ``weights``
    (a cheap stand-in for the mixture). Identical inputs give exactly 0.
    """
    dirs = _projections(projections, seed).to(a.device)
    return float(swd_from_quantiles(lab_quantiles(a, dirs)[0], [lab_quantiles(t, dirs)[0] for t in b], weights))


# -- SSIM ------------------------------------------------------------------------------------------
def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Normalised 1-D Gaussian of ``size`` taps."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r ** 2) / (2 * sigma ** 2))
    return (g / g.sum()).float()


def ssim(x: torch.Tensor, y: torch.Tensor, *, window: int = 11, sigma: float = 1.5, data_range: float = 1.0) -> torch.Tensor:
    """Mean SSIM per image of (B,1,H,W) tensors (Wang et al. 2004), valid windows only.

    Images smaller than the window use the largest odd window that fits.
    """
    if x.shape != y.shape:
        raise ValueError(f"ssim: shapes differ {tuple(x.shape)} vs {tuple(y.shape)}")
    x, y = x.double(), y.double()
    win = min(window, x.shape[-1], x.shape[-2])
    win = win if win % 2 else win - 1
    g = gaussian_window(win, sigma).double().to(x.device)
    c = x.shape[1]
    kh = g.view(1, 1, 1, win).expand(c, 1, 1, win)
    kv = g.view(1, 1, win, 1).expand(c, 1, win, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, kh, groups=c), kv, groups=c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1).float()


# -- evaluator -------------------------------------------------------------------------------------
def _pixel_digest(img: Image.Image) -> bytes:
    """A cache key for an (evaluation-size, RGB) image: a hash of its pixels and its size."""
    return hashlib.blake2b(img.tobytes(), digest_size=16).digest() + str(img.size).encode()


def imagenet_cache_file() -> Path:
    """Where torchvision keeps VGG19_Weights.IMAGENET1K_V1 (``$TORCH_HOME/hub/checkpoints``)."""
    from torchvision.models import VGG19_Weights

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(VGG19_Weights.IMAGENET1K_V1.url)


def resolve_evaluator_spec(spec: str = "auto") -> str:
    """``auto`` -> ``imagenet`` when its cache file exists, else ``random:0``; other specs pass through."""
    if str(spec).strip().lower() == "auto":
        return "imagenet" if imagenet_cache_file().is_file() else "random:0"
    return str(spec)


@dataclass
class QualityItem:
    """One row to measure: decoded RGB images (any size) and the style blend."""

    content: Image.Image
    styles: list[Image.Image]
    output: Image.Image
    style_weights: list[float] | None = None
    style_keys: list[str] = field(default_factory=list)  # cache keys for style features (e.g. URIs)


class QualityEvaluator:
    """Measures ``METRICS`` for stylized outputs with one fixed VGG19. Create once per process (``get_evaluator``)."""

    columns = METRICS

    def __init__(self, encoder: str = "auto", *, size: int = DEFAULT_SIZE, device: str = "auto",
                 projections: int = DEFAULT_PROJECTIONS, seed: int = 0, style_cache: int = 64,
                 content_cache: int = 64):
        self.spec = resolve_evaluator_spec(encoder)
        self.requested = str(encoder)
        self.size = int(size)
        self.device = resolve_device(device)
        self.projections, self.seed = int(projections), int(seed)
        self._lock = threading.RLock()
        self._net: VGG19Encoder | None = None
        # Gram matrices and quantiles of recent styles (~2.3 MB each; the oldest entry goes first)
        self._style_cache: dict[tuple, dict[str, torch.Tensor]] = {}
        self._style_cache_max = style_cache
        # relu4_2 features of recent contents (~220 KB each at 96 px): a content paired with several styles
        # (cross or sample:K manifests, whose rows of one content are adjacent) goes through the network once
        self._content_cache: OrderedDict[bytes, torch.Tensor] = OrderedDict()  # by evaluation-size pixel digest
        self._content_cache_max = content_cache
        self._dirs = _projections(self.projections, self.seed).to(self.device)
        self.seconds = 0.0  # total time spent measuring (for the cost fraction)
        self.rows = 0

    def describe(self) -> dict:
        """What ran: the summary's ``evaluator`` entry."""
        return {"network": "vgg19", "encoder": self.spec, "requested": self.requested, "size": self.size,
                "content_layer": CONTENT_LAYER, "style_layers": list(STYLE_LAYERS), "ssim": "luminance Y, gaussian 11/1.5",
                "color_distance": f"sliced wasserstein-2 in Lab, {self.projections} projections", "device": str(self.device)}

    @property
    def net(self) -> VGG19Encoder:
        with self._lock:
            if self._net is None:
                self._net = load_vgg19_encoder(self.spec, progress=False).to(self.device, memory_format=memory_format(self.device))
            return self._net

    def _eval_size(self, img: Image.Image) -> tuple[int, int]:
        w, h = img.size
        scale = min(1.0, self.size / max(w, h)) if self.size else 1.0
        return max(1, round(w * scale)), max(1, round(h * scale))

    def _eval_image(self, img: Image.Image, size: tuple[int, int] | None = None) -> Image.Image:
        """``img`` in RGB at ``size`` (default: the long side at most ``self.size``); one filter for every image."""
        img = img.convert("RGB")
        size = size or self._eval_size(img)
        if img.size != size:
            img = img.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
        return img

    def _tensor(self, img: Image.Image, size: tuple[int, int] | None = None) -> torch.Tensor:
        """RGB tensor at ``size`` (default: the long side at most ``self.size``)."""
        return to_tensor(self._eval_image(img, size)).to(self.device)

    def _features(self, x: torch.Tensor, layers=_FEATURE_LAYERS) -> dict[str, torch.Tensor]:
        # exact fp32 on CUDA too (no TF32): the same row gets the same figures on any device
        with torch.inference_mode(), exact_math(self.device):
            return self.net(x.contiguous(memory_format=memory_format(self.device)), layers)

    def _style_stats(self, img: Image.Image, key: str | None) -> dict:
        """Gram matrices at the style layers and Lab quantiles of one style, cached by ``key`` (e.g. its URI) and
        its evaluation size, or without a key by a digest of its evaluation-size pixels. The shard runner decodes
        one style at the size each row needs: keyed by the URI alone, whichever decode came first served every
        later row, so a row's style_loss depended on the order of the rows (3x apart)."""
        small = None
        if not key:
            small = self._eval_image(img)
            key = _pixel_digest(small)
        ck = (key, self._eval_size(img), self.size)
        if ck in self._style_cache:
            return self._style_cache[ck]
        t = self._tensor(small if small is not None else img)
        stats = {"gram": {l: gram_matrix(v) for l, v in self._features(t, STYLE_LAYERS).items()},
                 "lab_q": lab_quantiles(t, self._dirs)[0]}
        if len(self._style_cache) >= self._style_cache_max:
            self._style_cache.pop(next(iter(self._style_cache)))
        self._style_cache[ck] = stats
        return stats

    def evaluate(self, content_img: Image.Image, style_imgs: Sequence[Image.Image], output_img: Image.Image,
                 style_weights: Sequence[float] | None = None, style_keys: Sequence[str] = ()) -> dict:
        """Metrics of one output (see the module docstring)."""
        return self.evaluate_batch([QualityItem(content_img, list(style_imgs), output_img,
                                                list(style_weights) if style_weights else None, list(style_keys))])[0]

    def evaluate_batch(self, items: Sequence[QualityItem]) -> list[dict]:
        """Metrics for many rows; rows whose evaluation size matches run through the network together."""
        t0 = time.perf_counter()
        with self._lock:
            prepared, digests = [], []
            for it in items:
                small = self._eval_image(it.content)
                digests.append(_pixel_digest(small))
                c = self._tensor(small)
                o = self._tensor(it.output, size=small.size)
                prepared.append((c, o))
            groups: dict[tuple, list[int]] = {}
            for i, (c, _) in enumerate(prepared):
                groups.setdefault(tuple(c.shape[-2:]), []).append(i)
            values: list[torch.Tensor | None] = [None] * len(items)
            for idx in groups.values():
                cs = torch.cat([prepared[i][0] for i in idx])
                os_ = torch.cat([prepared[i][1] for i in idx])
                with torch.inference_mode():
                    cf = self._content_features([digests[i] for i in idx], cs)
                    of = self._features(os_)
                    ssims = ssim(luminance(os_), luminance(cs))
                    out_q = lab_quantiles(os_, self._dirs)
                    for j, i in enumerate(idx):
                        values[i] = self._metrics(items[i], {CONTENT_LAYER: cf[j]},
                                                  {k: v[j:j + 1] for k, v in of.items()}, ssims[j], out_q[j])
            table = torch.stack(values).double().cpu().tolist()  # one device sync for the whole batch
            results = []
            for row in table:
                res: dict = dict(zip(METRICS, row))
                res["evaluator"], res["evaluator_size"] = self.spec, self.size
                results.append(res)
        self.seconds += time.perf_counter() - t0
        self.rows += len(items)
        return results

    def _content_features(self, digests: Sequence[bytes], cs: torch.Tensor) -> list[torch.Tensor]:
        """The (1, C, h, w) content-layer features of each content of a same-size group ``cs``, given the digests
        of their evaluation-size pixels: each distinct content runs through the network once, and recently
        seen ones come from the cache (a content paired with several styles is measured once)."""
        feats: list[torch.Tensor | None] = [None] * len(digests)
        todo: dict[bytes, list[int]] = {}
        for j, key in enumerate(digests):
            if key in self._content_cache:
                self._content_cache.move_to_end(key)
                feats[j] = self._content_cache[key]
            else:
                todo.setdefault(key, []).append(j)
        if todo:
            f = self._features(cs[[rows[0] for rows in todo.values()]], (CONTENT_LAYER,))[CONTENT_LAYER]
            for n, (key, rows) in enumerate(todo.items()):
                one = f[n:n + 1].clone()  # not a view: a cached entry must not pin the whole batch
                for j in rows:
                    feats[j] = one
                self._content_cache[key] = one
                if len(self._content_cache) > self._content_cache_max:
                    self._content_cache.popitem(last=False)
        return feats

    def _style_loss(self, it: QualityItem, of: dict[str, torch.Tensor]) -> tuple[StyleLoss, list[torch.Tensor]]:
        """The StyleLoss against the item's blended styles, and each style's Lab quantiles."""
        keys = list(it.style_keys) + [None] * (len(it.styles) - len(it.style_keys))
        stats = [self._style_stats(s, k) for s, k in zip(it.styles, keys)]
        blend = normalise_weights(list(it.style_weights) if it.style_weights else None, len(stats))
        # Same targets as StyleLoss.from_features: the blend-weighted mean of the styles' Gram matrices.
        targets = {l: sum(w * st["gram"][l] for st, w in zip(stats, blend)) for l in STYLE_LAYERS}
        return StyleLoss(targets, normalize=True), [st["lab_q"] for st in stats]

    def _metrics(self, it: QualityItem, cf: dict, of: dict, ssim_value: torch.Tensor, out_q: torch.Tensor) -> torch.Tensor:
        """The ``METRICS`` of one row as a tensor (NaN style metrics when the row has no style)."""
        content = ContentLoss(CONTENT_LAYER, cf[CONTENT_LAYER], normalize=True)(of)
        if it.styles:
            sl, style_q = self._style_loss(it, of)
            style, color = sl(of), swd_from_quantiles(out_q, style_q, it.style_weights)
        else:
            style = color = torch.tensor(math.nan, device=content.device)
        return torch.stack([content.float(), style.float(), ssim_value.float(), color.float()])

    def breakdown(self, content_img: Image.Image, style_imgs: Sequence[Image.Image], output_img: Image.Image,
                  style_weights: Sequence[float] | None = None, *, maps: int = 4) -> dict:
        """For reports: per-layer style losses (``StyleLoss.per_layer``) and the strongest feature maps.

        Returns ``{"per_layer": {layer: loss}, "layer_weights": {...}, "feature_maps": {layer: [PIL L images]}}``;
        feature maps are the ``maps`` output channels with the highest mean activation at each style layer,
        normalised to 0..255.
        """
        item = QualityItem(content_img, list(style_imgs), output_img, list(style_weights) if style_weights else None)
        with self._lock:
            c = self._tensor(content_img)
            o = self._tensor(output_img, size=(c.shape[-1], c.shape[-2]))
            of = self._features(o)
            sl, _ = self._style_loss(item, of)
            per = {l: float(v) for l, v in sl.per_layer(of).items()}
            fmaps = {}
            for layer in STYLE_LAYERS:
                f = of[layer][0].float()
                top = f.mean(dim=(1, 2)).topk(min(maps, f.shape[0])).indices
                imgs = []
                for ch in top.tolist():
                    m = f[ch]
                    m = (m - m.min()) / (m.max() - m.min()).clamp_min(1e-8)
                    arr = (m * 255).round().to(torch.uint8).cpu().numpy()
                    imgs.append(Image.fromarray(arr, mode="L"))
                fmaps[layer] = imgs
        return {"per_layer": per, "layer_weights": dict(sl.layer_weights), "feature_maps": fmaps}


_EVALUATORS: dict[tuple, QualityEvaluator] = {}
_EVALUATORS_LOCK = threading.Lock()


def get_evaluator(encoder: str | None = None, *, size: int | None = None, device: str = "auto") -> QualityEvaluator:
    """The process-wide evaluator for this config (built once, like ``engine.get_engine``).

    ``encoder``/``size`` default to ``$STYLIZE_QUALITY_ENCODER`` (else ``auto``) and ``$STYLIZE_QUALITY_SIZE``
    (else ``DEFAULT_SIZE``).
    """
    encoder = encoder or os.environ.get("STYLIZE_QUALITY_ENCODER") or "auto"
    size = int(size or os.environ.get("STYLIZE_QUALITY_SIZE") or DEFAULT_SIZE)
    key = (resolve_evaluator_spec(encoder), size, str(device))
    with _EVALUATORS_LOCK:
        ev = _EVALUATORS.get(key)
        if ev is None:
            ev = _EVALUATORS[key] = QualityEvaluator(encoder, size=size, device=device)
        return ev
