"""Resuming from a checkpoint continues exactly where an uninterrupted run would be."""
import csv

import pytest
import torch

from stylecore.errors import OptionsError
from stylecore.training.adain import AdaINTrainConfig, train_adain
from stylecore.training.johnson import JohnsonTrainConfig, train_johnson


def _rows(path):
    with open(path) as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def _johnson(data, out, steps, **kw):
    return JohnsonTrainConfig(data["content"], data["style_image"], str(out), loss_network="random:1", steps=steps,
                              batch_size=2, crop=32, checkpoint_every=3, log_every=1, workers=1, device="cpu", **kw)


def test_johnson_resume_matches_uninterrupted_run(data, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    train_johnson(_johnson(data, straight, 6), on_log=None)
    first = train_johnson(_johnson(data, split, 3), on_log=None)
    assert first.step == 3
    state = torch.load(split / "train_state.pth", weights_only=True)
    assert state["step"] == 3 and state["settings"]["method"] == "johnson"
    second = train_johnson(_johnson(data, split, 6), resume=True, on_log=None)
    assert second.start_step == 3 and second.step == 6

    a = torch.load(straight / "model.pth", weights_only=True)
    b = torch.load(split / "model.pth", weights_only=True)
    assert all(torch.allclose(a[k], b[k], rtol=0, atol=1e-6) for k in a)
    assert _rows(straight / "losses.csv") == _rows(split / "losses.csv")
    assert [r["step"] for r in _rows(split / "losses.csv")] == ["1", "2", "3", "4", "5", "6"]


def test_adain_resume_matches_uninterrupted_run(data, tmp_path):
    def cfg(out, steps):
        return AdaINTrainConfig(data["content"], data["style"], str(out), encoder="random:2", steps=steps, batch_size=2,
                                crop=32, load_size=40, checkpoint_every=2, log_every=1, workers=1, device="cpu")

    train_adain(cfg(tmp_path / "a", 4), on_log=None)
    train_adain(cfg(tmp_path / "b", 2), on_log=None)
    train_adain(cfg(tmp_path / "b", 4), resume=True, on_log=None)
    a = torch.load(tmp_path / "a" / "decoder.pth", weights_only=True)
    b = torch.load(tmp_path / "b" / "decoder.pth", weights_only=True)
    assert all(torch.allclose(a[k], b[k], rtol=0, atol=1e-6) for k in a)
    # the resumed run's decoder is not the 2-step one: the resumed steps really ran
    two = torch.load(tmp_path / "b" / "checkpoints" / "decoder_step0000002.pth", weights_only=True)
    assert not all(torch.equal(two[k], b[k]) for k in b)


def test_resume_refuses_changed_settings_and_fresh_run_refuses_existing_state(data, tmp_path):
    out = tmp_path / "run"
    train_johnson(_johnson(data, out, 2), on_log=None)
    with pytest.raises(OptionsError, match="already holds a training run"):
        train_johnson(_johnson(data, out, 4), on_log=None)
    with pytest.raises(OptionsError, match="seed was 0 .* now 5"):
        train_johnson(_johnson(data, out, 4, seed=5), resume=True, on_log=None)
    with pytest.raises(OptionsError, match="already at step 2"):
        train_johnson(_johnson(data, out, 2), resume=True, on_log=None)
    with pytest.raises(OptionsError, match="no training state"):
        train_johnson(_johnson(data, tmp_path / "other", 2), resume=True, on_log=None)


def test_resume_names_the_recipe_of_the_run_in_the_folder(data, tmp_path):
    ta, tj = tmp_path / "ta", tmp_path / "tj"
    train_adain(AdaINTrainConfig(data["content"], data["style"], str(ta), encoder="random:2", steps=1, batch_size=1,
                                 crop=32, load_size=32, workers=1, device="cpu"), on_log=None)
    train_johnson(_johnson(data, tj, 1), on_log=None)
    with pytest.raises(OptionsError, match=r"ta holds an adain training run .*not a johnson one") as e:
        train_johnson(_johnson(data, ta, 2), resume=True, on_log=None)
    assert "color_weight" not in str(e.value)
    # refused before the encoder loads: imagenet is not cached here, and the download would come first
    with pytest.raises(OptionsError, match=r"tj holds a johnson training run .*not an adain one"):
        train_adain(AdaINTrainConfig(data["content"], data["style"], str(tj), encoder="imagenet", steps=2,
                                     batch_size=1, crop=32, load_size=32, workers=1, device="cpu"),
                    resume=True, on_log=None)


def _losses(path):
    """(step, {column: float}) per row of a losses.csv, and the seconds column."""
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return ([(int(r["step"]), {k: float(v) for k, v in r.items() if k not in ("step", "seconds")}) for r in rows],
            [float(r["seconds"]) for r in rows])


def _same_losses(a, b):
    assert [s for s, _ in a] == [s for s, _ in b]
    for (_, x), (_, y) in zip(a, b):
        assert x.keys() == y.keys() and all(x[k] == pytest.approx(y[k], rel=1e-5, abs=1e-9) for k in x), (x, y)


def _cadence(data, out, steps):
    """Logs every 2 steps, checkpoints every 3: checkpoints fall inside log intervals."""
    return JohnsonTrainConfig(data["content"], data["style_image"], str(out), loss_network="random:1", steps=steps,
                              batch_size=1, crop=16, checkpoint_every=3, log_every=2, workers=1, device="cpu",
                              normalize_losses=True)


def test_resumed_loss_log_matches_uninterrupted_run_off_cadence(data, tmp_path):
    train_johnson(_cadence(data, tmp_path / "straight", 8), on_log=None)
    train_johnson(_cadence(data, tmp_path / "split", 3), on_log=None)  # ends off cadence: a final row at step 3
    assert [s for s, _ in _losses(tmp_path / "split" / "losses.csv")[0]] == [2, 3]
    train_johnson(_cadence(data, tmp_path / "split", 8), resume=True, on_log=None)
    straight, _ = _losses(tmp_path / "straight" / "losses.csv")
    split, seconds = _losses(tmp_path / "split" / "losses.csv")
    assert [s for s, _ in straight] == [2, 4, 6, 8]
    _same_losses(split, straight)  # step 4 averages steps 3 and 4, as in the uninterrupted run
    assert all(a < b for a, b in zip(seconds, seconds[1:])), seconds


class _Killed(BaseException):
    """Stands for the process being killed."""


@pytest.mark.parametrize("kill_at", range(4))
def test_resume_after_a_kill_between_checkpoint_writes(data, tmp_path, monkeypatch, kill_at):
    """A kill before any one of the step-6 checkpoint's four writes (weights, periodic copy, losses, state) leaves
    files that a resume turns into the uninterrupted run's loss log and weights."""
    import stylecore.training.loop as loop

    train_johnson(_cadence(data, tmp_path / "straight", 8), on_log=None)
    writes = []

    def killing(real):
        def write(*args):
            writes.append(args)
            if len(writes) == 4 + kill_at + 1:  # the step-3 checkpoint makes the first four writes
                raise _Killed
            real(*args)
        return write

    with monkeypatch.context() as m:
        m.setattr(loop, "save_tensors", killing(loop.save_tensors))
        m.setattr(loop, "write_losses", killing(loop.write_losses))
        with pytest.raises(_Killed):
            train_johnson(_cadence(data, tmp_path / "killed", 8), on_log=None)
    train_johnson(_cadence(data, tmp_path / "killed", 8), resume=True, on_log=None)
    _same_losses(_losses(tmp_path / "killed" / "losses.csv")[0], _losses(tmp_path / "straight" / "losses.csv")[0])
    a = torch.load(tmp_path / "straight" / "model.pth", weights_only=True)
    b = torch.load(tmp_path / "killed" / "model.pth", weights_only=True)
    assert all(torch.allclose(a[k], b[k], rtol=0, atol=1e-6) for k in a)
