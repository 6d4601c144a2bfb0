"""The exact faster layer forms (stylecore.fast_layers) against the plain layers they replace."""
from __future__ import annotations

import copy
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stylecore.adain import load_adain_decoder
from stylecore import fast_layers, native
from stylecore.fast_layers import (InstanceNorm2d, SpaceToDepthConv2d, UpsampleConv2d, WinogradConv2d, fast_decoder,
                                   fast_transformer)
from stylecore.johnson import load_transformer

CL = torch.channels_last


def _conv(cin, cout, k, seed):
    torch.manual_seed(seed)
    conv = nn.Conv2d(cin, cout, k)
    with torch.no_grad():
        conv.bias.normal_()
    return conv


def _small_passes(monkeypatch, chunk: int) -> None:
    """Winograd passes of at most ``chunk`` tiles × channels (both forms), so that images take several."""
    for name in ("WINOGRAD_CHUNK", "WINOGRAD_NATIVE_CHUNK"):
        monkeypatch.setattr(fast_layers, name, chunk)
    monkeypatch.setattr(fast_layers, "WINOGRAD_NATIVE_MIN_TILES", 1)


def _record_calls(monkeypatch, owner, name: str) -> list:
    """Wrap ``owner.name`` so that each call appends its keyword arguments to the returned list."""
    calls, real = [], getattr(owner, name)
    monkeypatch.setattr(owner, name, lambda *a, **kw: calls.append(kw) or real(*a, **kw))
    return calls


@pytest.mark.parametrize("shape", [(1, 5, 7, 9), (2, 4, 6, 5), (1, 3, 1, 1)])
@pytest.mark.parametrize("layout", [torch.contiguous_format, CL])
def test_upsample_conv_equals_upsample_reflectpad_conv(shape, layout):
    conv = _conv(shape[1], 6, 3, seed=shape[2])
    x = torch.randn(shape).contiguous(memory_format=layout)
    ref = conv(F.pad(F.interpolate(x, scale_factor=2, mode="nearest"), (1, 1, 1, 1), mode="reflect"))
    fast = UpsampleConv2d.from_conv(conv).to(memory_format=layout)
    with torch.inference_mode():
        out = fast(x)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref.detach(), atol=1e-5, rtol=1e-5)
    assert fast.weight is conv.weight  # the checkpoint parameter itself, not a copy


@pytest.mark.parametrize("shape,cout", [((1, 64, 9, 11), 32), ((2, 128, 6, 5), 64), ((1, 64, 2, 2), 16),
                                        ((1, 256, 13, 3), 256)])
def test_upsample_conv_by_winograd_equals_upsample_reflectpad_conv(monkeypatch, native_env, shape, cout):
    """With the compiled transforms the four phases run as one Winograd 3×3 conv whose output transform writes the
    interleaved 2× image directly."""
    native_env(STYLECORE_NATIVE="1")
    _native_or_skip()
    conv = _conv(shape[1], cout, 3, seed=shape[2])
    x = torch.randn(shape).contiguous(memory_format=CL)
    ref = conv(F.pad(F.interpolate(x, scale_factor=2, mode="nearest"), (1, 1, 1, 1), mode="reflect")).detach()
    fast = UpsampleConv2d.from_conv(conv)
    assert fast.enable_winograd() and fast.winograd_weight.shape == (36, shape[1], 4 * cout)
    _small_passes(monkeypatch, 2 * 4 * 256)
    calls = _record_calls(monkeypatch, fast_layers, "_native_winograd")
    with torch.inference_mode():
        out = fast(x)
    assert calls and calls[0]["phase_ch"] == cout  # the Winograd form ran
    assert out.shape == ref.shape and out.is_contiguous(memory_format=CL)
    assert (out - ref).abs().max() <= 2e-5 * ref.abs().max()
    # output channels that are not a multiple of 16 keep the phase convolution
    assert not UpsampleConv2d.from_conv(_conv(64, 8, 3, seed=0)).enable_winograd()


@pytest.mark.parametrize("k,hw", [(9, (17, 20)), (9, (16, 16)), (3, (7, 10)), (4, (9, 9))])
def test_space_to_depth_conv_equals_conv(k, hw):
    conv = _conv(5, 3, k, seed=k)
    x = torch.randn(2, 5, *hw)
    with torch.inference_mode():
        out = SpaceToDepthConv2d.from_conv(conv)(x)
        ref = conv(x)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n,cout,hw", [(1, 3, (40, 40)), (2, 3, (45, 38)), (1, 4, (20, 27)), (1, 3, (9, 9))])
