"""The compiled CPU kernels (stylecore/native) against the torch forms of the same layers, and both against the
plain networks, side by side in one process.

    OMP_NUM_THREADS=2 python bench/bench_cpu_kernels.py [--size 256] [--rounds 12]

Three versions of each network run in turn within every round, one 256-px image each, so that a slow phase
of a shared machine hits all three alike:
  plain     the public layouts as the reference scripts run them (NCHW, no conversions);
  torch     ``fast_layers`` conversions as on a machine without a C compiler (``STYLECORE_NATIVE=0``);
  compiled  the same with the compiled kernels (Winograd transforms, Winograd upsampling convs, absorbed
            reflection pads, Johnson's fused instance norm + ReLU + pad).
Networks: Johnson's TransformerNet, and AdaIN's encoder (to relu4_1) followed by its decoder. Random weights
(He-normal); prints median ms per image and the medians of the per-round ratios.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stylecore import adain_net, fast_layers, native  # noqa: E402
from stylecore.adain import he_init  # noqa: E402
from stylecore.johnson import load_transformer  # noqa: E402


def _use_native(on: bool) -> None:
    os.environ["STYLECORE_NATIVE"] = "1" if on else "0"
    native.reset()


def _versions(net: torch.nn.Module, convert) -> dict:
    """{name: (module, native on?, input memory format)} for the plain, torch-form and compiled versions."""
    cl = torch.channels_last
    _use_native(False)
    torch_form = convert(copy.deepcopy(net)).to(memory_format=cl)  # converted as without a C compiler
    _use_native(True)
    if native.winograd() is None or native.instance_norm() is None:
        raise SystemExit("the compiled kernels are unavailable here (no C compiler?): nothing to compare")
    compiled = convert(copy.deepcopy(net)).to(memory_format=cl)
    return {"plain": (net, True, torch.contiguous_format), "torch": (torch_form, False, cl),
            "compiled": (compiled, True, cl)}


def _time(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def measure(name: str, versions: dict, x: torch.Tensor, rounds: int, reps: int) -> None:
    ms = {v: [] for v in versions}
    with torch.inference_mode():
        outs = {}
        for v, (net, on, fmt) in versions.items():
            _use_native(on)
            outs[v] = net(x.contiguous(memory_format=fmt))
        scale = outs["plain"].abs().max()
        diff = {v: float((outs[v] - outs["plain"]).abs().max() / scale) for v in versions}
        for _ in range(rounds):
            for v, (net, on, fmt) in versions.items():
                _use_native(on)
                xv = x.contiguous(memory_format=fmt)
                net(xv)
                ms[v].append(_time(lambda: net(xv), reps))
    med = {v: statistics.median(t) for v, t in ms.items()}

    def ratio(a: str, b: str) -> float:
        return statistics.median([p / q for p, q in zip(ms[a], ms[b])])

    print(f"{name:8} {x.shape[-1]:>4} {med['plain']:>9.1f} {med['torch']:>9.1f} {med['compiled']:>11.1f} "
          f"{ratio('plain', 'torch'):>13.2f}x {ratio('plain', 'compiled'):>16.2f}x {ratio('torch', 'compiled'):>17.2f}x "
          f"{diff['compiled']:>10.1e}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--reps", type=int, default=3, help="timed passes per version and round (median)")
    a = p.parse_args()
    print(f"cpu, {torch.get_num_threads()} threads, torch {torch.__version__}; {a.rounds} rounds; median ms per image")
    print(f"{'network':8} {'px':>4} {'plain ms':>9} {'torch ms':>9} {'compiled ms':>11} {'plain/torch':>14} "
          f"{'plain/compiled':>17} {'torch/compiled':>18} {'max rel Δ':>10}")
    johnson = load_transformer("random:3").eval()
    x = torch.rand(1, 3, a.size, a.size)
    measure("johnson", _versions(johnson, fast_layers.fast_transformer), x * 255, a.rounds, a.reps)
    adain = torch.nn.Sequential(he_init(adain_net.normalised_vgg()[:31], 1), he_init(adain_net.decoder(), 2)).eval()

    def convert_adain(net):
        return torch.nn.Sequential(fast_layers.fast_encoder(net[0]), fast_layers.fast_decoder(net[1]))

    measure("adain", _versions(adain, convert_adain), x, a.rounds, a.reps)


if __name__ == "__main__":
    main()
