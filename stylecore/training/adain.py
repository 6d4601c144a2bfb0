"""AdaIN decoder training (Huang & Belongie 2017), with pytorch-AdaIN's ``train.py`` defaults.

Per step: encode content and style crops with the frozen encoder, t = AdaIN(content relu4_1, style
relu4_1), decode g = decoder(t), re-encode g. Content loss: MSE(relu4_1(g), t). Style loss: over
relu1_1..relu4_1, MSE of channel means plus MSE of channel stds (unbiased variance + 1e-5).
Adam at lr/(1 + lr_decay·step). The decoder is saved in the public ``decoder.pth`` layout.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from ..adain import load_adain_encoder, mean_std
from ..adain_net import decoder as make_decoder
from ..device import memory_format, resolve_device
from ..errors import OptionsError
from .data import CropSampler, list_images
from .loop import TrainResult, absolute_paths, claim_out_dir, print_progress, run_loop


@dataclass
class AdaINTrainConfig:
    """Settings of ``train_adain`` (defaults: the reference implementation's)."""

    content: str
    style: str
    out_dir: str
    encoder: str = "imagenet"
    steps: int = 160_000
    batch_size: int = 8
    crop: int = 256
    load_size: int = 512
    lr: float = 1e-4
    lr_decay: float = 5e-5
    content_weight: float = 1.0
    style_weight: float = 10.0
    seed: int = 0
    checkpoint_every: int = 10_000
    log_every: int = 10
    workers: int = 2
    device: str = "auto"


def adain(content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    """Re-normalise each sample's content features to its style features' channel means and stds."""
    cm, cs = mean_std(content)
    sm, ss = mean_std(style)
    return (content - cm) / cs * ss + sm


def train_adain(cfg: AdaINTrainConfig, *, resume: bool = False, on_log: Callable[[dict], None] | None = print_progress
                ) -> TrainResult:
    """Train (or resume training) an AdaIN decoder; writes OUTDIR/decoder.pth, train_state.pth, losses.csv."""
    _check(cfg, MIN_CROP, "the VGG19 encoder's reflection pads")
    settings = absolute_paths({**asdict(cfg), "method": "adain"})
    with claim_out_dir(cfg.out_dir, resume=resume, settings=settings) as (out_dir, state):
        return _train(cfg, out_dir, settings, state, on_log=on_log)


def _train(cfg: AdaINTrainConfig, out_dir: Path, settings: dict, state: dict | None, *,
           on_log: Callable[[dict], None] | None) -> TrainResult:
    device = resolve_device(cfg.device)
    fmt = memory_format(device)
    contents = CropSampler(list_images(cfg.content, what="content"), crop=cfg.crop, load_size=cfg.load_size,
                           batch_size=cfg.batch_size, seed=cfg.seed, workers=cfg.workers, stream=0)
    styles = CropSampler(list_images(cfg.style, what="style"), crop=cfg.crop, load_size=cfg.load_size,
                         batch_size=cfg.batch_size, seed=cfg.seed, workers=cfg.workers, stream=1)
    encoder = load_adain_encoder(cfg.encoder).to(device, memory_format=fmt)
    torch.manual_seed(cfg.seed)
    dec = make_decoder().to(device, memory_format=fmt)
    opt = torch.optim.Adam(dec.parameters(), lr=cfg.lr)

    def step_fn(step: int) -> dict:
        c = contents.batch(step).to(device, memory_format=fmt)
        s = styles.batch(step).to(device, memory_format=fmt)
        with torch.no_grad():
            style_feats = encoder.features(s)
            t = adain(encoder(c), style_feats[-1])
        g = dec(t)
        g_feats = encoder.features(g)
        loss_c = F.mse_loss(g_feats[-1], t)
        loss_s = torch.zeros((), device=device)
        for gf, sf in zip(g_feats, style_feats):
            (gm, gs), (sm, ss) = mean_std(gf), mean_std(sf)
            loss_s = loss_s + F.mse_loss(gm, sm) + F.mse_loss(gs, ss)
        loss_c, loss_s = cfg.content_weight * loss_c, cfg.style_weight * loss_s
        return {"total": loss_c + loss_s, "content": loss_c.detach(), "style": loss_s.detach()}

    try:
        return run_loop(model=dec, optimizer=opt, step_fn=step_fn, lr_fn=lambda i: cfg.lr / (1.0 + cfg.lr_decay * i),
                        out_dir=out_dir, weights_name="decoder.pth", prefix="decoder", settings=settings,
                        steps=cfg.steps, checkpoint_every=cfg.checkpoint_every, log_every=cfg.log_every,
                        state=state, on_log=on_log)
    finally:
        contents.close()
        styles.close()


# Smallest crop: relu4_1 comes after three ceil-mode pools and must keep 2x2 cells for its reflection pads.
MIN_CROP = 9


def _check(cfg, min_crop: int, why: str) -> None:
    """Refuse settings no run can use (CLI flags are checked the same way by argparse), before any work;
    ``min_crop`` is the recipe's smallest ``crop`` (``why``: what needs it)."""

    def flag(name: str) -> str:
        return f"--{name.replace('_', '-')} {getattr(cfg, name)}"

    for name in ("steps", "batch_size", "crop", "checkpoint_every", "log_every", "workers"):
        if int(getattr(cfg, name)) <= 0:
            raise OptionsError(f"{flag(name)}: must be > 0")
    for name in ("load_size", "style_size"):
        if int(getattr(cfg, name, 0)) < 0:
            raise OptionsError(f"{flag(name)}: must be >= 0")
    if not 0 <= int(cfg.seed) <= 2**32 - 1:
        raise OptionsError(f"--seed {cfg.seed}: must be 0 to {2**32 - 1}")
    if not (math.isfinite(cfg.lr) and cfg.lr > 0):
        raise OptionsError(f"--lr {cfg.lr}: must be a finite number > 0")
    for name in ("content_weight", "style_weight", "lr_decay", "color_weight", "histogram_weight", "edge_weight"):
        v = getattr(cfg, name, 0.0)
        if not (math.isfinite(v) and v >= 0):
            raise OptionsError(f"{flag(name)}: must be a finite number >= 0")
    if cfg.crop < min_crop:
        raise OptionsError(f"--crop {cfg.crop}: must be at least {min_crop} px ({why})")
    if getattr(cfg, "load_size", cfg.crop) < cfg.crop:
        raise OptionsError(f"--load-size {cfg.load_size}: must be at least --crop {cfg.crop}")
