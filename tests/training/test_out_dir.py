"""The output folder of a training run: local only, locked while a run writes it, cleaned of a killed run's
temporary files, left as it was when a run fails its first checks."""
import fcntl
import re
import io

import pytest
import torch
from PIL import Image

from stylecore.errors import OptionsError
from stylecore.training.johnson import JohnsonTrainConfig, train_johnson
LOCK_FILE = ".train.lock"  # stylecore.training.loop.LOCK_FILE
from tests.conftest import run_main


def _johnson(data, out, steps=1, **kw):
    kw = {"loss_network": "random:1", "batch_size": 1, "crop": 16, "workers": 1, "device": "cpu", **kw}
    return JohnsonTrainConfig(data["content"], data["style_image"], str(out), steps=steps, **kw)


def test_s3_output_is_refused_with_credentials_redacted(data, tmp_path, monkeypatch, capsys):
    """``Path`` turned ``-o s3://KEY:SECRET@b/run`` into a local ``./s3:/KEY:SECRET@b/run`` folder and printed it."""
    monkeypatch.chdir(tmp_path)
    r = run_main(capsys, ["train", "johnson", "--content", data["content"], "--style", data["style_image"],
                          "-o", "s3://AKIAKEY:SuperSecret@bucket/run", "--loss-network", "random:0", "--steps", "1"])
    assert r.returncode == 2 and "SuperSecret" not in r.stderr + r.stdout, r.stderr
    assert r.stderr.strip() == ("error: -o s3://***@bucket/run: training writes to a local folder; give a local path "
                                "(and copy the run to S3 afterwards, e.g. with `aws s3 sync`)")
    assert not (tmp_path / "s3:").exists()


def test_file_uris_for_output_and_johnson_style(data, tmp_path):
    out = tmp_path / "run"
    style = JohnsonTrainConfig(data["content"], f"file://{data['style_image']}", f"file://{out}", steps=1,
                               loss_network="random:1", batch_size=1, crop=16, workers=1, device="cpu")
    result = train_johnson(style, on_log=None)
    assert result.weights == out / "model.pth" and torch.load(out / "model.pth", weights_only=True)


def test_johnson_style_image_from_s3(s3, data, tmp_path):
    bucket = s3.bucket()
    buf = io.BytesIO()
    Image.open(data["style_image"]).save(buf, format="PNG")
    s3.client.put_object(Bucket=bucket, Key="styles/t1.png", Body=buf.getvalue())
    straight = train_johnson(_johnson(data, tmp_path / "local", steps=2), on_log=None)
    from_s3 = train_johnson(JohnsonTrainConfig(data["content"], f"s3://{bucket}/styles/t1.png", str(tmp_path / "s3"),
                                               steps=2, loss_network="random:1", batch_size=1, crop=16, workers=1,
                                               device="cpu"), on_log=None)
    assert from_s3.step == straight.step == 2
    a, b = (torch.load(r.weights, weights_only=True) for r in (straight, from_s3))
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same style pixels, the same training


def test_a_second_run_into_a_locked_folder_is_refused(data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    with open(out / LOCK_FILE, "ab") as held:  # another process's run, in effect (flock is per open file)
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(OptionsError, match=r"another training run is using this folder"):
            train_johnson(_johnson(data, out), on_log=None)
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # nothing written
    assert train_johnson(_johnson(data, out), on_log=None).step == 1  # released: the run goes ahead


def test_temporary_files_of_a_killed_checkpoint_write_are_removed(data, tmp_path):
    out = tmp_path / "run"
    train_johnson(_johnson(data, out, steps=2, checkpoint_every=1), on_log=None)
    left = [out / ".train_state.pth.k1ll3d_1.part", out / ".model.pth.k1ll3d_2.part",
            out / "checkpoints" / ".model_step0000002.pth.k1ll3d_3.part"]
    for p in left:
        p.write_bytes(b"\0" * 1000)  # what a SIGKILL inside atomic_write_bytes leaves
    keep = out / "notes.part"  # not one of ours
    keep.write_text("x")
    train_johnson(_johnson(data, out, steps=3, checkpoint_every=1), resume=True, on_log=None)
    assert not any(p.exists() for p in left) and keep.exists()


def test_a_run_that_fails_its_first_checks_leaves_no_folder(data, tmp_path):
    out = tmp_path / "a" / "b" / "run"
    with pytest.raises(Exception, match="nonexist.pth"):
        train_johnson(_johnson(data, out, loss_network=str(tmp_path / "nonexist.pth")), on_log=None)
    assert not (tmp_path / "a").exists()
    (tmp_path / "kept").mkdir()  # a folder that was there stays
    with pytest.raises(Exception, match="nonexist.pth"):
        train_johnson(_johnson(data, tmp_path / "kept", loss_network=str(tmp_path / "nonexist.pth")), on_log=None)
    assert (tmp_path / "kept").is_dir()


@pytest.mark.parametrize("text, reason", [("step,lr\n1,0.1\nabc,1\n", "line 3: step 'abc' is not a whole number"),
                                          ("when,lr\n1,0.1\n", "not a loss log (no 'step' column")])
def test_a_damaged_loss_log_is_one_error_line_on_resume(data, tmp_path, text, reason):
    out = tmp_path / "run"
    train_johnson(_johnson(data, out, steps=2, log_every=1), on_log=None)
    (out / "losses.csv").write_text(text)
    with pytest.raises(OptionsError, match=re.escape(reason)):
        train_johnson(_johnson(data, out, steps=3, log_every=1), resume=True, on_log=None)


def test_a_loss_log_saved_with_a_byte_order_mark_resumes(data, tmp_path):
    out = tmp_path / "run"
    train_johnson(_johnson(data, out, steps=2, log_every=1), on_log=None)
    text = (out / "losses.csv").read_text()
    (out / "losses.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())  # a spreadsheet's "CSV UTF-8"
    train_johnson(_johnson(data, out, steps=3, log_every=1), resume=True, on_log=None)
    assert [line.split(",")[0] for line in (out / "losses.csv").read_text().splitlines()] == ["step", "1", "2", "3"]


def test_an_over_long_path_is_one_error_line(data, tmp_path, capsys):
    r = run_main(capsys, ["train", "johnson", "--content", data["content"], "--style", data["style_image"],
                          "-o", tmp_path / ("x" * 300), "--loss-network", "random:0", "--steps", "1"])
    assert r.returncode == 2 and r.stderr.strip().endswith("x: file name too long"), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
