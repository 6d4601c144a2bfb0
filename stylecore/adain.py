"""AdaIN arbitrary style transfer (Huang & Belongie 2017): encoder/decoder loading and the AdaIN op.

Encoders (``load_adain_encoder(spec)``), all mapping RGB in [0, 1] to relu4_1 features:

* a state_dict in pytorch-AdaIN's ``vgg_normalised.pth`` layout (detected by its 1×1 3→3 conv at key
  ``0``): no normalisation, the first 31 modules;
* any torchvision VGG19 spec (``imagenet``, a torchvision-layout file, ``s3://``) with ImageNet
  normalisation, for decoders trained that way (max-pools switched to ceil mode, which only matters
  for sides that are not multiples of 8);
* ``random:SEED``: torchvision's VGG19 with its own initialisation drawn from SEED (the same network
  that ``random:SEED`` gives the Gatys method), with ImageNet normalisation.

Decoders (``load_adain_decoder(spec)``): a state_dict in the ``decoder.pth`` layout, or ``random:SEED``
(He-normal weights drawn from SEED, the last conv rescaled so that the output sits mid-grey with
visible structure, for tests and benchmarks). There is no default decoder.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .adain_net import ENCODER_RELU4_1, decoder as decoder_layout, normalised_vgg
from .errors import WeightsError
from .vgg import IMAGENET_MEAN, IMAGENET_STD, LAYERS, VGG19Encoder, random_vgg19_features
from .weights import (WeightSpec, load_exact_state_dict, load_state_dict, parse_spec, role_hint,
                      torchvision_imagenet_state_dict)

EPS = 1e-5
SCALE = 8  # the encoder downsamples by 8 (three ceil-mode max-pools); the decoder upsamples by 8
# Indices of relu1_1, relu2_1, relu3_1, relu4_1 in each layout (for losses that need all four).
_NORMALISED_TAPS = (3, 10, 17, 30)
_TORCHVISION_TAPS = tuple(LAYERS[n] for n in ("relu1_1", "relu2_1", "relu3_1", "relu4_1"))


class AdaINEncoder(nn.Module):
    """VGG19 up to relu4_1; ``layout`` is ``normalised`` (pytorch-AdaIN) or ``torchvision`` (ImageNet-normalised)."""

    def __init__(self, body: nn.Sequential, layout: str):
        super().__init__()
        self.layout = layout
        self.body = body
        self.taps = _NORMALISED_TAPS if layout == "normalised" else _TORCHVISION_TAPS
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        if self.layout == "torchvision":
            return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """relu4_1 features of RGB images in [0, 1]."""
        return self.body(self._prep(x))

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """relu1_1, relu2_1, relu3_1 and relu4_1 (the AdaIN training losses use all four)."""
        x = self._prep(x)
        out = []
        for i, module in enumerate(self.body):
            x = module(x)
            if i in self.taps:
                out.append(x)
        return out


def _digit_keys(state: dict) -> bool:
    return bool(state) and all(k.split(".", 1)[0].isdigit() for k in state)


def is_normalised_vgg(state: dict[str, torch.Tensor]) -> bool:
    """True for a pytorch-AdaIN ``vgg_normalised.pth`` state_dict (index 0 is a 1×1 conv from 3 to 3 channels)."""
    w = state.get("0.weight")
    return _digit_keys(state) and w is not None and tuple(w.shape) == (3, 3, 1, 1)


def _load_normalised(state: dict[str, torch.Tensor], label: str) -> AdaINEncoder:
    full = normalised_vgg()
    keep = {k: v for k, v in state.items() if int(k.split(".", 1)[0]) < ENCODER_RELU4_1}
    body = nn.Sequential(*list(full.children())[:ENCODER_RELU4_1])
    expected = body.state_dict()
    missing = [k for k in expected if k not in keep]
    if missing:
        raise WeightsError(f"{label}: incomplete vgg_normalised.pth layout (missing {', '.join(missing[:4])})")
    bad = [k for k in expected if tuple(keep[k].shape) != tuple(expected[k].shape)]
    if bad:
        k = bad[0]
        raise WeightsError(f"{label}: key {k} has shape {tuple(keep[k].shape)}, vgg_normalised.pth has {tuple(expected[k].shape)}")
    body.load_state_dict(keep, strict=True)
    for m in body.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    return AdaINEncoder(body, "normalised")


def _torchvision_body(features: nn.Sequential) -> nn.Sequential:
    """torchvision's VGG19 up to relu4_1, with ceil-mode max-pools like the normalised layout.

    Identical to torchvision's floor-mode pools when sides are multiples of 8; for other sizes the
    partial border cells are kept, so the decoder's output covers the whole input.
    """
    body = nn.Sequential(*list(features.children())[: LAYERS["relu4_1"] + 1])
    for m in body.modules():
        if isinstance(m, nn.MaxPool2d):
            m.ceil_mode = True
        if isinstance(m, nn.ReLU):
            m.inplace = False
    return body


def load_adain_encoder(spec: str | WeightSpec, *, progress: bool = True) -> AdaINEncoder:
    """Build the AdaIN encoder named by a weight spec (layout detected from the state_dict's keys and shapes)."""
    ws = spec if isinstance(spec, WeightSpec) else parse_spec(spec, what="encoder")
    if ws.kind == "random":
        return AdaINEncoder(_torchvision_body(random_vgg19_features(int(ws.value))), "torchvision")
    if ws.kind == "imagenet":
        state, label = torchvision_imagenet_state_dict(progress=progress), "encoder imagenet"
    else:
        state, label = load_state_dict(ws, what="encoder"), f"encoder {ws.text}"
    if is_normalised_vgg(state):
        return _load_normalised(state, label)
    w0 = state.get("features.0.weight", state.get("0.weight"))
    if w0 is None or tuple(w0.shape) != (64, 3, 3, 3):
        first = ", ".join(list(state)[:3])
        raise WeightsError(f"{label}: neither a vgg_normalised.pth nor a torchvision VGG19 state_dict (keys start {first})"
                           f"{role_hint(state, label)}")
    enc = VGG19Encoder(normalize=False)
    enc.load_features_state_dict(state, label)
    return AdaINEncoder(_torchvision_body(enc.features), "torchvision")


def load_adain_decoder(spec: str | WeightSpec) -> nn.Sequential:
    """Build the AdaIN decoder from a ``decoder.pth``-layout state_dict or ``random:SEED``."""
    ws = spec if isinstance(spec, WeightSpec) else parse_spec(spec, allow_imagenet=False, what="decoder")
    if ws.kind == "imagenet":
        raise WeightsError("decoder: 'imagenet' names an encoder; give a decoder.pth path, s3:// URI or random:SEED")
    if ws.kind == "random":
        dec = he_init(decoder_layout(), int(ws.value), out_gain=3.0, out_bias=0.45)
    else:
        label = f"decoder {ws.text}"
        state = load_state_dict(ws, what="decoder")
        dec = decoder_layout()
        load_exact_state_dict(dec, state, label, layout="pytorch-AdaIN decoder.pth layout", shape_name="decoder.pth")
    dec.requires_grad_(False)
    return dec.eval()


def he_init(net: nn.Module, seed: int, out_gain: float = 1.0, out_bias: float = 0.0) -> nn.Module:
    """Re-initialise every conv with He-normal weights (fan-in) and zero biases, deterministically from ``seed``.

    The last conv's weights are scaled by ``out_gain`` and its bias set to ``out_bias``, so that a random
    network's output sits mid-range with visible structure instead of collapsing to black.
    """
    gen = torch.Generator().manual_seed(seed)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        for m in convs:
            fan_in = m.weight[0].numel()
            m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
            m.bias.zero_()
        convs[-1].weight.mul_(out_gain)
        convs[-1].bias.fill_(out_bias)
    return net


# -- the AdaIN operation -----------------------------------------------------------------------------

def mean_std(feat: torch.Tensor, eps: float = EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel mean and std over H×W (unbiased variance, eps inside the square root), float32."""
    f = feat.float().flatten(2)
    return f.mean(2)[..., None, None], (f.var(2, unbiased=True) + eps).sqrt()[..., None, None]


@dataclass
class Stats:
    """Channel statistics of a feature map: ``mean`` and ``std`` of shape (C,), float32."""

    mean: torch.Tensor
    std: torch.Tensor

    @staticmethod
    def blend(stats: list["Stats"], weights: list[float]) -> "Stats":
        """Style interpolation: Σ wᵢ·AdaIN(c, sᵢ) equals AdaIN with the weighted mean and std."""
        return Stats(sum(w * s.mean for w, s in zip(weights, stats)), sum(w * s.std for w, s in zip(weights, stats)))


class StatsAccumulator:
    """Streams per-label channel sums over feature tiles, giving the same statistics as one big feature map."""

    def __init__(self, channels: int, labels: int = 1):
        self.n = torch.zeros(labels, dtype=torch.float64)
        self.s1 = torch.zeros(labels, channels, dtype=torch.float64)
        self.s2 = torch.zeros(labels, channels, dtype=torch.float64)

    def add(self, feat: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        """Add a (C,h,w) feature crop; ``labels`` (h,w) long assigns its cells to labels (all 0 if None)."""
        f = feat.detach().double().flatten(1).cpu()
        lab = torch.zeros(f.shape[1], dtype=torch.long) if labels is None else labels.flatten().cpu()
        k = self.n.shape[0]
        onehot = F.one_hot(lab, k).double()  # (hw, k)
        self.n += onehot.sum(0)
        self.s1 += (f @ onehot).T
        self.s2 += ((f * f) @ onehot).T

    def stats(self, label: int = 0, eps: float = EPS) -> Stats | None:
        """Mean and unbiased std (+eps inside the root) of one label; None when it has fewer than two cells."""
        n = float(self.n[label])
        if n < 2:
            return None
        mean = self.s1[label] / n
        var = ((self.s2[label] - n * mean * mean) / (n - 1)).clamp_min(0)
        return Stats(mean.float(), (var + eps).sqrt().float())


def adain_features(content_f: torch.Tensor, target: list[Stats], alpha: float | torch.Tensor,
                   content_stats: list[Stats] | None = None, labels: torch.Tensor | None = None) -> torch.Tensor:
    """AdaIN of content features (B,C,h,w) toward per-sample target statistics, blended with ``alpha``.

    ``content_stats`` overrides the per-sample content statistics (tiling uses whole-image ones). With
    ``labels`` (B=1; (h,w) long), each label region k is normalised with its own content statistics
    ``content_stats[k]`` and takes ``target[k]``. ``alpha`` is a number or a per-sample (B,1,1,1) tensor.
    """
    cf = content_f.float()
    dev = cf.device
    if labels is not None:
        out = cf.clone()
        for k, (cs, ts) in enumerate(zip(content_stats, target)):
            sel = labels == k
            if cs is None or not bool(sel.any()):
                continue
            region = cf[0][:, sel]
            cm, csd = cs.mean.to(dev)[:, None], cs.std.to(dev)[:, None]
            out[0][:, sel] = (region - cm) / csd * ts.std.to(dev)[:, None] + ts.mean.to(dev)[:, None]
    else:
        if content_stats is None:
            cm, csd = mean_std(cf)
        else:
            cm = torch.stack([s.mean for s in content_stats]).to(dev)[..., None, None]
            csd = torch.stack([s.std for s in content_stats]).to(dev)[..., None, None]
        tm = torch.stack([t.mean for t in target]).to(dev)[..., None, None]
        ts = torch.stack([t.std for t in target]).to(dev)[..., None, None]
        out = (cf - cm) / csd * ts + tm
    return blend_alpha(out, cf, alpha)


def blend_alpha(stylized: torch.Tensor, content: torch.Tensor, alpha: float | torch.Tensor) -> torch.Tensor:
    """``alpha·stylized + (1−alpha)·content`` in feature space; ``alpha`` is a number or a (B,1,1,1) tensor."""
    if isinstance(alpha, torch.Tensor):
        alpha = alpha.to(content.device, torch.float32)
        return alpha * stylized + (1.0 - alpha) * content
    if alpha != 1.0:
        return alpha * stylized + (1.0 - alpha) * content
    return stylized


# -- masks (spatial control) ---------------------------------------------------------------------

def mask_labels(mask, n_styles: int, size: tuple[int, int]) -> torch.Tensor:
    """Labels (H,W) long from a mask image: style i takes the pixels whose grey level is nearest 255·(N−1−i)/(N−1).

    So with two styles white regions take the first style and black regions the second; with three,
    white/mid-grey/black take styles 1/2/3. The mask is converted to greyscale and resized (nearest)
    to the content's ``size`` (W, H).
    """
    import numpy as np
    from PIL import Image

    grey = mask.convert("L")
    if grey.size != tuple(size):
        grey = grey.resize(tuple(size), Image.Resampling.NEAREST)
    v = torch.from_numpy(np.asarray(grey, dtype=np.float32).copy())
    return torch.round((255.0 - v) / 255.0 * (n_styles - 1)).long().clamp_(0, n_styles - 1)


def feature_labels(labels: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Downsample pixel labels (H,W) to the feature grid (h,w): each cell takes the label at its 8×8 block's centre."""
    H, W = labels.shape
    ys = (torch.arange(h) * SCALE + SCALE // 2).clamp_max(H - 1)
    xs = (torch.arange(w) * SCALE + SCALE // 2).clamp_max(W - 1)
    return labels[ys][:, xs]
