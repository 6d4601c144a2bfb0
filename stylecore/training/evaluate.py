"""Measures of a stylization: did colours and textures move toward the style, and did the content stay?

- ``colour_swd``: sliced Wasserstein distance between the RGB pixel distributions of two images (0–1 scale).
- ``gram_distance``: mean over relu1_1..relu4_1 of a fixed random VGG19 of the relative Gram distance
  ‖G(a) − G(b)‖ / ‖G(b)‖ (texture statistics; random weights capture low-level texture, not semantics).
- ``gradient_correlation``: Pearson correlation of the luminance gradient magnitudes (edges stay in place).
- ``ssim``: mean structural similarity of the luminance (11×11 Gaussian window).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..images import to_tensor
from ..losses import gram_matrix
from ..vgg import load_vgg19_encoder

_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
_ENCODERS: dict[int, torch.nn.Module] = {}


def _luma(img: Image.Image) -> torch.Tensor:
    t = to_tensor(img)
    return (0.299 * t[:, 0:1] + 0.587 * t[:, 1:2] + 0.114 * t[:, 2:3]).double()


def colour_swd(a: Image.Image, b: Image.Image, *, projections: int = 64, samples: int = 4096, seed: int = 0) -> float:
    """Sliced Wasserstein-1 distance between the RGB distributions of ``a`` and ``b`` (values in [0, 1])."""
    rng = np.random.default_rng(seed)
    pa = np.asarray(a.convert("RGB"), float).reshape(-1, 3) / 255
    pb = np.asarray(b.convert("RGB"), float).reshape(-1, 3) / 255
    pa = pa[rng.choice(len(pa), min(samples, len(pa)), replace=False)]
    pb = pb[rng.choice(len(pb), min(samples, len(pb)), replace=False)]
    dirs = rng.normal(size=(projections, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    q = np.linspace(0, 1, 256)
    qa = np.quantile(pa @ dirs.T, q, axis=0)
    qb = np.quantile(pb @ dirs.T, q, axis=0)
    return float(np.abs(qa - qb).mean())


def gram_distance(a: Image.Image, b: Image.Image, *, encoder_seed: int = 12345) -> float:
    """Mean relative Gram-matrix distance of ``a`` to ``b`` under a fixed random VGG19 (random:encoder_seed)."""
    enc = _ENCODERS.get(encoder_seed)
    if enc is None:
        enc = _ENCODERS[encoder_seed] = load_vgg19_encoder(f"random:{encoder_seed}")
    with torch.no_grad():
        fa, fb = enc(to_tensor(a), _LAYERS), enc(to_tensor(b), _LAYERS)
    d = [((gram_matrix(fa[l]) - gram_matrix(fb[l])).norm() / (gram_matrix(fb[l]).norm() + 1e-12)).item() for l in _LAYERS]
    return float(np.mean(d))


def _grad_mag(y: torch.Tensor) -> torch.Tensor:
    gx = y[..., :, 1:] - y[..., :, :-1]
    gy = y[..., 1:, :] - y[..., :-1, :]
    return (gx[..., :-1, :] ** 2 + gy[..., :, :-1] ** 2).sqrt()


def gradient_correlation(a: Image.Image, b: Image.Image) -> float:
    """Pearson correlation of the luminance gradient magnitudes of two same-size images."""
    ga, gb = _grad_mag(_luma(a)).flatten(), _grad_mag(_luma(b)).flatten()
    ga, gb = ga - ga.mean(), gb - gb.mean()
    return float((ga @ gb) / (ga.norm() * gb.norm() + 1e-12))


def ssim(a: Image.Image, b: Image.Image) -> float:
    """Mean SSIM of the luminance of two same-size images (Gaussian window 11, sigma 1.5)."""
    x, y = _luma(a), _luma(b)
    g = torch.exp(-((torch.arange(11, dtype=torch.float64) - 5) ** 2) / (2 * 1.5 ** 2))
    g = g / g.sum()
    win = (g[:, None] * g[None, :]).view(1, 1, 11, 11)
    mu_x, mu_y = F.conv2d(x, win), F.conv2d(y, win)
    sxx = F.conv2d(x * x, win) - mu_x ** 2
    syy = F.conv2d(y * y, win) - mu_y ** 2
    sxy = F.conv2d(x * y, win) - mu_x * mu_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2))
    return float(s.mean())


def measure(content: Image.Image, style: Image.Image, output: Image.Image) -> dict[str, float]:
    """All measures for one (content, style, output) triple; ``output`` has the content's size."""
    return {
        "swd_content_style": colour_swd(content, style),
        "swd_output_style": colour_swd(output, style),
        "gram_content_style": gram_distance(content, style),
        "gram_output_style": gram_distance(output, style),
        "grad_corr": gradient_correlation(output, content),
        "ssim": ssim(output, content),
    }
