"""Helpers of the pipeline tests: fast engine settings and generated manifests."""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from tests.conftest import make_photo, make_texture

# Fast engine settings for tests: AdaIN with random encoder/decoder weights at 32 px (~20 ms an image).
ENGINE = {"method": "adain", "encoder": "random:0", "decoder": "random:1", "device": "cpu", "size": 32}
ENGINE_ARGS = ["--method", "adain", "--encoder", "random:0", "--decoder", "random:1", "--device", "cpu", "--size", "32"]


def write_manifest(folder: Path, n: int, *, extra_rows: list[dict] | None = None, name: str = "pairs.csv",
                   styles: int = 2, size: tuple[int, int] = (48, 40)) -> Path:
    """``n`` generated photos and ``styles`` textures under ``folder``, and a CSV manifest pairing them
    (relative paths; a ``label`` passthrough column)."""
    import pandas as pd

    (folder / "content").mkdir(parents=True, exist_ok=True)
    (folder / "styles").mkdir(parents=True, exist_ok=True)
    for s in range(styles):
        make_texture(32, seed=s + 1).save(folder / "styles" / f"s{s}.png")
    rows = []
    for i in range(n):
        make_photo(*size, seed=i).save(folder / "content" / f"c{i:03d}.jpg")
        rows.append({"content": f"content/c{i:03d}.jpg", "style": f"styles/s{i % styles}.png", "label": f"class{i % 3}"})
    rows += extra_rows or []
    path = folder / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def output_files(root: Path) -> list[Path]:
    """Every file under ``root`` except the report folder."""
    return sorted(p for p in root.rglob("*") if p.is_file() and "_reports" not in p.parts)


@contextlib.contextmanager
def run_logs():
    """The log records of the flow and task runs inside the block (a list, filled as they are emitted)."""
    records: list[logging.LogRecord] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Capture()
    loggers = [logging.getLogger(n) for n in ("prefect.flow_runs", "prefect.task_runs")]
    for lg in loggers:
        lg.addHandler(handler)
    try:
        yield records
    finally:
        for lg in loggers:
            lg.removeHandler(handler)
