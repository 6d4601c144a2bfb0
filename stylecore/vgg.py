"""VGG19 feature extractor with torchvision's ``vgg19().features`` layer layout.

Only the modules up to relu5_1 (indices 0–29) are kept. Inputs are RGB in [0, 1]; the ImageNet
mean/std normalisation happens inside ``forward``.
"""
from __future__ import annotations

import torch
from torch import nn

from .errors import WeightsError
from .weights import (WeightSpec, load_state_dict, parse_spec, refuse_batchnorm, role_hint,
                      torchvision_imagenet_state_dict)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]


def _layer_names() -> dict[str, int]:
    """Map names like relu4_2 to indices of torchvision's vgg19().features."""
    names: dict[str, int] = {}
    block, conv, idx = 1, 1, 0
    for v in _CFG:
        if v == "M":
            names[f"pool{block}"] = idx
            block, conv, idx = block + 1, 1, idx + 1
        else:
            names[f"conv{block}_{conv}"] = idx
            names[f"relu{block}_{conv}"] = idx + 1
            conv, idx = conv + 1, idx + 2
    return names


LAYERS = _layer_names()
LAST_INDEX = LAYERS["relu5_1"]  # 29
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
CONTENT_LAYER = "relu4_2"


def vgg19_features(upto: int = LAST_INDEX) -> nn.Sequential:
    """Modules 0..``upto`` of torchvision's ``vgg19().features`` (same indices, so the same state_dict keys).

    Built directly rather than through ``torchvision.models.vgg19()``, which would also allocate and
    initialise the 120M-parameter classifier (seconds of CPU time) only to throw it away.
    """
    layers: list[nn.Module] = []
    cin = 3
    for v in _CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(cin, v, kernel_size=3, padding=1), nn.ReLU(inplace=False)]
            cin = v
        if len(layers) > upto:
            break
    return nn.Sequential(*layers[: upto + 1])


class VGG19Encoder(nn.Module):
    """VGG19 features (torchvision layout) returning the activations of named layers."""

    def __init__(self, features: nn.Sequential | None = None, normalize: bool = True):
        super().__init__()
        feats = features if features is not None else vgg19_features()
        self.features = nn.Sequential(*list(feats.children())[: LAST_INDEX + 1])
        for m in self.features.modules():
            if isinstance(m, nn.ReLU):
                m.inplace = False
        self.normalize = normalize
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor, layers: tuple[str, ...] | list[str]) -> dict[str, torch.Tensor]:
        """Run up to the deepest requested layer and return {name: activation}."""
        try:
            wanted = {LAYERS[n]: n for n in layers}
        except KeyError as e:
            raise ValueError(f"unknown VGG19 layer {e.args[0]!r}; known: {', '.join(LAYERS)}") from None
        if self.normalize:
            x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        out: dict[str, torch.Tensor] = {}
        last = max(wanted)
        for i, module in enumerate(self.features):
            x = module(x)
            if i in wanted:
                out[wanted[i]] = x
            if i == last:
                break
        return out

    def load_features_state_dict(self, state: dict[str, torch.Tensor], label: str) -> None:
        """Load a state_dict in torchvision's ``vgg19`` (features.N.*) or ``vgg19().features`` (N.*) layout."""
        from .adain import is_normalised_vgg  # adain imports this module

        if is_normalised_vgg(state):
            raise WeightsError(f"{label}: this is a pytorch-AdaIN vgg_normalised.pth, which works only with --method adain; "
                               f"gatys needs torchvision VGG19 weights (imagenet, a vgg19 .pth, random:SEED)")
        refuse_batchnorm(state, label, "vgg19")
        feats: dict[str, torch.Tensor] = {}
        for k, v in state.items():
            key = k[len("features."):] if k.startswith("features.") else k
            if k.startswith("classifier."):
                continue
            head = key.split(".", 1)[0]
            if not head.isdigit():
                raise WeightsError(f"{label}: unexpected key {k!r}; expected torchvision vgg19 or vgg19().features keys"
                                   f"{role_hint(state, label)}")
            if int(head) <= LAST_INDEX:
                feats[key] = v
        expected = set(self.features.state_dict().keys())
        missing = sorted(expected - feats.keys(), key=lambda s: (int(s.split(".")[0]), s))
        if missing:
            raise WeightsError(f"{label}: missing VGG19 keys {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}"
                               f"{role_hint(state, label)}")
        try:
            self.features.load_state_dict(feats, strict=True)
        except RuntimeError as e:
            first = str(e).strip().splitlines()
            raise WeightsError(f"{label}: shapes do not match VGG19 ({' '.join(first[1:2]).strip()[:200]})") from None


def kaiming_init_(feats: nn.Sequential, seed: int) -> nn.Sequential:
    """Re-initialise the convs of a VGG ``features`` stack in place with torchvision's VGG scheme
    (Kaiming-normal, fan_out, zero biases), drawn deterministically from ``seed`` without touching the global RNG."""
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for m in feats:
            if isinstance(m, nn.Conv2d):
                fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1]
                m.weight.normal_(0.0, (2.0 / fan_out) ** 0.5, generator=gen)
                m.bias.zero_()
    return feats


def random_vgg19_features(seed: int) -> nn.Sequential:
    """VGG19 features up to relu5_1 with torchvision's initialisation scheme, deterministic for ``seed``."""
    return kaiming_init_(vgg19_features(), seed)


def load_vgg19_encoder(spec: str | WeightSpec, *, progress: bool = True) -> VGG19Encoder:
    """Build a VGG19Encoder from a weight spec (imagenet, random:SEED, a path or s3://)."""
    ws = spec if isinstance(spec, WeightSpec) else parse_spec(spec, what="encoder")
    if ws.kind == "random":
        return VGG19Encoder(random_vgg19_features(int(ws.value)))
    enc = VGG19Encoder()
    if ws.kind == "imagenet":
        enc.load_features_state_dict(torchvision_imagenet_state_dict(progress=progress), "encoder imagenet")
    else:
        enc.load_features_state_dict(load_state_dict(ws, what="encoder"), f"encoder {ws.text}")
    return enc
