"""The CUDA ``fused`` layer forms (stylecore.fused_layers) against the plain networks, on the CPU.

On CPU tensors the fused modules compute with plain ops (the cuDNN call is CUDA-only; tests/gpu compares it),
so these tests check the algebra: the same outputs, the same state_dict, no bias before a norm, and a
number of ops that does not grow with the batch.
"""
from __future__ import annotations

import copy
from collections import Counter

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from stylecore import feedforward, fused_layers
from stylecore.adain import AdaINEncoder, load_adain_decoder
from stylecore.adain_net import ENCODER_RELU4_1, normalised_vgg
from stylecore.errors import OptionsError
from stylecore.fast_layers import (InstanceNorm2d, channels_last_pads, fast_decoder, fast_encoder,
                                   fast_transformer)
from stylecore.fused_layers import FusedConv2d, FusedUpsampleConv2d, fuse_sequential, fuse_transformer
from stylecore.johnson import instance_norm_stats, load_transformer

CL = torch.channels_last


def _cuda_forms(net, convert, fuse, borders=False):
    """What ``Engine`` builds on CUDA for STYLECORE_CUDA_LAYERS=fused+cudnn (+borders), on the CPU."""
    net = channels_last_pads(convert(copy.deepcopy(net), winograd=False))
    return fuse(net, cudnn=True, borders=borders).to(memory_format=CL)