def test_space_to_depth_conv_by_winograd_equals_conv(monkeypatch, native_env, n, cout, hw):
    """Johnson's last conv (9×9 → 5×5 taps on the space-to-depth input) by Winograd F(4×4, 5×5), the output
    transform writing the pixel-shuffled, cropped image."""
    native_env(STYLECORE_NATIVE="1")
    _native_or_skip()
    conv = _conv(32, cout, 9, seed=hw[0])
    x = torch.randn(n, 32, *hw).contiguous(memory_format=CL)
    fast = SpaceToDepthConv2d.from_conv(conv)
    assert fast.enable_winograd() and fast.winograd_weight.shape == (64, 128, 16)
    _small_passes(monkeypatch, 2 * 4 * 128)
    calls = _record_calls(monkeypatch, SpaceToDepthConv2d, "_winograd_forward")
    with torch.inference_mode():
        ref, out = conv(x), fast(x)
    assert calls and out.shape == ref.shape
    assert (out - ref).abs().max() <= 2e-5 * ref.abs().max()
    assert not SpaceToDepthConv2d.from_conv(_conv(32, 3, 3, seed=0)).enable_winograd()  # 2×2 taps: not 5×5
    assert not SpaceToDepthConv2d.from_conv(_conv(30, 3, 9, seed=0)).enable_winograd()  # 120 channels: not ×16


def test_instance_norm_keeps_channels_last_and_values():
    torch.manual_seed(0)
    ref = nn.InstanceNorm2d(8, affine=True)
    with torch.no_grad():
        ref.weight.normal_(), ref.bias.normal_()
    fast = InstanceNorm2d(8, affine=True)
    fast.load_state_dict(ref.state_dict())
    x = (torch.randn(3, 8, 10, 12) * 5 + 2).contiguous(memory_format=CL)
    with torch.inference_mode():
        out = fast(x)
    assert out.is_contiguous(memory_format=CL)
    torch.testing.assert_close(out, ref(x).detach(), atol=1e-5, rtol=1e-5)


def test_fast_networks_keep_state_dict_and_outputs():
    net = load_transformer("random:3")
    fast = fast_transformer(copy.deepcopy(net)).to(memory_format=CL)
    assert {k: v.shape for k, v in fast.state_dict().items()} == {k: v.shape for k, v in net.state_dict().items()}
    assert isinstance(fast.deconv1.conv2d, UpsampleConv2d) and isinstance(fast.deconv3.conv2d, SpaceToDepthConv2d)
    assert (fast.deconv3.conv2d.winograd_weight is not None) == (native.winograd() is not None)
    assert sum(isinstance(m, WinogradConv2d) for m in fast.modules()) == 10  # the residual blocks' convs...
    # ...which apply their reflection pads themselves
    assert sum(isinstance(m, WinogradConv2d) and m.reflect == 1 for m in fast.modules()) == 10
    pads = [m.reflection_pad for m in fast.modules() if hasattr(m, "reflection_pad")]
    if native.instance_norm() is None:
        assert sum(isinstance(p, nn.Identity) for p in pads) == 12
    else:  # the norms apply the ReLUs after them and the pads of conv2, conv3 and deconv3: only conv1 keeps its pad
        assert sum(isinstance(p, nn.Identity) for p in pads) == 15 and isinstance(fast.conv1.reflection_pad, nn.ReflectionPad2d)
        assert [(fast.get_submodule(f"in{i}").relu, fast.get_submodule(f"in{i}").pad) for i in range(1, 6)] == \
            [(True, 1), (True, 1), (True, 0), (True, 0), (True, 4)]
        assert all(fast.get_submodule(f"res{i}").in1.relu and not fast.get_submodule(f"res{i}").in2.relu for i in range(1, 6))
    x = torch.rand(2, 3, 45, 38) * 255
    with torch.inference_mode():
        a, b = net(x), fast(x.contiguous(memory_format=CL))
    assert (a - b).abs().max() < 0.05  # levels on the 0-255 scale (fp32 rounding order only)

    dec = load_adain_decoder("random:4")
    fdec = fast_decoder(copy.deepcopy(dec))
    assert list(fdec.state_dict()) == list(dec.state_dict())
    assert sum(isinstance(m, UpsampleConv2d) for m in fdec) == 3
    # 512→256, 2 × 256→256, 256→128 (the other wide ones upsample), and 128→64 with the compiled transforms
    assert sum(isinstance(m, WinogradConv2d) for m in fdec) == (5 if native.winograd() is not None else 4)
    f = torch.rand(1, 512, 5, 7)
    with torch.inference_mode():
        torch.testing.assert_close(fdec(f), dec(f), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format])
