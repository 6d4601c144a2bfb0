"""``stylize train`` end to end, its one-line errors, and the Prefect flow."""
import torch

from stylecore.transformer_net import TransformerNet
from tests.conftest import run_cli


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


def test_cli_errors_are_one_line_exit_2(data, tmp_path):
    cases = [
        (["train", "adain", "--content", tmp_path / "nope", "--style", data["style"], "-o", tmp_path / "o", "--encoder", "random:0"],
         "no such file or folder"),
        (["train", "johnson", "--content", data["content"], "--style", data["style_image"], "-o", tmp_path / "o",
          "--loss-network", "random:x"], "random:SEED"),
        (["train", "johnson", "--content", data["content"], "--style", data["style_image"], "-o", tmp_path / "o",
          "--resume", "--loss-network", "random:0"], "no training state"),
    ]
    for args, text in cases:
        r = run_cli(*args)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], r.stderr


def test_flow_trains_through_prefect(data, tmp_path):
    from prefect.testing.utilities import prefect_test_harness

    from flows.training import train_style_model

    settings = {"content": data["content"], "style": data["style_image"], "out_dir": str(tmp_path / "flow"),
                "loss_network": "random:0", "steps": 2, "batch_size": 1, "crop": 32, "log_every": 1, "workers": 1,
                "device": "cpu"}
    with prefect_test_harness(server_startup_timeout=180):
        out = train_style_model("johnson", settings)
    assert out["step"] == 2 and out["weights"].endswith("model.pth")
    assert (tmp_path / "flow" / "losses.csv").read_text().count("\n") == 3


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
