"""Johnson et al. fast style transfer: loading fast_neural_style TransformerNet checkpoints.

``load_transformer(spec)`` accepts a state_dict in the example's layout (``conv1.conv2d.weight``,
``in1.weight``, ``res3.conv2.conv2d.bias``, ``deconv3.conv2d.weight`` ...), a ``{"state_dict": ...}``
wrapper, or ``random:SEED`` (He-normal convolutions, InstanceNorm at identity, the last conv scaled to a mid-grey output). Old
checkpoints carry ``in*.running_mean`` / ``running_var`` keys from InstanceNorm's former running
statistics; they are dropped, as the example's stylize does.
The network maps RGB scaled to [0, 255] to the same scale; callers clamp the output to [0, 255].
"""
from __future__ import annotations

import contextlib
import re

import torch
from torch import nn

from .adain import he_init
from .errors import WeightsError
from .fast_layers import InstanceNorm2d as FastInstanceNorm2d
from .transformer_net import TransformerNet
from .weights import WeightSpec, load_exact_state_dict, load_state_dict, parse_spec

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
        load_exact_state_dict(net, state, label, layout="fast_neural_style TransformerNet checkpoint", shape_name="TransformerNet")
    net.requires_grad_(False)
    return net.eval()


@contextlib.contextmanager
def instance_norm_stats(net: TransformerNet, frozen: dict | None = None):
    """Record (or, with ``frozen``, impose) the per-channel statistics of every InstanceNorm layer.

    Yields a dict {module name: (mean, var)} (population variance, as InstanceNorm uses) filled by the
    forward passes run inside the block; with ``frozen`` every layer normalises with those statistics
    instead of each input's own, so that all tiles of an image run the same function.
    """
    record: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    handles, fast = [], []
    for name, m in net.named_modules():
        if isinstance(m, FastInstanceNorm2d):  # may fuse the following ReLU and pad: it takes the statistics itself
            if frozen is None:
                m.record = lambda mean, var, name=name: record.__setitem__(name, (mean, var))
            else:
                m.frozen = frozen[name]
            fast.append(m)
            continue
        if not isinstance(m, nn.InstanceNorm2d):
            continue

        def hook(mod, inp, out, name=name):
            x = inp[0]
            if frozen is None:
                xf = x.float()
                record[name] = (xf.mean((0, 2, 3)), xf.var((0, 2, 3), unbiased=False))
                return None
            mean, var = (t.to(x.device, torch.float32).view(1, -1, 1, 1) for t in frozen[name])
            y = (x.float() - mean) * torch.rsqrt(var + mod.eps) * mod.weight.float().view(1, -1, 1, 1) + mod.bias.float().view(1, -1, 1, 1)
            return y.to(out.dtype)

        handles.append(m.register_forward_hook(hook))
    try:
        yield record
    finally:
        for h in handles:
            h.remove()
        for m in fast:
            m.record = m.frozen = None
