"""Shared test setup: telemetry off, subprocesses import this checkout, small deterministic images."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest_plugins = ["tests.s3_server", "tests.prefect_server"]

# Telemetry off and subprocesses (CLI, Prefect workers) import the code of this checkout.
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p)


def run_cli(*args: str, cwd: str | os.PathLike | None = None, env: dict | None = None, timeout: float = 600,
            input: bytes | None = None) -> subprocess.CompletedProcess:
    """Run the ``stylize`` CLI of this checkout in a subprocess; returns the completed process (text output)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "stylize_cli.main", *map(str, args)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout, input=input)


def run_main(capsys, args) -> subprocess.CompletedProcess:
    """Run ``stylize_cli.main.main`` in this process (the console script's code path without its ~3-5 s of
    imports; for error paths, each command keeps one test through a real process)."""
    from stylize_cli.main import main

    capsys.readouterr()
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:  # argparse usage errors
        code = e.code
    cap = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, cap.out, cap.err)


def make_photo(width: int = 64, height: int = 48, seed: int = 0):
    """A smooth, photo-like RGB test image (gradients plus a few shapes), deterministic for a seed."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(float)
    base = np.stack([x / width, y / height, 0.5 + 0.5 * np.sin((x + y) / max(width, height) * 3)], -1) * 200 + 30
    img = Image.fromarray(base.astype("uint8"))
    draw = ImageDraw.Draw(img)
    for _ in range(3):
        x0, y0 = rng.integers(0, width // 2), rng.integers(0, height // 2)
        draw.ellipse([x0, y0, x0 + width // 3, y0 + height // 3], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return img


def make_texture(size: int = 64, seed: int = 1):
    """A colourful high-contrast texture (stripes in random colours), deterministic for a seed."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    stripes = ((x + 2 * y) // 6) % 3
    palette = rng.integers(0, 255, (3, 3))
    return Image.fromarray(palette[stripes].astype("uint8"))


@pytest.fixture
def photo():
    return make_photo()


@pytest.fixture
def texture():
    return make_texture()
