"""Quality metrics on known pairs, against independent computations."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from stylecore.quality import METRICS, gaussian_window, rgb_to_lab, sliced_wasserstein_lab, ssim, _projections
from tests.conftest import make_photo, make_texture


def shifted(img: Image.Image, amount: int) -> Image.Image:
    a = np.asarray(img).astype(int)
    a = a + np.array([amount, amount // 3, -amount])
    return Image.fromarray(np.clip(a, 0, 255).astype("uint8"))


def test_identical_images_score_perfectly(evaluator):
    photo = make_photo(96, 72)
    m = evaluator.evaluate(photo, [photo], photo)
    assert m["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert m["color_distance"] == pytest.approx(0.0, abs=1e-6)
    assert m["content_loss"] == pytest.approx(0.0, abs=1e-9)
    assert m["style_loss"] == pytest.approx(0.0, abs=1e-9)


def test_colour_shift_scores_worse_and_monotonic(evaluator):
    photo = make_photo(96, 72)
    small, big = shifted(photo, 25), shifted(photo, 70)
    ms = evaluator.evaluate(photo, [photo], small)
    mb = evaluator.evaluate(photo, [photo], big)
    assert 1.0 > ms["ssim"] > mb["ssim"]
    assert 0.0 < ms["color_distance"] < mb["color_distance"]
    assert mb["color_distance"] > 5.0  # Lab units: a 70-level red/blue shift is clearly visible


def test_style_loss_prefers_the_style(evaluator):
    photo, tex = make_photo(64, 64), make_texture(64)
    as_content = evaluator.evaluate(photo, [tex], photo)
    as_style = evaluator.evaluate(photo, [tex], tex)
    assert as_style["style_loss"] < as_content["style_loss"] / 10
    assert as_style["color_distance"] < as_content["color_distance"]
    assert as_style["ssim"] < as_content["ssim"]
    assert as_style["content_loss"] > as_content["content_loss"]


def _ssim_by_hand(x: np.ndarray, y: np.ndarray, win: int = 11, sigma: float = 1.5) -> float:
    r = np.arange(win) - (win - 1) / 2
    g = np.exp(-r ** 2 / (2 * sigma ** 2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    vals = []
    for i in range(x.shape[0] - win + 1):
        for j in range(x.shape[1] - win + 1):
            px, py = x[i:i + win, j:j + win], y[i:i + win, j:j + win]
            mx, my = (w * px).sum(), (w * py).sum()
            vx, vy = (w * (px - mx) ** 2).sum(), (w * (py - my) ** 2).sum()
            cxy = (w * (px - mx) * (py - my)).sum()
            vals.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)))
    return float(np.mean(vals))


def test_ssim_matches_a_hand_computation():
    rng = np.random.default_rng(3)
    x = rng.random((13, 14))
    y = np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1)
    got = float(ssim(torch.tensor(x).view(1, 1, 13, 14), torch.tensor(y).view(1, 1, 13, 14))[0])
    assert got == pytest.approx(_ssim_by_hand(x, y), abs=1e-6)
    assert 0.5 < got < 0.99


def test_ssim_closed_form_for_flat_images():
    a, b = 0.2, 0.6
    got = float(ssim(torch.full((1, 1, 16, 16), a), torch.full((1, 1, 16, 16), b))[0])
    c1 = 0.01 ** 2
    assert got == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), abs=1e-6)
    assert gaussian_window().sum().item() == pytest.approx(1.0)


def test_rgb_to_lab_reference_values():
    cols = torch.tensor([[1.0, 0, 0], [1, 1, 1], [0, 0, 0], [0.5, 0.5, 0.5], [0, 0, 1]]).T.reshape(1, 3, 5, 1)
    lab = rgb_to_lab(cols)[0, :, :, 0].T
    expected = torch.tensor([[53.24, 80.09, 67.20], [100, 0, 0], [0, 0, 0], [53.39, 0, 0], [32.30, 79.19, -107.86]])
    assert torch.allclose(lab, expected, atol=0.02)


def test_sliced_wasserstein_of_flat_colours():
    a = torch.tensor([0.8, 0.2, 0.1]).view(1, 3, 1, 1).expand(1, 3, 8, 8)
    b = torch.tensor([0.1, 0.5, 0.9]).view(1, 3, 1, 1).expand(1, 3, 8, 8)
    delta = (rgb_to_lab(a)[0, :, 0, 0] - rgb_to_lab(b)[0, :, 0, 0])
    dirs = _projections(64, 0)
    expected = math.sqrt(float((delta @ dirs).pow(2).mean()))
    assert sliced_wasserstein_lab(a, [b]) == pytest.approx(expected, rel=1e-4)
    assert sliced_wasserstein_lab(a, [a]) == 0.0


def test_batch_matches_single_and_breakdown_adds_up(evaluator):
    from stylecore.quality import QualityItem

    photo, wide, tex = make_photo(64, 48, seed=1), make_photo(80, 40, seed=2), make_texture(64)
    items = [QualityItem(photo, [tex], shifted(photo, 30), style_keys=["tex"]),
             QualityItem(wide, [tex, photo], wide, style_weights=[0.7, 0.3], style_keys=["tex", "photo"]),
             QualityItem(photo, [tex], photo, style_keys=["tex"])]
    batch = evaluator.evaluate_batch(items)
    for it, got in zip(items, batch):
        single = evaluator.evaluate(it.content, it.styles, it.output, it.style_weights)
        assert got["evaluator"] == "random:0" and got["evaluator_size"] == evaluator.size == 96
        for k in METRICS:
            v = single[k]
            assert got[k] == pytest.approx(v, rel=1e-4, abs=1e-6), k
    b = evaluator.breakdown(photo, [tex], photo)
    total = sum(b["layer_weights"][l] * v for l, v in b["per_layer"].items())
    assert total == pytest.approx(batch[2]["style_loss"], rel=1e-4)
    assert all(len(maps) == 4 and maps[0].mode == "L" for maps in b["feature_maps"].values())
    assert evaluator.describe()["encoder"] == "random:0"


def test_a_content_paired_with_several_styles_goes_through_the_network_once():
    from stylecore.quality import QualityEvaluator, QualityItem

    photo, other, tex, tex2 = make_photo(64, 48, seed=1), make_photo(64, 48, seed=5), make_texture(64), make_texture(64, seed=7)
    items = [QualityItem(photo, [tex], shifted(photo, 30), style_keys=["t"]),
             QualityItem(photo, [tex2], shifted(photo, 50), style_keys=["t2"]),
             QualityItem(other, [tex], other, style_keys=["t"]), QualityItem(photo.copy(), [tex], photo, style_keys=["t"])]
    cached = QualityEvaluator("random:0", device="cpu")
    seen = []
    cached.net.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[0]))
    got = cached.evaluate_batch(items)
    # 4 outputs + 2 distinct contents (the third `photo` row is an equal copy) + 2 style encodings
    assert sum(seen) == 4 + 2 + 2
    seen.clear()
    again = cached.evaluate_batch(items[:2])  # contents and styles from the caches: only the outputs run
    assert sum(seen) == 2
    for it, row, row2 in zip(items, got, again + [None, None]):
        alone = QualityEvaluator("random:0", device="cpu").evaluate(it.content, it.styles, it.output)
        for k in METRICS:
            assert row[k] == pytest.approx(alone[k], rel=1e-5, abs=1e-7), k
            if row2 is not None:
                assert row2[k] == pytest.approx(alone[k], rel=1e-5, abs=1e-7), k


def test_styles_without_keys_are_encoded_once_per_distinct_image():
    from stylecore.quality import QualityEvaluator

    photo, tex, tex2 = make_photo(64, 48, seed=1), make_texture(64), make_texture(64, seed=7)
    ev = QualityEvaluator("random:0", device="cpu")
    seen = []
    ev.net.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[0]))
    first = ev.evaluate(photo, [tex], shifted(photo, 20))
    assert sum(seen) == 3  # content, output, style
    seen.clear()
    again = ev.evaluate(photo, [tex.copy()], shifted(photo, 20))  # an equal style, no key: from the cache
    assert sum(seen) == 1  # the output only (the content is cached too)
    assert again == first
    seen.clear()
    other = ev.evaluate(photo, [tex2], shifted(photo, 20))  # a different style is encoded
    assert sum(seen) == 2 and other["style_loss"] != first["style_loss"]


def test_a_style_decoded_at_two_sizes_under_one_key_scores_the_same_in_either_order():
    """The shard runner decodes one style URI at the size each row needs (small contents, --style-size) and
    passes the URI as the cache key: the first decode's statistics served every later row, so swapping two rows
    changed their style_loss about 3x (audit)."""
    from stylecore.quality import QualityEvaluator, QualityItem

    tex = make_texture(256, seed=3)
    small_style, big_style = tex.resize((40, 40)), tex
    photo = make_photo(48, 40, seed=2)
    out = shifted(photo, 25)
    rows = [QualityItem(photo, [small_style], out, style_keys=["s3://b/style.png#v1"]),
            QualityItem(photo, [big_style], out, style_keys=["s3://b/style.png#v1"])]
    forward = QualityEvaluator("random:0", device="cpu").evaluate_batch(rows)
    backward = QualityEvaluator("random:0", device="cpu").evaluate_batch(rows[::-1])[::-1]
    fresh = [QualityEvaluator("random:0", device="cpu").evaluate_batch([r])[0] for r in rows]
    for a, b, c in zip(forward, backward, fresh):
        for k in ("style_loss", "color_distance"):
            assert a[k] == pytest.approx(c[k], rel=1e-5) and b[k] == pytest.approx(c[k], rel=1e-5), k
    assert forward[0]["style_loss"] != pytest.approx(forward[1]["style_loss"], rel=1e-3)  # the two sizes differ
