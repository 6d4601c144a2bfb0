"""Losses against hand-computed values."""
from __future__ import annotations

import pytest
import torch

from stylecore.losses import ContentLoss, StyleLoss, gram_matrix, tv_loss


def test_gram_matrix_hand_computed_and_normalised_by_chw():
    f = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 2, 1, 2)  # C=2, H=1, W=2
    # F·Fᵀ = [[1+4, 3+8], [3+8, 9+16]] = [[5, 11], [11, 25]], divided by C·H·W = 4
    expected = torch.tensor([[5.0, 11.0], [11.0, 25.0]]) / 4
    assert torch.allclose(gram_matrix(f)[0], expected)


def test_gram_matrix_is_independent_of_spatial_size():
    f = torch.randn(1, 8, 5, 7, generator=torch.Generator().manual_seed(0))
    tiled = f.repeat(1, 1, 3, 2)  # same statistics over 6x the pixels
    assert torch.allclose(gram_matrix(tiled), gram_matrix(f), atol=1e-6)
    # ...and batched: one Gram matrix per image
    both = torch.cat([f, 2 * f])
    g = gram_matrix(both)
    assert g.shape == (2, 8, 8) and torch.allclose(g[1], 4 * g[0], atol=1e-5)


def test_content_loss_l2_and_l1_hand_computed():
    target = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 2, 2)
    x = torch.tensor([2.0, 2.0, 1.0, 4.0]).view(1, 1, 2, 2)  # differences 1, 0, -2, 0
    l2 = ContentLoss("relu4_2", target, kind="l2")({"relu4_2": x})
    l1 = ContentLoss("relu4_2", target, kind="l1")({"relu4_2": x})
    assert l2.item() == pytest.approx((1 + 0 + 4 + 0) / 4)
    assert l1.item() == pytest.approx((1 + 0 + 2 + 0) / 4)
    # normalised: divided by the target's mean square (30/4) for L2, mean absolute value (10/4) for L1
    l2n = ContentLoss("relu4_2", target, kind="l2", normalize=True)({"relu4_2": x})
    l1n = ContentLoss("relu4_2", target, kind="l1", normalize=True)({"relu4_2": x})
    assert l2n.item() == pytest.approx(1.25 / 7.5, rel=1e-5)
    assert l1n.item() == pytest.approx(0.75 / 2.5, rel=1e-5)
    with pytest.raises(ValueError):
        ContentLoss("relu4_2", target, kind="l3")


def test_tv_loss_hand_computed():
    img = torch.tensor([[0.0, 1.0], [2.0, 4.0]]).view(1, 1, 2, 2)
    # vertical differences 2, 3 -> mean square 6.5; horizontal 1, 2 -> mean square 2.5
    assert tv_loss(img).item() == pytest.approx(9.0)
    assert tv_loss(torch.full((1, 3, 8, 8), 0.3)).item() == 0.0


def test_style_loss_zero_at_target_weighted_by_layer_and_blended():
    gen = torch.Generator().manual_seed(1)
    fa = {"a": torch.rand(1, 4, 6, 6, generator=gen), "b": torch.rand(1, 3, 3, 3, generator=gen)}
    fb = {"a": torch.rand(1, 4, 6, 6, generator=gen), "b": torch.rand(1, 3, 3, 3, generator=gen)}
    loss = StyleLoss.from_features([fa], [1.0], ["a", "b"], layer_weights={"a": 2.0, "b": 0.5})
    assert loss(fa).item() == pytest.approx(0.0, abs=1e-12)
    per = loss.per_layer(fb)
    for layer in ("a", "b"):
        hand = (gram_matrix(fb[layer]) - gram_matrix(fa[layer])).pow(2).mean().item()
        assert per[layer].item() == pytest.approx(hand, rel=1e-5)
    assert loss(fb).item() == pytest.approx(2.0 * per["a"].item() + 0.5 * per["b"].item(), rel=1e-5)
    # blended targets are the weighted mean of the style Gram matrices
    blend = StyleLoss.from_features([fa, fb], [0.25, 0.75], ["a"])
    expected = 0.25 * gram_matrix(fa["a"]) + 0.75 * gram_matrix(fb["a"])
    assert torch.allclose(blend.targets["a"], expected)
    # default layer weights are equal and sum to 1; normalised losses divide by the target's mean square
    norm = StyleLoss.from_features([fa], [1.0], ["a", "b"], normalize=True)
    assert norm.layer_weights == {"a": 0.5, "b": 0.5}
    ms = gram_matrix(fa["a"]).pow(2).mean().item()
    assert norm.per_layer(fb)["a"].item() == pytest.approx(per["a"].item() / ms, rel=1e-4)