@pytest.mark.parametrize("padding", [(1, 1, 1, 1), (4, 4, 4, 4), (2, 0, 1, 3), (0, 3, 0, 0)])
def test_layout_keeping_reflection_pad_matches_f_pad(padding, layout):
    from stylecore.fast_layers import ReflectionPad2d, channels_last_pads

    x = torch.randn(2, 5, 11, 9).contiguous(memory_format=layout)
    y = ReflectionPad2d(padding)(x)
    assert torch.equal(y, F.pad(x, padding, mode="reflect"))
    assert y.is_contiguous(memory_format=layout)
    net = torch.nn.Sequential(torch.nn.ReflectionPad2d(1), torch.nn.Conv2d(5, 3, 3))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    out = net(x)
    channels_last_pads(net)
    assert type(net[0]) is ReflectionPad2d and torch.equal(net(x), out)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


@pytest.fixture
def native_env(monkeypatch):
    """Set native-kernel environment variables for one test; loaded kernels are forgotten before and after."""
    def set_env(**env):
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        native.reset()
    yield set_env
    monkeypatch.undo()
    native.reset()


def _native_or_skip():
    if native._compiler() is None:
        pytest.skip("no C compiler on this machine: the Winograd transforms run as GEMMs")
    lib = native.winograd()
    assert lib is not None, "a C compiler is present but the Winograd kernels did not build (see the log)"
    return lib


@pytest.mark.parametrize("form", ["native", "gemm"])
@pytest.mark.parametrize("shape,cout,padding,bias", [((1, 128, 10, 13), 128, 0, True), ((2, 128, 9, 7), 256, 1, False),
                                                     ((1, 256, 18, 6), 128, 1, True), ((1, 64, 11, 9), 80, 1, True),
                                                     ((1, 72, 6, 10), 128, 0, True)])
@pytest.mark.parametrize("layout", [torch.contiguous_format, CL])
def test_winograd_conv_equals_conv(monkeypatch, native_env, form, shape, cout, padding, bias, layout):
    native_env(STYLECORE_NATIVE="1" if form == "native" else "0")
    if form == "native":
        _native_or_skip()
    torch.manual_seed(shape[2])
    conv = nn.Conv2d(shape[1], cout, 3, padding=padding, bias=bias)
    x = torch.randn(shape).contiguous(memory_format=layout)
    fast = WinogradConv2d.from_conv(conv)
    _small_passes(monkeypatch, 2 * 4 * 256)  # several passes, the last one partial
    native_calls = _record_calls(monkeypatch, WinogradConv2d, "_native_forward")
    with torch.inference_mode():
        ref, out = conv(x), fast(x)
    # the compiled transforms take channel counts that are multiples of 16 (72 is not: the GEMM form runs)
    assert len(native_calls) == (form == "native" and shape[1] % 16 == 0 and cout % 16 == 0)
    assert out.shape == ref.shape and out.is_contiguous(memory_format=CL)
    # the same sum up to fp32 rounding: Winograd's transforms round differently (~1e-5 of the output's scale)
    assert (out - ref).abs().max() <= 2e-5 * ref.abs().max()
    assert fast.weight is conv.weight and list(fast.state_dict()) == list(conv.state_dict())
    y = fast(x)  # with autograd on, the plain convolution runs
    assert y.requires_grad and torch.equal(y.detach(), ref)


@pytest.mark.parametrize("form", ["native", "gemm"])
@pytest.mark.parametrize("shape,cout", [((1, 128, 10, 13), 128), ((2, 64, 2, 3), 64), ((1, 128, 17, 5), 256),
                                        ((1, 80, 7, 6), 128)])
def test_winograd_conv_with_absorbed_reflection_pad(monkeypatch, native_env, form, shape, cout):
    """``reflect_pad=True``: the layer computes conv(ReflectionPad2d(1)(x)); the compiled transforms read the border
    reflected instead of padding a copy (down to 2-pixel sides, the smallest a reflection pad of 1 accepts)."""
    native_env(STYLECORE_NATIVE="1" if form == "native" else "0")
    if form == "native":
        _native_or_skip()
    torch.manual_seed(shape[3])
    conv = nn.Conv2d(shape[1], cout, 3)
    x = torch.randn(shape).contiguous(memory_format=CL)
    fast = WinogradConv2d.from_conv(conv, reflect_pad=True)
    _small_passes(monkeypatch, 2 * 4 * 256)
    with torch.inference_mode():
        ref, out = conv(F.pad(x, (1, 1, 1, 1), mode="reflect")), fast(x)
        assert out.shape == ref.shape and (out - ref).abs().max() <= 2e-5 * ref.abs().max()
        with pytest.raises(RuntimeError):  # a 1-pixel side cannot be reflected, as with the plain layers
            fast(x[..., :1])
    assert torch.equal(fast(x).detach(), ref)  # autograd on: the plain pad and conv
    with pytest.raises(ValueError):
        WinogradConv2d.from_conv(nn.Conv2d(128, 128, 3, padding=1), reflect_pad=True)


