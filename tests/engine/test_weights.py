"""Weight specs and VGG19 loading from real file layouts, with no network."""
from __future__ import annotations

import pickle
import socket
import urllib.request

import pytest
import torch

from stylecore.errors import WeightsError
from stylecore.vgg import VGG19Encoder, load_vgg19_encoder
from stylecore.weights import imagenet_cache_path, parse_spec

CACHE_NAME = "vgg19-dcbb9e9d.pth"  # the file name torchvision's VGG19_Weights.IMAGENET1K_V1 uses


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty $TORCH_HOME, and every HTTP(S) request sent to a closed local port (no network)."""
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    proxy = f"http://127.0.0.1:{_closed_port()}"
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, proxy)
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    # urllib caches its opener (with the proxies of the moment) on first use: give this test its own,
    # and restore the previous one afterwards so later tests don't inherit the closed-port proxy.
    monkeypatch.setattr(urllib.request, "_opener", None)
    return home


def _assert_loaded(enc: VGG19Encoder, sd: dict, prefix: str = "") -> None:
    for idx in (0, 2, 28):  # conv1_1, conv1_2, conv5_1
        assert torch.equal(enc.features[idx].weight, sd[f"{prefix}{idx}.weight"])
        assert torch.equal(enc.features[idx].bias, sd[f"{prefix}{idx}.bias"])


def test_parse_spec_grammar():
    assert parse_spec("imagenet").kind == "imagenet"
    assert parse_spec(" ImageNet ").kind == "imagenet"
    r = parse_spec("random:42")
    assert (r.kind, r.value, str(r)) == ("random", 42, "random:42")
    assert parse_spec("random").value == 0
    assert (parse_spec("/a/b.pth").kind, parse_spec("/a/b.pth").value) == ("path", "/a/b.pth")
    f = parse_spec("file:///tmp/my%20weights.pth")
    assert (f.kind, f.value) == ("path", "/tmp/my weights.pth")
    assert parse_spec("file://localhost/a/b.pth").value == "/a/b.pth"
    s = parse_spec("s3://bucket/models/vgg.pth")
    assert (s.kind, s.value) == ("s3", "s3://bucket/models/vgg.pth")
    for key in ("#d.pth", "?d.pth", "w/a#1?.pth"):  # urlparse cut the key at '#' or '?': "malformed S3 URI"
        assert parse_spec(f"s3://bucket/{key}").value == f"s3://bucket/{key}"
    for bad, words in [("", "empty"), ("random:x", "random:SEED"), ("s3://bucket", "s3://bucket/key"),
                       ("http://host/vgg.pth", "unsupported URI scheme 'http'"),
                       ("file://weights/vgg.pth", "names host 'weights'"),
                       (f"random:{2**63}", "the seed must be in [-2**63, 2**63)")]:  # was a raw OverflowError at load
        with pytest.raises(WeightsError) as ei:
            parse_spec(bad)
        assert words in str(ei.value)
    with pytest.raises(WeightsError, match="encoder weights only"):
        parse_spec("imagenet", allow_imagenet=False, what="decoder")


def test_random_spec_is_deterministic_per_seed():
    a, b, c = (load_vgg19_encoder(s) for s in ("random:7", "random:7", "random:8"))
    assert torch.equal(a.features[28].weight, b.features[28].weight)
    assert not torch.equal(a.features[28].weight, c.features[28].weight)
    # He-normal with fan_out, as torchvision initialises VGG: std sqrt(2 / (512*9)) for conv5_1
    assert a.features[28].weight.std().item() == pytest.approx((2 / (512 * 9)) ** 0.5, rel=0.02)


@pytest.mark.parametrize("layout", ["features", "full"])
def test_imagenet_spec_reads_torchvision_cache_without_network(offline, layout, features_state_dict, full_state_dict):
    sd = features_state_dict if layout == "features" else full_state_dict
    cache = offline / "hub" / "checkpoints" / CACHE_NAME
    cache.parent.mkdir(parents=True)
    torch.save(sd, cache)
    assert imagenet_cache_path() == cache
    enc = load_vgg19_encoder("imagenet", progress=False)
    _assert_loaded(enc, sd, "" if layout == "features" else "features.")


def test_imagenet_offline_without_cache_names_the_alternatives(offline):
    with pytest.raises(WeightsError) as ei:
        load_vgg19_encoder("imagenet", progress=False)
    msg = str(ei.value)
    assert "\n" not in msg
    assert str(offline / "hub" / "checkpoints" / CACHE_NAME) in msg
    assert "random:SEED" in msg and "--encoder" in msg and "s3://" in msg
    assert not (offline / "hub" / "checkpoints" / CACHE_NAME).exists()


def test_imagenet_corrupt_cache_file_is_reported(offline):
    cache = offline / "hub" / "checkpoints" / CACHE_NAME
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(WeightsError, match=r"cached file .*vgg19-dcbb9e9d\.pth is not a readable state_dict"):
        load_vgg19_encoder("imagenet", progress=False)


def test_path_and_file_uri_specs(tmp_path, features_state_dict, full_state_dict):
    p1, p2 = tmp_path / "features.pth", tmp_path / "dir with space" / "full.pth"
    p2.parent.mkdir()
    torch.save(features_state_dict, p1)
    torch.save(full_state_dict, p2)
    _assert_loaded(load_vgg19_encoder(str(p1)), features_state_dict)
    _assert_loaded(load_vgg19_encoder(p2.as_uri()), full_state_dict, "features.")
    # a {"state_dict": ...} wrapper is accepted too
    p3 = tmp_path / "wrapped.pth"
    torch.save({"state_dict": features_state_dict}, p3)
    _assert_loaded(load_vgg19_encoder(str(p3)), features_state_dict)


def test_wrapped_module_checkpoints_load(tmp_path, features_state_dict):
    """Checkpoints saved from nn.DataParallel/DDP (``module.``) or a torch.compile'd module (``_orig_mod.``) load
    as the plain layout; a prefix on only some keys is still refused."""
    wrapped = tmp_path / "wrapped.pth"
    torch.save({f"module._orig_mod.features.{k}": v for k, v in features_state_dict.items()}, wrapped)
    _assert_loaded(load_vgg19_encoder(str(wrapped)), features_state_dict)
    mixed = tmp_path / "mixed.pth"
    torch.save({(f"module.{k}" if k.startswith("0.") else k): v for k, v in features_state_dict.items()}, mixed)
    with pytest.raises(WeightsError, match="unexpected key 'module.0."):
        load_vgg19_encoder(str(mixed))


class _Evil:
    """Unpickling this with full pickle would create a file: weights_only loading must refuse it."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


