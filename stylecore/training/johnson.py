"""Johnson fast-style training, with PyTorch's fast_neural_style example defaults.

Per step: x = content crops in [0, 255]; y = TransformerNet(x). Content loss: content_weight·MSE of
VGG16 relu2_2 of y and x. Style loss: style_weight·Σ MSE(Gram(y), Gram(style)) over relu1_2, relu2_2,
relu3_3, relu4_3 (Gram normalised by C·H·W). Adam at lr 1e-3. With ``normalize_losses`` each term is divided
by its target's mean square, so that all layers count with a random loss network, whose activations are
orders of magnitude smaller than ImageNet VGG16's (the example's weights then do not apply). ``color_weight``
adds a Gram term on the loss network's normalised RGB input (colour mean and covariance), which a random
loss network otherwise transfers weakly; ``content_luminance`` compares only the luminance in the content
loss, so that recolouring toward the style is not penalised as a content change. The network is saved as a plain
TransformerNet state_dict (the example's checkpoint layout).

Differences from the example: crops are random (deterministic for the seed) rather than centred, and the
run is counted in steps rather than epochs.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from .. import storage, uris
from ..device import memory_format, resolve_device
from ..errors import ImageError
from ..images import load_resized, to_tensor
from ..losses import gram_matrix
from ..transformer_net import TransformerNet
from .adain import _check
from .data import CropSampler, list_images
from .loop import TrainResult, absolute_paths, claim_out_dir, print_progress, run_loop
from .loss_nets import VGG16_LAYERS, load_vgg16_loss

# Smallest crop and style side: the VGG16 loss network pools three times before relu4_3 (8 px -> 1 cell).
MIN_SIDE = 8


@dataclass
class JohnsonTrainConfig:
    """Settings of ``train_johnson`` (defaults: the fast_neural_style example's)."""

    content: str
    style: str
    out_dir: str
    loss_network: str = "imagenet"
    steps: int = 40_000
    batch_size: int = 4
    crop: int = 256
    load_size: int = 0  # 0: the crop size (shorter side resized to it, as the example's Resize does)
    style_size: int = 0  # 0: the style image as it is
    lr: float = 1e-3
    content_weight: float = 1e5
    style_weight: float = 1e10
    seed: int = 0
    normalize_losses: bool = False  # divide each term by its target's mean square (for random:SEED loss networks)
    color_weight: float = 0.0  # extra Gram term on the loss network's (normalised) RGB input: colour mean/covariance
    content_luminance: bool = False  # content loss between the luminances (grey images) of output and input
    histogram_weight: float = 0.0  # sliced-Wasserstein loss between the output's and the style's colour distributions
    edge_weight: float = 0.0  # MSE between the luminance gradients of output and input (keeps the content's edges)
    checkpoint_every: int = 2_000
    log_every: int = 10
    workers: int = 2
    device: str = "auto"


def _luma(x: torch.Tensor) -> torch.Tensor:
    """Rec. 601 luma of RGB images, (B, 1, H, W)."""
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def _luminance(x: torch.Tensor) -> torch.Tensor:
    """Rec. 601 luma of RGB images, repeated on three channels."""
    return _luma(x).expand(-1, 3, -1, -1)


def _luma_differences(x: torch.Tensor) -> torch.Tensor:
    """Vertical and horizontal neighbour differences of the luma, flattened per image."""
    lum = _luma(x)
    return torch.cat([lum.diff(dim=-2).flatten(1), lum.diff(dim=-1).flatten(1)], 1)


def edge_loss(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """MSE between the horizontal/vertical luminance differences of ``y`` and ``x``, over their mean square."""
    dy, dx = _luma_differences(y), _luma_differences(x)
    return F.mse_loss(dy, dx) / (dx.pow(2).mean() + 1e-12)


def sliced_colour_loss(y: torch.Tensor, style_pixels: torch.Tensor, generator: torch.Generator,
                       projections: int = 16) -> torch.Tensor:
    """Sliced-Wasserstein distance between each image's colours and the style's (Risser et al. 2017's histogram
    matching, along random RGB directions): sorted projections against the style's quantiles, over their variance.

    ``y``: (B, 3, H, W); ``style_pixels``: (M, 3) on the same scale; directions are drawn from ``generator``.
    """
    dirs = F.normalize(torch.randn(3, projections, generator=generator), dim=0).to(y.device, y.dtype)
    b = y.shape[0]
    py = (y.flatten(2).transpose(1, 2) @ dirs).sort(dim=1).values  # (B, HW, K)
    ps = (style_pixels.to(y.device, y.dtype) @ dirs).sort(dim=0).values  # (M, K)
    idx = torch.linspace(0, ps.shape[0] - 1, py.shape[1], device=y.device).round().long()
    target = ps[idx].unsqueeze(0).expand(b, -1, -1)
    return F.mse_loss(py, target) / (ps.var(dim=0).mean() + 1e-12)


def train_johnson(cfg: JohnsonTrainConfig, *, resume: bool = False,
                  on_log: Callable[[dict], None] | None = print_progress) -> TrainResult:
    """Train (or resume training) a TransformerNet for one style; writes OUTDIR/model.pth, train_state.pth, losses.csv."""
    load_size = cfg.load_size or cfg.crop
    _check(JohnsonTrainConfig(**{**asdict(cfg), "load_size": load_size}), MIN_SIDE,
           "the VGG16 loss network pools three times")
    settings = absolute_paths({**asdict(cfg), "method": "johnson"})
    with claim_out_dir(cfg.out_dir, resume=resume, settings=settings) as (out_dir, state):
        return _train(cfg, out_dir, settings, state, on_log=on_log)


def _train(cfg: JohnsonTrainConfig, out_dir: Path, settings: dict, state: dict | None, *,
           on_log: Callable[[dict], None] | None) -> TrainResult:
    load_size = cfg.load_size or cfg.crop
    device = resolve_device(cfg.device)
    fmt = memory_format(device)
    images = list_images(cfg.content, what="content")
    style, style_name = cfg.style, uris.redact(str(cfg.style))
    if uris.scheme_of(str(style)) is not None:  # file:// or s3://
        style = storage.read_bytes(uris.resolve(style))
    style_img = load_resized(style, cfg.style_size or 0, name=style_name)  # refuses an upscale past the pixel limit
    if min(style_img.size) < MIN_SIDE:
        resized = f" (after --style-size {cfg.style_size})" if cfg.style_size else ""
        raise ImageError(f"{style_name}: {style_img.width}x{style_img.height} px{resized} is too small for the VGG16 "
                         f"loss network (at least {MIN_SIDE} px per side)")
    contents = CropSampler(images, crop=cfg.crop, load_size=load_size,
                           batch_size=cfg.batch_size, seed=cfg.seed, resize="short", workers=cfg.workers)
    vgg = load_vgg16_loss(cfg.loss_network).to(device, memory_format=fmt)
    style_255 = to_tensor(style_img) * 255.0  # (1, 3, H, W) on the CPU
    with torch.no_grad():
        style_feats = vgg(style_255.to(device, memory_format=fmt))
        style_grams = {n: gram_matrix(style_feats[n]) for n in VGG16_LAYERS}
        style_grams["rgb"] = gram_matrix(vgg.normalize(style_255.to(device)))
        style_scale = {n: float(style_grams[n].pow(2).mean()) + 1e-20 if cfg.normalize_losses else 1.0 for n in (*VGG16_LAYERS, "rgb")}
        style_pixels = style_255.reshape(3, -1).T  # (M, 3), for the colour histogram loss
        if style_pixels.shape[0] > 65536:
            style_pixels = style_pixels[torch.randperm(style_pixels.shape[0], generator=torch.Generator().manual_seed(cfg.seed))[:65536]]
    torch.manual_seed(cfg.seed)
    net = TransformerNet().to(device, memory_format=fmt)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)

    def step_fn(step: int) -> dict:
        x = contents.batch(step).to(device, memory_format=fmt) * 255.0
        y = net(x)[..., :cfg.crop, :cfg.crop]  # 4·ceil(crop/4) px wide: cropped back, as inference does
        fy = vgg(y)
        with torch.no_grad():
            fx = vgg(_luminance(x) if cfg.content_luminance else x)
        cy = vgg(_luminance(y))["relu2_2"] if cfg.content_luminance else fy["relu2_2"]
        loss_c = F.mse_loss(cy, fx["relu2_2"])
        if cfg.normalize_losses:
            loss_c = loss_c / (fx["relu2_2"].pow(2).mean() + 1e-20)
        loss_c = cfg.content_weight * loss_c
        loss_s = torch.zeros((), device=device)
        for n in VGG16_LAYERS:
            g = gram_matrix(fy[n])
            loss_s = loss_s + F.mse_loss(g, style_grams[n].expand_as(g)) / style_scale[n]
        loss_s = cfg.style_weight * loss_s
        out = {"total": loss_c + loss_s, "content": loss_c.detach(), "style": loss_s.detach()}
        if cfg.color_weight:
            g = gram_matrix(vgg.normalize(y))
            loss_rgb = cfg.color_weight * F.mse_loss(g, style_grams["rgb"].expand_as(g)) / style_scale["rgb"]
            out.update(total=out["total"] + loss_rgb, color=loss_rgb.detach())
        if cfg.histogram_weight:
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)  # fresh directions each step, reproducible
            loss_h = cfg.histogram_weight * sliced_colour_loss(y, style_pixels, gen)
            out.update(total=out["total"] + loss_h, histogram=loss_h.detach())
        if cfg.edge_weight:
            loss_e = cfg.edge_weight * edge_loss(y, x)
            out.update(total=out["total"] + loss_e, edges=loss_e.detach())
        return out

    try:
        return run_loop(model=net, optimizer=opt, step_fn=step_fn, lr_fn=lambda i: cfg.lr, out_dir=out_dir,
                        weights_name="model.pth", prefix="model", settings=settings, steps=cfg.steps,
                        checkpoint_every=cfg.checkpoint_every, log_every=cfg.log_every, state=state, on_log=on_log)
    finally:
        contents.close()
