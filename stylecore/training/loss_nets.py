"""Frozen loss networks built from weight specs (the AdaIN encoder is ``stylecore.adain.load_adain_encoder``).

- ``VGG16Loss``: relu1_2, relu2_2, relu3_3, relu4_3 of torchvision's ``vgg16().features`` for the Johnson
  recipe; it takes RGB in [0, 255] and applies fast_neural_style's ``normalize_batch`` (/255, ImageNet mean/std).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from ..errors import WeightsError
from ..vgg import IMAGENET_MEAN, IMAGENET_STD, kaiming_init_
from ..weights import WeightSpec, load_state_dict, parse_spec, refuse_batchnorm

VGG16_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
_VGG16_SPLITS = (4, 9, 16, 23)  # fast_neural_style's Vgg16 slices


def _freeze(module: nn.Module) -> nn.Module:
    for m in module.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    module.requires_grad_(False)
    return module.eval()


class VGG16Loss(nn.Module):
    """fast_neural_style's Vgg16 loss network; input RGB in [0, 255]."""

    def __init__(self, features: nn.Sequential):
        super().__init__()
        mods = list(features.children())[:_VGG16_SPLITS[-1]]
        bounds = (0,) + _VGG16_SPLITS
        self.slices = nn.ModuleList(nn.Sequential(*mods[a:b]) for a, b in zip(bounds, bounds[1:]))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        _freeze(self)

    def normalize(self, x255: torch.Tensor) -> torch.Tensor:
        """fast_neural_style's ``normalize_batch``: [0, 255] to ImageNet-normalised."""
        return (x255 / 255.0 - self.mean) / self.std

    def forward(self, x255: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.normalize(x255)
        out = {}
        for name, s in zip(VGG16_LAYERS, self.slices):
            x = s(x)
            out[name] = x
        return out


def vgg16_features() -> nn.Sequential:
    """torchvision's ``vgg16().features`` layout, built without the (large) classifier."""
    return make_layers(cfgs["D"], batch_norm=False)


def random_vgg16_features(seed: int) -> nn.Sequential:
    """VGG16 features with torchvision's initialisation scheme, deterministic for ``seed``."""
    return kaiming_init_(vgg16_features(), seed)


def _vgg16_imagenet_state() -> dict[str, torch.Tensor]:
    from torchvision.models import VGG16_Weights

    weights = VGG16_Weights.IMAGENET1K_V1
    try:
        return weights.get_state_dict(progress=True, check_hash=True, weights_only=True)
    except Exception as e:  # URLError, socket errors, hash mismatch...
        cache = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(
            f"loss network imagenet: VGG16_Weights.IMAGENET1K_V1 is not cached at {cache} and could not be "
            f"downloaded ({reason[:160]}); alternatives: copy {os.path.basename(weights.url)} there, pass a local "
            f"path or s3:// URI in torchvision vgg16 layout with --loss-network, or use --loss-network random:SEED"
        ) from None


def load_vgg16_loss(spec: str | WeightSpec) -> VGG16Loss:
    """VGG16 loss network from a spec: ``imagenet`` (torchvision VGG16_Weights.IMAGENET1K_V1 via its cache),
    ``random:SEED``, or a path / s3:// URI holding a torchvision ``vgg16`` (or ``vgg16().features``) state_dict."""
    ws = spec if isinstance(spec, WeightSpec) else parse_spec(spec, what="loss network")
    if ws.kind == "random":
        return VGG16Loss(random_vgg16_features(int(ws.value)))
    state = _vgg16_imagenet_state() if ws.kind == "imagenet" else load_state_dict(ws, what="loss network")
    refuse_batchnorm(state, f"loss network {ws.text}", "vgg16")
    features = vgg16_features()
    feats = {}
    for k, v in state.items():
        if k.startswith("classifier."):
            continue
        key = k[len("features."):] if k.startswith("features.") else k
        head = key.split(".", 1)[0]
        if not head.isdigit():
            raise WeightsError(f"loss network {ws.text}: unexpected key {k!r}; expected torchvision vgg16 keys (features.N.weight)")
        feats[key] = v
    try:
        features.load_state_dict(feats, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise WeightsError(f"loss network {ws.text}: does not match torchvision's vgg16 layout "
                           f"({' '.join(' '.join(first[:2]).split())[:200]})") from None
    return VGG16Loss(features)
