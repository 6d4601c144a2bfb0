"""Tiny training data: photo-like contents and stripe textures, in nested folders."""
from __future__ import annotations

import os

import pytest
import torch

from tests.conftest import make_photo, make_texture

# Training tests are CPU-bound; one thread keeps runs deterministic and friendly to shared machines.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def data(tmp_path):
    """Folders ``content/`` (4 photos, one in a subfolder, plus a non-image file) and ``style/`` (2 textures)."""
    content, style = tmp_path / "content", tmp_path / "style"
    (content / "sub").mkdir(parents=True)
    style.mkdir()
    for i in range(3):
        make_photo(64, 48, seed=i).save(content / f"p{i}.png")
    make_photo(56, 64, seed=9).convert("RGB").save(content / "sub" / "p9.jpg")
    (content / "notes.txt").write_text("not an image")
    make_texture(64, seed=1).save(style / "t1.png")
    make_texture(48, seed=2).save(style / "t2.png")
    return {"content": str(content), "style": str(style), "style_image": str(style / "t1.png"), "root": tmp_path}
