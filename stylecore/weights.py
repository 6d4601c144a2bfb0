"""Weight specs: one string names where a network's weights come from, everywhere.

Grammar::

    imagenet            torchvision's VGG19_Weights.IMAGENET1K_V1 (encoder only), via its weights API and cache
    random:SEED         deterministic random weights (offline fallback and tests; never a silent default)
    /path/to/file.pth   a local state_dict (relative paths and file:// URIs too)
    s3://bucket/key     a state_dict on S3 (or any S3-compatible store)
    builtin:NAME        a small state_dict shipped in stylecore/assets/NAME.pth (trained offline by the project)

State dicts are always read with ``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

import io
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import torch

from . import uris
from .errors import StorageError, WeightsError

_RANDOM = re.compile(r"^random(?::(-?\d+))?$")
ASSETS = Path(__file__).resolve().parent / "assets"


def builtin_names() -> list[str]:
    """Names accepted by ``builtin:NAME`` (the .pth files in stylecore/assets)."""
    return sorted(p.stem for p in ASSETS.glob("*.pth")) if ASSETS.is_dir() else []


@dataclass(frozen=True)
class WeightSpec:
    """A parsed weight spec: ``kind`` is imagenet, random, path or s3; ``value`` the seed, path or URI."""

    kind: str
    value: str | int | None
    text: str

    def __str__(self) -> str:
        return self.text


def parse_spec(spec: str | os.PathLike, *, allow_imagenet: bool = True, what: str = "weights") -> WeightSpec:
    """Parse a weight spec string. Raises WeightsError for an empty or malformed spec."""
    text = str(spec).strip() if spec is not None else ""
    if not text:
        raise WeightsError(f"{what}: empty weight spec; use imagenet, random:SEED, a .pth path or s3://bucket/key")
    low = text.lower()
    if low == "imagenet":
        if not allow_imagenet:
            raise WeightsError(f"{what}: 'imagenet' names torchvision's VGG19 encoder weights only; give a .pth path, s3:// URI or random:SEED")
        return WeightSpec("imagenet", None, "imagenet")
    m = _RANDOM.match(low)
    if m:
        seed = int(m.group(1) or 0)
        if not -2**63 <= seed < 2**63:  # torch's generators take a 64-bit seed
            raise WeightsError(f"{what}: random:{seed}: the seed must be in [-2**63, 2**63)")
        return WeightSpec("random", seed, f"random:{seed}")
    if low.startswith("random:"):  # "random_init/x.pth" or "Random-Mosaic.model" are paths
        raise WeightsError(f"{what}: malformed spec {text!r}; expected random:SEED with an integer seed")
    if low.startswith("builtin:"):
        name = text.split(":", 1)[1].strip()
        path = ASSETS / f"{name}.pth"
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name.startswith(".") or not path.is_file():
            known = ", ".join(builtin_names()) or "none in this build"
            raise WeightsError(f"{what}: unknown built-in weights {text!r}; available: {known}")
        return WeightSpec("path", str(path), text)
    if uris.has_userinfo(text):
        raise WeightsError(f"{what}: {uris.redact(text)}: {uris.NO_CREDENTIALS}")
    if low.startswith("s3://"):
        bucket, _, key = text[5:].partition("/")  # not urlparse: '#' and '?' are ordinary characters of a key
        if not bucket or not key.strip("/"):
            raise WeightsError(f"{what}: malformed S3 URI {text!r}; expected s3://bucket/key")
        return WeightSpec("s3", text, text)
    if low.startswith("file://"):
        parsed = urlparse(text)
        if parsed.netloc not in ("", "localhost"):
            raise WeightsError(f"{what}: file URI {text!r} names host {parsed.netloc!r}; use file:///absolute/path")
        return WeightSpec("path", unquote(parsed.path), text)
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise WeightsError(f"{what}: unsupported URI scheme {scheme!r} in {uris.redact(text)!r}; use a local path, file:// or s3://")
    return WeightSpec("path", text, text)


def file_version(spec: str | None) -> tuple | None:
    """What a local spec's file is now (path, mtime_ns, size), so a cache can tell that it was replaced.

    Other specs answer None: ``imagenet`` is fixed by its hash, ``random:SEED`` by its seed, and an s3:// object
    is not checked again (that would cost a request per call).
    """
    try:
        parsed = parse_spec(spec) if spec else None
    except WeightsError:
        return None
    if parsed is None or parsed.kind != "path":
        return None
    path = Path(str(parsed.value)).expanduser()
    try:
        st = path.stat()
    except OSError:
        return None
    return str(path), st.st_mtime_ns, st.st_size


def _load_failure(e: Exception) -> str:
    """A one-line reason from torch.load's (long, multi-line) error messages."""
    text = str(e).strip()
    if "WeightsUnpickler error:" in text or text.startswith("Weights only load failed"):
        # weights_only refused the pickle: say what it refused, never torch's advice to turn the check off
        if "WeightsUnpickler error:" in text:
            detail = text.split("WeightsUnpickler error:", 1)[1]
        else:
            detail = "\n".join(line for line in text.splitlines()[1:]
                               if not line.startswith(("Please file an issue", "Check the documentation")))
        detail = " ".join(detail.split())
        detail = detail.split(". Please use", 1)[0].split(" Check the documentation", 1)[0].rstrip(".")
        detail = detail or "a pickle that is not plain tensors and containers"
        hint = ""
        refused = detail.split("GLOBAL", 1)[1][:60] if "GLOBAL" in detail else ""
        if refused and ("torch.nn.modules." in refused or "torch." not in refused):  # a module class
            hint = ("; a whole pickled model? load it where its class is defined and save its weights with "
                    "torch.save(model.state_dict(), PATH)")
        return f"refused by weights_only loading: {detail[:160]}{hint}"
    if "TorchScript" in text:
        return ("a TorchScript archive (torch.jit.save), not a state_dict; save the model's weights with "
                "torch.save(model.state_dict(), PATH)")
    if "central directory" in text or "zip archive" in text:
        return "truncated or corrupt checkpoint (not a complete torch zip archive)"
    first = text.splitlines()[0] if text else type(e).__name__
    return first[:200]


