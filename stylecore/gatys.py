"""The Gatys et al. (2016) optimisation method: optimise the pixels of an image so that its VGG19
features match the content at relu4_2 and the style's Gram matrices at relu1_1..relu5_1.

Runs in float32 on every device: L-BFGS's curvature estimates are not reliable under bf16/fp16
autocast, so mixed precision is used only by the feed-forward methods. On CUDA the image and the
encoder use channels_last, and cuDNN runs deterministic algorithms without TF32 (``device.exact_math``),
so a seed gives the same bytes there too.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from . import cancel
from .color import combine_luminance, luminance, match_luminance
from .device import exact_math, memory_format
from .errors import ImageError
from .losses import ContentLoss, StyleLoss, tv_loss
from .options import StyleOptions
from .vgg import CONTENT_LAYER, STYLE_LAYERS, VGG19Encoder

DEFAULT_LR = {"lbfgs": 1.0, "adam": 0.02}


class _BudgetSpent(Exception):
    """Raised inside the L-BFGS closure once a level's step budget is used up."""


@dataclass(frozen=True)
class StepInfo:
    """One optimisation step, as passed to the loss-history callback."""

    step: int  # 1-based, counted over all pyramid levels
    total: int
    level: int  # 0-based pyramid level
    levels: int
    height: int
    width: int
    loss: float
    content: float
    style: float
    tv: float


MIN_SIDE = 16  # VGG19 pools four times before relu5_1: 16 px -> 1 cell


def _check_min_side(image: torch.Tensor, what: str) -> None:
    h, w = image.shape[-2:]
    if min(h, w) < MIN_SIDE:
        raise ImageError(f"{what}: {w}x{h} px is too small for the VGG19 encoder (at least {MIN_SIDE} px per side); "
                         f"use a larger size")


