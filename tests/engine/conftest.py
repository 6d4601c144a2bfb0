"""Fixtures of the engine tests: one random-weight engine per session, VGG19 state_dict writers."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def engine():
    """A CPU engine with deterministic random VGG19 weights (the offline encoder), loaded once."""
    from stylecore.engine import Engine

    eng = Engine(encoder="random:0", device="cpu")
    _ = eng.vgg
    return eng


def _features_state_dict(seed: int = 3) -> dict[str, torch.Tensor]:
    """A state_dict in torchvision's ``vgg19().features`` layout (keys ``N.weight``/``N.bias``, up to relu5_1)."""
    from stylecore.vgg import random_vgg19_features

    return {k: v.clone() for k, v in random_vgg19_features(seed).state_dict().items()}


# The modules of torchvision's vgg19 beyond relu5_1: conv5_2..conv5_4 and the classifier.
_TAIL = {
    "features.30": (512, 512, 3, 3), "features.32": (512, 512, 3, 3), "features.34": (512, 512, 3, 3),
    "classifier.0": (4096, 25088), "classifier.3": (4096, 4096), "classifier.6": (1000, 4096),
}


def _full_state_dict(seed: int = 3) -> dict[str, torch.Tensor]:
    """A state_dict with every key and shape of torchvision's full ``vgg19()`` (as in vgg19-dcbb9e9d.pth).

    The modules stylecore never uses (conv5_2.. and the classifier) are zero-stride views of one number,
    so the file has the exact key layout and shapes while staying ~50 MB instead of 550 MB.
    """
    sd = {f"features.{k}": v for k, v in _features_state_dict(seed).items()}
    for prefix, shape in _TAIL.items():
        sd[f"{prefix}.weight"] = torch.zeros(1).expand(*shape)
        sd[f"{prefix}.bias"] = torch.zeros(1).expand(shape[0])
    return sd


@pytest.fixture(scope="session")
def features_state_dict() -> dict[str, torch.Tensor]:
    return _features_state_dict()


@pytest.fixture(scope="session")
def full_state_dict() -> dict[str, torch.Tensor]:
    return _full_state_dict()
