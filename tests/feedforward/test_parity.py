"""Parity with the reference computations (pytorch-AdaIN test.py, fast_neural_style stylize) on the same weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from stylecore.engine import Engine
from tests.conftest import make_photo, make_texture
from tests.feedforward.conftest import (adain_decoder_state, adain_encoder_state, johnson_state, ref_decode, ref_encode,
                                        ref_johnson, ref_style_transfer, to_input)


def _diff(a, b) -> int:
    return int(np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).max())


@pytest.mark.parametrize("size", [(64, 48), (60, 44)])
def test_adain_matches_reference_test_py(ff_engine, size):
    content, style = make_photo(*size, seed=3), make_texture(max(size), seed=4)
    out = ff_engine.stylize(content, style, method="adain", size=0, style_size=0)
    ref = ref_style_transfer(adain_encoder_state(), adain_decoder_state(), to_input(content), to_input(style))
    ref = ref[: size[1], : size[0]]  # test.py's output is 8-aligned: ceil-mode pools, 2x upsamplings
    assert out.size == size
    assert np.asarray(out).std() > 10  # a real image, not a flat one
    assert _diff(out, ref) <= 1


def test_adain_alpha_and_interpolation_match_reference(ff_engine):
    content = make_photo(64, 48, seed=5)
    s1, s2 = make_texture(64, seed=6), make_texture(64, seed=7)
    enc, dec = adain_encoder_state(), adain_decoder_state()
    out = ff_engine.stylize(content, s1, method="adain", size=0, style_size=0, alpha=0.4)
    assert _diff(out, ref_style_transfer(enc, dec, to_input(content), to_input(s1), alpha=0.4)) <= 1
    out = ff_engine.stylize(content, [s1, s2], method="adain", size=0, style_size=0, style_weights=[3, 1])
    ref = ref_style_transfer(enc, dec, to_input(content), torch.cat([to_input(s1), to_input(s2)]), weights=[0.75, 0.25])
    assert _diff(out, ref) <= 1
    only_first = ff_engine.stylize(content, [s1, s2], method="adain", size=0, style_size=0, style_weights=[1, 0])
    assert _diff(only_first, ff_engine.stylize(content, s1, method="adain", size=0, style_size=0)) <= 1
    assert _diff(out, only_first) > 3  # the second style does change the result


def test_alpha_zero_is_decoder_reconstruction_of_content(ff_engine):
    content, style = make_photo(64, 48, seed=8), make_texture(64, seed=9)
    out = ff_engine.stylize(content, style, method="adain", size=0, alpha=0.0)
    with torch.no_grad():
        recon = ref_decode(adain_decoder_state(), ref_encode(adain_encoder_state(), to_input(content)))
    recon = recon[0].mul(255).add(0.5).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    assert _diff(out, recon) <= 1
    other = ff_engine.stylize(content, make_texture(64, seed=10), method="adain", size=0, alpha=0.0)
    assert _diff(out, other) == 0  # the style plays no part at alpha 0


@pytest.mark.parametrize("size", [(64, 48), (62, 45)])
def test_johnson_matches_reference_stylize(ff_engine, size):
    content = make_photo(*size, seed=11)
    out = ff_engine.stylize(content, method="johnson", size=0)
    ref = ref_johnson(johnson_state(), np.asarray(content))[: size[1], : size[0]]
    assert out.size == size
    assert np.asarray(out).std() > 10
    assert _diff(out, ref) <= 1


def test_johnson_old_instance_norm_keys_are_dropped(ff_weights):
    state = torch.load(ff_weights["johnson_old"], weights_only=True)
    assert any(k.endswith("in1.running_mean") for k in state) and "res3.in2.running_var" in state
    engine = Engine(model=ff_weights["johnson_old"], device="cpu")
    content = make_photo(48, 40, seed=12)
    out = engine.stylize(content, method="johnson", size=0)
    assert _diff(out, ref_johnson(johnson_state(old_keys=True), np.asarray(content))) <= 1


def test_style_size_zero_keeps_the_style_size_as_test_py_does(ff_engine):
    # pytorch-AdaIN's test.py --style_size 0 keeps the style image's size; so does style_size=0 here
    content, style = make_photo(64, 48, seed=11), make_texture(96, seed=12)
    out = ff_engine.stylize(content, style, method="adain", size=0, style_size=0)
    ref = ref_style_transfer(adain_encoder_state(), adain_decoder_state(), to_input(content), to_input(style))
    assert _diff(out, ref[:48, :64]) <= 1
    resized = ff_engine.stylize(content, style, method="adain", size=0)  # default: the content's long side
    assert _diff(out, resized) > 3


def test_a_replaced_checkpoint_is_loaded_again_by_the_process_engine(tmp_path):
    """A long-lived process (a notebook, a served worker) must not keep stylizing with a file's old weights."""
    import os

    import stylecore

    path = tmp_path / "model.pth"
    torch.save(johnson_state(seed=2), path)
    content = make_photo(40, 32, seed=13)
    first = stylecore.stylize(content, method="johnson", model=str(path), device="cpu", size=0)
    assert _diff(first, ref_johnson(johnson_state(seed=2), np.asarray(content))) <= 1
    assert stylecore.get_engine(model=str(path), device="cpu") is stylecore.get_engine(model=str(path), device="cpu")

    torch.save(johnson_state(seed=3), path)  # retrained in place (same size; a later mtime)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    second = stylecore.stylize(content, method="johnson", model=str(path), device="cpu", size=0)
    assert _diff(second, ref_johnson(johnson_state(seed=3), np.asarray(content))) <= 1
    assert _diff(first, second) > 10
