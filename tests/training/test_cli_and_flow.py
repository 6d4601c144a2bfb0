"""``stylize train`` end to end, its one-line errors, and the Prefect flow."""
import torch

from stylecore.transformer_net import TransformerNet
from tests.conftest import run_cli, run_main


def test_cli_train_johnson_and_resume(data, tmp_path):
    out = tmp_path / "cli"
    args = ["train", "johnson", "--content", data["content"], "--style", data["style_image"], "-o", out,
            "--crop", "32", "--batch-size", "2", "--loss-network", "random:0", "--log-every", "1", "--workers", "1"]
    r = run_cli(*args, "--steps", "2", env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    assert "step 2:" in r.stderr and "model.pth" in r.stdout
    r = run_cli(*args, "--steps", "3", "--resume", "-q", env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    assert torch.load(out / "train_state.pth", weights_only=True)["step"] == 3
    TransformerNet().load_state_dict(torch.load(out / "model.pth", weights_only=True))


def test_cli_resume_restores_the_settings_not_given(data, tmp_path, capsys):
    """``--resume -o OUT`` alone continues the run with its saved settings (crop, seed, loss network, data...);
    an option given explicitly is still compared, even when it is the parser's default."""
    out = tmp_path / "run"
    first = ["train", "johnson", "--content", data["content"], "--style", data["style_image"], "-o", out,
             "--crop", "32", "--batch-size", "2", "--loss-network", "random:0", "--log-every", "1", "--workers", "1",
             "--seed", "7", "--normalize-losses", "--content-weight", "2", "--style-weight", "3", "--steps", "2"]
    assert run_main(capsys, first).returncode == 0
    r = run_main(capsys, ["train", "johnson", "-o", out, "--resume", "--steps", "3", "--workers", "1"])
    assert r.returncode == 0, r.stderr
    restored = next(line for line in r.stderr.splitlines() if line.startswith("resume: "))
    for setting in ("crop=32", "batch_size=2", "loss_network=random:0", "seed=7", "normalize_losses=True",
                    "content_weight=2.0", f"content={data['content']}", "log_every=1"):
        assert setting in restored, restored
    assert "steps=" not in restored and "workers=" not in restored  # given, not restored
    state = torch.load(out / "train_state.pth", weights_only=True)
    assert state["step"] == 3 and state["settings"]["crop"] == 32 and state["settings"]["seed"] == 7
    assert (out / "losses.csv").read_text().count("\n") == 4  # header + steps 1..3 (log every step, as saved)
    # an explicit value is compared with the saved one, even the default (256 != 32)
    r = run_main(capsys, ["train", "johnson", "-o", out, "--resume", "--steps", "4", "--crop", "256"])
    assert r.returncode == 2 and "--resume: crop was 32" in r.stderr, r.stderr
    r = run_main(capsys, ["train", "johnson", "-o", out, "--resume", "--steps", "4", "--normalize-losses"])
    assert r.returncode == 0, r.stderr  # the same value, given again
    # without --resume the data are required
    r = run_main(capsys, ["train", "johnson", "-o", tmp_path / "new", "--steps", "1"])
    assert r.returncode == 2 and r.stderr.strip() == ("error: the following arguments are required: --content, --style "
                                                      "(or --resume, to continue the run in -o)"), r.stderr
    assert not (tmp_path / "new").exists()


def test_a_run_started_with_relative_paths_resumes_from_another_folder(data, tmp_path, capsys, monkeypatch):
    """The state saved the data and weight paths as typed ("data/content"): a resume from another working
    directory (a scheduled job's) looked for them there, and naming the same folder absolutely was refused as a
    changed setting (audit item left open in session 16)."""
    import os
    import shutil

    work = tmp_path / "work"
    shutil.copytree(data["content"], work / "data" / "content")
    shutil.copytree(data["style"], work / "data" / "style")
    monkeypatch.chdir(work)
    content, style = os.path.join("data", "content"), os.path.join("data", "style", "t1.png")
    out = tmp_path / "run"
    first = ["train", "johnson", "--content", content, "--style", style, "-o", out, "--crop", "32", "--batch-size",
             "2", "--loss-network", "random:0", "--log-every", "1", "--workers", "1", "--steps", "1"]
    assert run_main(capsys, first).returncode == 0
    saved = torch.load(out / "train_state.pth", weights_only=True)["settings"]
    assert saved["content"] == str(work / content) and saved["style"] == str(work / style)
    assert saved["loss_network"] == "random:0"
    monkeypatch.chdir(tmp_path)
    r = run_main(capsys, ["train", "johnson", "-o", out, "--resume", "--steps", "2", "--workers", "1"])
    assert r.returncode == 0, r.stderr
    r = run_main(capsys, ["train", "johnson", "-o", out, "--resume", "--steps", "3", "--workers", "1",
                          "--content", str(work / content)])  # the same folder, named absolutely
    assert r.returncode == 0, r.stderr
    assert torch.load(out / "train_state.pth", weights_only=True)["step"] == 3


def test_cli_errors_are_one_line_exit_2(data, tmp_path, capsys):
    """In this process (same code path); the first case also through the console script's process."""
    cases = [
        (["train", "adain", "--content", tmp_path / "nope", "--style", data["style"], "-o", tmp_path / "o", "--encoder", "random:0"],
         "no such file or folder"),
        (["train", "johnson", "--content", data["content"], "--style", data["style_image"], "-o", tmp_path / "o",
          "--loss-network", "random:x"], "random:SEED"),
        (["train", "johnson", "--content", data["content"], "--style", data["style_image"], "-o", tmp_path / "o",
          "--resume", "--loss-network", "random:0"], "no training state"),
    ]
    for i, (args, text) in enumerate(cases):
        r = run_cli(*args) if i == 0 else run_main(capsys, args)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], r.stderr


def test_flow_trains_through_prefect(data, tmp_path, prefect_server):
    from flows.training import train_style_model

    settings = {"content": data["content"], "style": data["style_image"], "out_dir": str(tmp_path / "flow"),
                "loss_network": "random:0", "steps": 2, "batch_size": 1, "crop": 32, "log_every": 1, "workers": 1,
                "device": "cpu"}
    out = train_style_model("johnson", settings)
    assert out["step"] == 2 and out["weights"].endswith("model.pth")
    assert (tmp_path / "flow" / "losses.csv").read_text().count("\n") == 3
    assert out["last"]["step"] == 2 and isinstance(out["last"]["total"], float) and out["last"]["total"] > 0
    # a resume names only what changes: the rest (data, crop, loss network...) comes from the saved state
    out = train_style_model("johnson", {"out_dir": str(tmp_path / "flow"), "steps": 3, "workers": 1, "device": "cpu"},
                            resume=True)
    assert out["start_step"] == 2 and out["step"] == 3
    assert (tmp_path / "flow" / "losses.csv").read_text().count("\n") == 4


def test_flow_settings_of_the_wrong_type_are_one_line_errors():
    """Deployment parameters arrive as JSON: a string where a number belongs is an OptionsError naming the
    setting, not a TypeError from a comparison deep in the config checks."""
    import pytest

    from stylecore.errors import OptionsError
    from stylecore.training.johnson import JohnsonTrainConfig
    from tasks.training import check_settings

    good = {"content": "c", "style": "s.png", "out_dir": "o", "steps": 2, "lr": 1, "normalize_losses": True}
    check_settings(JohnsonTrainConfig, good, "johnson")  # an int is a fine float
    for key, value, kind in (("steps", "2", "a whole number"), ("steps", 2.5, "a whole number"),
                             ("lr", "1e-3", "a number"), ("normalize_losses", 1, "true or false"),
                             ("steps", True, "a whole number"), ("content", 5, "text")):
        with pytest.raises(OptionsError, match=rf"^johnson training setting {key}: .* is not {kind}$"):
            check_settings(JohnsonTrainConfig, dict(good, **{key: value}), "johnson")


def test_cli_train_adain_from_a_manifest(data, tmp_path):
    import pandas as pd

    manifest = data["root"] / "pairs.jsonl"
    pd.DataFrame({"content": [f"content/p{i}.png" for i in range(3)],
                  "style": ["style/t1.png", "style/t2.png", "style/t1.png"]}).to_json(manifest, orient="records", lines=True)
    out = tmp_path / "adain"
    r = run_cli("train", "adain", "--content", manifest, "--style", manifest, "-o", out, "--encoder", "random:0",
                "--steps", "2", "--crop", "32", "--load-size", "40", "--batch-size", "2", "--log-every", "1",
                "--workers", "1", env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    assert "step 2:" in r.stderr and (out / "decoder.pth").exists()


def test_cli_train_johnson_with_the_offline_recipe_terms(data, tmp_path):
    out = tmp_path / "terms"
    r = run_cli("train", "johnson", "--content", data["content"], "--style", data["style_image"], "-o", out,
                "--crop", "32", "--batch-size", "2", "--loss-network", "random:0", "--log-every", "1", "--workers", "1",
                "--steps", "2", "--normalize-losses", "--content-luminance", "--color-weight", "2",
                "--histogram-weight", "20", "--edge-weight", "4", "-q", env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    header = (out / "losses.csv").read_text().splitlines()[0].split(",")
    assert {"content", "style", "color", "histogram", "edges"} <= set(header)


def _one_error_line(r, text):
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], r.stderr


def test_cli_refuses_an_out_path_that_is_a_file(data, tmp_path, capsys):
    (tmp_path / "c.png").write_bytes(b"x")
    base = ["train", "johnson", "--content", data["content"], "--style", data["style_image"], "--loss-network",
            "random:0", "--steps", "1", "--crop", "32", "--batch-size", "1", "--workers", "1", "-q"]
    for out, text in [("c.png", "c.png: exists and is not a folder"),
                      ("c.png/sub", "c.png is not a folder")]:
        _one_error_line(run_main(capsys, [*base, "-o", tmp_path / out]), text)
    _one_error_line(run_main(capsys, [*base, "-o", tmp_path / "c.png", "--resume"]), "c.png: exists and is not a folder")
    assert (tmp_path / "c.png").read_bytes() == b"x"


BAD_NUMBERS = {
    "common": [("--lr", "nan"), ("--lr", "inf"), ("--lr", "0"), ("--lr", "-1e-3"), ("--content-weight", "nan"),
               ("--content-weight", "-1"), ("--style-weight", "inf"), ("--style-weight", "-2"),
               ("--crop", "0"), ("--crop", "100000"), ("--steps", "0"), ("--steps", "1.5"), ("--batch-size", "0"),
               ("--batch-size", "99999999999"), ("--seed", "99999999999999999999"), ("--seed", "-1"),
               ("--seed", "x"), ("--workers", "0"), ("--workers", "1000000"), ("--checkpoint-every", "0"),
               ("--log-every", "-1")],
    "adain": [("--lr-decay", "nan"), ("--lr-decay", "-1"), ("--load-size", "0"), ("--load-size", "100000")],
    "johnson": [("--style-size", "-5"), ("--style-size", "100000"), ("--load-size", "-1"), ("--color-weight", "nan"),
                ("--histogram-weight", "-1"), ("--edge-weight", "inf")],
}


def test_cli_numeric_flags_are_checked_by_argparse(tmp_path):
    """Each bad value exits 2 with one line naming the flag, before any file is looked at (none of these exist)."""
    for recipe in ("adain", "johnson"):
        for flag, value in BAD_NUMBERS["common"] + BAD_NUMBERS[recipe]:
            r = run_cli("train", recipe, "--content", tmp_path / "c", "--style", tmp_path / "s.png", "-o",
                        tmp_path / "o", flag, value)
            _one_error_line(r, f"argument {flag}:")
    assert not (tmp_path / "o").exists()


def test_library_checks_numbers_too(data, tmp_path):
    import math

    import pytest

    from stylecore.errors import OptionsError
    from stylecore.training.adain import AdaINTrainConfig, train_adain
    from stylecore.training.johnson import JohnsonTrainConfig, train_johnson

    for kw, text in [({"lr": math.nan}, "--lr nan"), ({"style_size": -5}, "--style-size -5"),
                     ({"seed": 10**20}, "--seed"), ({"color_weight": math.inf}, "--color-weight inf"),
                     ({"workers": 0}, "--workers 0")]:
        with pytest.raises(OptionsError, match=text):
            train_johnson(JohnsonTrainConfig(data["content"], data["style_image"], str(tmp_path / "j"),
                                             loss_network="random:0", **kw), on_log=None)
    with pytest.raises(OptionsError, match="--lr-decay -1"):
        train_adain(AdaINTrainConfig(data["content"], data["style"], str(tmp_path / "a"), encoder="random:0",
                                     lr_decay=-1.0), on_log=None)
