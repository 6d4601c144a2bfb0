"""Shard-runner throughput by batch size: rows/s of ``stylecore.shard.run_shard`` over generated local images.

    python bench/bench_shard.py [--device auto] [--method adain|johnson] [--rows 512] [--size 256]
        [--batch-sizes 8 0] [--repeat 3]

Every batch size runs the same shard (outputs overwritten, JPEG, quality scoring off) with one engine, in turn
within each round, after a warm-up pass. Batch size 0 is the default, auto: 8 rows per engine call on the CPU,
``shard.GPU_CALL_PASSES`` full forward passes per call on GPUs (``shard.call_batch``). The table gives the best round's rows/s, the
mean rows per engine call, and the median per-round ratio to the first batch size. Weights are random
(``random:SEED`` specs): throughput does not depend on them.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stylecore import manifest  # noqa: E402
from stylecore.engine import Engine  # noqa: E402
from stylecore.options import StyleOptions  # noqa: E402
from stylecore.shard import run_shard  # noqa: E402


class CallCounter:
    """The engine, counting rows per ``stylize_batch`` call."""

    def __init__(self, engine):
        self._engine, self.calls = engine, []

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def stylize_batch(self, requests):
        self.calls.append(len(requests))
        return self._engine.stylize_batch(requests)


def _image(size: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    a = rng.uniform(2, 9, 3)
    rgb = np.stack([np.sin(a[0] * x + seed), np.cos(a[1] * y), np.sin(a[2] * (x + y))], -1) * 100 + 128
    return Image.fromarray(np.clip(rgb + rng.normal(0, 10, rgb.shape), 0, 255).astype(np.uint8))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--method", default="adain", choices=["adain", "johnson"])
    p.add_argument("--rows", type=int, default=512)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 0], help="0: auto (default: 8 0)")
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "content").mkdir()
        (root / "styles").mkdir()
        for s in range(2):
            _image(a.size, 1000 + s).save(root / "styles" / f"s{s}.png")
        for i in range(a.rows):
            _image(a.size, i).save(root / "content" / f"c{i:05d}.jpg", quality=92)
        rows = [{"content": f"content/c{i:05d}.jpg", "style": f"styles/s{i % 2}.png"} for i in range(a.rows)]
        pd.DataFrame(rows).to_csv(root / "pairs.csv", index=False)
        plan = manifest.plan(str(root / "pairs.csv"), str(root / "out"), method=a.method,
                             options=StyleOptions.make(size=0), encoder="random:0", decoder="random:1",
                             model="random:2" if a.method == "johnson" else None, fmt="jpg")
        engine = CallCounter(Engine(encoder="random:0", decoder="random:1", model="random:2", device=a.device,
                                    progress=False))
        print(f"device: {engine.device}; {a.method}, {a.rows} rows of {a.size} px; {a.repeat} interleaved rounds")
        run_shard(plan.rows.iloc[: min(len(plan.rows), 64)], engine, overwrite=True)  # warm-up
        rates: dict[int, list[float]] = {b: [] for b in a.batch_sizes}
        per_call: dict[int, float] = {}
        for _ in range(a.repeat):
            for b in a.batch_sizes:
                engine.calls = []
                t0 = time.perf_counter()
                m = run_shard(plan.rows, engine, overwrite=True, batch_size=b)
                rates[b].append(a.rows / (time.perf_counter() - t0))
                assert (m["status"] == "ok").all(), m["error"].dropna().unique()[:3]
                per_call[b] = sum(engine.calls) / max(1, len(engine.calls))
        first = a.batch_sizes[0]
        print(f"{'batch_size':>10} {'rows/s':>9} {'rows/call':>9} {'median ratio to ' + str(first):>20}")
        for b in a.batch_sizes:
            ratio = statistics.median(r / f for r, f in zip(rates[b], rates[first]))
            name = f"{b} (auto)" if b == 0 else str(b)
            print(f"{name:>10} {max(rates[b]):>9.1f} {per_call[b]:>9.1f} {ratio:>19.2f}x")


if __name__ == "__main__":
    main()
