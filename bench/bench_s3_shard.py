"""Shard runner on S3: rows/s, requests per row and this process's CPU per row, with the outputs of earlier
attempts found by one listing of the shard's key range (``storage.existence``) against a HEAD per row (the
fallback for stores that cannot be listed).

    python bench/bench_s3_shard.py [--rows 400] [--size 256] [--simulate 2000] [--readers 8] [--writers 8] [--repeat 3]

The S3 server is moto's server mode in a subprocess on 127.0.0.1 (boto3 over HTTP, dummy credentials), so its
CPU is not counted in this process's. The engine is ``bench_shard.SimulatedGPU`` at ``--simulate`` img/s (a GPU
worker's rate: the shard's S3 work is what is measured), the rows are 256-px JPEG contents with two styles, written
back as JPEG. Each round runs both modes on a fresh output prefix, a quarter of whose outputs already exist (an
earlier attempt's), in turn. A real S3 endpoint adds 10-30 ms of latency per request, which more threads hide; the
CPU each request costs in botocore (signing, parsing, under the GIL) is what caps a process, and that is measured.
"""
from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_shard import SimulatedGPU, _image  # noqa: E402
from stylecore import manifest, storage  # noqa: E402
from stylecore.options import StyleOptions  # noqa: E402
from stylecore.shard import run_shard  # noqa: E402


class NoListing:
    """The storage layer with ``existence`` deciding nothing, as for a store that cannot be listed: a HEAD per row."""

    def __getattr__(self, name):
        return getattr(storage, name)

    @staticmethod
    def existence(uris):
        return {}


class RequestCounter:
    """S3 requests by operation, counted through botocore's event hooks on stylecore's client."""

    def __init__(self):
        self.counts: dict[str, int] = {}
        storage.s3_client().meta.events.register("before-call.s3", self._count)

    def _count(self, model, **kw):
        self.counts[model.name] = self.counts.get(model.name, 0) + 1

    def take(self) -> dict[str, int]:
        out, self.counts = self.counts, {}
        return out


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=400)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--simulate", type=float, default=2000, metavar="IMG_PER_S")
    p.add_argument("--readers", type=int, default=8)
    p.add_argument("--writers", type=int, default=8)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    port = _port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.environ.update({"AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "bench",
                       "AWS_SECRET_ACCESS_KEY": "bench-secret", "AWS_DEFAULT_REGION": "us-east-1"})
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        storage.reset_client()
        bucket = "bench-shard"
        storage.s3_client().create_bucket(Bucket=bucket)
        for s in range(2):
            buf = io.BytesIO()
            _image(a.size, 1000 + s).save(buf, format="PNG")
            storage.write_bytes(f"s3://{bucket}/styles/s{s}.png", buf.getvalue())
        for i in range(a.rows):
            buf = io.BytesIO()
            _image(a.size, i).save(buf, format="JPEG", quality=92)
            storage.write_bytes(f"s3://{bucket}/content/c{i:05d}.jpg", buf.getvalue())
        rows = pd.DataFrame({"content": [f"s3://{bucket}/content/c{i:05d}.jpg" for i in range(a.rows)],
                             "style": [f"s3://{bucket}/styles/s{i % 2}.png" for i in range(a.rows)]})
        engine = SimulatedGPU(a.simulate, 64)
        counter = RequestCounter()
        print(f"S3: moto server (subprocess); {a.rows} rows of {a.size} px, JPEG out; simulated device "
              f"{a.simulate:g} img/s; {a.readers} readers, {a.writers} writers; {os.cpu_count()} CPUs; "
              f"{a.repeat} interleaved rounds")
        modes = {"HEAD per row": False, "one listing": True}
        rates: dict[str, list[float]] = {m: [] for m in modes}
        cpu: dict[str, list[float]] = {m: [] for m in modes}
        counts: dict[str, dict] = {}
        for r in range(a.repeat + 1):  # round 0 warms up the client, the server and the caches
            for mode, listing in modes.items():
                out = f"s3://{bucket}/out-{r}-{'list' if listing else 'head'}"
                plan = manifest.plan(rows, out, method="adain", options=StyleOptions.make(size=0),
                                     encoder="random:0", decoder="random:1", fmt="jpg")
                done = plan.rows["output_uri"].iloc[::4]
                for uri in done:  # an earlier attempt's outputs, written after the plan was made
                    storage.write_bytes(uri, b"earlier")
                st = storage if listing else NoListing()
                counter.take()
                t0, c0 = time.perf_counter(), time.process_time()
                m = run_shard(plan.rows, engine, readers=a.readers, writers=a.writers, storage=st)
                wall, used = time.perf_counter() - t0, time.process_time() - c0
                assert (m["status"] == "skipped").sum() == len(done) and (m["status"] == "ok").sum() == a.rows - len(done)
                if r:
                    rates[mode].append(a.rows / wall)
                    cpu[mode].append(used / a.rows * 1000)
                    counts[mode] = counter.take()
        ops = [("HeadObject", "HEAD"), ("GetObject", "GET"), ("PutObject", "PUT"), ("ListObjectsV2", "LIST")]
        print(f"{'resume check':>14} {'rows/s':>8} {'CPU ms/row':>11} {'requests/row':>13} "
              + " ".join(f"{short:>5}" for _, short in ops))
        base = "HEAD per row"
        for mode in modes:
            c = counts[mode]
            print(f"{mode:>14} {max(rates[mode]):>8.1f} {statistics.median(cpu[mode]):>11.2f} "
                  f"{sum(c.values()) / a.rows:>13.2f} " + " ".join(f"{c.get(op, 0):>5}" for op, _ in ops))
        ratio = statistics.median(x / y for x, y in zip(rates["one listing"], rates[base]))
        cpu_ratio = statistics.median(x / y for x, y in zip(cpu["one listing"], cpu[base]))
        print(f"one listing / HEAD per row: rows/s {ratio:.2f}x (median of rounds), CPU per row {cpu_ratio:.2f}x")
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
