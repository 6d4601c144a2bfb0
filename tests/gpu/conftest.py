"""CUDA checks: skipped where no GPU is present (CI); run on a GPU machine with ``pytest tests/gpu``.

``GPU_TEST_DEVICE=cpu`` runs the device-independent ones on the CPU (a dry run of the test code itself).
``GPU_CHECK_OUT=DIR`` appends every measured figure to ``DIR/gpu_measures.jsonl`` for the closing note.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from stylecore.feedforward import CUDA_LAYERS
from tests.feedforward.conftest import adain_decoder_state, adain_encoder_state, johnson_state

DEVICE = os.environ.get("GPU_TEST_DEVICE", "cuda")


def pytest_collection_modifyitems(config, items):
    if DEVICE == "cuda" and not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="no CUDA device (these checks run on a GPU machine: pytest tests/gpu)")
        for item in items:
            if "tests/gpu/" in str(item.fspath).replace(os.sep, "/"):
                item.add_marker(skip)


@pytest.fixture(scope="session")
def device() -> str:
    return DEVICE


@pytest.fixture(scope="session")
def gpu_weights(tmp_path_factory):
    """Random checkpoints in the public formats (the same states as the CPU parity tests)."""
    root = tmp_path_factory.mktemp("gpuweights")
    paths = {}
    for name, sd in [("vgg_normalised.pth", adain_encoder_state()), ("decoder.pth", adain_decoder_state()),
                     ("johnson.pth", johnson_state())]:
        torch.save(sd, root / name)
        paths[name.split(".")[0]] = str(root / name)
    return paths


@pytest.fixture
def record(request):
    """record(name, **figures): print a measured figure and keep it in $GPU_CHECK_OUT/gpu_measures.jsonl."""

    def _record(name: str, **figures):
        row = {"test": request.node.name, "name": name, "device": DEVICE,
               "cuda_layers": CUDA_LAYERS,  # the forms the engine used (its default unless the variable is set)
               **{k: (round(float(v), 6) if isinstance(v, (float, np.floating)) else v) for k, v in figures.items()}}
        print("MEASURE", json.dumps(row))
        out = os.environ.get("GPU_CHECK_OUT")
        if out:
            os.makedirs(out, exist_ok=True)
            with open(os.path.join(out, "gpu_measures.jsonl"), "a") as f:
                f.write(json.dumps(row) + "\n")

    return _record


def level_diff(a, b) -> np.ndarray:
    """Absolute per-channel differences of two same-size images, in 8-bit levels."""
    return np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).astype(np.float64)