def pyramid_sizes(long_side: int, threshold: int) -> list[int]:
    """Long sides of the coarse-to-fine levels: halve until at or below ``threshold``, coarsest first."""
    sizes = [long_side]
    while sizes[-1] > threshold:
        sizes.append(max(1, sizes[-1] // 2))
    return sizes[::-1]


def level_steps(steps: int, n_levels: int) -> list[int]:
    """Steps per level: the full count at the coarsest level, half of it at each finer one."""
    return [steps] + [max(1, steps // 2)] * (n_levels - 1)


def _resize(x: torch.Tensor, long_side: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    if max(h, w) == long_side:
        return x
    s = long_side / max(h, w)
    size = (max(1, round(h * s)), max(1, round(w * s)))
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def _gray3(y: torch.Tensor) -> torch.Tensor:
    return y.expand(-1, 3, -1, -1).contiguous()


def stylize_gatys(
    encoder: VGG19Encoder,
    content: torch.Tensor,
    styles: Sequence[torch.Tensor],
    blend: Sequence[float],
    options: StyleOptions,
    callback: Callable[[StepInfo], None] | None = None,
    names: Sequence[str] = (),
) -> torch.Tensor:
    """Stylize ``content`` (1,3,H,W in [0,1]) with ``styles`` blended by ``blend``; returns (1,3,H,W) in [0,1].
    ``names``: the content's and each style's name in error messages (default: content, style N)."""
    names = list(names) or ["content"] + [f"style {i + 1}" for i in range(len(styles))]
    _check_min_side(content, names[0])
    for s, name in zip(styles, names[1:]):
        _check_min_side(s, name)
    with exact_math(content.device):
        return _optimise(encoder, content, styles, blend, options, callback)


def _optimise(encoder, content, styles, blend, options, callback) -> torch.Tensor:
    device = content.device
    fmt = memory_format(device)
    gen = torch.Generator(device="cpu").manual_seed(int(options.seed))
    torch.manual_seed(int(options.seed))

    if options.preserve_color:  # luminance-only transfer (Gatys et al. 2017, "Controlling perceptual factors")
        content_y = luminance(content)
        work_content = _gray3(content_y)
        work_styles = [_gray3(match_luminance(luminance(s), content_y)) for s in styles]
    else:
        work_content, work_styles = content, list(styles)

    h, w = content.shape[-2:]
    # coarse levels whose short side would fall below what VGG19 can encode are skipped
    sizes = [n for n in pyramid_sizes(max(h, w), options.pyramid_threshold)
             if round(min(h, w) * n / max(h, w)) >= MIN_SIDE] or [max(h, w)]
    steps = level_steps(options.steps, len(sizes))
    total = sum(steps)
    layer_set = tuple(dict.fromkeys(STYLE_LAYERS + (CONTENT_LAYER,)))
    optimizer_name = options.optimizer
    lr = options.lr or DEFAULT_LR[optimizer_name]
    done = 0
    x: torch.Tensor | None = None

    for level, long_side in enumerate(sizes):
        scale = long_side / max(h, w)
        c = _resize(work_content, long_side).contiguous(memory_format=fmt)
        style_feats = []
        for s in work_styles:
            s_long = max(round(max(s.shape[-2:]) * scale), math.ceil(MIN_SIDE * max(s.shape[-2:]) / min(s.shape[-2:])))
            with torch.no_grad():
                style_feats.append(encoder(_resize(s, s_long).contiguous(memory_format=fmt), STYLE_LAYERS))
        with torch.no_grad():
            content_feats = encoder(c, (CONTENT_LAYER,))
        content_loss = ContentLoss(CONTENT_LAYER, content_feats[CONTENT_LAYER], kind=options.content_loss, normalize=True)
        style_loss = StyleLoss.from_features(style_feats, blend, STYLE_LAYERS, normalize=True)
        del style_feats, content_feats

        if x is None:
            if options.init == "noise":
                init = torch.rand(c.shape, generator=gen).to(device)
            else:
                init = c.detach().clone()
        else:
            init = F.interpolate(x.detach(), size=c.shape[-2:], mode="bicubic", align_corners=False).clamp(0, 1)
        # The optimised pixels stay in the default layout: L-BFGS flattens the gradient with .view(-1), which a
        # channels_last gradient does not allow; the encoder gets a channels_last copy on CUDA.
        x = init.contiguous().requires_grad_(True)

        budget = steps[level]
        evals = 0
        best: dict = {"loss": float("inf"), "x": None}

        def evaluate() -> torch.Tensor:
            """One step: a forward/backward pass at the current pixels, reported to the callback."""
            nonlocal evals, done
            if evals >= budget:
                raise _BudgetSpent
            cancel.check()  # an interrupted process stops within one step, not after the whole optimisation
            x.grad = None
            feats = encoder(x.contiguous(memory_format=fmt), layer_set)
            lc = content_loss(feats)
            ls = style_loss(feats)
            lt = tv_loss(x)
            loss = options.content_weight * lc + options.style_weight * ls + options.tv_weight * lt
            loss.backward()
            evals += 1
            done += 1
            value = loss.item()
            if value < best["loss"]:  # keep the best point seen (line-search trial points included)
                best["loss"], best["x"] = value, x.detach().clone()
            if callback is not None:
                callback(StepInfo(done, total, level, len(sizes), c.shape[-2], c.shape[-1],
                                  value, lc.item(), ls.item(), lt.item()))
            return loss

        if optimizer_name == "lbfgs":
            # One L-BFGS run per level with a strong-Wolfe line search: without it, L-BFGS on this
            # non-convex objective occasionally takes huge steps (losses jump by orders of magnitude).
            # ``steps`` counts loss evaluations, so the work per level is exactly ``budget`` passes.
            opt = torch.optim.LBFGS([x], lr=lr, max_iter=budget, max_eval=budget + 25, history_size=50,
                                    tolerance_grad=0.0, tolerance_change=0.0, line_search_fn="strong_wolfe")
            try:
                opt.step(evaluate)
            except _BudgetSpent:
                pass
            x = best["x"] if best["x"] is not None else x.detach()
        else:
            opt = torch.optim.Adam([x], lr=lr)
            for _ in range(budget):
                opt.step(evaluate)
                with torch.no_grad():
                    x.clamp_(0, 1)
            x = x.detach()

    result = x.detach().clamp(0, 1).contiguous()
    if options.preserve_color:
        result = combine_luminance(result, content)
    return result
