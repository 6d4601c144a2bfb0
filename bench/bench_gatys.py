"""Gatys optimisation speed: seconds per L-BFGS step (one forward/backward pass) at a few sizes, on a device.

    python bench/bench_gatys.py [--device auto|cpu|cuda] [--sizes 256 512] [--steps 50] [--encoder random:0]

Each size runs once untimed (weights, kernels, allocator), then ``--steps`` timed steps with the pyramid off.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stylecore.engine import Engine  # noqa: E402
from tests.conftest import make_photo, make_texture  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--encoder", default="random:0")
    a = p.parse_args()
    engine = Engine(encoder=a.encoder, device=a.device, progress=False)
    dev = engine.device
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device: {name}; torch {torch.__version__}")
    print(f"{'px':>5} {'steps':>5} {'s/step':>8} {'total s':>8} {'final loss':>11}")
    for size in a.sizes:
        content, style = make_photo(size, size * 3 // 4, seed=1), make_texture(size, seed=3)
        run = dict(method="gatys", size=0, pyramid_threshold=1 << 20, seed=0)
        engine.stylize(content, style, steps=3, **run)
        losses = []
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        engine.stylize(content, style, steps=a.steps, callback=lambda s: losses.append(s.loss), **run)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        print(f"{size:>5} {a.steps:>5} {dt / a.steps:>8.4f} {dt:>8.2f} {losses[-1]:>11.4g}", flush=True)


if __name__ == "__main__":
    main()
