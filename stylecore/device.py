"""Device selection and precision helpers."""
from __future__ import annotations

import contextlib
import re

import torch

from .errors import OptionsError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Return a torch.device: ``auto`` picks CUDA when available, else the CPU."""
    if isinstance(device, torch.device):
        return device
    name = check_device_name(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise OptionsError(f"device {device!r} requested but CUDA is not available; use --device cpu or auto")
    return torch.device(name)


def check_device_name(device: str) -> str:
    """The normalised device name (auto, cpu, cuda, cuda:N), without looking for the device itself (a flow on a
    CPU host checks the device its GPU workers will use). Raises ``OptionsError`` for any other name."""
    name = str(device).strip().lower()
    if name in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", name):
        return name
    raise OptionsError(f"unknown device {device!r}; expected one of auto, cpu, cuda, cuda:N")


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 (fp16 where bf16 is missing) for autocast on CUDA; None (fp32) elsewhere."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, enabled: bool = True):
    """Autocast context for feed-forward inference: bf16 (or fp16) on CUDA, a no-op (fp32) on the CPU."""
    dtype = amp_dtype(device)
    if not enabled or dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def exact_math(device: torch.device):
    """On CUDA: deterministic cuDNN algorithms and true fp32 convolutions (no TF32), so that an optimisation
    is reproducible for a seed; a no-op on the CPU."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    return torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True, allow_tf32=False)


def memory_format(device: torch.device) -> torch.memory_format:
    """channels_last on CUDA (faster convolutions on tensor cores), contiguous on the CPU."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format
