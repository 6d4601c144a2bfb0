"""The demo behind ``make demo-engine``: the example pairs through the engine alone (no Prefect), offline.

    python examples/demo.py [--encoder SPEC] [--size N] [--steps N] [--out DIR] [--device auto|cpu|cuda]

The pairs come from ``examples/demo_manifest.csv``, in the manifest format of the pipeline (``content``,
``style`` with ``|`` between blended styles, ``style_weights``, per-row option overrides; paths relative
to the manifest), so the same file can later be run as a batch through the flow.

Encoder: ``imagenet`` when torchvision's VGG19 file is already in the torch cache, else ``random:0``
(the lower-fidelity offline fallback: colour and texture, not semantics). Sized to finish in a few
minutes on 2 idle CPU cores. Outputs go to ``demo-output/engine/``, apart from ``make demo``'s.
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing

from stylecore.engine import Engine  # noqa: E402
from stylecore.images import load_image, resize_long_side, save_image  # noqa: E402
from stylecore.options import SPECS, StyleOptions, parse_style_weights  # noqa: E402
from stylecore.weights import imagenet_cache_path  # noqa: E402

MANIFEST = HERE / "demo_manifest.csv"
DEFAULT_SIZE = 160
DEFAULT_STEPS = 70


def read_manifest(path: Path) -> list[dict]:
    """Rows of a small CSV manifest: content/style paths resolved against its folder, options parsed."""
    rows = []
    with open(path, newline="") as f:
        for i, row in enumerate(csv.DictReader(f)):
            styles = [str((path.parent / s).resolve()) for s in row["style"].split("|") if s]
            overrides = {k: v for k, v in row.items() if k in SPECS and v not in (None, "")}
            rows.append({
                "id": row.get("id") or f"row{i}",
                "content": str((path.parent / row["content"]).resolve()),
                "styles": styles,
                "style_weights": parse_style_weights(row.get("style_weights"), len(styles), sep="|"),
                "overrides": overrides,
            })
    return rows


def default_encoder() -> str:
    """``imagenet`` when its file is cached locally (no download in a demo), else ``random:0``."""
    return "imagenet" if imagenet_cache_path().is_file() else "random:0"


def contact_sheet(rows: list[tuple[str, list[str], Path]], size: int):
    """One strip per pair: content | style(s) | output."""
    from PIL import Image

    strips = []
    for content, styles, out in rows:
        tiles = [resize_long_side(load_image(p), size) for p in [content, *styles, str(out)]]
        tiles[1:-1] = [resize_long_side(t, size // 2) for t in tiles[1:-1]]
        w = sum(t.width for t in tiles) + 4 * (len(tiles) - 1)
        strip = Image.new("RGB", (w, max(t.height for t in tiles)), "white")
        x = 0
        for t in tiles:
            strip.paste(t, (x, 0))
            x += t.width + 4
        strips.append(strip)
    sheet = Image.new("RGB", (max(s.width for s in strips), sum(s.height + 4 for s in strips)), "white")
    y = 0
    for s in strips:
        sheet.paste(s, (0, y))
        y += s.height + 4
    return sheet


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--encoder", default=None, help="encoder weight spec (default: imagenet if cached, else random:0)")
    ap.add_argument("--size", type=int, default=DEFAULT_SIZE, help=f"longer side in pixels (default: {DEFAULT_SIZE})")
    ap.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"Gatys steps (default: {DEFAULT_STEPS})")
    ap.add_argument("--out", default="demo-output/engine", help="output folder (default: demo-output/engine)")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    ap.add_argument("--manifest", default=str(MANIFEST), help="pairs to run (default: examples/demo_manifest.csv)")
    args = ap.parse_args(argv)

    encoder = args.encoder or default_encoder()
    out_dir = Path(args.out)
    rows = read_manifest(Path(args.manifest))
    engine = Engine(encoder=encoder, device=args.device)
    print(f"stylizing {len(rows)} pairs at {args.size} px, {args.steps} steps, encoder {encoder}, device {engine.device}")
    t_all = time.perf_counter()
    done = []
    for row in rows:
        t0 = time.perf_counter()
        opts = StyleOptions.make(size=args.size, steps=args.steps, **row["overrides"])
        hist = []
        img = engine.stylize(row["content"], row["styles"], style_weights=row["style_weights"], options=opts,
                             callback=hist.append)
        out = out_dir / f"{row['id']}.jpg"
        save_image(img, out, quality=92)
        done.append((row["content"], row["styles"], out))
        print(f"  {out}  {img.width}x{img.height}  style loss {hist[0].style:.3g} -> {hist[-1].style:.3g}  "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
    sheet = out_dir / "contact-sheet.jpg"
    save_image(contact_sheet(done, args.size), sheet, quality=90)
    weights = (f"imagenet ({imagenet_cache_path()})" if encoder == "imagenet" else
               f"{encoder} (random weights: the lower-fidelity offline fallback; put torchvision's "
               f"vgg19-dcbb9e9d.pth at {imagenet_cache_path()} for the ImageNet encoder)" if encoder.startswith("random")
               else encoder)
    print(f"outputs: {out_dir.resolve()}/ ({len(done)} images + {sheet.name}) in {time.perf_counter() - t_all:.0f} s")
    print(f"encoder weights: {weights}")
    return 0


if __name__ == "__main__":
    from stylecore.errors import StyleCoreError

    try:
        sys.exit(main())
    except StyleCoreError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
