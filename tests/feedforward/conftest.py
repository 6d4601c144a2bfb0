"""Feed-forward test fixtures: random weights saved in the public checkpoint formats, and independent
reference computations written from the published layouts with plain torch ops (no stylecore code)."""
from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

# -- pytorch-AdaIN layouts (net.py), written out from the description ---------------------------
# vgg_normalised.pth: conv keys with (in, out, kernel); 1x1 conv at 0; pools after relu1_2, relu2_2, relu3_4, relu4_4.
VGG_CONVS = [(0, 3, 3, 1), (2, 3, 64, 3), (5, 64, 64, 3), (9, 64, 128, 3), (12, 128, 128, 3), (16, 128, 256, 3),
             (19, 256, 256, 3), (22, 256, 256, 3), (25, 256, 256, 3), (29, 256, 512, 3), (32, 512, 512, 3),
             (35, 512, 512, 3), (38, 512, 512, 3), (42, 512, 512, 3), (45, 512, 512, 3), (48, 512, 512, 3),
             (51, 512, 512, 3)]
VGG_POOLS_BEFORE = {9, 16, 29, 42}  # a ceil-mode 2x2 max-pool precedes the pad of these convs
DEC_CONVS = [(1, 512, 256), (5, 256, 256), (8, 256, 256), (11, 256, 256), (14, 256, 128), (18, 128, 128),
             (21, 128, 64), (25, 64, 64), (28, 64, 3)]
DEC_UPSAMPLE_AFTER_CONV = {1, 14, 21}  # relu at 2, 15, 22, then 2x nearest upsampling


def _he(gen, cout, cin, k, gain=1.0):
    return torch.randn(cout, cin, k, k, generator=gen) * (2.0 / (cin * k * k)) ** 0.5 * gain


@functools.lru_cache(maxsize=None)
def adain_encoder_state(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for key, cin, cout, k in VGG_CONVS:
        sd[f"{key}.weight"] = _he(gen, cout, cin, k)
        sd[f"{key}.bias"] = torch.randn(cout, generator=gen) * 0.01
    return sd


@functools.lru_cache(maxsize=None)
def adain_decoder_state(seed: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for key, cin, cout in DEC_CONVS:
        sd[f"{key}.weight"] = _he(gen, cout, cin, 3, gain=0.1 if key == 28 else 1.0)
        sd[f"{key}.bias"] = torch.full((cout,), 0.45) if key == 28 else torch.randn(cout, generator=gen) * 0.01
    return sd


def ref_encode(sd, x):
    """test.py's vgg[:31] (up to relu4_1) on RGB in [0,1]."""
    for key, _, _, k in VGG_CONVS:
        if key > 29:
            break
        if key in VGG_POOLS_BEFORE:
            x = F.max_pool2d(x, 2, 2, 0, ceil_mode=True)
        if k == 3:
            x = F.pad(x, (1, 1, 1, 1), mode="reflect")
        x = F.conv2d(x, sd[f"{key}.weight"], sd[f"{key}.bias"])
        if key != 0:
            x = F.relu(x)
    return x


def ref_decode(sd, x):
    for key, _, _ in DEC_CONVS:
        x = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), sd[f"{key}.weight"], sd[f"{key}.bias"])
        if key != 28:
            x = F.relu(x)
        if key in DEC_UPSAMPLE_AFTER_CONV:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
    return x


def ref_calc_mean_std(feat, eps=1e-5):
    n, c = feat.shape[:2]
    var = feat.reshape(n, c, -1).var(dim=2) + eps
    return feat.reshape(n, c, -1).mean(dim=2).reshape(n, c, 1, 1), var.sqrt().reshape(n, c, 1, 1)


def ref_adain(content_f, style_f):
    sm, ss = ref_calc_mean_std(style_f)
    cm, cs = ref_calc_mean_std(content_f)
    return (content_f - cm.expand_as(content_f)) / cs.expand_as(content_f) * ss.expand_as(content_f) + sm.expand_as(content_f)


def ref_style_transfer(enc_sd, dec_sd, content, styles, alpha=1.0, weights=None):
    """pytorch-AdaIN test.py's style_transfer (content (1,3,H,W), styles (N,3,h,w)); returns uint8 HxWx3."""
    with torch.no_grad():
        if weights:
            content_rep = content.expand(styles.shape[0], -1, -1, -1)
            content_f = ref_encode(enc_sd, content_rep)
            style_f = ref_encode(enc_sd, styles)
            base = ref_adain(content_f, style_f)
            feat = torch.zeros_like(content_f[:1])
            for i, w in enumerate(weights):
                feat = feat + w * base[i:i + 1]
            content_f = content_f[:1]
        else:
            content_f = ref_encode(enc_sd, content)
            feat = ref_adain(content_f, ref_encode(enc_sd, styles))
        feat = feat * alpha + content_f * (1 - alpha)
        out = ref_decode(dec_sd, feat)
    # torchvision.utils.save_image: mul(255).add_(0.5).clamp_(0, 255) -> uint8
    return out[0].mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


