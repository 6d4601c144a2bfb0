import pytest
import torch
from torchvision.models.vgg import cfgs, make_layers

from stylecore.errors import WeightsError
from stylecore.training.loss_nets import VGG16_LAYERS, load_vgg16_loss


def test_vgg16_from_a_torchvision_state_dict_file_matches_the_network(tmp_path):
    torch.manual_seed(7)
    features = make_layers(cfgs["D"])  # torchvision's vgg16().features
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    state["classifier.6.bias"] = torch.zeros(1000)  # full-model checkpoints carry the classifier too
    path = tmp_path / "vgg16.pth"
    torch.save(state, path)
    loss_net = load_vgg16_loss(str(path))
    x = torch.rand(1, 3, 32, 32) * 255
    feats = loss_net(x)
    assert list(feats) == list(VGG16_LAYERS)
    ref = (x / 255 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        for i, m in enumerate(features[:23]):
            ref = m(ref)
            if i == 22:
                assert torch.allclose(feats["relu4_3"], ref, atol=1e-5)
    assert not any(p.requires_grad for p in loss_net.parameters())


def test_vgg16_random_is_deterministic_and_bad_files_are_refused(tmp_path):
    a, b = load_vgg16_loss("random:3"), load_vgg16_loss("random:3")
    assert torch.equal(a.slices[0][0].weight, b.slices[0][0].weight)
    bad = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(WeightsError, match="unexpected key 'conv.weight'"):
        load_vgg16_loss(str(bad))
    with pytest.raises(WeightsError, match="file not found"):
        load_vgg16_loss(str(tmp_path / "missing.pth"))


def test_imagenet_without_cache_names_alternatives(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    try:
        load_vgg16_loss("imagenet")
    except WeightsError as e:
        msg = str(e)
        assert "\n" not in msg and "random:SEED" in msg and "--loss-network" in msg
    else:  # pragma: no cover - only where the network can reach download.pytorch.org
        pytest.skip("VGG16 weights were downloadable here")
