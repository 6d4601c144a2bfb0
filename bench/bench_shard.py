"""Shard-runner throughput by batch size: rows/s of ``stylecore.shard.run_shard`` over generated local images.

    python bench/bench_shard.py [--device auto] [--method adain|johnson] [--rows 512] [--size 256]
        [--batch-sizes 8 0] [--repeat 3] [--simulate IMG_PER_S [--pass-rows 64]] [--write-rows N]
        [--processes 1 2 4] [--jpeg-encoders]

Every batch size runs the same shard (outputs overwritten, JPEG, quality scoring off) with one engine, in turn
within each round, after a warm-up pass. Batch size 0 is the default, auto: 8 rows per engine call on the CPU,
one full forward pass per call on GPUs (``shard.call_batch``). The table gives the best round's rows/s, the
mean rows per engine call, and the median per-round ratio to the first batch size. Weights are random
(``random:SEED`` specs): throughput does not depend on them.

``--simulate IMG_PER_S`` measures the pipeline around a GPU on a machine without one: the engine is replaced
by ``SimulatedGPU``, whose forward passes of ``--pass-rows`` images take the time a device at IMG_PER_S would
(the calling thread sleeps as it waits for a GPU, with the GIL free) and are launched and waited for in the
engine's order (each pass launched before the previous one is waited for); the host work is real (contents
copied into one batch buffer per pass, outputs made as new PIL images, then encoded and written). ``efficiency``
is rows/s over IMG_PER_S. ``--write-rows N`` bounds the outputs waiting for the writers to N rows' bytes
(``shard.WRITE_BYTES``; 17 emulates the old row-count queue with one writer).

``--processes 1 2 4`` compares shard processes sharing one device instead of batch sizes: with P processes the
shard's rows are split into P slices, each run by its own process (its own engine, readers and writers, as P
shard runs of a worker started with ``--limit P`` would), all started together; rows/s is all rows over the
time from the common start to the last process's end. With ``--simulate`` the processes share one simulated
device (one queue of forward passes across processes), so they can never beat its rate together.

``--jpeg-encoders`` compares, interleaved, the writers' JPEG encoding into an in-memory file descriptor (the
default: Pillow encodes without the GIL there, ``images._save_via_descriptor``) against encoding into a BytesIO
(Pillow holds the GIL throughout), with batch size auto.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stylecore import images, manifest  # noqa: E402
from stylecore.device import resolve_device  # noqa: E402
from stylecore.engine import Engine  # noqa: E402
from stylecore.options import StyleOptions  # noqa: E402
from stylecore import shard  # noqa: E402
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


class SimulatedGPU:
    """A stand-in GPU engine: forward passes of ``pass_rows`` images cost ``pass_rows / img_per_s`` seconds of
    device time, launched and waited for as ``Engine._ff_batch`` does (pass i+1 launched before pass i is
    waited for); the host work around them is done for real."""

    device, max_pixels = "cuda:sim", 0

    def __init__(self, img_per_s: float, pass_rows: int, busy=None):
        self.img_per_s, self.pass_rows, self.calls = img_per_s, pass_rows, []
        # when the simulated device finishes its queued work (time.monotonic); shared by processes if given
        self.busy = busy if busy is not None else mp.get_context("spawn").Value("d", 0.0)

    def batch_limit(self, hw) -> int:
        return self.pass_rows

    def _launch(self, requests) -> tuple[float, np.ndarray]:
        h, w = requests[0].content.size[::-1]
        buf = np.empty((len(requests), h, w, 3), dtype=np.uint8)  # what _batch_pixels copies before an upload
        for i, r in enumerate(requests):
            buf[i] = np.asarray(r.content)
        with self.busy.get_lock():
            done_at = self.busy.value = max(time.monotonic(), self.busy.value) + len(requests) / self.img_per_s
        return done_at, buf

    def stylize_batch(self, requests):
        self.calls.append(len(requests))
        out, pending = [], None
        for k in range(0, len(requests), self.pass_rows):
            launched = self._launch(requests[k:k + self.pass_rows])
            if pending is not None:
                out += self._wait(*pending)
            pending = launched
        return out + self._wait(*pending)

    @staticmethod
    def _wait(done_at: float, buf: np.ndarray) -> list:
        from stylecore.engine import Result

        time.sleep(max(0.0, done_at - time.monotonic()))
        return [Result("", Image.fromarray(img), None, 0.0) for img in buf]


def _image(size: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    a = rng.uniform(2, 9, 3)
    rgb = np.stack([np.sin(a[0] * x + seed), np.cos(a[1] * y), np.sin(a[2] * (x + y))], -1) * 100 + 128
    return Image.fromarray(np.clip(rgb + rng.normal(0, 10, rgb.shape), 0, 255).astype(np.uint8))


def _engine(a, busy=None):
    if a.simulate:
        return SimulatedGPU(a.simulate, a.pass_rows, busy)
    return CallCounter(Engine(encoder="random:0", decoder="random:1", model="random:2", device=a.device,
                              progress=False))


def _process_run(a, rows_path: str, lo: int, hi: int, busy, start, results) -> None:
    """One shard process of ``--processes``: rows ``lo:hi`` of the plan, after its own warm-up."""
    rows = pd.read_pickle(rows_path).iloc[lo:hi]
    engine = _engine(a, busy)
    run_shard(rows.iloc[: min(len(rows), 64)], engine, overwrite=True)  # warm-up (weights, kernels, threads)
    start.wait(timeout=900)
    t0 = time.monotonic()
    m = run_shard(rows, engine, overwrite=True)
    results.put((t0, time.monotonic(), int((m["status"] == "ok").sum())))


def _by_processes(a, plan, root: Path) -> None:
    ctx = mp.get_context("spawn")  # CUDA in children needs spawn
    rows_path = str(root / "plan_rows.pkl")
    plan.rows.to_pickle(rows_path)
    busy = ctx.Value("d", 0.0)  # one simulated device for all processes
    rates: dict[int, list[float]] = {p: [] for p in a.processes}
    for _ in range(a.repeat):
        for procs in a.processes:
            start, results = ctx.Barrier(procs + 1), ctx.Queue()
            bounds = [round(k * a.rows / procs) for k in range(procs + 1)]
            workers = [ctx.Process(target=_process_run, args=(a, rows_path, bounds[k], bounds[k + 1], busy, start,
                                                              results)) for k in range(procs)]
            for w in workers:
                w.start()
            start.wait(timeout=900)  # every process has warmed up (a process that died breaks the wait)
            t0 = time.monotonic()
            got = [results.get(timeout=3600) for _ in workers]
            for w in workers:
                w.join()
            assert sum(g[2] for g in got) == a.rows, f"{sum(g[2] for g in got)} of {a.rows} rows ok"
            rates[procs].append(a.rows / (max(g[1] for g in got) - t0))
    first = a.processes[0]
    eff = f" {'efficiency':>10}" if a.simulate else ""
    print(f"{'processes':>10} {'rows/s':>9} {'median ratio to ' + str(first):>20}{eff}")
    for procs in a.processes:
        ratio = statistics.median(r / f for r, f in zip(rates[procs], rates[first]))
        eff = f" {max(rates[procs]) / a.simulate:>10.2f}" if a.simulate else ""
        print(f"{procs:>10} {max(rates[procs]):>9.1f} {ratio:>19.2f}x{eff}")


def _by_jpeg_encoder(a, plan, engine) -> None:
    descriptor = images._save_via_descriptor
    ways = {"descriptor": descriptor, "bytesio": lambda *args, **kw: None}  # None: encode_image uses a BytesIO
    rates: dict[str, list[float]] = {k: [] for k in ways}
    cpu: dict[str, list[float]] = {k: [] for k in ways}
    try:
        for _ in range(a.repeat):
            for name, fn in ways.items():
                images._save_via_descriptor = fn
                c0, t0 = time.process_time(), time.perf_counter()
                m = run_shard(plan.rows, engine, overwrite=True)
                wall = time.perf_counter() - t0
                assert (m["status"] == "ok").all(), m["error"].dropna().unique()[:3]
                rates[name].append(a.rows / wall)
                cpu[name].append(100 * (time.process_time() - c0) / wall)
    finally:
        images._save_via_descriptor = descriptor
    print(f"{'jpeg encoder':>12} {'rows/s':>9} {'cpu %':>6} {'median ratio to bytesio':>24}")
    for name in ways:
        ratio = statistics.median(r / f for r, f in zip(rates[name], rates["bytesio"]))
        print(f"{name:>12} {max(rates[name]):>9.1f} {statistics.median(cpu[name]):>6.0f} {ratio:>23.2f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--method", default="adain", choices=["adain", "johnson"])
    p.add_argument("--rows", type=int, default=512)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 0], help="0: auto (default: 8 0)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--simulate", type=float, default=0, metavar="IMG_PER_S",
                   help="replace the engine by a simulated GPU at this many images/s")
    p.add_argument("--pass-rows", type=int, default=64, help="images per simulated forward pass (default 64)")
    p.add_argument("--write-rows", type=int, default=0, help="bound the outputs waiting for the writers to N rows")
    p.add_argument("--jpeg-encoders", action="store_true",
                   help="compare JPEG encoding into a file descriptor (default) and into a BytesIO")
    p.add_argument("--processes", type=int, nargs="+",
                   help="compare this many shard processes sharing the device (batch size auto), e.g. 1 2 4")
    a = p.parse_args()
    if a.processes and (min(a.processes) < 1 or max(a.processes) > a.rows):
        p.error("--processes: each count must be between 1 and --rows")
    if a.write_rows:
        shard.WRITE_BYTES = a.write_rows * a.size * a.size * 3
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
        sim = f" at {a.simulate:g} img/s, {a.pass_rows} per pass" if a.simulate else ""
        device = "cuda:sim" if a.simulate else resolve_device(a.device)
        print(f"device: {device}{sim}; {a.method}, {a.rows} rows of {a.size} px; {a.repeat} interleaved rounds"
              f"{f'; outputs waiting for the writers: {a.write_rows} rows' if a.write_rows else ''}")
        if a.processes:
            _by_processes(a, plan, root)
            return
        engine = _engine(a)
        if a.jpeg_encoders:
            run_shard(plan.rows.iloc[: min(len(plan.rows), 64)], engine, overwrite=True)  # warm-up
            _by_jpeg_encoder(a, plan, engine)
            return
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
        eff = f" {'efficiency':>10}" if a.simulate else ""
        print(f"{'batch_size':>10} {'rows/s':>9} {'rows/call':>9} {'median ratio to ' + str(first):>20}{eff}")
        for b in a.batch_sizes:
            ratio = statistics.median(r / f for r, f in zip(rates[b], rates[first]))
            name = f"{b} (auto)" if b == 0 else str(b)
            eff = f" {max(rates[b]) / a.simulate:>10.2f}" if a.simulate else ""
            print(f"{name:>10} {max(rates[b]):>9.1f} {per_call[b]:>9.1f} {ratio:>19.2f}x{eff}")


if __name__ == "__main__":
    main()
