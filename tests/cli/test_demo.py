"""examples/demo.py (``make demo``) runs offline end to end; tiny settings here, defaults in the demo."""
from __future__ import annotations

import csv
import os
import subprocess
import sys

from PIL import Image

from tests.conftest import ROOT


def test_demo_runs_offline_and_reports_outputs_and_weights(tmp_path):
    env = dict(os.environ, TORCH_HOME=str(tmp_path / "empty-torch-home"))  # no cached imagenet: random:0
    out = tmp_path / "demo-output"
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "demo.py"), "--size", "32", "--steps", "2",
                           "--out", str(out), "--device", "cpu"], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    with open(ROOT / "examples" / "demo_manifest.csv", newline="") as f:
        ids = [row["id"] for row in csv.DictReader(f)]
    assert 3 <= len(ids)
    for i in ids:
        img = Image.open(out / f"{i}.jpg")
        assert img.format == "JPEG" and max(img.size) == 32
    assert Image.open(out / "contact-sheet.jpg").size[1] > 32 * len(ids) // 2
    assert f"outputs: {out.resolve()}/" in proc.stdout
    assert "encoder weights: random:0" in proc.stdout
