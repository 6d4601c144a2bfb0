"""`stylize image`: the success path, every error path's exit code and single-line message, --help."""
from __future__ import annotations

import argparse
import os
import pty
import re
import select
import subprocess
import sys

import pytest
from PIL import Image

from stylecore.options import SPECS
from tests.conftest import ROOT, make_photo, make_texture, run_cli, run_main

FAST = ("--encoder", "random:0", "--size", "40", "--steps", "4", "--device", "cpu")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli-inputs")
    make_photo(64, 48).save(d / "content.png")
    make_texture(48).save(d / "style.png")
    make_texture(48, seed=7).save(d / "style2.jpg")
    (d / "notes.jpg").write_text("this is not an image\n")
    (d / "weights.pth").write_text("not a state_dict\n")
    return d


def _one_error_line(proc, *words):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def test_success_writes_a_decodable_image_and_reports_weights(inputs, tmp_path):
    out = tmp_path / "nested" / "out.jpg"
    proc = run_cli("image", inputs / "content.png", inputs / "style.png", inputs / "style2.jpg", "-o", out,
                   "--style-weights", "0.7,0.3", "--preserve-color", "--quality", "80", *FAST)
    assert proc.returncode == 0, proc.stderr
    img = Image.open(out)
    assert img.format == "JPEG" and img.size == (40, 30)
    assert str(out) in proc.stdout and "encoder random:0" in proc.stdout
    assert proc.stderr == ""  # stderr is not a TTY here: no progress bar
    assert [p.name for p in out.parent.iterdir()] == ["out.jpg"]  # atomic write left no temp file


def test_progress_bar_on_a_terminal(inputs, tmp_path):
    out = tmp_path / "out.png"
    master, slave = pty.openpty()
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, "-m", "stylize_cli.main", "image", str(inputs / "content.png"),
                             str(inputs / "style.png"), "-o", str(out), *FAST], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 300)
        if not ready:
            break
        try:
            data = os.read(master, 4096)
        except OSError:  # the child closed its end
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=300)
    os.close(master)
    tty_text = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, tty_text
    assert "gatys [" in tty_text and "4/4" in tty_text and "loss" in tty_text, tty_text
    assert Image.open(out).size == (40, 30)


@pytest.mark.parametrize("ext,fmt", [(".png", "PNG"), (".webp", "WEBP")])
def test_output_format_follows_the_extension(inputs, tmp_path, ext, fmt, capsys):
    out = tmp_path / f"out{ext}"
    proc = run_main(capsys, ["image", inputs / "content.png", inputs / "style.png", "-o", out, *FAST, "--size", "32"])
    assert proc.returncode == 0, proc.stderr
    assert Image.open(out).format == fmt and max(Image.open(out).size) == 32


def test_error_paths_in_a_real_process(inputs, tmp_path):
    out = tmp_path / "out.jpg"
    _one_error_line(run_cli("image", tmp_path / "missing.jpg", inputs / "style.png", "-o", out, *FAST),
                    "missing.jpg", "file not found")
    _one_error_line(run_cli("image", inputs / "content.png", inputs / "style.png", "-o", out, *FAST,
                            "--encoder", inputs / "weights.pth"), "weights.pth", "not a readable state_dict")
    _one_error_line(run_cli("image", inputs / "content.png", inputs / "style.png", "-o", out, "--optimizer", "sgd"),
                    "--optimizer", "sgd")
    # A header claiming 12000x12000 (144 MP): over Pillow's warning threshold (89 MP), under its error (179 MP).
    Image.new("1", (12000, 12000)).save(tmp_path / "bomb.png")
    _one_error_line(run_cli("image", tmp_path / "bomb.png", inputs / "style.png", "-o", out, *FAST),
                    "bomb.png", "144.0 MP exceeds the pixel limit")
    assert not out.exists()


