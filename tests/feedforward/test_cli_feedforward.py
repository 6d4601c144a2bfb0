"""`stylize image` with the feed-forward methods (engine side of the CLI)."""
from __future__ import annotations

import numpy as np
from PIL import Image

from tests.conftest import make_photo, make_texture, run_cli, run_main


def test_cli_adain_johnson_and_missing_decoder(ff_weights, tmp_path, capsys):
    """AdaIN through the console script's process; johnson and the error in this process (same code path)."""
    content, style = tmp_path / "c.png", tmp_path / "s.png"
    make_photo(64, 48).save(content)
    make_texture(48).save(style)
    out = tmp_path / "adain.png"
    r = run_cli("image", content, style, style, "-o", out, "--method", "adain", "--encoder", ff_weights["vgg_normalised"],
                "--decoder", ff_weights["decoder"], "--alpha", "0.7", "--style-weights", "0.6,0.4", "--size", "0")
    assert r.returncode == 0, r.stderr
    assert Image.open(out).size == (64, 48) and np.asarray(Image.open(out)).std() > 5
    r = run_main(capsys, ["image", content, "-o", tmp_path / "j.png", "--method", "johnson", "--model",
                          ff_weights["johnson_old"], "--size", "32"])
    assert r.returncode == 0, r.stderr
    assert max(Image.open(tmp_path / "j.png").size) == 32
    r = run_main(capsys, ["image", content, style, "-o", tmp_path / "x.png", "--method", "adain", "--encoder",
                          ff_weights["vgg_normalised"], "--size", "0"])
    assert r.returncode == 2 and r.stderr.strip().startswith("error:") and "--decoder" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_adain_decoder_without_encoder_gets_a_note(capsys):
    import argparse

    from stylize_cli.image import resolve_encoder

    args = argparse.Namespace(encoder=None, decoder="models/decoder.pth", method="adain")
    resolve_encoder(args)
    assert args.encoder == "imagenet" and "--encoder vgg_normalised.pth" in capsys.readouterr().err
    for encoder, decoder in [("vgg_normalised.pth", "decoder.pth"), (None, None), (None, "random:3")]:
        args = argparse.Namespace(encoder=encoder, decoder=decoder, method="adain")
        resolve_encoder(args)
        assert args.encoder == (encoder or "imagenet") and capsys.readouterr().err == ""
