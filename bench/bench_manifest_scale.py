"""Scale benchmark: read, validate and plan a 1,000,000-row manifest (including the resume listing).

Generates an ImageNet-like manifest (1,000 class folders, 8 styles, a label column, per-row alpha
overrides on 10% of rows, a content_root column), writes it as Parquet and CSV, pre-creates some
outputs so resume has work to do, then plans each file in a fresh process and prints wall time,
the RSS after imports and the peak RSS.

    python bench/bench_manifest_scale.py [--rows 1000000] [--done 10000] [--dir /tmp/manifest-bench]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def generate(d: Path, rows: int, done: int) -> None:
    import numpy as np
    import pandas as pd

    from stylecore import manifest

    i = np.arange(rows)
    cls = i % 1000
    content = pd.Series([f"/data/imagenet/train/n{c:05d}/img_{k:07d}.JPEG" for c, k in zip(cls, i)], dtype="str")
    styles = [f"s3://styles-bucket/art/style_{s}.jpg" for s in range(8)]
    df = pd.DataFrame({
        "content": content,
        "style": np.array(styles, dtype=object)[i % 8],
        "content_root": "/data/imagenet",
        "label": pd.Series([f"n{c:05d}" for c in cls], dtype="str"),
        "alpha": np.where(i % 10 == 0, "0.5", ""),
        "split": "train",
    })
    df.to_parquet(d / "m.parquet", index=False)
    df.to_csv(d / "m.csv", index=False)
    out = d / "out"
    shutil.rmtree(out, ignore_errors=True)
    if done:
        plan = manifest.plan(str(d / "m.parquet"), str(out), method="adain", decoder="random:0")
        for uri in plan.rows["output_uri"].iloc[:done]:
            p = Path(uri)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"")


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM; unlike ru_maxrss it is not inherited across exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(path: str, out: str) -> dict:
    t_import = time.perf_counter()
    from stylecore import manifest

    rss_after_import = peak_rss_mb()
    import_s = time.perf_counter() - t_import
    t0, c0 = time.perf_counter(), time.process_time()
    df = manifest.read_manifest(path)
    t1 = time.perf_counter()
    plan = manifest.plan(df, out, method="adain", decoder="random:0", base=str(Path(path).parent))
    t2 = time.perf_counter()
    return {"file": os.path.basename(path), "rows": len(plan.rows), "read_s": round(t1 - t0, 2),
            "validate_plan_resume_s": round(t2 - t1, 2), "total_s": round(t2 - t0, 2),
            "cpu_s": round(time.process_time() - c0, 2),
            "skipped": int((plan.rows["status"] == "skipped").sum()), "import_s": round(import_s, 2),
            "rss_after_import_mb": round(rss_after_import), "peak_rss_mb": round(peak_rss_mb())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--done", type=int, default=10_000, help="outputs that already exist (resume)")
    ap.add_argument("--dir", default="/tmp/manifest-bench")
    ap.add_argument("--measure", nargs=2, metavar=("MANIFEST", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return
    d = Path(args.dir)
    d.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    generate(d, args.rows, args.done)
    print(f"generated {args.rows} rows in {d} ({time.perf_counter() - t:.1f}s, not measured)")
    for name in ("m.parquet", "m.csv"):
        r = subprocess.run([sys.executable, __file__, "--measure", str(d / name), str(d / "out")],
                           capture_output=True, text=True, check=True)
        res = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"{res['file']}: {res['rows']} rows, read {res['read_s']}s + validate/plan/resume "
              f"{res['validate_plan_resume_s']}s = {res['total_s']}s wall ({res['cpu_s']}s CPU); "
              f"{res['skipped']} skipped; "
              f"peak RSS {res['peak_rss_mb']} MB (of which {res['rss_after_import_mb']} MB after imports)")


if __name__ == "__main__":
    main()
