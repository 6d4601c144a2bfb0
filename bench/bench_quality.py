"""Cost of the per-row quality metrics relative to stylization (a script, not a test).

For each method the engine supports here, stylizes N generated content images (batched, as the shard
runner does) and then scores the same rows with the process's quality evaluator, and prints
evaluator time / stylization time. Target: at most 0.10.

    OMP_NUM_THREADS=2 python bench/bench_quality.py --rows 16 --size 512 --methods adain,johnson,gatys
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from stylecore.engine import Request, get_engine  # noqa: E402
from stylecore.errors import StyleCoreError  # noqa: E402
from stylecore.images import resize_long_side  # noqa: E402
from stylecore.options import StyleOptions  # noqa: E402
from stylecore.quality import QualityItem, get_evaluator  # noqa: E402
from tests.conftest import make_photo, make_texture  # noqa: E402

ENGINES = {"gatys": {}, "adain": {"decoder": "random:0"}, "johnson": {"model": "random:0"}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--size", type=int, default=512, help="content long side (the engine's default is 512)")
    ap.add_argument("--steps", type=int, default=50, help="Gatys steps (the engine's default is 300)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--methods", default="adain,johnson,gatys")
    ap.add_argument("--encoder", default="random:0")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--eval-size", type=int, default=None, help="evaluator long side (default: the evaluator's)")
    args = ap.parse_args()

    evaluator = get_evaluator("auto", size=args.eval_size, device=args.device)
    print(f"evaluator {evaluator.spec} at {evaluator.size} px on {evaluator.device}; {args.rows} rows of "
          f"{args.size} px, batches of {args.batch}")
    contents = [make_photo(args.size, args.size * 3 // 4, seed=i) for i in range(args.rows)]
    styles = [resize_long_side(make_texture(256, seed=s), args.size) for s in range(2)]
    for method in args.methods.split(","):
        engine = get_engine(args.encoder, device=args.device, progress=False, **ENGINES[method])
        opts = StyleOptions.make(size=args.size, steps=args.steps)
        reqs = [Request(content=c, styles=[styles[i % 2]], style_keys=[f"s{i % 2}"], method=method, options=opts, key=str(i))
                for i, c in enumerate(contents)]
        try:  # warm-up: weights load, caches, allocator
            engine.stylize_batch(reqs[:1])
            evaluator.evaluate_batch([QualityItem(contents[0], [styles[0]], contents[0], style_keys=["s0"])])
        except StyleCoreError as e:
            print(f"{method:8s} not available here: {e}")
            continue
        t = time.perf_counter()
        results = []
        for i in range(0, len(reqs), args.batch):
            results += engine.stylize_batch(reqs[i:i + args.batch])
        stylize_s = time.perf_counter() - t
        if any(r.image is None for r in results):
            print(f"{method:8s} failed: {next(r.error for r in results if r.image is None)}")
            continue
        items = [QualityItem(r.content, r.styles, res.image, style_keys=r.style_keys) for r, res in zip(reqs, results)]
        t = time.perf_counter()
        for i in range(0, len(items), args.batch):
            evaluator.evaluate_batch(items[i:i + args.batch])
        quality_s = time.perf_counter() - t
        print(f"{method:8s} stylize {stylize_s * 1000 / args.rows:8.1f} ms/row   quality {quality_s * 1000 / args.rows:6.1f} ms/row"
              f"   quality/stylize = {quality_s / stylize_s:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