@pytest.mark.parametrize("form", ["native", "torch"])
@pytest.mark.parametrize("shape,relu,pad,affine", [((1, 32, 17, 23), True, 1, True), ((2, 128, 8, 9), True, 0, True),
                                                   ((1, 3, 9, 6), False, 4, True), ((1, 20, 5, 7), True, 2, False)])
def test_instance_norm_with_fused_relu_and_pad(native_env, form, shape, relu, pad, affine):
    """InstanceNorm2d.fuse_relu_pad: norm, then ReLU, then ReflectionPad2d, in one layer (one compiled kernel)."""
    native_env(STYLECORE_NATIVE="1" if form == "native" else "0")
    if form == "native" and native._compiler() is None:
        pytest.skip("no C compiler on this machine")
    torch.manual_seed(shape[1])
    ref = nn.InstanceNorm2d(shape[1], affine=affine)
    if affine:
        with torch.no_grad():
            ref.weight.normal_(), ref.bias.normal_()
    fast = InstanceNorm2d(shape[1], affine=affine)
    fast.load_state_dict(ref.state_dict())
    fast.fuse_relu_pad(relu, pad)
    x = (torch.randn(shape) * 3 + 500).contiguous(memory_format=CL)  # a large mean must not cancel the variance
    expect = ref(x)
    expect = F.pad(F.relu(expect) if relu else expect, (pad,) * 4, mode="reflect").detach()
    with torch.inference_mode():
        out = fast(x)
    assert (native.instance_norm() is not None) == (form == "native")
    assert out.shape == expect.shape and out.is_contiguous(memory_format=CL)
    torch.testing.assert_close(out, expect, atol=2e-4, rtol=1e-4)
    assert torch.allclose(fast(x).detach(), expect, atol=2e-4, rtol=1e-4)  # autograd on: the torch form
    if pad:
        with pytest.raises(RuntimeError), torch.inference_mode():  # too small to reflect, as ReflectionPad2d
            fast(x[..., :pad, :])


def test_instance_norm_statistics_for_tiles(native_env):
    """johnson.instance_norm_stats records, then imposes, the statistics of fused norms too (tiling)."""
    from stylecore.johnson import instance_norm_stats

    net = fast_transformer(load_transformer("random:5")).to(memory_format=CL)
    x, other = torch.rand(1, 3, 32, 40) * 255, torch.rand(1, 3, 32, 40) * 200
    with torch.inference_mode():
        plain = net(x)
        with instance_norm_stats(net) as rec:
            net(x)
        assert len(rec) == 15
        with instance_norm_stats(net, rec):
            frozen_same, frozen_other = net(x), net(other)
        assert (frozen_same - plain).abs().max() < 0.05  # its own statistics: the same function
        assert (frozen_other - net(other)).abs().max() > 1  # another image's statistics: a different result
    assert all(m.record is None and m.frozen is None for m in net.modules() if isinstance(m, InstanceNorm2d))


def test_native_kernels_are_cached_per_machine_and_written_atomically(native_env, tmp_path):
    native_env(STYLECORE_NATIVE="1", STYLECORE_CACHE_DIR=str(tmp_path / "cache"))
    _native_or_skip()
    built = list((tmp_path / "cache").iterdir())
    assert len(built) == 1 and built[0].suffix == ".so" and built[0].name.startswith("winograd-")
    stamp = built[0].stat().st_mtime_ns
    native.reset()
    assert native.winograd() is not None
    assert list((tmp_path / "cache").iterdir()) == built and built[0].stat().st_mtime_ns == stamp  # not rebuilt


