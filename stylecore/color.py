"""Colour helpers: YIQ luminance/chrominance and statistics matching, all in torch."""
from __future__ import annotations

import torch

_RGB2YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]])


def rgb_to_yiq(x: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) RGB -> YIQ."""
    m = _RGB2YIQ.to(x.device, x.dtype)
    return torch.einsum("ij,bjhw->bihw", m, x)


def yiq_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) YIQ -> RGB."""
    m = torch.linalg.inv(_RGB2YIQ.double()).to(x.device, x.dtype)
    return torch.einsum("ij,bjhw->bihw", m, x)


def luminance(x: torch.Tensor) -> torch.Tensor:
    """(B,1,H,W) luminance Y of an RGB image."""
    return rgb_to_yiq(x)[:, :1]


def match_luminance(style_y: torch.Tensor, content_y: torch.Tensor) -> torch.Tensor:
    """Shift and scale the style's luminance to the content's mean and standard deviation."""
    ms, ss = style_y.mean(), style_y.std().clamp_min(1e-5)
    mc, sc = content_y.mean(), content_y.std()
    return ((style_y - ms) * (sc / ss) + mc).clamp(0, 1)


def combine_luminance(luma_rgb: torch.Tensor, chroma_from: torch.Tensor) -> torch.Tensor:
    """Take Y from ``luma_rgb`` and I/Q from ``chroma_from`` (same size), back to RGB clamped to [0, 1]."""
    y = rgb_to_yiq(luma_rgb)[:, :1]
    iq = rgb_to_yiq(chroma_from)[:, 1:]
    return yiq_to_rgb(torch.cat([y, iq], dim=1)).clamp(0, 1)


def match_color_covariance(source: torch.Tensor, target: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Recolour ``source`` (B,3,H,W) so its RGB mean and covariance match ``target``'s (B or 1,3,h,w).

    The linear map is Σ_t^{1/2} Σ_s^{-1/2} (symmetric square roots via eigendecomposition), as in
    Gatys et al. "Controlling perceptual factors" (colour histogram matching).
    """
    out = []
    for i in range(source.shape[0]):
        s = source[i].reshape(3, -1).double()
        t = target[min(i, target.shape[0] - 1)].reshape(3, -1).double()
        ms, mt = s.mean(1, keepdim=True), t.mean(1, keepdim=True)
        cs = torch.cov(s) + eps * torch.eye(3, dtype=s.dtype, device=s.device)
        ct = torch.cov(t) + eps * torch.eye(3, dtype=t.dtype, device=t.device)
        es, vs = torch.linalg.eigh(cs)
        et, vt = torch.linalg.eigh(ct)
        cs_isqrt = vs @ torch.diag(es.clamp_min(eps).rsqrt()) @ vs.T
        ct_sqrt = vt @ torch.diag(et.clamp_min(0).sqrt()) @ vt.T
        mapped = ct_sqrt @ cs_isqrt @ (s - ms) + mt
        out.append(mapped.reshape(source[i].shape).to(source.dtype))
    return torch.stack(out).clamp(0, 1)
