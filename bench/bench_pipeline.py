"""Throughput of a full ``stylize run`` against a bare engine loop over the same pairs, in one process run.

    python bench/bench_pipeline.py [--rows 240] [--size 64] [--device auto] [--method adain]

Both sides read the same content and style files, stylize with the same engine settings (AdaIN with
random weights by default: the fastest method, so orchestration overhead shows the most) and write JPEGs.
The bare loop is the simplest correct script: one Engine, images loaded in order, ``stylize_batch`` on
batches of --batch-size, outputs saved one by one. The pipeline is ``stylize run`` in a subprocess
(ephemeral Prefect unless PREFECT_API_URL is set); its throughput is taken from summary.json (the flow's
wall time: planning, shard manifests, shards, metrics merge and reports). Prints both throughputs and
the pipeline/bare ratio (target >= 0.9); the subprocess's whole wall time is printed too.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_inputs(folder: Path, rows: int, styles: int) -> Path:
    """Generated photos and textures, and a CSV manifest pairing them."""
    import pandas as pd

    from tests.conftest import make_photo, make_texture

    (folder / "content").mkdir(parents=True)
    (folder / "styles").mkdir()
    for s in range(styles):
        make_texture(128, seed=s + 1).save(folder / "styles" / f"s{s}.png")
    records = []
    for i in range(rows):
        make_photo(160, 120, seed=i).save(folder / "content" / f"c{i:04d}.jpg", quality=92)
        records.append({"content": f"content/c{i:04d}.jpg", "style": f"styles/s{i % styles}.png"})
    path = folder / "pairs.csv"
    pd.DataFrame(records).to_csv(path, index=False)
    return path


def bare_loop(manifest: Path, out: Path, args) -> float:
    """Seconds for the plain engine loop over the manifest (engine construction included)."""
    import pandas as pd

    from stylecore.engine import Engine, Request
    from stylecore.images import save_image
    from stylecore.options import StyleOptions

    t0 = time.perf_counter()
    engine = Engine(args.encoder, args.decoder, None, args.device, progress=False)
    opts = StyleOptions.make(size=args.size)
    rows = pd.read_csv(manifest)
    out.mkdir(parents=True)
    styles: dict[str, object] = {}
    for start in range(0, len(rows), args.batch_size):
        batch = rows.iloc[start:start + args.batch_size]
        reqs = []
        for i, r in batch.iterrows():
            content = engine.load(str(manifest.parent / r["content"]), opts.size)
            key = str(r["style"])
            if key not in styles:
                styles[key] = engine.load(str(manifest.parent / key), max(content.size))
            reqs.append(Request(content=content, styles=[styles[key]], style_keys=[key], method=args.method,
                                options=opts, key=str(i)))
        for res in engine.stylize_batch(reqs):
            if res.image is None:
                raise SystemExit(f"bare loop failed: {res.error}")
            save_image(res.image, out / f"{res.key}.jpg")
    return time.perf_counter() - t0


def pipeline_run(manifest: Path, out: Path, args) -> tuple[dict, float]:
    """(summary.json, subprocess wall seconds) of ``stylize run`` over the manifest."""
    cmd = [sys.executable, "-m", "stylize_cli.main", "run", str(manifest), "--output", str(out), "--method", args.method,
           "--encoder", args.encoder, "--decoder", args.decoder, "--device", args.device, "--size", str(args.size),
           "--batch-size", str(args.batch_size), "--shard-size", str(args.shard_size)]
    if not args.quality:
        cmd.append("--no-quality")
    env = dict(os.environ, PYTHONPATH=str(ROOT), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"stylize run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    report = [line for line in proc.stdout.splitlines() if line.startswith("report: ")][-1][len("report: "):]
    return json.loads((Path(report) / "summary.json").read_text()), wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=240)
    p.add_argument("--styles", type=int, default=4)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--method", default="adain")
    p.add_argument("--encoder", default="random:0")
    p.add_argument("--decoder", default="random:1")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--shard-size", type=int, default=1000)
    p.add_argument("--quality", action="store_true", help="also compute the per-row quality metrics in the pipeline")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        tmp = Path(tmp)
        manifest = make_inputs(tmp / "in", args.rows, args.styles)
        bare_s = bare_loop(manifest, tmp / "bare", args)
        summary, cli_wall = pipeline_run(manifest, tmp / "pipe", args)
    if summary["ok"] != args.rows:
        raise SystemExit(f"pipeline stylized {summary['ok']} of {args.rows} rows: {summary.get('failure_reasons')}")
    bare_ips = args.rows / bare_s
    pipe_ips = summary["ok"] / summary["wall_seconds"]
    print(f"rows {args.rows}, {args.method} at {args.size} px, device {summary['device']}, batch {args.batch_size}, "
          f"quality {'on' if args.quality else 'off'}")
    print(f"bare engine loop : {bare_s:7.2f} s  {bare_ips:7.1f} images/s")
    print(f"stylize run flow : {summary['wall_seconds']:7.2f} s  {pipe_ips:7.1f} images/s  "
          f"(whole CLI process incl. Prefect start: {cli_wall:.1f} s)")
    print(f"pipeline/bare ratio: {pipe_ips / bare_ips:.2f} (target >= 0.9)")


if __name__ == "__main__":
    main()
