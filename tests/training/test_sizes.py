"""Crop and style sizes: any crop down to the networks' minimum trains; smaller ones are one-line errors."""
import csv
import math

import pytest
import torch
from PIL import Image

from stylecore.errors import ImageError, OptionsError
from stylecore.training.adain import AdaINTrainConfig, train_adain
from stylecore.training.johnson import JohnsonTrainConfig, train_johnson
from stylecore.transformer_net import TransformerNet
from stylize_cli.main import main


def _johnson(data, out, crop, style=None, **kw):
    return JohnsonTrainConfig(data["content"], style or data["style_image"], str(out), loss_network="random:0",
                              steps=1, batch_size=2, crop=crop, workers=1, device="cpu", normalize_losses=True, **kw)


@pytest.mark.parametrize("crop", [8, 9, 15, 30])
def test_johnson_trains_on_crops_not_a_multiple_of_4(data, tmp_path, crop):
    out = tmp_path / "run"
    result = train_johnson(_johnson(data, out, crop, content_luminance=True, edge_weight=1.0, histogram_weight=1.0),
                           on_log=None)
    assert result.step == 1
    TransformerNet().load_state_dict(torch.load(out / "model.pth", weights_only=True))
    with open(out / "losses.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert all(math.isfinite(float(row[k])) and float(row[k]) > 0 for k in ("total", "content", "style", "edges"))


def test_too_small_crops_and_styles_are_refused_before_any_work(data, tmp_path):
    with pytest.raises(OptionsError, match=r"--crop 7: must be at least 8 px"):
        train_johnson(_johnson(data, tmp_path / "j", 7), on_log=None)
    Image.new("RGB", (40, 7), (200, 40, 30)).save(tmp_path / "thin.png")
    with pytest.raises(ImageError, match=r"thin\.png: 40x7 px is too small .*at least 8 px"):
        train_johnson(_johnson(data, tmp_path / "j", 16, style=str(tmp_path / "thin.png")), on_log=None)
    with pytest.raises(ImageError, match=r"t1\.png: 7x7 px \(after --style-size 7\) is too small"):
        train_johnson(_johnson(data, tmp_path / "j", 16, style_size=7), on_log=None)
    with pytest.raises(ImageError, match=r"t1\.png: resizing to 100000x100000 = 10000\.0 MP exceeds the pixel limit"):
        train_johnson(_johnson(data, tmp_path / "j", 16, style_size=100_000), on_log=None)  # not 40 GB of pixels
    with pytest.raises(OptionsError, match=r"--crop 8: must be at least 9 px"):
        train_adain(AdaINTrainConfig(data["content"], data["style"], str(tmp_path / "a"), encoder="random:0",
                                     crop=8, load_size=8, workers=1, device="cpu"), on_log=None)
    assert not (tmp_path / "j").exists() and not (tmp_path / "a").exists()


def test_cli_size_errors_are_one_line_exit_2(data, tmp_path, capsys):
    Image.new("RGB", (1, 1), (200, 40, 30)).save(tmp_path / "dot.png")
    common = ["--content", data["content"], "--output", str(tmp_path / "o"),  # --output: as in run/manifest build
              "--steps", "1", "--batch-size", "1",
              "--workers", "1", "-q"]
    cases = [
        (["johnson", "--style", data["style_image"], "--loss-network", "random:0", "--crop", "4"],
         "--crop 4: must be at least 8 px"),
        (["johnson", "--style", str(tmp_path / "dot.png"), "--loss-network", "random:0", "--crop", "32"],
         "dot.png: 1x1 px is too small"),
        (["adain", "--style", data["style"], "--encoder", "random:0", "--crop", "1", "--load-size", "1"],
         "--crop 1: must be at least 9 px"),
    ]
    for args, text in cases:
        code = main(["train", *args, *common])
        lines = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], lines
    assert not (tmp_path / "o").exists()