def _same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("borders", [False, True])
def test_fused_adain_networks_give_the_plain_outputs(borders):
    torch.manual_seed(0)
    enc = AdaINEncoder(normalised_vgg()[:ENCODER_RELU4_1], "normalised")
    dec = load_adain_decoder("random:4")
    fenc = _cuda_forms(enc, fast_encoder, fuse_sequential, borders)
    fdec = _cuda_forms(dec, fast_decoder, fuse_sequential, borders)
    assert _same_state(fenc, enc) and _same_state(fdec, dec)
    # every conv that a ReLU follows carries it: 9 in the encoder up to relu4_1, 8 of the decoder's 9
    assert sum(type(m) is FusedConv2d and m.relu for m in fenc.modules()) == 9
    assert sum(isinstance(m, nn.ReLU) for m in fenc.modules()) == 0
    assert sum(type(m) is FusedUpsampleConv2d and m.relu for m in fdec) == 3
    assert sum(type(m) is FusedConv2d and m.relu for m in fdec) == 5
    assert sum(isinstance(m, nn.ReLU) for m in fdec) == 0 and not getattr(fdec[28], "relu", False)  # no output ReLU
    # with borders the convs after a pad apply it: all 9 of the encoder, the 6 of the decoder that do not upsample
    assert sum(getattr(m, "reflect", False) for m in fenc.modules()) == (9 if borders else 0)
    assert sum(getattr(m, "reflect", False) for m in fdec) == (6 if borders else 0)
    assert sum(isinstance(m, nn.ReflectionPad2d) for m in fdec) == (0 if borders else 6)  # (3 upsampling convs pad)
    assert sum(isinstance(m, nn.ReflectionPad2d) for m in fenc.modules()) == (0 if borders else 9)
    x = torch.rand(2, 3, 40, 56)
    with torch.inference_mode():
        f = enc(x)
        torch.testing.assert_close(fenc(x.contiguous(memory_format=CL)), f, atol=1e-5, rtol=1e-4)
        assert [t.shape for t in fenc.features(x)] == [t.shape for t in enc.features(x)]
        for a, b in zip(fenc.features(x), enc.features(x)):  # the taps sit at the ReLUs, now Identity
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(fdec(f.contiguous(memory_format=CL)), dec(f), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("borders", [False, True])
def test_fused_transformer_gives_the_plain_outputs_without_the_biases_before_norms(borders):
    net = load_transformer("random:3")
    with torch.no_grad():
        for m in net.modules():  # large biases, so that dropping one without a norm after it would show
            if isinstance(m, nn.Conv2d):
                m.bias.normal_(0, 5)
    fast = _cuda_forms(net, fast_transformer, fuse_transformer, borders)
    assert _same_state(fast, net)
    assert sum(getattr(m, "reflect", False) for m in fast.modules()) == (10 if borders else 0)  # residual convs
    convs = [m for m in fast.modules() if isinstance(m, (FusedConv2d, FusedUpsampleConv2d))]
    assert len(convs) == 15 and not any(m.use_bias or m.relu for m in convs)  # all but deconv3 feed a norm
    assert fast.deconv3.conv2d.bias is not None and not isinstance(fast.deconv3.conv2d, FusedConv2d)
    norms = [m for m in fast.modules() if isinstance(m, InstanceNorm2d)]
    assert len(norms) == 15 and all(m.batched for m in norms)
    assert [fast.get_submodule(f"in{i}").relu for i in range(1, 6)] == [True] * 5
    assert all(fast.get_submodule(f"res{i}").in1.relu and not fast.get_submodule(f"res{i}").in2.relu
               for i in range(1, 6))
    x = torch.rand(3, 3, 44, 36) * 255
    with torch.inference_mode():
        a, b = net(x), fast(x.contiguous(memory_format=CL))
    assert (a - b).abs().max() < 0.05  # levels on the 0-255 scale


def test_fused_transformer_takes_and_imposes_tile_statistics():
    """Tiling records each norm's input statistics and imposes them on the tiles; without the biases the
    recorded means shift, consistently, and the function stays the same."""
    net = _cuda_forms(load_transformer("random:5"), fast_transformer, fuse_transformer, borders=True)
    x, other = torch.rand(1, 3, 32, 40) * 255, torch.rand(1, 3, 32, 40) * 200
    with torch.inference_mode():
        plain = net(x)
        with instance_norm_stats(net) as rec:
            net(x)
        with instance_norm_stats(net, rec):
            same, changed = net(x), net(other)
        assert len(rec) == 15 and (same - plain).abs().max() < 0.05
        assert (changed - net(other)).abs().max() > 1


@pytest.mark.parametrize("layout", [CL, torch.contiguous_format])
@pytest.mark.parametrize("affine", [True, False])
def test_batched_instance_norm_matches_instance_norm(layout, affine):
    torch.manual_seed(1)
    ref = nn.InstanceNorm2d(6, affine=affine)
    if affine:
        with torch.no_grad():
            ref.weight.normal_(), ref.bias.normal_()
    fast = InstanceNorm2d(6, affine=affine)
    fast.load_state_dict(ref.state_dict())
    fast.batched = True
    # channel means far from zero (20 standard deviations): the variance must not come from E[x²] − mean²
    x = (torch.randn(4, 6, 9, 13) * 0.5 + 10 * torch.randn(4, 6, 1, 1)).contiguous(memory_format=layout)
    with torch.inference_mode():
        out, want = fast(x), ref(x)
        assert out.is_contiguous(memory_format=layout) and out.dtype == x.dtype
        torch.testing.assert_close(out, want, atol=1e-4, rtol=1e-4)
        xb = x.bfloat16()
        half, want = fast(xb), ref(xb.float())  # bf16 in, bf16 out; fp32 statistics and arithmetic inside
        assert half.dtype == torch.bfloat16
        err = (half.float() - want).abs()  # bf16 rounding only (a bf16 mean would be off by ~0.1 here)
        assert err.max() <= 2 ** -8 * want.abs().max() and err.mean() <= 2 ** -9 * want.abs().mean()


class _OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def _count_ops(net, batch: int) -> Counter:
    x = (torch.rand(batch, 3, 32, 32) * 255).contiguous(memory_format=CL)
    with torch.inference_mode(), _OpCounter() as counter:
        net(x)
    return counter.ops


def test_fused_forms_launch_the_same_ops_for_any_batch():
    """The plain CUDA forms ran one batch_norm per image and concatenated them (launch-bound at batch 64);
    the fused forms run a fixed set of ops, so a batch of 8 launches what a batch of 1 does."""
    net = load_transformer("random:2")
    plain = channels_last_pads(fast_transformer(copy.deepcopy(net), winograd=False)).to(memory_format=CL)
    fused = _cuda_forms(net, fast_transformer, fuse_transformer)
    assert sum(_count_ops(plain, 8).values()) > sum(_count_ops(plain, 1).values()) + 15 * 7  # ≥ one more per image
    one, eight = _count_ops(fused, 1), _count_ops(fused, 8)
    assert eight == one
    assert one["aten.batch_norm"] + one["aten.native_batch_norm"] + one["aten.cat"] == 0


def test_cudnn_flag_on_cpu_tensors_runs_the_plain_ops():
    conv = nn.Conv2d(4, 5, 3)
    fused = FusedConv2d.from_conv(conv, relu=True, cudnn=True)
    x = torch.randn(2, 4, 9, 9)
    with torch.inference_mode():
        torch.testing.assert_close(fused(x), torch.relu(conv(x)))
    assert fused_layers._cudnn_failure is None
    with pytest.raises(ValueError, match="FusedConv2d"):
        FusedConv2d.from_conv(nn.Conv2d(4, 4, 3, groups=2))


def test_cuda_layer_forms_parse_and_imply():
    assert feedforward.cuda_layer_forms("fast+pads") == {"fast", "pads"}
    assert feedforward.cuda_layer_forms("plain") == frozenset()
    assert feedforward.cuda_layer_forms("fused") == {"fast", "pads", "fused"}
    assert feedforward.cuda_layer_forms(" Fused+cuDNN ") == {"fast", "pads", "fused", "cudnn"}
    assert feedforward.cuda_layer_forms("borders") == {"fast", "pads", "fused", "borders"}
    with pytest.raises(OptionsError, match="unknown form 'pad'"):
        feedforward.cuda_layer_forms("fast+pad")


@pytest.mark.parametrize("shape", [(2, 5, 7, 9), (1, 3, 1, 1), (1, 4, 2, 6)])
def test_layout_keeping_upsample_conv_gives_the_plain_output(shape):
    from stylecore.fast_layers import UpsampleConv2d, replicate_pad1

    x = torch.randn(shape).contiguous(memory_format=CL)
    p = replicate_pad1(x)
    assert torch.equal(p, torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"))
    assert p.is_contiguous(memory_format=CL) or x.is_contiguous()  # (a 1×1 image is in both layouts)
    torch.manual_seed(shape[2])
    conv = nn.Conv2d(shape[1], 6, 3)
    plain = UpsampleConv2d.from_conv(conv).to(memory_format=CL)
    fused = FusedUpsampleConv2d.from_upsample(plain, relu=True)
    with torch.inference_mode():
        want, got = torch.relu(plain(x)), fused(x)
    assert got.is_contiguous(memory_format=CL) or x.is_contiguous()
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)  # the same sums: only the data movement differs


@pytest.mark.parametrize("shape", [(2, 5, 9, 7), (1, 4, 2, 2), (1, 3, 2, 5), (1, 6, 2, 3), (3, 8, 16, 16)])
@pytest.mark.parametrize("relu", [False, True])
def test_border_strips_give_the_reflection_padded_convolution(shape, relu):
    """FusedConv2d(reflect=True): cuDNN-style zero padding, then the border rows and columns recomputed from thin
    reflect-padded strips, equals the convolution of the reflection-padded input."""
    torch.manual_seed(sum(shape))
    conv = nn.Conv2d(shape[1], 5, 3)
    with torch.no_grad():
        conv.bias.normal_(0, 3)
    x = torch.randn(shape).contiguous(memory_format=CL)
    fused = FusedConv2d.from_conv(conv, relu=relu, reflect=True)
    with torch.inference_mode():
        want = conv(torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect"))
        torch.testing.assert_close(fused(x), torch.relu(want) if relu else want, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="3x3 stride-1"):
        FusedConv2d.from_conv(nn.Conv2d(4, 4, 3, stride=2), reflect=True)


@pytest.mark.parametrize("side,strips", [(32, True), (31, False)])
def test_border_strips_only_where_the_image_is_wide_for_its_channels(side, strips):
    """Strips recompute ~4/side of a conv; for 128 channels they are used from a side of 32 (128 / 4), below it the
    input is padded (in channels_last), and both give the padded convolution."""
    torch.manual_seed(side)
    conv = nn.Conv2d(128, 128, 3)
    x = torch.randn(1, 128, side, side + 3).contiguous(memory_format=CL)
    fused = FusedConv2d.from_conv(conv, relu=True, reflect=True).to(memory_format=CL)
    with torch.inference_mode(), _OpCounter() as counter:
        got = fused(x)
    assert (counter.ops["aten.cat"] == 2) == strips  # the strips: rows and columns, two convs
    with torch.inference_mode():
        want = torch.relu(conv(torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")))
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("forms,fused,reflect,norms_batched", [("fast+pads", 0, 0, 0), ("fused", 15, 0, 15),
                                                                ("fused+cudnn+borders", 15, 10, 15)])
def test_engine_builds_the_named_cuda_forms(forms, fused, reflect, norms_batched):
    """Engine(cuda_layers=...) → the modules its CUDA networks get (converted on the CPU before the upload)."""
    from stylecore.engine import Engine

    engine = Engine(encoder="random:0", model="random:1", device="cpu", progress=False, cuda_layers=forms)
    engine.device = torch.device("cuda")  # only the conversion runs here: no CUDA op
    net = engine._fast(load_transformer("random:1"), fast_transformer, fuse_transformer)
    convs = [m for m in net.modules() if isinstance(m, (FusedConv2d, FusedUpsampleConv2d))]
    assert len(convs) == fused and sum(m.cudnn for m in convs) == (fused if "cudnn" in forms else 0)
    assert sum(getattr(m, "reflect", False) for m in convs) == reflect
    assert sum(m.batched for m in net.modules() if isinstance(m, InstanceNorm2d)) == norms_batched
    with pytest.raises(OptionsError, match="unknown form"):
        Engine(encoder="random:0", device="cpu", progress=False, cuda_layers="fast+fuzed")


def test_fused_forms_under_bf16_autocast_round_like_the_default_forms():
    """The dtypes the forms meet on CUDA (bf16 conv outputs from autocast, fp32 norm arithmetic), on the CPU: their
    error against fp32 is that of the default CUDA forms under the same autocast (about 1%), not more."""
    net, dec = load_transformer("random:6"), load_adain_decoder("random:7")
    x = (torch.rand(2, 3, 40, 48) * 255).contiguous(memory_format=CL)
    f = torch.rand(2, 512, 5, 6).contiguous(memory_format=CL)
    default = [channels_last_pads(convert(copy.deepcopy(m), winograd=False)).to(memory_format=CL)
               for m, convert in ((net, fast_transformer), (dec, fast_decoder))]
    fused = [_cuda_forms(net, fast_transformer, fuse_transformer, True), _cuda_forms(dec, fast_decoder, fuse_sequential, True)]
    with torch.inference_mode():
        want = [net(x), dec(f)]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outs = {name: [nets[0](x), nets[1](f)] for name, nets in (("default", default), ("fused", fused))}
    err = {name: [float((o.float() - w).abs().mean() / w.abs().mean()) for o, w in zip(v, want)]
           for name, v in outs.items()}
    assert all(o.dtype == torch.bfloat16 for o in outs["fused"])
    assert all(e < 0.03 for e in err["fused"]), err
    assert all(a <= 1.25 * b for a, b in zip(err["fused"], err["default"])), err


def test_fused_forms_trace_under_torch_compile():
    """Under torch.compile (the eager backend: graph capture without code generation) the fused modules take their
    plain paths (no cuDNN call, the padded input instead of strips, the plain instance norm) and give the same
    outputs."""
    import torch._dynamo

    net, dec = load_transformer("random:1"), load_adain_decoder("random:2")
    fused = [_cuda_forms(net, fast_transformer, fuse_transformer, True), _cuda_forms(dec, fast_decoder, fuse_sequential, True)]
    x = (torch.rand(2, 3, 40, 48) * 255).contiguous(memory_format=CL)
    f = torch.rand(2, 512, 5, 6).contiguous(memory_format=CL)
    try:
        with torch.inference_mode():
            got = [torch.compile(m, backend="eager", dynamic=True)(i) for m, i in zip(fused, (x, f))]
            want = [net(x), dec(f)]
        assert (got[0] - want[0]).abs().max() < 0.05 and (got[1] - want[1]).abs().max() < 1e-3
    finally:
        torch._dynamo.reset()
