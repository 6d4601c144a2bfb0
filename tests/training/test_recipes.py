"""Short real training runs: the loss falls, checkpoints have the public layouts, load and stylize."""
import csv

import numpy as np
import torch

from stylecore.adain import load_adain_encoder
from stylecore.adain_net import decoder as decoder_layout, normalised_vgg
from stylecore.engine import Engine
from stylecore.images import load_image, to_tensor
from stylecore.training.adain import AdaINTrainConfig, adain, train_adain
from stylecore.training.johnson import JohnsonTrainConfig, train_johnson
from stylecore.transformer_net import TransformerNet


def _curve(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return [int(r["step"]) for r in rows], [float(r["total"]) for r in rows]


def _same_layout(state, reference):
    assert list(state) == list(reference)
    assert all(tuple(state[k].shape) == tuple(reference[k].shape) and state[k].dtype == reference[k].dtype for k in reference)


def test_adain_training_reduces_loss_and_writes_decoder_pth(data, tmp_path):
    out = tmp_path / "run"
    cfg = AdaINTrainConfig(data["content"], data["style"], str(out), encoder="random:0", steps=16, batch_size=2, crop=32,
                           load_size=48, checkpoint_every=8, log_every=1, workers=1, device="cpu")
    result = train_adain(cfg, on_log=None)
    steps, totals = _curve(out / "losses.csv")
    assert steps == list(range(1, 17))
    assert sum(totals[-4:]) / 4 < 0.75 * sum(totals[:4]) / 4, totals
    assert (out / "checkpoints" / "decoder_step0000008.pth").exists() and result.step == 16

    state = torch.load(out / "decoder.pth", weights_only=True)
    _same_layout(state, decoder_layout().state_dict())
    dec = decoder_layout()
    dec.load_state_dict(state, strict=True)
    enc = load_adain_encoder("random:0")
    content, style = data["root"] / "content" / "p0.png", data["style_image"]
    c, s = to_tensor(load_image(content)), to_tensor(load_image(style))
    with torch.no_grad():
        y = dec(adain(enc(c), enc(s))).clamp(0, 1)
    assert y.shape == (1, 3, 48, 64) and torch.isfinite(y).all() and y.std() > 0.01
    # The inference engine loads the checkpoint by path and computes the same picture.
    img = Engine(encoder="random:0", decoder=str(out / "decoder.pth"), device="cpu").stylize(
        content, style, method="adain", size=0, style_size=64)
    ref = (y[0].permute(1, 2, 0).numpy() * 255).round()
    assert img.size == (64, 48) and np.abs(np.asarray(img, float) - ref).max() <= 1


def test_adain_trains_with_a_normalised_vgg_encoder_file(data, tmp_path):
    torch.manual_seed(3)
    path = tmp_path / "vgg_normalised.pth"
    torch.save(normalised_vgg().state_dict(), path)
    assert load_adain_encoder(str(path)).layout == "normalised"
    cfg = AdaINTrainConfig(data["content"], data["style"], str(tmp_path / "run"), encoder=str(path), steps=2,
                           batch_size=1, crop=32, load_size=32, log_every=1, workers=1, device="cpu")
    result = train_adain(cfg, on_log=None)
    assert result.step == 2 and len(result.rows) == 2


def test_johnson_training_reduces_loss_and_writes_transformer_state_dict(data, tmp_path):
    out = tmp_path / "run"
    cfg = JohnsonTrainConfig(data["content"], data["style_image"], str(out), loss_network="random:0", steps=12,
                             batch_size=2, crop=32, checkpoint_every=100, log_every=1, workers=1, device="cpu")
    train_johnson(cfg, on_log=None)
    steps, totals = _curve(out / "losses.csv")
    assert steps == list(range(1, 13))
    assert sum(totals[-3:]) / 3 < 0.8 * sum(totals[:3]) / 3, totals
    assert not (out / "checkpoints").exists()  # no periodic checkpoint before step 100; the final one is model.pth

    state = torch.load(out / "model.pth", weights_only=True)
    _same_layout(state, TransformerNet().state_dict())
    net = TransformerNet()
    net.load_state_dict(state, strict=True)
    content = data["root"] / "content" / "p1.png"
    x = to_tensor(load_image(content)) * 255
    with torch.no_grad():
        y = net(x).clamp(0, 255)
    assert y.shape == x.shape and y.std() > 1
    img = Engine(model=str(out / "model.pth"), device="cpu").stylize(content, method="johnson", size=0)
    assert img.size == (64, 48) and np.abs(np.asarray(img, float) - y[0].permute(1, 2, 0).numpy()).max() <= 1


def test_johnson_random_loss_network_options(data, tmp_path):
    """normalize_losses + color_weight + content_luminance (the offline model's recipe) train and log a colour term."""
    out = tmp_path / "run"
    cfg = JohnsonTrainConfig(data["content"], data["style_image"], str(out), loss_network="random:0", steps=14,
                             batch_size=2, crop=32, content_weight=2, style_weight=1, color_weight=1,
                             content_luminance=True, normalize_losses=True, log_every=1, workers=1, device="cpu")
    train_johnson(cfg, on_log=None)
    with open(out / "losses.csv") as f:
        rows = list(csv.DictReader(f))
    assert set(rows[0]) >= {"content", "style", "color"}
    totals = [float(r["total"]) for r in rows]
    assert sum(totals[-3:]) < 0.85 * sum(totals[:3]), totals
    # the colour term pulls the output's RGB Gram toward the style's
    assert float(rows[-1]["color"]) < float(rows[0]["color"])


def test_histogram_and_edge_terms_train_and_fall(data, tmp_path):
    """histogram_weight (sliced-Wasserstein colours) and edge_weight (luminance gradients) are logged and fall."""
    out = tmp_path / "run"
    cfg = JohnsonTrainConfig(data["content"], data["style_image"], str(out), loss_network="random:0", steps=20,
                             batch_size=2, crop=32, content_weight=2, style_weight=1, histogram_weight=5, edge_weight=2,
                             content_luminance=True, normalize_losses=True, log_every=1, workers=1, device="cpu", lr=1e-2)
    train_johnson(cfg, on_log=None)
    with open(out / "losses.csv") as f:
        rows = list(csv.DictReader(f))

    def ends(key):
        return sum(float(r[key]) for r in rows[:3]), sum(float(r[key]) for r in rows[-3:])

    first, last = ends("histogram")
    assert last < 0.5 * first, (first, last)  # the colours move toward the style's distribution
    assert {"edges", "content", "style"} <= set(rows[0])

    out = tmp_path / "edges"  # the edge term alone: the output's luminance gradients approach the content's
    cfg = JohnsonTrainConfig(data["content"], data["style_image"], str(out), loss_network="random:0", steps=20,
                             batch_size=2, crop=32, content_weight=0, style_weight=0, edge_weight=1,
                             normalize_losses=True, log_every=1, workers=1, device="cpu", lr=1e-2)
    train_johnson(cfg, on_log=None)
    with open(out / "losses.csv") as f:
        rows = list(csv.DictReader(f))
    first, last = ends("edges")
    assert last < 0.8 * first, (first, last)


def test_sliced_colour_and_edge_losses_measure_what_they_say():
    from stylecore.training.johnson import edge_loss, sliced_colour_loss

    gen = torch.Generator().manual_seed(0)
    style = torch.rand(4096, 3) * 255
    same = style[torch.randperm(4096)].T.reshape(1, 3, 64, 64)  # the style's colours, shuffled in space
    shifted = same + 40.0
    assert sliced_colour_loss(same, style, torch.Generator().manual_seed(1)) < 1e-6
    assert sliced_colour_loss(shifted, style, gen) > 0.1
    x = torch.rand(2, 3, 16, 16) * 255
    assert edge_loss(x + 30.0, x) < 1e-9  # a brightness shift keeps every edge
    assert abs(float(edge_loss(torch.zeros_like(x), x)) - 1.0) < 1e-6  # a flat image loses them all
