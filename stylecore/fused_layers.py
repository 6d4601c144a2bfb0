"""CUDA inference forms with fewer passes over the activations (``STYLECORE_CUDA_LAYERS`` words ``fused``, ``cudnn``
and ``borders``; ``fused+cudnn`` is the CUDA default, measured on an H200 in docs/gpu.md: AdaIN 1.11-1.34x and
Johnson 1.26-2.06x the images/s of ``fast+pads``; ``borders`` was slower there).

Profiles of the eager networks on an H200 (docs/gpu.md) put most of the GPU time around the convolutions,
not in them: PyTorch adds a cuDNN convolution's bias in a separate pass over its output (a broadcasting
kernel, the slowest element-wise kernel of the AdaIN profile), the ReLU is another pass, and each instance
norm ran one ``batch_norm`` per image plus a concatenation. These forms remove those passes by exact algebra;
parameters stay under their checkpoint keys, so the state_dict is unchanged:

* ``FusedConv2d`` / ``FusedUpsampleConv2d``: a convolution and the ReLU that follows it in one module; with
  ``cudnn`` one cuDNN call computes convolution, bias and ReLU (``torch.cudnn_convolution_relu``), where
  PyTorch otherwise runs two more passes. The ReLU of an upsampling conv is applied to its phases (the
  interleaving only moves values). (TransformerNet has no conv followed by a ReLU: ``cudnn`` changes nothing
  there.)
* A convolution whose output goes straight into an instance norm drops its bias: the norm subtracts each
  channel's mean, so a per-channel constant cancels exactly (15 of TransformerNet's 16 convolutions).
* Instance norms normalise the whole batch at once (``fast_layers.InstanceNorm2d.batched``) and apply the
  ReLU that follows them.
* ``borders`` (``reflect=True``): a 3×3 convolution after a ReflectionPad2d(1) runs with cuDNN's implicit zero
  padding, then recomputes its border rows and columns from thin reflect-padded strips of the input. Only the
  border outputs read the padding, so this is the same function without the padded copy of the whole input.

Elsewhere (CPU tensors, autograd, ``torch.compile``) the modules compute the same values with plain ops.
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from .fast_layers import InstanceNorm2d, ReflectionPad2d, UpsampleConv2d, _conv_like, _fuse_norm_relu_pad

log = logging.getLogger(__name__)

_PAD1 = ReflectionPad2d((1, 1, 1, 1))  # keeps channels_last (CUDA's own reflection pad returns NCHW)
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
    except (RuntimeError, TypeError) as e:
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
    """A convolution (zero or no padding, ungrouped, undilated) with an optional ReLU after it (``relu``), an
    optional dropped bias (``use_bias=False``: only where an instance norm follows) and, for an unpadded 3×3
    stride-1 convolution, an optional ReflectionPad2d(1) before it (``reflect``, computed by border strips)."""

    relu = False
    use_bias = True
    cudnn = False
    reflect = False

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, relu: bool = False, use_bias: bool = True, cudnn: bool = False,
                  reflect: bool = False):
        if not _plain_conv(conv):
            raise ValueError("FusedConv2d needs a plain ungrouped, undilated nn.Conv2d with zero padding")
        if reflect and not _absorbs_reflect_pad(conv):
            raise ValueError("FusedConv2d(reflect=True) needs an unpadded 3x3 stride-1 convolution")
        new = _conv_like(conv, cls)
        new.padding = conv.padding
        new.relu, new.use_bias, new.cudnn, new.reflect = relu, use_bias, cudnn, reflect
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias if self.use_bias else None
        if not self.reflect:
            return _conv_act(x, self.weight, bias, self.stride, self.padding, self.relu, self.cudnn)
        h, w = x.shape[-2:]
        if torch.compiler.is_compiling() or min(h, w) < 2 \
                or min(h, w) * STRIPS_SIDE_PER_CHANNEL < max(self.in_channels, self.out_channels):
            return _conv_act(_PAD1(x), self.weight, bias, (1, 1), (0, 0), self.relu, self.cudnn)
        y = _conv_act(x, self.weight, bias, (1, 1), (1, 1), self.relu, self.cudnn)  # right except on the borders
        n = x.shape[0]
        rows = torch.cat([F.pad(x[:, :, :2], (1, 1, 1, 0), mode="reflect"),  # input rows 1, 0, 1
                          F.pad(x[:, :, h - 2:], (1, 1, 0, 1), mode="reflect")])  # rows h-2, h-1, h-2
        cols = torch.cat([F.pad(x[..., :2], (1, 0, 1, 1), mode="reflect"),
                          F.pad(x[..., w - 2:], (0, 1, 1, 1), mode="reflect")])
        r = _conv_act(rows, self.weight, bias, (1, 1), (0, 0), self.relu, self.cudnn)  # (2n, o, 1, w)
        c = _conv_act(cols, self.weight, bias, (1, 1), (0, 0), self.relu, self.cudnn)  # (2n, o, h, 1)
        y[:, :, :1], y[:, :, h - 1:] = r[:n], r[n:]
        y[..., :1], y[..., w - 1:] = c[:n], c[n:]
        return y


# Border strips add about 4/side of the convolution's multiply-adds (two rows and two columns recomputed), while
# the padded copy they save moves 4·C bytes per pixel (bf16, read and write) against C_in·C_out·18 flops of
# convolution. At an H200's ~4 TB/s and ~400 Tflop/s of bf16 convolution the strips win from a side of about
# 0.18·C: 12 px at 64 channels, 92 px at 512. Below side · 4 < channels the pad is copied (an estimate, not
# a measurement: AdaIN at 256 px uses strips except at relu4_1's 32² layers).
STRIPS_SIDE_PER_CHANNEL = 4


def _plain_conv(conv: nn.Module) -> bool:
    return type(conv) is nn.Conv2d and conv.groups == 1 and conv.dilation == (1, 1) and conv.padding_mode == "zeros"


def _absorbs_reflect_pad(conv: nn.Module) -> bool:
    return (isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
            and conv.padding == (0, 0) and conv.dilation == (1, 1) and conv.groups == 1)


def _is_reflect_pad1(m: nn.Module) -> bool:
    return isinstance(m, nn.ReflectionPad2d) and tuple(m.padding) == (1, 1, 1, 1)


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


def _fused(conv: nn.Module, relu: bool, use_bias: bool, cudnn: bool, reflect: bool = False) -> nn.Module | None:
    """The fused form of ``conv``, or None where it has none (``reflect``: also the pad before it)."""
    if type(conv) is UpsampleConv2d and not reflect:
        return FusedUpsampleConv2d.from_upsample(conv, relu, use_bias, cudnn)
    if _plain_conv(conv) and (not reflect or _absorbs_reflect_pad(conv)):
        return FusedConv2d.from_conv(conv, relu, use_bias, cudnn, reflect)
    return None


def fuse_sequential(net: nn.Module, cudnn: bool = False, borders: bool = False) -> nn.Module:
    """In place, in every ``nn.Sequential`` of ``net`` (AdaIN's encoders and decoder): a convolution directly
    followed by a ReLU becomes one fused module at the convolution's index, and the ReLU becomes Identity;
    with ``borders`` a ReflectionPad2d(1) right before a 3×3 one becomes Identity too (the conv applies it)."""
    for seq in [m for m in net.modules() if isinstance(m, nn.Sequential)]:
        mods = seq._modules
        names = list(mods)
        for i, name in enumerate(names):
            relu = i + 1 < len(names) and type(mods[names[i + 1]]) is nn.ReLU
            reflect = borders and i > 0 and _is_reflect_pad1(mods[names[i - 1]]) and _absorbs_reflect_pad(mods[name])
            new = _fused(mods[name], relu, True, cudnn, reflect) if relu or reflect else None
            if new is None:
                continue
            mods[name] = new
            if relu:
                mods[names[i + 1]] = nn.Identity()
            if reflect:
                mods[names[i - 1]] = nn.Identity()
    return net


def fuse_transformer(net: nn.Module, cudnn: bool = False, borders: bool = False) -> nn.Module:
    """In place, on a TransformerNet already in its fast forms (``fast_layers.fast_transformer``): the convolutions
    that feed an instance norm drop their bias, the norms run batched and apply the ReLUs after them; with
    ``borders`` the residual blocks' 3×3 convolutions apply their reflection pads themselves."""
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
        reflect = borders and _is_reflect_pad1(layer.reflection_pad) and _absorbs_reflect_pad(layer.conv2d)
        new = _fused(layer.conv2d, False, False, cudnn, reflect)
        if new is not None:
            layer.conv2d = new
            if reflect:
                layer.reflection_pad = nn.Identity()
        norm.batched = True
    _fuse_norm_relu_pad(net, pads=False)
    return net
