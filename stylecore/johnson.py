"""Johnson et al. fast style transfer: loading fast_neural_style TransformerNet checkpoints.

``load_transformer(spec)`` accepts a state_dict in the example's layout (``conv1.conv2d.weight``,
``in1.weight``, ``res3.conv2.conv2d.bias``, ``deconv3.conv2d.weight`` ...), a ``{"state_dict": ...}``
wrapper, or ``random:SEED`` (He-normal convolutions, InstanceNorm at identity, the last conv scaled to a mid-grey output). Old
checkpoints carry ``in*.running_mean`` / ``running_var`` keys from InstanceNorm's former running
statistics; they are dropped, as the example's stylize does.
The network maps RGB scaled to [0, 255] to the same scale; callers clamp the output to [0, 255].
"""
from __future__ import annotations

import re

import torch

from .adain import he_init
from .errors import WeightsError
from .transformer_net import TransformerNet
from .weights import WeightSpec, load_state_dict, parse_spec

SCALE = 4  # two stride-2 convolutions down, two 2× upsamplings up
_OLD_IN_KEY = re.compile(r"in\d+\.(running_mean|running_var|num_batches_tracked)$")


def drop_old_instance_norm_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state_dict without InstanceNorm running statistics (``in1.running_mean``, ``res2.in1.running_var`` ...)."""
    return {k: v for k, v in state.items() if not _OLD_IN_KEY.search(k)}


def load_transformer(spec: str | WeightSpec) -> TransformerNet:
    """Build a TransformerNet from a fast_neural_style checkpoint spec (path, file://, s3://, random:SEED)."""
    ws = spec if isinstance(spec, WeightSpec) else parse_spec(spec, allow_imagenet=False, what="model")
    if ws.kind == "imagenet":
        raise WeightsError("model: 'imagenet' names an encoder; give a TransformerNet .pth path, s3:// URI or random:SEED")
    if ws.kind == "random":
        net = he_init(TransformerNet(), int(ws.value), out_gain=60.0, out_bias=127.5)
    else:
        label = f"model {ws.text}"
        state = drop_old_instance_norm_keys(load_state_dict(ws, what="model"))
        net = TransformerNet()
        expected = net.state_dict()
        missing = [k for k in expected if k not in state]
        extra = [k for k in state if k not in expected]
        if missing or extra:
            what = f"missing {', '.join(missing[:3])}" if missing else f"unexpected {', '.join(extra[:3])}"
            raise WeightsError(f"{label}: not a fast_neural_style TransformerNet checkpoint ({what})")
        for k, v in expected.items():
            if tuple(state[k].shape) != tuple(v.shape):
                raise WeightsError(f"{label}: key {k} has shape {tuple(state[k].shape)}, TransformerNet has {tuple(v.shape)}")
        net.load_state_dict(state, strict=True)
    net.requires_grad_(False)
    return net.eval()