def test_concurrent_builds_share_one_cache(native_env, tmp_path):
    """Several worker processes starting on a machine with an empty cache all get working kernels, and the cache
    ends up with one complete library per source (each build writes a temporary file and renames it)."""
    import subprocess
    import sys

    if native._compiler() is None:
        pytest.skip("no C compiler on this machine")
    code = ("from stylecore import native; import sys; "
            "sys.exit(0 if native.winograd() is not None and native.instance_norm() is not None else 1)")
    env = dict(os.environ, STYLECORE_CACHE_DIR=str(tmp_path), STYLECORE_NATIVE="1")
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env) for _ in range(4)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0, 0, 0]
    assert sorted(p.name.split("-")[0] for p in tmp_path.iterdir()) == ["instance_norm", "winograd"]


def test_unwritable_cache_dir_builds_in_the_temporary_directory(native_env, tmp_path, monkeypatch):
    if native._compiler() is None:
        pytest.skip("no C compiler on this machine")
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")
    monkeypatch.setattr(native.tempfile, "tempdir", str(tmp_path / "tmp"))
    native_env(STYLECORE_NATIVE="1", STYLECORE_CACHE_DIR=str(blocked / "cache"))
    assert native.winograd() is not None
    assert [p.name.startswith("winograd-") for p in (tmp_path / "tmp").glob("stylecore-*/*.so")] == [True]


def test_failed_native_build_falls_back_to_gemm_transforms(native_env, tmp_path, caplog):
    native_env(STYLECORE_NATIVE="1", STYLECORE_CACHE_DIR=str(tmp_path), CC="/bin/false")
    with caplog.at_level("WARNING", logger="stylecore.native"):
        assert native.winograd() is None
    assert "could not build the native winograd kernels" in caplog.text
    assert not list(tmp_path.iterdir())  # no half-written library left behind
    torch.manual_seed(0)
    conv = nn.Conv2d(128, 128, 3, padding=1)
    x = torch.randn(1, 128, 12, 12)
    with torch.inference_mode():
        ref, out = conv(x), WinogradConv2d.from_conv(conv)(x)
    assert (out - ref).abs().max() <= 2e-5 * ref.abs().max()
    native_env(STYLECORE_NATIVE="0", CC="")
    assert native.winograd() is None


def test_compiler_without_openmp_builds_serial_kernels(native_env, tmp_path):
    """A compiler that rejects -fopenmp (Apple clang) still gives working kernels: the serial build."""
    cc = native._compiler()
    if cc is None:
        pytest.skip("no C compiler on this machine")
    wrapper = tmp_path / "cc-no-openmp"
    wrapper.write_text(f'#!/bin/sh\nfor a in "$@"; do [ "$a" = -fopenmp ] && {{ echo "unsupported option -fopenmp" >&2; exit 1; }}; done\n'
                       f'exec {cc} "$@"\n')
    wrapper.chmod(0o755)
    native_env(STYLECORE_NATIVE="1", STYLECORE_CACHE_DIR=str(tmp_path / "cache"), CC=str(wrapper))
    assert native.winograd() is not None
    torch.manual_seed(1)
    conv = nn.Conv2d(64, 64, 3)
    x = torch.randn(1, 64, 13, 10)
    with torch.inference_mode():
        ref, out = conv(F.pad(x, (1, 1, 1, 1), mode="reflect")), WinogradConv2d.from_conv(conv, reflect_pad=True)(x)
    assert (out - ref).abs().max() <= 2e-5 * ref.abs().max()


def test_winograd_is_only_used_where_it_pays_off(native_env):
    from stylecore.fast_layers import winograd_applies

    assert winograd_applies(nn.Conv2d(128, 128, 3)) and winograd_applies(nn.Conv2d(256, 512, 3, padding=1))
    assert not winograd_applies(nn.Conv2d(128, 128, 3, stride=2)) and not winograd_applies(nn.Conv2d(128, 128, 5))
    assert not winograd_applies(nn.Conv2d(128, 128, 3, padding=1, padding_mode="reflect"))
    assert not winograd_applies(nn.Conv2d(32, 32, 3))  # measured slower below 64 channels in any form
    native_env(STYLECORE_NATIVE="0")
    assert not winograd_applies(nn.Conv2d(64, 64, 3))  # the GEMM transforms lose below 128 channels
    native_env(STYLECORE_NATIVE="1")
    _native_or_skip()
    assert winograd_applies(nn.Conv2d(64, 64, 3)) and winograd_applies(nn.Conv2d(64, 128, 3, padding=1))
    assert not winograd_applies(nn.Conv2d(72, 72, 3))  # not a multiple of 16: GEMM transforms, which lose here
    dec = fast_decoder(load_adain_decoder("random:4"), winograd=False)  # as on CUDA, where cuDNN chooses
    assert not any(isinstance(m, WinogradConv2d) for m in dec)