def test_error_paths(inputs, tmp_path, capsys):
    c, s, out = inputs / "content.png", inputs / "style.png", tmp_path / "out.jpg"
    cases = [
        (["image", tmp_path / "missing.jpg", s, "-o", out, *FAST], ["missing.jpg", "file not found"]),
        (["image", c, inputs / "notes.jpg", "-o", out, *FAST], ["notes.jpg", "not an image"]),
        (["image", c, s, "-o", out, *FAST, "--encoder", inputs / "weights.pth"], ["weights.pth", "not a readable state_dict"]),
        (["image", c, s, "-o", out, *FAST, "--encoder", tmp_path / "none.pth"], ["none.pth", "file not found"]),
        (["image", c, s, "-o", out, *FAST, "--encoder", "random:abc"], ["random:SEED"]),
        (["image", c, s, "-o", out, *FAST, "--optimizer", "sgd"], ["--optimizer", "sgd", "lbfgs, adam"]),
        (["image", c, s, "-o", out, *FAST, "--init", "zeros"], ["--init", "content, noise"]),
        (["image", c, s, "-o", out, *FAST, "--content-loss", "l3"], ["--content-loss", "l2, l1"]),
        (["image", c, s, "-o", out, *FAST, "--steps", "0"], ["--steps", "out of range"]),
        (["image", c, s, "-o", out, *FAST, "--size", "1.5"], ["--size", "invalid value"]),
        (["image", c, s, "-o", out, *FAST, "--size", "12"], [f"{c} (resized by --size 12): 12x9 px is too small"]),
        (["image", c, s, "-o", out, *FAST, "--style-weight", "lots"], ["--style-weight", "invalid value"]),
        (["image", c, s, "-o", out, *FAST, "--method", "pix2pix"], ["--method", "invalid choice"]),
        (["image", c, s, "-o", out, *FAST, "--device", "tpu"], ["--device", "unknown device"]),
        (["image", c, s, "-o", out, *FAST, "--quality", "101"], ["--quality", "out of range"]),
        (["image", c, s, "-o", tmp_path / "out.gif", *FAST], ["out.gif", "unsupported output extension"]),
        (["image", c, s, s, "-o", out, *FAST, "--style-weights", "1,2,3"], ["3 weights for 2 style images"]),
        (["image", c, s, "-o", out, *FAST, "--style-weights", "a"], ["not a list of numbers"]),
        (["image", c, s, "-o", out, *FAST, "--style-weights", " "], ["--style-weights: empty"]),
        (["image", c, "-o", out, *FAST], ["gatys needs at least one style image"]),
        (["image", c, s, "-o", out, *FAST, "--method", "johnson", "--model", "random:0"],
         [f"method johnson takes no style image (its style is in --model); remove {s}"]),
        (["image", c, "-o", out, *FAST, "--method", "johnson", "--model", "random:0", "--style-weights", "1"],
         ["method johnson takes no style image", "remove --style-weights"]),
        (["image", c, "-o", out, *FAST, "--method", "johnson", "--model", "random:0", "--mask", s],
         ["method johnson takes no style image", "remove --mask"]),
        (["image", c, s, "-o", out, *FAST, "--model", "random:2"], ["method gatys uses no --model"]),
        (["image", c, s, "-o", out, *FAST, "--method", "adain", "--decoder", "random:1", "--model", "random:2"],
         ["method adain uses no --model"]),
        (["image", c, "-o", out, *FAST, "--method", "johnson", "--model", "random:2", "--decoder", "random:1"],
         ["method johnson uses no --decoder"]),
        (["image", c, s, *FAST], ["-o/--output"]),
        (["image", c, s, "-o", out, "--bogus"], ["unrecognized arguments: --bogus"]),
        ([], ["COMMAND"]),
    ]
    for args, words in cases:
        _one_error_line(run_main(capsys, args), *words)
    assert not out.exists()


