import pytest

from stylecore.errors import WeightsError
from stylecore.weights import builtin_names, parse_spec


def test_unknown_builtin_names_the_available_ones():
    with pytest.raises(WeightsError) as e:
        parse_spec("builtin:no_such_model", what="model")
    msg = str(e.value)
    assert "unknown built-in weights 'builtin:no_such_model'" in msg and "available:" in msg
    for name in builtin_names():
        assert name in msg
    with pytest.raises(WeightsError):
        parse_spec("builtin:../weights", what="model")


def test_the_shipped_offline_model_meets_its_bar_on_the_held_out_photos():
    """builtin:johnson_mosaic, re-measured now: the bar of stylecore.training.offline_model on the four example
    photos (never used in training), and the figures recorded next to the weights."""
    import json

    from stylecore.training.offline_model import ASSETS, BAR, REPO, evaluate

    recorded = json.loads((ASSETS / "johnson_mosaic.json").read_text())
    contents = sorted((REPO / "examples" / "content").glob("*.jpg"))
    report = evaluate(ASSETS / "johnson_mosaic.pth", REPO / "examples" / "styles" / "mosaic.png", contents, 256, None)
    got = report["summary"]
    assert got["swd_ratio"] <= BAR["swd_ratio_max"] and got["gram_ratio"] <= BAR["gram_ratio_max"]
    assert got["grad_corr"] >= BAR["grad_corr_min"] and got["passed"]
    for key in ("swd_ratio", "gram_ratio", "grad_corr", "ssim"):
        assert abs(got[key] - recorded["summary"][key]) < 0.01, (key, got[key], recorded["summary"][key])
    assert "johnson_mosaic" in builtin_names()