# -- fast_neural_style TransformerNet, written out from the example's layout ---------------------------
_J_CONVS = {"conv1": (3, 32, 9), "conv2": (32, 64, 3), "conv3": (64, 128, 3), "deconv1": (128, 64, 3),
            "deconv2": (64, 32, 3), "deconv3": (32, 3, 9)}
_J_NORMS = {"in1": 32, "in2": 64, "in3": 128, "in4": 64, "in5": 32}


@functools.lru_cache(maxsize=None)
def johnson_state(seed: int = 2, old_keys: bool = False) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    sd = {}

    def conv(prefix, cin, cout, k, gain=1.0, bias=0.0):
        sd[f"{prefix}.conv2d.weight"] = _he(gen, cout, cin, k, gain)
        sd[f"{prefix}.conv2d.bias"] = torch.randn(cout, generator=gen) * 0.01 + bias

    def norm(prefix, c):
        sd[f"{prefix}.weight"] = 1 + 0.1 * torch.randn(c, generator=gen)
        sd[f"{prefix}.bias"] = 0.1 * torch.randn(c, generator=gen)
        if old_keys:
            sd[f"{prefix}.running_mean"] = torch.randn(c, generator=gen)
            sd[f"{prefix}.running_var"] = torch.rand(c, generator=gen) + 0.5

    for name in ("conv1", "conv2", "conv3"):
        conv(name, *_J_CONVS[name])
    for name in ("in1", "in2", "in3"):
        norm(name, _J_NORMS[name])
    for r in range(1, 6):
        conv(f"res{r}.conv1", 128, 128, 3)
        norm(f"res{r}.in1", 128)
        conv(f"res{r}.conv2", 128, 128, 3)
        norm(f"res{r}.in2", 128)
    conv("deconv1", *_J_CONVS["deconv1"])
    norm("in4", 64)
    conv("deconv2", *_J_CONVS["deconv2"])
    norm("in5", 32)
    conv("deconv3", *_J_CONVS["deconv3"], gain=50.0, bias=127.5)
    return sd


def ref_johnson(sd, content_u8: np.ndarray) -> np.ndarray:
    """The example's stylize: ToTensor()*255 -> TransformerNet -> clamp(0,255) -> astype(uint8) (truncation)."""
    x = torch.from_numpy(content_u8.copy()).permute(2, 0, 1).float().div(255).mul(255).unsqueeze(0)

    def conv(prefix, x, stride=1, upsample=None):
        if upsample:
            x = F.interpolate(x, mode="nearest", scale_factor=upsample)
        w = sd[f"{prefix}.conv2d.weight"]
        p = w.shape[-1] // 2
        return F.conv2d(F.pad(x, (p, p, p, p), mode="reflect"), w, sd[f"{prefix}.conv2d.bias"], stride=stride)

    def inorm(prefix, x):
        return F.instance_norm(x, weight=sd[f"{prefix}.weight"], bias=sd[f"{prefix}.bias"], eps=1e-5)

    with torch.no_grad():
        y = F.relu(inorm("in1", conv("conv1", x)))
        y = F.relu(inorm("in2", conv("conv2", y, stride=2)))
        y = F.relu(inorm("in3", conv("conv3", y, stride=2)))
        for r in range(1, 6):
            res = y
            z = F.relu(inorm(f"res{r}.in1", conv(f"res{r}.conv1", y)))
            y = inorm(f"res{r}.in2", conv(f"res{r}.conv2", z)) + res
        y = F.relu(inorm("in4", conv("deconv1", y, upsample=2)))
        y = F.relu(inorm("in5", conv("deconv2", y, upsample=2)))
        y = conv("deconv3", y)
    return y[0].clamp(0, 255).numpy().transpose(1, 2, 0).astype("uint8")


# -- fixtures -----------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def ff_weights(tmp_path_factory):
    """Paths of random checkpoints in the public formats: encoder, decoder, johnson, johnson with old keys."""
    root = tmp_path_factory.mktemp("ffweights")
    paths = {}
    for name, sd in [("vgg_normalised.pth", adain_encoder_state()), ("decoder.pth", adain_decoder_state()),
                     ("johnson.pth", johnson_state()), ("johnson_old.pth", johnson_state(old_keys=True))]:
        torch.save(sd, root / name)
        paths[name.split(".")[0]] = str(root / name)
    return paths


@pytest.fixture(scope="session")
def ff_engine(ff_weights):
    """One CPU engine over the saved checkpoints (cached weights are loaded once per session)."""
    from stylecore.engine import Engine

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    return Engine(encoder=ff_weights["vgg_normalised"], decoder=ff_weights["decoder"], model=ff_weights["johnson"],
                  device="cpu")


def to_input(img) -> torch.Tensor:
    """PIL -> (1,3,H,W) float in [0,1], as torchvision's ToTensor does."""
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float().div(255).unsqueeze(0)
