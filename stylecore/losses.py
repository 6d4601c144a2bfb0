"""Style-transfer losses as small composable modules (Gatys et al. 2016).

- ``gram_matrix``: F·Fᵀ / (C·H·W) per image.
- ``ContentLoss``: L2 (mean squared) or L1 (mean absolute) distance to target features.
- ``StyleLoss``: weighted sum over layers of the mean squared distance between Gram matrices.
- ``tv_loss``: mean squared differences of neighbouring pixels, vertical plus horizontal.

With ``normalize=True`` each content/style term is divided by the mean square of its target plus
``NORMALIZE_FLOOR``, which makes one set of weights work across encoders whose activations differ in scale
(ImageNet vs random VGG19). The floor is small against ImageNet VGG19's Gram statistics but not against a
random VGG19's deep ones (target mean squares of about 2e-9 at relu3_1 and 3e-10 at relu4_1/relu5_1 on the
example styles at 256 px), so with random weights it lowers the deep layers' share of the style loss several
times. The Gatys defaults were chosen with it: a floor of 1e-30 (a pure normalisation) gave noisier, weaker
stylizations with random weights on the example pairs, so it stays as a deliberate setting.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

NORMALIZE_FLOOR = 1e-8  # see the module docstring: deliberate, not only a guard against 0


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """Gram matrices of (B, C, H, W) features, normalised by C·H·W: returns (B, C, C) in float32."""
    b, c, h, w = features.shape
    f = features.float().reshape(b, c, h * w)
    return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)


def tv_loss(image: torch.Tensor) -> torch.Tensor:
    """Total variation: mean squared vertical plus mean squared horizontal pixel differences."""
    dy = image[:, :, 1:, :] - image[:, :, :-1, :]
    dx = image[:, :, :, 1:] - image[:, :, :, :-1]
    return dy.pow(2).mean() + dx.pow(2).mean()


class ContentLoss(nn.Module):
    """Distance between the features at one layer and fixed target features."""

    def __init__(self, layer: str, target: torch.Tensor, kind: str = "l2", normalize: bool = False):
        super().__init__()
        if kind not in ("l2", "l1"):
            raise ValueError(f"content loss kind must be l2 or l1, got {kind!r}")
        self.layer, self.kind = layer, kind
        self.register_buffer("target", target.detach().float())
        scale = target.detach().float().pow(2).mean().item() + NORMALIZE_FLOOR if normalize else 1.0
        if kind == "l1" and normalize:
            scale = target.detach().float().abs().mean().item() + NORMALIZE_FLOOR
        self.scale = scale

    def forward(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        x = features[self.layer].float()
        if self.kind == "l2":
            return F.mse_loss(x, self.target) / self.scale
        return F.l1_loss(x, self.target) / self.scale


class StyleLoss(nn.Module):
    """Weighted Gram-matrix loss over several layers against fixed target Gram matrices."""

    def __init__(self, targets: Mapping[str, torch.Tensor], layer_weights: Mapping[str, float] | None = None,
                 normalize: bool = False):
        super().__init__()
        self.layers: Sequence[str] = list(targets)
        self.layer_weights = {l: float((layer_weights or {}).get(l, 1.0 / len(self.layers))) for l in self.layers}
        self.targets = {l: t.detach().float() for l, t in targets.items()}
        self.scales = {l: (t.detach().float().pow(2).mean().item() + NORMALIZE_FLOOR) if normalize else 1.0
                       for l, t in self.targets.items()}

    @classmethod
    def from_features(cls, features: Sequence[Mapping[str, torch.Tensor]], blend: Sequence[float], layers: Sequence[str],
                      layer_weights: Mapping[str, float] | None = None, normalize: bool = False) -> "StyleLoss":
        """Targets are the blend-weighted mean of each style image's Gram matrices."""
        targets = {}
        for l in layers:
            targets[l] = sum(w * gram_matrix(f[l]) for f, w in zip(features, blend))
        return cls(targets, layer_weights, normalize)

    def per_layer(self, features: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Unweighted per-layer losses (for reports and interpretability)."""
        out = {}
        for l in self.layers:
            g = gram_matrix(features[l])
            t = self.targets[l].to(g.device)
            out[l] = F.mse_loss(g, t.expand_as(g)) / self.scales[l]
        return out

    def forward(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        per = self.per_layer(features)
        return sum(self.layer_weights[l] * v for l, v in per.items())