def _head(data: bytes | str) -> bytes:
    if isinstance(data, bytes):
        return data[:4]
    try:
        with open(data, "rb") as f:
            return f.read(4)
    except OSError:
        return b"PK"  # torch.load reports it


def _torch_load(data: bytes | str, label: str) -> dict:
    head = _head(data)
    if not head:
        raise WeightsError(f"{label}: not a readable state_dict (empty file)")
    if not head.startswith(b"PK") and not head.startswith(b"\x80"):
        # torch saves a zip archive (torch >= 1.6) or a pickle (older): this is neither, e.g. text or an HTML page
        raise WeightsError(f"{label}: not a readable state_dict (not a torch checkpoint: neither a zip archive "
                           "nor a pickle)")
    try:
        src = io.BytesIO(data) if isinstance(data, bytes) else data
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4": the error below says enough
            obj = torch.load(src, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"{label}: file not found") from None
    except IsADirectoryError:
        raise WeightsError(f"{label}: is a directory, expected a .pth state_dict file") from None
    except Exception as e:  # torch raises many types for bad pickles / non-weights content
        raise WeightsError(f"{label}: not a readable state_dict ({_load_failure(e)})") from None
    obj = _unwrap(obj)
    if not _tensor_dict(obj):
        found = ""
        if isinstance(obj, dict) and obj:
            names = [str(k) for k in obj][:6]
            found = f" (top-level keys: {', '.join(names)}{', ...' if len(obj) > 6 else ''})"
        raise WeightsError(f"{label}: does not contain a state_dict of tensors{found}")
    return strip_wrapper_prefixes(obj)


# Keys under which training scripts commonly nest the network's state_dict in a checkpoint dict.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "weights")


def _tensor_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _unwrap(obj):
    """The state_dict inside a checkpoint dict (``{"state_dict": sd, "epoch": 3, ...}``, ``{"model": sd, ...}``);
    ``obj`` itself when it is one already, or when no known key holds one."""
    if not isinstance(obj, dict) or _tensor_dict(obj):
        return obj
    for key in WRAPPER_KEYS:
        if _tensor_dict(obj.get(key)):
            return obj[key]
    return obj


