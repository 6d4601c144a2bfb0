"""Shared builders for the report tests: a small run on local disk with real images and metrics rows."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from tests.conftest import make_photo, make_texture

BAD_NAME = 'in/<img src=x onerror=alert(1)>"x.jpg'


def sample_metrics(root: Path | None = None) -> pd.DataFrame:
    """Seven rows: 3 ok (with real images under ``root`` when given), 3 failed, 1 skipped."""
    rows = []
    if root is not None:
        (root / "in").mkdir(parents=True, exist_ok=True)
        (root / "out").mkdir(parents=True, exist_ok=True)
        make_texture(64, seed=5).save(root / "in" / "style.png")
    for i in range(3):
        content = f"{root}/in/c{i}.png" if root else f"in/c{i}.png"
        if root is not None:
            make_photo(64, 48, seed=i).save(content)
            out = make_photo(64, 48, seed=i).point(lambda v, k=i: min(255, v + 25 * k))
            out.save(root / "out" / f"c{i}.jpg")
        rows.append(dict(id=f"c{i}", row=i, content=content, style=f"{root}/in/style.png", output=f"out/c{i}.jpg",
                         status="ok", error=None, read_ms=2.0 + i, compute_ms=100.0 * (i + 1), write_ms=3.0,
                         total_ms=105.0 + 100 * i + i, width=64, height=48, method="adain", encoder="random:0",
                         decoder="/w/decoder.pth", options_hash="abc", worker="host:1", device="cpu",
                         content_loss=0.1 * i, style_loss=1.0 - 0.2 * i, ssim=0.9 - 0.1 * i, color_distance=10.0 + i,
                         label="cat"))
    rows.append(dict(id="f1", row=3, content=f"{root}/{BAD_NAME}", style=f"{root}/in/style.png", output="out/f1.jpg",
                     status="failed", error=f"{root}/{BAD_NAME}: not an image (unrecognised format)", method="adain",
                     worker="host:1", device="cpu", label="dog"))
    rows.append(dict(id="f2", row=4, content=f"{root}/in/y.jpg", style=f"{root}/in/style.png", output="out/f2.jpg",
                     status="failed", error=f"{root}/in/y.jpg: not an image (unrecognised format)", method="adain",
                     worker="host:2", device="cpu", label="dog"))
    rows.append(dict(id="f3", row=5, content=f"{root}/in/z.jpg", style=f"{root}/in/style.png", output="out/f3.jpg",
                     status="failed", error="decoder <b>exploded</b>", method="adain", worker="host:2", device="cpu",
                     label="dog"))
    rows.append(dict(id="s1", row=6, content=f"{root}/in/c0.png", style=f"{root}/in/style.png", output="out/s1.jpg",
                     status="skipped", error=None, method="adain", worker="host:2", device="cpu", label="cat"))
    return pd.DataFrame(rows)


def sample_summary() -> dict:
    from stylecore.report import summarize

    return summarize(sample_metrics(), {"wall_seconds": 2.0, "images_per_second": 1.5, "manifest": "m.csv"},
                     evaluator={"encoder": "random:0", "size": 128}, parameters={"shard_size": 100})


def build_sample_report(root: Path, evaluator, *, samples: int = 1, breakdown_rows: int = 2) -> tuple[Path, dict]:
    """Write the sample run (images, metrics) under ``root`` and build its report; returns (report dir, summary)."""
    from stylecore.report import build_report

    m = sample_metrics(root)
    m.loc[m.status == "ok", "evaluator"] = evaluator.spec
    m.loc[m.status == "ok", "evaluator_size"] = evaluator.size
    report_dir = root / "_reports" / "run-1"
    from stylecore import tables

    tables.write_parquet(m, str(report_dir / "metrics.parquet"))
    summary = build_report(str(report_dir), metrics=m, base_summary={"output": str(root), "manifest": "m.csv",
                                                                     "wall_seconds": 1.0,
                                                                     "phase_seconds": {"plan": 0.25, "shards": 0.7,
                                                                                       "merge": 0.05}},
                           metric="ssim", samples=samples, breakdown_rows=breakdown_rows, evaluator_obj=evaluator)
    return report_dir, summary
