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
    with pytest.raises(OptionsError, match=r"tj holds a johnson training run .*not an adain one"):
        train_adain(AdaINTrainConfig(data["content"], data["style"], str(tj), encoder="random:2", steps=2,
                                     batch_size=1, crop=32, load_size=32, workers=1, device="cpu"),
                    resume=True, on_log=None)