# Saved from a wrapped module: nn.DataParallel / DistributedDataParallel ("module."), torch.compile ("_orig_mod.").
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def strip_wrapper_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with a wrapper prefix that every key carries removed (repeatedly: ``module._orig_mod.``)."""
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if state and all(isinstance(k, str) and k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
    return state


def load_state_dict(spec: WeightSpec, *, what: str = "weights") -> dict[str, torch.Tensor]:
    """Read the state_dict named by a ``path`` or ``s3`` spec (``weights_only=True``)."""
    label = f"{what} {spec.text}"
    if spec.kind == "path":
        p = Path(str(spec.value)).expanduser()
        if not p.exists():
            raise WeightsError(f"{label}: file not found")
        return _torch_load(str(p), label)
    if spec.kind == "s3":
        from . import storage  # the storage layer owns S3 access

        try:
            data = storage.read_bytes(str(spec.value))
        except StorageError as e:
            raise WeightsError(f"{what}: {e}") from None
        return _torch_load(data, label)
    raise WeightsError(f"{label}: spec kind {spec.kind!r} has no state_dict file")


def torchvision_imagenet_state_dict(progress: bool = True) -> dict[str, torch.Tensor]:
    """VGG19_Weights.IMAGENET1K_V1 through torchvision's weights API.

    Downloads into ``$TORCH_HOME/hub/checkpoints`` on first use (with torchvision's progress bar) and
    reads the cached file afterwards without the network.
    """
    from torchvision.models import VGG19_Weights

    weights = VGG19_Weights.IMAGENET1K_V1
    cache = imagenet_cache_path()
    if cache.is_file():  # torchvision reads the cache without the network; report a bad file as such
        try:
            return weights.get_state_dict(progress=progress, check_hash=True, weights_only=True)
        except Exception as e:
            raise WeightsError(f"encoder imagenet: cached file {cache} is not a readable state_dict "
                               f"({_load_failure(e)}); delete it to download again, or pass another --encoder") from None
    try:
        return weights.get_state_dict(progress=progress, check_hash=True, weights_only=True)
    except Exception as e:  # URLError, socket errors, hash mismatch...
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(
            f"encoder imagenet: VGG19_Weights.IMAGENET1K_V1 is not cached at {cache} and could not be downloaded "
            f"({reason[:160]}); alternatives: copy vgg19-dcbb9e9d.pth there, pass a local path or s3:// URI "
            f"with --encoder (for pytorch-AdaIN decoders: their vgg_normalised.pth), or use --encoder random:SEED "
            f"(lower-fidelity offline fallback)"
        ) from None


def imagenet_cache_path() -> Path:
    """Where torchvision keeps (or would download) the ImageNet VGG19 weights: ``$TORCH_HOME/hub/checkpoints``."""
    from torchvision.models import VGG19_Weights

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(VGG19_Weights.IMAGENET1K_V1.url)


_FLAGS = {"encoder": "--encoder", "decoder": "--decoder (method adain)", "model": "--model (method johnson)"}


def guess_role(state: dict[str, torch.Tensor]) -> tuple[str, str] | None:
    """``(role, description)`` of a state_dict in one of the public layouts this engine loads, from its keys and
    first shapes: ``model`` (fast_neural_style TransformerNet), ``decoder`` (pytorch-AdaIN decoder.pth) or
    ``encoder`` (vgg_normalised.pth, torchvision VGG); None when it is none of them."""
    def shape(key: str) -> tuple[int, ...] | None:
        t = state.get(key)
        return tuple(t.shape) if isinstance(t, torch.Tensor) else None

    if any(str(k).startswith("conv1.conv2d.") for k in state):
        return "model", "a fast_neural_style TransformerNet checkpoint"
    if shape("1.weight") == (256, 512, 3, 3):
        return "decoder", "a pytorch-AdaIN decoder.pth"
    if shape("0.weight") == (3, 3, 1, 1):
        return "encoder", "a pytorch-AdaIN vgg_normalised.pth"
    if (64, 3, 3, 3) in (shape("features.0.weight"), shape("0.weight")):
        return "encoder", "torchvision VGG weights"
    return None


def role_hint(state: dict[str, torch.Tensor], label: str) -> str:
    """``"; it looks like ...: pass it as --flag"`` when ``state`` is in the layout of another role than the one
    ``label`` (``"decoder x.pth"``) loads it for; else ``""``."""
    guess = guess_role(state)
    if guess is None or guess[0] == label.split(" ", 1)[0]:
        return ""
    return f"; it looks like {guess[1]}: pass it as {_FLAGS[guess[0]]}"


def refuse_batchnorm(state: dict[str, torch.Tensor], label: str, arch: str) -> None:
    """A one-line WeightsError when ``state`` is a batch-norm VGG (torchvision ``{arch}_bn``), whose layout and
    features differ from the plain ``arch`` these loss and encoder networks are built on."""
    if any(str(k).endswith((".running_mean", ".running_var", ".num_batches_tracked")) for k in state):
        raise WeightsError(f"{label}: batch-norm VGG weights (torchvision {arch}_bn) are not supported; "
                           f"use plain {arch} weights")


def load_exact_state_dict(module: torch.nn.Module, state: dict[str, torch.Tensor], label: str, *,
                          layout: str, shape_name: str) -> None:
    """Load ``state`` into ``module`` only if its keys and shapes match exactly; else a one-line WeightsError
    saying it is ``not a {layout}`` (naming the first missing/unexpected keys or the mismatched shape)."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    if missing or extra:
        what = f"missing {', '.join(missing[:3])}" if missing else f"unexpected {', '.join(extra[:3])}"
        raise WeightsError(f"{label}: not a {layout} ({what}){role_hint(state, label)}")
    for k, v in expected.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise WeightsError(f"{label}: key {k} has shape {tuple(state[k].shape)}, {shape_name} has {tuple(v.shape)}")
    module.load_state_dict(state, strict=True)
