"""AdaIN controls (mask, preserve_color, interpolation) and error cases."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from stylecore.adain import mask_labels
from stylecore.color import rgb_to_yiq
from stylecore.engine import Engine
from stylecore.errors import OptionsError, WeightsError
from tests.conftest import make_photo, make_texture


def _solid_texture(rgb, size=48, seed=0):
    """A texture in one hue: stripes of two shades of ``rgb``."""
    y, x = np.mgrid[0:size, 0:size]
    shade = (((x + y) // 4) % 2)[..., None] * 0.5 + 0.5
    return Image.fromarray((np.array(rgb)[None, None] * shade).astype("uint8"))


def test_mask_labels_follow_grey_levels():
    m = Image.fromarray(np.array([[255, 200, 128, 60, 0]], dtype=np.uint8))
    assert mask_labels(m, 2, (5, 1)).tolist() == [[0, 0, 0, 1, 1]]
    assert mask_labels(m, 3, (5, 1)).tolist() == [[0, 0, 1, 2, 2]]


def test_mask_assigns_styles_to_regions(ff_engine):
    content = make_photo(64, 48, seed=1)
    red, blue = _solid_texture((230, 40, 30)), _solid_texture((30, 60, 230))
    mask = Image.new("L", (64, 48), 0)
    mask.paste(255, (0, 0, 32, 48))  # left half white -> first style
    out = np.asarray(ff_engine.stylize(content, [red, blue], method="adain", size=0, mask=mask), float)
    only_red = np.asarray(ff_engine.stylize(content, red, method="adain", size=0), float)
    only_blue = np.asarray(ff_engine.stylize(content, blue, method="adain", size=0), float)
    left, right = np.s_[:, :16], np.s_[:, 48:]
    assert np.abs(out[left] - only_red[left]).mean() < 0.5 * np.abs(out[left] - only_blue[left]).mean()
    assert np.abs(out[right] - only_blue[right]).mean() < 0.5 * np.abs(out[right] - only_red[right]).mean()
    with pytest.raises(OptionsError, match="at least two style"):
        ff_engine.stylize(content, red, method="adain", size=0, mask=mask)
    with pytest.raises(OptionsError, match="style weights"):
        ff_engine.stylize(content, [red, blue], method="adain", size=0, mask=mask, style_weights=[1, 1])
    with pytest.raises(OptionsError, match="adain"):
        ff_engine.stylize(content, method="johnson", size=0, mask=mask)


def _recolour(style: np.ndarray, content: np.ndarray) -> np.ndarray:
    """Colour-covariance matching in numpy: x' = C_c^1/2 C_s^-1/2 (x - mu_s) + mu_c."""
    s, c = style.reshape(-1, 3).astype(float), content.reshape(-1, 3).astype(float)

    def sqrtm(m, inv=False):
        w, v = np.linalg.eigh(m)
        return v @ np.diag(w ** (-0.5 if inv else 0.5)) @ v.T

    cs, cc = np.cov(s.T) + 1e-5 * np.eye(3), np.cov(c.T) + 1e-5 * np.eye(3)
    out = (sqrtm(cc) @ sqrtm(cs, inv=True) @ (s - s.mean(0)).T).T + c.mean(0)
    return np.clip(out, 0, 1).reshape(style.shape)


def test_preserve_color_recolours_the_style_to_the_content(ff_engine):
    content, style = make_photo(64, 48, seed=2), make_texture(64, seed=8)
    c = np.asarray(content, float) / 255
    rec = _recolour(np.asarray(style, float) / 255, c)
    assert np.abs(rec.reshape(-1, 3).mean(0) - c.reshape(-1, 3).mean(0)).max() < 0.02  # the recoloured style has the content's colours
    rec_img = Image.fromarray((rec * 255).round().astype("uint8"))
    kept = np.asarray(ff_engine.stylize(content, style, method="adain", size=0, preserve_color=True), float)
    via_recoloured = np.asarray(ff_engine.stylize(content, rec_img, method="adain", size=0), float)
    plain = np.asarray(ff_engine.stylize(content, style, method="adain", size=0), float)
    assert np.abs(kept - via_recoloured).mean() < 1.5
    assert np.abs(kept - plain).mean() > 5 * np.abs(kept - via_recoloured).mean()


def test_johnson_preserve_color_keeps_chrominance(ff_engine):
    content = make_photo(64, 48, seed=3)
    out = ff_engine.stylize(content, method="johnson", size=0, preserve_color=True)
    plain = ff_engine.stylize(content, method="johnson", size=0)

    def yiq(img):
        return rgb_to_yiq(torch.from_numpy(np.asarray(img, np.float32) / 255).permute(2, 0, 1)[None])[0]

    c, o, p = yiq(content), yiq(out), yiq(plain)
    iq_err = (o[1:] - c[1:]).abs().mean().item()
    assert iq_err < 0.02 and iq_err < 0.3 * (p[1:] - c[1:]).abs().mean().item()
    assert (o[0] - p[0]).abs().mean().item() < 0.02  # the stylized luminance stays


def test_missing_decoder_is_a_clear_error(ff_weights):
    engine = Engine(encoder=ff_weights["vgg_normalised"], device="cpu")
    with pytest.raises(OptionsError, match="needs a decoder.*--decoder"):
        engine.stylize(make_photo(), make_texture(), method="adain", size=0)
    with pytest.raises(OptionsError, match="needs a model.*--model"):
        engine.stylize(make_photo(), method="johnson", size=0)


def test_wrong_layout_checkpoints_are_rejected(ff_weights, tmp_path):
    content, style = make_photo(48, 32), make_texture(48)
    cases = [
        (dict(encoder=ff_weights["vgg_normalised"], decoder=ff_weights["johnson"]), "adain", "decoder .*johnson.pth: not a pytorch-AdaIN decoder.pth"),
        (dict(model=ff_weights["decoder"]), "johnson", "model .*decoder.pth: not a fast_neural_style TransformerNet"),
        (dict(encoder=ff_weights["decoder"], decoder=ff_weights["decoder"]), "adain", "encoder .*decoder.pth: neither a vgg_normalised.pth nor a torchvision VGG19"),
    ]
    for kwargs, method, pattern in cases:
        with pytest.raises(WeightsError, match=pattern):
            Engine(device="cpu", **kwargs).stylize(content, style, method=method, size=0)
    sd = torch.load(ff_weights["decoder"], weights_only=True)
    sd["28.weight"] = sd["28.weight"][:, :32]
    torch.save(sd, tmp_path / "bad_decoder.pth")
    with pytest.raises(WeightsError, match="key 28.weight has shape"):
        Engine(encoder=ff_weights["vgg_normalised"], decoder=tmp_path / "bad_decoder.pth", device="cpu").stylize(
            content, style, method="adain", size=0)
    with pytest.raises(WeightsError, match="imagenet"):
        Engine(decoder="imagenet")


def test_random_specs_are_deterministic_and_torchvision_encoder_works():
    e1 = Engine(encoder="random:3", decoder="random:4", model="random:5", device="cpu")
    e2 = Engine(encoder="random:3", decoder="random:4", model="random:5", device="cpu")
    content, style = make_photo(48, 32), make_texture(48)
    a = np.asarray(e1.stylize(content, style, method="adain", size=0))
    assert (a == np.asarray(e2.stylize(content, style, method="adain", size=0))).all()
    assert e1.adain_encoder.layout == "torchvision" and a.std() > 5
    j = np.asarray(e1.stylize(content, method="johnson", size=0))
    assert (j == np.asarray(e2.stylize(content, method="johnson", size=0))).all() and j.std() > 5
