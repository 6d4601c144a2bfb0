"""Where the engine's feed-forward time goes: torch.profiler's top operators for one batch.

    python bench/profile_feedforward.py [--method adain|johnson] [--size 256] [--batch 16] [--device auto]

Random weights in the public formats; the batch runs once untimed, then once under the profiler.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_feedforward import _photo, _save_weights  # noqa: E402
from stylecore.engine import Engine, Request  # noqa: E402
from stylecore.feedforward import CUDA_LAYERS  # noqa: E402
from stylecore.options import StyleOptions  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--method", default="johnson", choices=["adain", "johnson"])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--device", default="auto")
    p.add_argument("--rows", type=int, default=18)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        w = _save_weights(Path(tmp))
        engine = Engine(encoder=w["vgg_normalised.pth"], decoder=w["decoder.pth"], model=w["johnson.pth"],
                        device=a.device, progress=False)
        engine.max_batch = a.batch
        if engine.device.type != "cpu":
            engine.batch_pixels = a.batch * a.size * a.size
        style = _photo(a.size, 100)
        reqs = [Request(_photo(a.size, i), [style] if a.method == "adain" else [], ["s"], None, a.method,
                        StyleOptions.make(size=0), str(i)) for i in range(a.batch)]
        engine.stylize_batch(reqs)
        acts = [torch.profiler.ProfilerActivity.CPU]
        cuda = engine.device.type == "cuda"
        if cuda:
            acts.append(torch.profiler.ProfilerActivity.CUDA)
            torch.cuda.synchronize()
        with torch.profiler.profile(activities=acts) as prof:
            engine.stylize_batch(reqs)
            if cuda:
                torch.cuda.synchronize()
        key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
        print(f"{a.method} {a.size}px batch {a.batch} on {engine.device} (CUDA layers {CUDA_LAYERS}, compile {engine.compile_mode})")
        print(prof.key_averages().table(sort_by=key, row_limit=a.rows, max_name_column_width=60))


if __name__ == "__main__":
    main()