def test_unwritable_output_is_one_error_line(inputs, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = run_main(capsys, ["image", inputs / "content.png", inputs / "style.png", "-o", blocker / "out.png", *FAST])
    _one_error_line(proc, "out.png", "cannot write")


def test_an_output_that_is_an_input_is_refused_and_the_input_kept(tmp_path, capsys):
    """`-o photo.jpg` (a slip) replaced the user's original with a thumbnail, exit 0 (audit)."""
    import shutil

    photo, style = tmp_path / "photo.png", tmp_path / "style.png"
    make_photo(64, 48).save(photo)
    make_texture(48).save(style)
    os.symlink(style, tmp_path / "alias.png")
    before = {p: p.read_bytes() for p in (photo, style)}
    for out in (photo, style, tmp_path / "alias.png"):
        proc = run_main(capsys, ["image", photo, style, "-o", out, *FAST])
        _one_error_line(proc, "is an input of this command", "choose another output name")
    proc = run_main(capsys, ["image", photo, "-o", f"file://{photo}", "--method", "johnson", "--model", "random:0",
                             "--size", "32"])
    _one_error_line(proc, "is an input of this command")
    assert {p: p.read_bytes() for p in (photo, style)} == before
    shutil.copy(photo, tmp_path / "copy.png")  # an equal file elsewhere is another file: written
    assert run_main(capsys, ["image", photo, style, "-o", tmp_path / "copy.png", *FAST]).returncode == 0


def test_offline_messages_point_to_the_shipped_model_not_to_noise(inputs, tmp_path, capsys):
    """The missing-weights errors suggested random:SEED decoders and models, whose outputs are pure noise, and the
    run then called them a 'lower-fidelity offline fallback' (audit)."""
    proc = run_main(capsys, ["image", inputs / "content.png", "-o", tmp_path / "j.png", "--method", "johnson"])
    line = _one_error_line(proc, "builtin:johnson_mosaic (shipped, offline)", "random:SEED is untrained")
    assert line.index("builtin:johnson_mosaic") < line.index("random:SEED")
    proc = run_main(capsys, ["image", inputs / "content.png", inputs / "style.png", "-o", tmp_path / "a.png",
                             "--method", "adain", "--encoder", "random:0"])
    _one_error_line(proc, "stylize train adain", "random:SEED is untrained (noise, for tests)")
    proc = run_main(capsys, ["image", inputs / "content.png", "-o", tmp_path / "j.png", "--method", "johnson",
                             "--model", "random:0", "--size", "32"])
    assert proc.returncode == 0, proc.stderr
    assert "model random:0 (random weights: untrained, the output is noise; for tests)" in proc.stdout + proc.stderr


def test_imagenet_offline_without_cache_is_one_error_line(inputs, tmp_path):
    """In a process of its own: urllib keeps the proxies it first saw for the life of a process."""
    env = {"TORCH_HOME": str(tmp_path / "th"), "https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9",
           "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "no_proxy": "", "NO_PROXY": ""}
    proc = run_cli("image", inputs / "content.png", inputs / "style.png", "-o", tmp_path / "o.png",
                   "--size", "32", "--steps", "2", "--encoder", "imagenet", env=env)
    _one_error_line(proc, "encoder imagenet", "random:SEED")


def test_help_lists_every_option_with_its_default():
    top = run_cli("--help")
    assert top.returncode == 0 and "image" in top.stdout
    proc = run_cli("image", "--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())  # undo argparse's line wrapping
    for name, spec in SPECS.items():
        flag = "--" + name.replace("_", "-")
        entry = re.findall(rf"(?<![\w-]){flag} (.*?)(?= --[a-z]|$)", text)
        assert entry, flag
        if spec.default is not None and spec.type is not bool:
            shown = f"{spec.default:g}" if isinstance(spec.default, float) else str(spec.default)
            assert f"(default: {shown})" in entry[-1], (flag, shown, entry[-1])
    for words in ["--method {gatys,adain,johnson}", "(default: gatys)", "--encoder SPEC", "(default: imagenet)",
                  "--decoder SPEC", "--model SPEC", "--mask MASK", "--style-weights", "--quality Q", "(default: 95)",
                  "--device", "--preserve-color", "-o OUT"]:
        assert words in text, words


def test_credentials_in_uris_are_refused_and_never_printed(inputs, tmp_path, capsys):
    """``s3://KEY:SECRET@bucket`` (and any URI with user info) is refused before any request, in one line that
    does not contain the secret: weight specs, inputs, manifest cells and output roots."""
    import pandas as pd

    c, s, out = inputs / "content.png", inputs / "style.png", tmp_path / "out.jpg"
    secret = "AKIAEXAMPLE:topsecret"
    manifest = tmp_path / "pairs.csv"
    pd.DataFrame({"content": [f"s3://{secret}@bucket/c.png", str(c)], "style": [str(s), str(s)]}).to_csv(manifest,
                                                                                                          index=False)
    good = tmp_path / "good.csv"
    pd.DataFrame({"content": [str(c)], "style": [str(s)]}).to_csv(good, index=False)
    cases = [
        ["image", c, s, "-o", out, *FAST, "--encoder", f"s3://{secret}@bucket/vgg.pth"],
        ["image", c, s, "-o", out, *FAST, "--encoder", f"https://{secret}@host/vgg.pth"],
        ["manifest", "build", "--content", f"s3://{secret}@bucket/photos/", "--style", s, "-o", tmp_path / "m.csv"],
        ["manifest", "validate", manifest],
        ["run", good, "-o", f"s3://{secret}@bucket/out", "--method", "adain", "--encoder", "random:0",
         "--decoder", "random:1"],
    ]
    for args in cases:
        proc = run_main(capsys, args)
        assert "topsecret" not in proc.stderr + proc.stdout and "AKIAEXAMPLE" not in proc.stderr + proc.stdout
        assert proc.returncode == 2 and "credentials in URIs are not supported" in proc.stderr, proc.stderr
    assert not out.exists() and not (tmp_path / "m.csv").exists()


def test_inputs_and_output_as_s3_and_file_uris(inputs, tmp_path, capsys, s3):
    """``stylize image`` reads ``s3://`` and ``file://`` images and writes its output there (it wrote a local
    folder named ``s3:`` before and said it had written to S3)."""
    b = s3.bucket()
    s3.put(b, "in/content.png", (inputs / "content.png").read_bytes())
    local = run_main(capsys, ["image", inputs / "content.png", inputs / "style.png", "-o", tmp_path / "a.png", *FAST])
    assert local.returncode == 0, local.stderr
    proc = run_main(capsys, ["image", f"s3://{b}/in/content.png", f"file://{inputs / 'style.png'}",
                                "-o", f"s3://{b}/out/b.png", *FAST])
    assert proc.returncode == 0 and f"wrote s3://{b}/out/b.png" in proc.stdout, proc.stderr
    assert s3.get(b, "out/b.png") == (tmp_path / "a.png").read_bytes()  # same pixels, same encoder settings
    proc = run_main(capsys, ["image", inputs / "content.png", inputs / "style.png", "-o",
                                f"file://{tmp_path / 'c.png'}", *FAST])
    assert proc.returncode == 0 and (tmp_path / "c.png").read_bytes() == (tmp_path / "a.png").read_bytes()
    assert not (tmp_path / "s3:").exists() and not os.path.exists("s3:") and not os.path.exists("file:")
    _one_error_line(run_main(capsys, ["image", f"s3://{b}/in/missing.png", inputs / "style.png", "-o",
                                         tmp_path / "d.png", *FAST]), f"s3://{b}/in/missing.png", "not found")
    _one_error_line(run_main(capsys, ["image", inputs / "content.png", inputs / "style.png", "-o", tmp_path,
                                         *FAST]), "unsupported output extension")


def test_help_shows_each_default_once_and_no_empty_ones():
    """--help of the subcommands with automatic defaults: no "(default: None)" and no option whose help already
    names its default gets a second one."""
    import re

    from stylize_cli.main import build_parser

    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    helps = {"manifest " + n: p.format_help() for n, p in next(
        a for a in subs["manifest"]._actions if isinstance(a, argparse._SubParsersAction)).choices.items()}
    helps.update({"train " + n: p.format_help() for n, p in next(
        a for a in subs["train"]._actions if isinstance(a, argparse._SubParsersAction)).choices.items()})
    assert len(helps) == 4
    for name, text in helps.items():
        flat = " ".join(text.split())
        assert "(default: None)" not in flat and "(default: False)" not in flat, name
        assert not re.search(r"\(default: [^)]*\)\)? \(default:", flat), name
    train = " ".join(helps["train johnson"].split())
    assert "--seed SEED initialisation and crop seed, 0 to 4294967295 (deterministic runs) (default: 0)" in train
    assert "crops per optimisation step (default: 4)" in train
