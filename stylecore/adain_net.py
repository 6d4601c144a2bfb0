"""Network layouts of the public pytorch-AdaIN checkpoints (Huang & Belongie 2017).

``normalised_vgg()`` matches ``vgg_normalised.pth``: a 53-module nn.Sequential whose index 0 is a
1×1 conv (3→3), every 3×3 conv preceded by ReflectionPad2d(1), 2×2/2 max-pools with ceil_mode=True.
Conv keys: 0, 2, 5, 9, 12, 16, 19, 22, 25, 29, 32, 35, 38, 42, 45, 48, 51. AdaIN uses modules 0–30
(up to relu4_1). Inputs are RGB in [0, 1] with no other normalisation.

``decoder()`` matches ``decoder.pth``: 29 modules, ReflectionPad+Conv at keys 1, 5, 8, 11, 14, 18, 21,
25, 28, 2× nearest upsampling after modules 2, 15 and 22, channels 512→…→3, no output activation.
"""
from __future__ import annotations

from torch import nn

ENCODER_RELU4_1 = 31  # number of leading modules of normalised_vgg() up to relu4_1
_VGG_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512]


def _pad() -> nn.ReflectionPad2d:
    return nn.ReflectionPad2d((1, 1, 1, 1))


def normalised_vgg() -> nn.Sequential:
    """The "normalised VGG19" encoder of pytorch-AdaIN, in its exact state_dict layout."""
    layers: list[nn.Module] = [nn.Conv2d(3, 3, kernel_size=1)]
    cin = 3
    for v in _VGG_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2, padding=0, ceil_mode=True))
        else:
            layers += [_pad(), nn.Conv2d(cin, v, kernel_size=3), nn.ReLU()]
            cin = v
    return nn.Sequential(*layers)


def decoder() -> nn.Sequential:
    """The AdaIN decoder, mirroring the encoder up to relu4_1, in the exact ``decoder.pth`` layout."""
    layers: list[nn.Module] = []
    plan = [(512, 256), "U", (256, 256), (256, 256), (256, 256), (256, 128), "U", (128, 128), (128, 64), "U",
            (64, 64), (64, 3)]
    for i, item in enumerate(plan):
        if item == "U":
            layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
            continue
        cin, cout = item
        layers += [_pad(), nn.Conv2d(cin, cout, kernel_size=3)]
        if i != len(plan) - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)
