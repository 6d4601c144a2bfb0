"""Output encoding cost: ms and bytes per image for each output format, PNG at several zlib levels.

    python bench/bench_encode.py [--sizes 256 512] [--repeat 5]

The images are what writers encode: AdaIN and Johnson outputs of the engine (random weights, ``random:SEED``
specs; trained decoders give smoother images, which compress better) and a generated photo. Every encoding
of one image runs in turn within each round (interleaved); the table gives the median ms over the rounds,
the bytes, and both as ratios to PNG at Pillow's default level 6. A writer thread encodes one image at a
time, so ms per image bounds a writer's images per second (``STYLIZE_WRITERS`` threads run in parallel).
"""
from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_shard import _image as _photo  # noqa: E402  (the generated photos of the shard bench)
from stylecore.engine import Engine  # noqa: E402

ENCODINGS = {"jpeg q95": ("JPEG", {"quality": 95, "subsampling": 0, "optimize": True}),
             "webp q95": ("WEBP", {"quality": 95, "method": 4}),
             **{f"png {k}": ("PNG", {"compress_level": k}) for k in (1, 3, 6)}}


def _encode(img: Image.Image, fmt: str, kw: dict) -> tuple[float, int]:
    buf = io.BytesIO()
    t = time.perf_counter()
    img.save(buf, format=fmt, **kw)
    return (time.perf_counter() - t) * 1000, buf.tell()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    p.add_argument("--repeat", type=int, default=5)
    a = p.parse_args()
    engine = Engine(encoder="random:0", decoder="random:1", model="random:2", device="cpu", progress=False)
    print(f"{a.repeat} interleaved rounds; ratios to png 6 (time <1: faster, bytes >1: larger)")
    print(f"{'image':<14} {'encoding':<9} {'ms':>7} {'KB':>7} {'time ratio':>10} {'bytes ratio':>11}")
    for size in a.sizes:
        photo = _photo(size, 1)
        images = {f"adain {size}": engine.stylize(photo, [_photo(size, 7)], method="adain", size=0),
                  f"johnson {size}": engine.stylize(photo, method="johnson", size=0),
                  f"photo {size}": photo}
        for name, img in images.items():
            times: dict[str, list[float]] = {k: [] for k in ENCODINGS}
            sizes: dict[str, int] = {}
            for _ in range(a.repeat):
                for key, (fmt, kw) in ENCODINGS.items():
                    ms, n = _encode(img, fmt, kw)
                    times[key].append(ms)
                    sizes[key] = n
            ref_ms, ref_n = statistics.median(times["png 6"]), sizes["png 6"]
            for key in ENCODINGS:
                ms = statistics.median(times[key])
                print(f"{name:<14} {key:<9} {ms:7.1f} {sizes[key] / 1024:7.1f} {ms / ref_ms:10.2f} "
                      f"{sizes[key] / ref_n:11.2f}")


if __name__ == "__main__":
    main()
