"""CUDA inference forms with fewer passes over the activations (``STYLECORE_CUDA_LAYERS`` ``fused`` and ``cudnn``).

Profiles of the eager networks on an H200 (docs/gpu.md) put most of the GPU time around the convolutions,
not in them: PyTorch adds a cuDNN convolution's bias in a separate pass over its output (a broadcasting
kernel, the slowest element-wise kernel of the AdaIN profile), the ReLU is another pass, and each instance
norm ran one ``batch_norm`` per image plus a concatenation. These forms remove those passes by exact algebra;
parameters stay under their checkpoint keys, so the state_dict is unchanged:

* ``FusedConv2d`` / ``FusedUpsampleConv2d``: a convolution and the ReLU that follows it in one module; with
  ``cudnn`` one cuDNN call computes convolution, bias and ReLU (``torch.cudnn_convolution_relu``), where
  PyTorch otherwise runs two more passes. The ReLU of an upsampling conv is applied to its phases (the
  interleaving only moves values).
* A convolution whose output goes straight into an instance norm drops its bias: the norm subtracts each
  channel's mean, so a per-channel constant cancels exactly (15 of TransformerNet's 16 convolutions).
* Instance norms normalise the whole batch at once (``fast_layers.InstanceNorm2d.batched``) and apply the
  ReLU that follows them.

Elsewhere (CPU tensors, autograd, ``torch.compile``) the modules compute the same values with plain ops.
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from .fast_layers import InstanceNorm2d, UpsampleConv2d, _conv_like, _fuse_norm_relu_pad

log = logging.getLogger(__name__)

_cudnn_failure: str | None = None  # set once torch.cudnn_convolution_relu failed: the plain ops from then on


def _cudnn_conv_relu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride, padding):
    """``relu(conv2d(x, weight, bias))`` in one cuDNN call, in the autocast dtype when autocast is on; None where
    that call is unavailable (then the caller runs the plain ops)."""
    global _cudnn_failure
    if _cudnn_failure is not None or not x.is_cuda or torch.is_grad_enabled() or torch.compiler.is_compiling():
        return None
    dtype = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else x.dtype
    try:
        return torch.cudnn_convolution_relu(x.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype),
                                            stride, padding, (1, 1), 1)
    except torch.cuda.OutOfMemoryError:
        raise
    except RuntimeError as e:
        _cudnn_failure = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        log.warning("torch.cudnn_convolution_relu failed, using separate bias and ReLU passes: %s", _cudnn_failure)
        return None


def _conv_act(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride, padding, relu: bool,
              cudnn: bool) -> torch.Tensor:
    if relu and cudnn:
        y = _cudnn_conv_relu(x, weight, bias, stride, padding)
        if y is not None:
            return y
    y = F.conv2d(x, weight, bias, stride, padding)
    return F.relu(y, inplace=True) if relu else y


class FusedConv2d(nn.Conv2d):
    """A convolution (zero or no padding, ungrouped, undilated) with an optional ReLU after it (``relu``) and
    an optional dropped bias (``use_bias=False``: only where an instance norm follows)."""

    relu = False
    use_bias = True
    cudnn = False

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, relu: bool = False, use_bias: bool = True, cudnn: bool = False):
        if type(conv) is not nn.Conv2d or conv.groups != 1 or conv.dilation != (1, 1) or conv.padding_mode != "zeros":
            raise ValueError("FusedConv2d needs a plain ungrouped, undilated nn.Conv2d with zero padding")
        new = _conv_like(conv, cls)
        new.padding = conv.padding
        new.relu, new.use_bias, new.cudnn = relu, use_bias, cudnn
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _conv_act(x, self.weight, self.bias if self.use_bias else None, self.stride, self.padding, self.relu,
                         self.cudnn)


class FusedUpsampleConv2d(UpsampleConv2d):
    """``UpsampleConv2d`` whose phase convolution applies the following ReLU and/or drops its bias; its replicate
    pad keeps the channels_last layout and one strided copy interleaves the four phases."""

    keep_layout = True
    relu = False
    use_bias = True
    cudnn = False

    @classmethod
    def from_upsample(cls, m: UpsampleConv2d, relu: bool = False, use_bias: bool = True, cudnn: bool = False):
        new = cls.from_conv(m)  # the same Parameters; the phase kernels are rebuilt from them
        new.relu, new.use_bias, new.cudnn = relu, use_bias, cudnn
        return new

    def _phase_conv(self, xp: torch.Tensor) -> torch.Tensor:
        bias = self.phase_bias if self.use_bias else None
        return _conv_act(xp, self.phase_weight, bias, (1, 1), (0, 0), self.relu, self.cudnn)


def _fused(conv: nn.Module, relu: bool, use_bias: bool, cudnn: bool) -> nn.Module | None:
    """The fused form of ``conv``, or None where it has none."""
    if type(conv) is UpsampleConv2d:
        return FusedUpsampleConv2d.from_upsample(conv, relu, use_bias, cudnn)
    if type(conv) is nn.Conv2d and conv.groups == 1 and conv.dilation == (1, 1) and conv.padding_mode == "zeros":
        return FusedConv2d.from_conv(conv, relu, use_bias, cudnn)
    return None


def fuse_sequential(net: nn.Module, cudnn: bool = False) -> nn.Module:
    """In place, in every ``nn.Sequential`` of ``net`` (AdaIN's encoders and decoder): a convolution directly
    followed by a ReLU becomes one fused module at the convolution's index, and the ReLU becomes Identity."""
    for seq in [m for m in net.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            if type(seq._modules[b]) is nn.ReLU:
                new = _fused(seq._modules[a], True, True, cudnn)
                if new is not None:
                    seq._modules[a], seq._modules[b] = new, nn.Identity()
    return net


def fuse_transformer(net: nn.Module, cudnn: bool = False) -> nn.Module:
    """In place, on a TransformerNet already in its fast forms (``fast_layers.fast_transformer``): the convolutions
    that feed an instance norm drop their bias, the norms run batched and apply the ReLUs after them."""
    from .transformer_net import ResidualBlock, TransformerNet

    if type(net) is not TransformerNet:
        return net
    pairs = [(net.conv1, net.in1), (net.conv2, net.in2), (net.conv3, net.in3), (net.deconv1, net.in4),
             (net.deconv2, net.in5)]
    pairs += [(getattr(b, c), getattr(b, n)) for b in net.modules() if isinstance(b, ResidualBlock)
              for c, n in (("conv1", "in1"), ("conv2", "in2"))]
    for layer, norm in pairs:
        if not isinstance(norm, InstanceNorm2d) or norm.track_running_stats:
            continue
        new = _fused(layer.conv2d, False, False, cudnn)
        if new is not None:
            layer.conv2d = new
        norm.batched = True
    _fuse_norm_relu_pad(net, pads=False)
    return net