class _Remove:
    """Unpickling this with full pickle would delete a file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        import os

        return (os.remove, (self.path,))


def test_loading_uses_weights_only(tmp_path, features_state_dict):
    marker = tmp_path / "created-by-unpickling"
    bad = tmp_path / "evil.pth"
    torch.save({**features_state_dict, "extra": _Evil(str(marker))}, bad)
    with pytest.raises(WeightsError, match="refused by weights_only loading"):
        load_vgg19_encoder(str(bad))
    assert not marker.exists()
    keep = tmp_path / "kept"  # a reduce to a blocked module's function: torch's message names it without the
    keep.write_text("x")      # "WeightsUnpickler error:" marker, and its first lines advise turning the check off
    torch.save({**features_state_dict, "extra": _Remove(str(keep))}, bad)
    with pytest.raises(WeightsError) as e:
        load_vgg19_encoder(str(bad))
    assert "refused by weights_only loading: Trying to load unsupported GLOBAL posix.remove" in str(e.value), e.value
    assert "False" not in str(e.value) and "arbitrary code" not in str(e.value) and keep.exists()
    plain = tmp_path / "plain.pkl"  # a bare pickle (not torch's zip format) of a non-tensor object
    plain.write_bytes(pickle.dumps(_Evil(str(marker))))
    with pytest.raises(WeightsError, match="not a readable state_dict"):
        load_vgg19_encoder(str(plain))
    assert not marker.exists()


def test_bad_weight_files_give_clear_errors(tmp_path, features_state_dict):
    cases = {}
    text = tmp_path / "notes.pth"
    text.write_text("hello, I am not a checkpoint\n")
    cases[text] = "not a readable state_dict (not a torch checkpoint: neither a zip archive nor a pickle)"
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    cases[empty] = "not a readable state_dict (empty file)"
    good = tmp_path / "good.pth"
    torch.save(features_state_dict, good)
    trunc = tmp_path / "truncated.pth"
    trunc.write_bytes(good.read_bytes()[:4096])
    cases[trunc] = "truncated or corrupt"
    wrong = tmp_path / "wrong-shape.pth"
    torch.save({**features_state_dict, "0.weight": torch.zeros(32, 3, 3, 3)}, wrong)
    cases[wrong] = "shapes do not match VGG19"
    missing = tmp_path / "missing.pth"
    torch.save({k: v for k, v in features_state_dict.items() if not k.startswith("28.")}, missing)
    cases[missing] = "missing VGG19 keys 28.bias, 28.weight"
    foreign = tmp_path / "foreign.pth"
    torch.save({"encoder.conv.weight": torch.zeros(3)}, foreign)
    cases[foreign] = "unexpected key 'encoder.conv.weight'"
    numbers = tmp_path / "numbers.pth"
    torch.save({"0.weight": 1.5}, numbers)
    cases[numbers] = "does not contain a state_dict of tensors"
    cases[tmp_path / "absent.pth"] = "file not found"
    cases[tmp_path] = "is a directory"
    for path, words in cases.items():
        with pytest.raises(WeightsError) as ei:
            load_vgg19_encoder(str(path))
        msg = str(ei.value)
        assert words in msg, (path, msg)
        assert str(path) in msg and "\n" not in msg


def test_a_checkpoint_given_for_the_wrong_role_names_its_flag(tmp_path, features_state_dict):
    """Each public layout passed as another role's weights: the error says what the file looks like and which
    flag takes it (a decoder.pth given as --encoder, a TransformerNet as --decoder, an encoder as --model)."""
    from stylecore.adain import load_adain_decoder, load_adain_encoder
    from stylecore.adain_net import decoder, normalised_vgg
    from stylecore.johnson import load_transformer
    from stylecore.transformer_net import TransformerNet

    files = {}
    for name, state in (("decoder", decoder().state_dict()), ("model", TransformerNet().state_dict()),
                        ("normalised", normalised_vgg().state_dict()), ("vgg19", features_state_dict)):
        files[name] = tmp_path / f"{name}.pth"
        torch.save(state, files[name])
    cases = [
        (load_vgg19_encoder, "decoder", "looks like a pytorch-AdaIN decoder.pth: pass it as --decoder (method adain)"),
        (load_adain_encoder, "model", "looks like a fast_neural_style TransformerNet checkpoint: pass it as --model"),
        (load_adain_decoder, "normalised", "looks like a pytorch-AdaIN vgg_normalised.pth: pass it as --encoder"),
        (load_adain_decoder, "model", "looks like a fast_neural_style TransformerNet checkpoint: pass it as --model"),
        (load_transformer, "decoder", "looks like a pytorch-AdaIN decoder.pth: pass it as --decoder"),
        (load_transformer, "vgg19", "looks like torchvision VGG weights: pass it as --encoder"),
    ]
    for loader, name, hint in cases:
        with pytest.raises(WeightsError) as ei:
            loader(str(files[name]))
        assert hint in str(ei.value) and str(files[name]) in str(ei.value), (loader.__name__, name, str(ei.value))
    assert isinstance(load_adain_decoder(str(files["decoder"])), torch.nn.Module)  # the right role still loads


def test_a_normalised_vgg_given_to_gatys_says_it_is_the_adain_encoder(tmp_path):
    """pytorch-AdaIN's vgg_normalised.pth as the Gatys encoder: the error names the layout and what gatys takes,
    not missing keys; the same file still loads as the AdaIN encoder."""
    from stylecore.adain import load_adain_encoder
    from stylecore.adain_net import normalised_vgg

    path = tmp_path / "vggn.pth"
    torch.save(normalised_vgg().state_dict(), path)
    with pytest.raises(WeightsError) as ei:
        load_vgg19_encoder(str(path))
    assert str(ei.value) == (f"encoder {path}: this is a pytorch-AdaIN vgg_normalised.pth, which works only with "
                             f"--method adain; gatys needs torchvision VGG19 weights (imagenet, a vgg19 .pth, random:SEED)")
    assert load_adain_encoder(str(path)).layout == "normalised"


def test_paths_that_start_with_random_are_paths():
    # only "random" and "random:..." are the random spec; a folder or file named random* is a path
    for text in ("random_init/mosaic.pth", "Random-Mosaic.model", "randomness.pth"):
        ws = parse_spec(text, what="model")
        assert (ws.kind, ws.value) == ("path", text)
    with pytest.raises(WeightsError, match="malformed spec 'random:x'"):
        parse_spec("random:x")


def _load(path, what="model"):
    from stylecore.weights import load_state_dict

    return load_state_dict(parse_spec(str(path)), what=what)


def test_wrapped_state_dicts_unwrap_and_other_dicts_name_their_keys(tmp_path):
    sd = {"conv.weight": torch.ones(2, 2), "conv.bias": torch.zeros(2)}
    for key in ("state_dict", "model_state_dict", "model", "net"):
        torch.save({key: sd, "epoch": 7, "optimizer": {"lr": 0.1}}, tmp_path / f"{key}.pth")
        got = _load(tmp_path / f"{key}.pth")
        assert list(got) == list(sd) and torch.equal(got["conv.weight"], sd["conv.weight"])
    torch.save({"step": 3, "settings": {"lr": 1}}, tmp_path / "other.pth")
    with pytest.raises(WeightsError, match=r"other.pth: does not contain a state_dict of tensors "
                                           r"\(top-level keys: step, settings\)"):
        _load(tmp_path / "other.pth")


class _Pickled(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 1)


def test_pickled_modules_and_torchscript_say_how_to_save_a_state_dict(tmp_path):
    torch.save(_Pickled(), tmp_path / "whole.pth")
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1)), tmp_path / "seq.pth")
    torch.jit.save(torch.jit.script(torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1))), tmp_path / "script.pt")
    for name in ("whole.pth", "seq.pth", "script.pt"):
        with pytest.raises(WeightsError) as e:
            _load(tmp_path / name)
        msg = str(e.value)
        assert name in msg and "torch.save(model.state_dict(), PATH)" in msg and "\n" not in msg
    with pytest.raises(WeightsError, match="TorchScript archive"):
        _load(tmp_path / "script.pt")


def test_batchnorm_vgg_is_refused_by_name(tmp_path):
    from torchvision.models.vgg import cfgs, make_layers

    from stylecore.training.loss_nets import load_vgg16_loss

    torch.save(make_layers(cfgs["E"], batch_norm=True).state_dict(), tmp_path / "vgg19_bn.pth")
    torch.save({f"features.{k}": v for k, v in make_layers(cfgs["D"], batch_norm=True).state_dict().items()},
               tmp_path / "vgg16_bn.pth")
    with pytest.raises(WeightsError, match=r"vgg19_bn.pth: batch-norm VGG weights \(torchvision vgg19_bn\) are not "
                                           r"supported; use plain vgg19 weights"):
        load_vgg19_encoder(str(tmp_path / "vgg19_bn.pth"))
    with pytest.raises(WeightsError, match=r"loss network .*vgg16_bn.pth: batch-norm VGG .*use plain vgg16"):
        load_vgg16_loss(str(tmp_path / "vgg16_bn.pth"))
