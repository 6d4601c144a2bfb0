"""The streaming shard runner: reader threads -> engine batches -> writer threads. No Prefect here.

One shard is a DataFrame of planned rows (see ``manifest.plan``). Reader threads check for an existing
output, fetch, decode and resize ahead into a bounded queue; the calling thread groups same-size
contents into batches for ``Engine.stylize_batch``; writer threads encode by the output extension and
upload atomically through ``storage.write_bytes``. Every row gets one metrics row; a bad row fails
alone with a one-line reason. Rerunning a shard skips the rows whose outputs already exist, and since
writes are atomic a killed worker never leaves a partial file that counts as done.
"""
from __future__ import annotations

import hashlib
import json
import os
import queue
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import pandas as pd
from PIL import Image

from . import cancel
from .errors import StyleCoreError
from .fsutil import remove_partials
from .images import encode_image, load_resized, png_level, style_long_side
from .options import FEED_FORWARD, StyleOptions, parse_style_weights

# Columns a plan row carries that are not passed through to the metrics unchanged.
PLAN_COLUMNS = ("row", "id", "content", "style", "style_weights", "method", "options_json", "options_hash",
                "output", "output_uri", "status", "content_root")
METRIC_COLUMNS = ("id", "row", "content", "style", "output", "output_uri", "status", "error", "read_ms",
                  "compute_ms", "write_ms", "total_ms", "width", "height", "method", "options_hash", "worker",
                  "device")


CPU_CALL_BATCH = 8  # rows per engine call on the CPU when batch_size is 0 (auto)
# Decoded contents waiting between the readers and the engine (RGB bytes): deep enough for a GPU's batches
# of small images (2,700 rows of 256²), shallow for large photos (seven 24-MP ones; at least one always passes).
READY_BYTES = 512 << 20
CONTENT_CACHE_BYTES = 256 << 20  # decoded contents kept per shard (RGB bytes), for rows that share a content
# Styles kept per shard, decoded (RGB bytes) and, apart, as fetched: a style is decoded at each content size
STYLE_CACHE_BYTES = 256 << 20
# Outputs (RGB bytes) waiting for the writers. It was a row count (16 + writers), so a GPU call of 64 rows
# blocked the calling thread, and the GPU with it, until the writers had encoded 40-odd images: with a simulated
# 150 img/s device (bench_shard.py --simulate) 64-row calls ran at 0.77 of the device's rate, now 0.92.
WRITE_BYTES = 512 << 20

# A quality evaluator (e.g. ``stylecore.quality.get_evaluator().evaluate_batch``) takes a batch of
# ``stylecore.quality.QualityItem`` and returns one dict of metric columns per item.
QualityFn = Callable[[Sequence[Any]], Sequence[dict[str, Any]]]


@dataclass
class _Item:
    """One row travelling through the pipeline."""

    index: int
    row: dict[str, Any]
    t0: float
    options: StyleOptions | None = None
    content: Image.Image | None = None
    styles: list[Image.Image] = field(default_factory=list)
    style_keys: list[str] = field(default_factory=list)  # cache keys of the styles' statistics (URI and content)
    weights: list[float] | None = None
    image: Image.Image | None = None
    nbytes: int = 0  # what it holds in a hand-off queue: the decoded content, later the output


def io_threads(kind: str) -> int:
    """Reader or writer threads per shard: ``$STYLIZE_READERS`` / ``$STYLIZE_WRITERS``, else one per CPU core
    between 4 and 16. Decoding large photos and uploading to S3 are what feed a GPU, and both scale with
    threads (Pillow and boto3 release the GIL)."""
    value = os.environ.get(f"STYLIZE_{kind.upper()}")
    if not value:
        return max(4, min(16, os.cpu_count() or 4))
    if not value.strip().isdigit() or int(value) < 1:
        raise StyleCoreError(f"STYLIZE_{kind.upper()}={value!r}: expected a whole number of threads >= 1")
    return int(value)


def worker_id() -> str:
    """``name:pid`` of this process (recorded per row); the name is ``$STYLIZE_WORKER_NAME`` or the host name."""
    return f"{os.environ.get('STYLIZE_WORKER_NAME') or socket.gethostname()}:{os.getpid()}"


def one_line(exc: BaseException) -> str:
    """A one-line error message: StyleCoreError messages as they are, others prefixed with their type."""
    text = str(exc) if isinstance(exc, StyleCoreError) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())[:500] or type(exc).__name__


def row_options(row: dict[str, Any]) -> StyleOptions:
    """The row's effective engine options (``options_json`` from the plan)."""
    doc = json.loads(row.get("options_json") or "{}")
    return StyleOptions.make(**(doc.get("options", doc) if isinstance(doc, dict) else {}))


class ImageCache:
    """Decoded images for one shard, keyed by (URI, long side): each fetched and decoded once (large JPEGs at
    a reduced scale, see ``images.load_resized``), concurrent readers of one key wait for the first.

    ``max_bytes`` bounds the pixels kept, least recently used out first, and a larger image is not kept.
    Failures are kept only with ``keep_failures`` (styles: a bad style fails each of its rows without another
    fetch); otherwise each row tries again, so a transient storage error fails one row. ``keep_files`` also keeps
    each URI's fetched bytes (as many as ``max_bytes``), so another size of the same image decodes without
    fetching again: styles are decoded at each content's size, so with ``size=0`` a shard of mixed photo sizes
    holds many sizes of one style, which ``max_bytes`` bounds. With ``keep_files`` each URI's first fetch is also
    hashed (``version_key``), so caches that outlive the shard (the engine's style statistics, the quality
    evaluator's) see a file replaced under the same URI as a new style."""

    def __init__(self, read_bytes: Callable[[str], bytes], max_pixels: int, max_bytes: int, *,
                 keep_files: bool = False, keep_failures: bool = False):
        self._read = read_bytes
        self._files: OrderedDict[str, bytes] | None = OrderedDict() if keep_files else None
        self._file_bytes = 0
        self._digests: dict[str, str] = {}
        self._max_pixels = max_pixels
        self._max_bytes = max_bytes
        self._keep_failures = keep_failures
        self._bytes = 0
        self._lock = threading.Lock()
        self._locks: dict[tuple[str, int], threading.Lock] = {}
        self._images: OrderedDict[tuple[str, int], Image.Image | BaseException] = OrderedDict()

    @property
    def held(self) -> tuple[int, int, int]:
        """(entries, decoded bytes, fetched file bytes) held now."""
        with self._lock:
            return len(self._images), self._bytes, self._file_bytes

    def version_key(self, uri: str) -> str:
        """``uri#<hash of its bytes>`` once ``uri`` was fetched here with ``keep_files``, else ``uri``."""
        with self._lock:
            digest = self._digests.get(uri)
        return f"{uri}#{digest}" if digest else uri

    def get(self, uri: str, long_side: int) -> Image.Image:
        """The image at ``uri`` resized to ``long_side`` (0 keeps its size)."""
        key = (uri, int(long_side or 0))
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            with self._lock:
                img = self._images.get(key)
                if img is not None:
                    self._images.move_to_end(key)
            if img is None:
                try:
                    img = load_resized(self._fetch(uri), key[1], name=uri, max_pixels=self._max_pixels)
                except Exception as e:  # noqa: BLE001 - raised below; kept for later rows only with keep_failures
                    img = e
                self._keep(key, img)
        if isinstance(img, BaseException):
            raise img
        return img

    def _fetch(self, uri: str) -> bytes:
        if self._files is None:
            return self._read(uri)
        with self._lock:
            data = self._files.get(uri)
            if data is not None:
                self._files.move_to_end(uri)
        if data is None:
            data = self._read(uri)
            digest = hashlib.blake2b(data, digest_size=12).hexdigest()
            with self._lock:
                self._digests.setdefault(uri, digest)  # the version this shard uses, even if refetched later
                if uri not in self._files and len(data) <= self._max_bytes:
                    self._files[uri] = data
                    self._file_bytes += len(data)
                    while self._file_bytes > self._max_bytes:
                        self._file_bytes -= len(self._files.popitem(last=False)[1])
        return data

    def _keep(self, key: tuple[str, int], img: Image.Image | BaseException) -> None:
        failed = isinstance(img, BaseException)
        size = 0 if failed else _nbytes(img)
        with self._lock:
            if (failed and not self._keep_failures) or size > self._max_bytes:
                self._locks.pop(key, None)
                return
            old = self._images.pop(key, None)  # two threads can load one key after its lock was dropped
            if isinstance(old, Image.Image):
                self._bytes -= _nbytes(old)
            self._images[key] = img
            self._bytes += size
            while self._bytes > self._max_bytes:
                gone_key, gone = self._images.popitem(last=False)
                self._locks.pop(gone_key, None)
                if isinstance(gone, Image.Image):
                    self._bytes -= _nbytes(gone)


def _nbytes(img: Image.Image) -> int:
    return img.width * img.height * 3  # decoded RGB


def call_batch(engine, method: str, hw: tuple[int, int]) -> int:
    """Rows of one method and content size (height, width) per engine call when ``batch_size`` is 0 (auto):
    for the feed-forward methods on GPUs one full forward pass (``engine.batch_limit``: 64 rows of 256², 16 of
    512² by default), else ``CPU_CALL_BATCH``. (Four passes per call measured no better with a simulated GPU, and
    worse on short shards, whose first call waits for more rows and whose last call's rows are written after
    all compute: 0.88 against 0.92 of the device's rate over 768 rows, equal over 2304.)"""
    limit = getattr(engine, "batch_limit", None)
    if limit is None or method not in FEED_FORWARD or str(getattr(engine, "device", "cpu")) == "cpu":
        return CPU_CALL_BATCH
    return max(1, int(limit(hw)))


def _remove_partials_of(paths: Sequence[str]) -> None:
    """Remove the temporary files that killed earlier attempts left for these written outputs: one listing per
    folder (``fsutil.remove_partials``). Cleaning never fails a shard."""
    folders: dict[str, list[str]] = {}
    for p in paths:
        folder, name = os.path.split(str(p))
        folders.setdefault(folder, []).append(name)
    for folder, names in folders.items():
        try:
            remove_partials(folder, names)
        except OSError:
            pass


class ByteGate:
    """Back-pressure by bytes between threads: ``enter(n)`` waits until ``n`` more bytes fit in ``budget``
    (one item always passes when nothing waits, however large) or ``stop`` is set; ``leave(n)`` frees them."""

    def __init__(self, budget: int, stop: threading.Event):
        self.budget, self.stop, self.held = budget, stop, 0
        self._cond = threading.Condition()

    def enter(self, n: int) -> None:
        with self._cond:
            self._cond.wait_for(lambda: not self.held or self.held + n <= self.budget or self.stop.is_set())
            self.held += n

    def leave(self, n: int) -> None:
        with self._cond:
            self.held -= n
            self._cond.notify_all()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()


def run_shard(rows: pd.DataFrame, engine, *, overwrite: bool = False, batch_size: int = 0, readers: int = 0,
              writers: int = 0, quality: QualityFn | None = None,
              on_progress: Callable[[int, int], None] | None = None, storage=None) -> pd.DataFrame:
    """Stylize every row of a shard with ``engine``; returns one metrics row per input row (same order).

    ``rows`` has the plan's columns (``content``, ``style``, ``style_weights``, ``options_json``,
    ``output``, ``output_uri``, ...). Rows whose outputs exist are ``skipped`` unless ``overwrite``.
    ``batch_size``: rows of one content size per engine call (0: ``call_batch``).
    ``readers`` / ``writers``: threads (0: ``io_threads``, from ``$STYLIZE_READERS`` / ``$STYLIZE_WRITERS`` or the
    CPU count). ``quality`` (optional) scores finished rows in batches; ``on_progress(done, total)`` is called from
    worker threads after each row. ``storage`` defaults to ``stylecore.storage``.
    """
    if storage is None:
        from . import storage
    records = rows.to_dict("records")
    n = len(records)
    worker, device = worker_id(), str(getattr(engine, "device", "cpu"))
    readers, writers = readers or io_threads("readers"), writers or io_threads("writers")
    png_level()  # a bad $STYLIZE_PNG_LEVEL fails the shard before any work, not each row at its write
    if hasattr(engine, "load_networks"):  # weights load here, not inside the first row's compute_ms
        engine.load_networks([str(rec.get("method") or "") for rec in records if rec.get("status") != "skipped"])
    results: list[dict[str, Any] | None] = [None] * n
    lock = threading.Lock()
    done = [0]
    batch_size = max(0, int(batch_size or 0))
    limits: dict[tuple, int] = {}  # (method, size) -> rows per engine call
    max_pixels = getattr(engine, "max_pixels", 0)
    styles = ImageCache(storage.read_bytes, max_pixels, STYLE_CACHE_BYTES, keep_files=True, keep_failures=True)
    # rows of one content with several styles (cross, sample:K) are adjacent and read by concurrent readers
    contents = ImageCache(storage.read_bytes, max_pixels, CONTENT_CACHE_BYTES)

    def finish(item: _Item, status: str, error: str = "", **timings) -> None:
        res = {"status": status, "error": error, "width": None, "height": None,
               "read_ms": None, "compute_ms": None, "write_ms": None}
        res.update(timings)
        res["total_ms"] = (time.perf_counter() - item.t0) * 1000 if status != "skipped" else None
        with lock:
            results[item.index] = res
            done[0] += 1
            count = done[0]
        if on_progress is not None:
            try:
                on_progress(count, n)
            except Exception:  # noqa: BLE001 - a progress display never breaks the shard
                pass

    todo: queue.Queue = queue.Queue()
    for i, rec in enumerate(records):
        todo.put(i)
    stop = threading.Event()
    ready: queue.Queue = queue.Queue()  # bounded by decoded bytes through `ready_gate`
    to_write: queue.Queue = queue.Queue()  # bounded by output bytes through `write_gate`
    ready_gate, write_gate = ByteGate(READY_BYTES, stop), ByteGate(WRITE_BYTES, stop)
    # outputs that exist already (written by an earlier attempt of this shard): on S3 found by listing the shard's
    # key range (a request per 1,000 keys) instead of a HEAD per row, 1 of the 3 requests a row made
    known = {} if overwrite else storage.existence(
        [str(rec["output_uri"]) for rec in records if str(rec.get("status") or "") != "skipped"], nonempty=True)
    written_local: list[str] = []  # local outputs written, whose killed earlier attempts may have left partials
    READERS_DONE = object()

    def done_before(rec: dict[str, Any]) -> bool:
        if overwrite:
            return False
        uri = str(rec["output_uri"])
        return str(rec.get("status") or "") == "skipped" or (known[uri] if uri in known else storage.has_data(uri))

    def read_one(i: int) -> _Item | None:
        rec = records[i]
        item = _Item(i, rec, time.perf_counter())
        try:
            if done_before(rec):
                finish(item, "skipped")
                return None
            item.options = row_options(rec)
            style_uris = [s for s in str(rec["style"]).split("|") if s]
            item.weights = parse_style_weights(rec.get("style_weights") or None, len(style_uris), sep="|")
            item.content = contents.get(rec["content"], item.options.size)
            long_side = style_long_side(item.content.size, item.options.style_size)
            item.styles = [styles.get(u, long_side) for u in style_uris]
            item.style_keys = [styles.version_key(u) for u in style_uris]
        except Exception as e:  # noqa: BLE001 - a bad row fails alone
            finish(item, "failed", one_line(e), read_ms=(time.perf_counter() - item.t0) * 1000)
            return None
        item.row = dict(rec, _read_ms=(time.perf_counter() - item.t0) * 1000)
        return item

    def hand_over(item: _Item) -> None:
        item.nbytes = _nbytes(item.content)
        ready_gate.enter(item.nbytes)
        ready.put(item)

    def reader() -> None:
        try:
            while not stop.is_set() and not cancel.cancelled():
                try:
                    i = todo.get_nowait()
                except queue.Empty:
                    return
                item = read_one(i)
                if item is not None:
                    hand_over(item)
        finally:
            ready.put(READERS_DONE)

    def writer() -> None:
        while True:
            item = to_write.get()
            if item is None:
                return
            write_gate.leave(item.nbytes)
            t = time.perf_counter()
            try:
                uri = item.row["output_uri"]
                storage.write_bytes(uri, encode_image(item.image, str(item.row["output"])))
                if not str(uri).startswith("s3://"):
                    written_local.append(storage.resolve(uri))  # its folder is cleaned of partials at the end
            except Exception as e:  # noqa: BLE001
                finish(item, "failed", one_line(e), read_ms=item.row["_read_ms"], compute_ms=item.row["_compute_ms"],
                       write_ms=(time.perf_counter() - t) * 1000)
                continue
            w, h = item.image.size
            finish(item, "ok", read_ms=item.row["_read_ms"], compute_ms=item.row["_compute_ms"],
                   write_ms=(time.perf_counter() - t) * 1000, width=w, height=h, **item.row.get("_quality", {}))

    read_threads = [threading.Thread(target=reader, name=f"shard-read-{k}", daemon=True)
                    for k in range(max(1, readers))]
    write_threads = [threading.Thread(target=writer, name=f"shard-write-{k}", daemon=True)
                     for k in range(max(1, writers))]
    for t in read_threads + write_threads:
        t.start()

    def compute(batch: list[_Item]) -> None:
        from .engine import Request

        reqs = [Request(content=it.content, styles=it.styles, style_keys=it.style_keys,
                        style_weights=it.weights, method=str(it.row["method"]), options=it.options,
                        key=str(it.index), names=[str(it.row["content"]), *str(it.row["style"]).split("|")])
                for it in batch]
        error = None
        try:
            outs = engine.stylize_batch(reqs)
        except Exception as e:  # noqa: BLE001 - e.g. device OOM: retry one by one, then fail the row
            error = one_line(e)
        if error is not None:  # outside the handler, whose traceback would pin the failed batch's tensors
            if len(batch) > 1:
                for it in batch:
                    compute([it])
                return
            outs = [type("R", (), {"image": None, "error": error, "compute_ms": None})()]
        good = []
        for it, res in zip(batch, outs):
            it.row["_compute_ms"] = res.compute_ms
            if res.image is None:
                finish(it, "failed", " ".join(str(res.error or "no output").split()), read_ms=it.row["_read_ms"],
                       compute_ms=res.compute_ms)
            else:
                it.image = res.image
                good.append(it)
        if quality is not None and good:
            t = time.perf_counter()
            try:
                from .quality import QualityItem

                scores = list(quality([QualityItem(it.content, it.styles, it.image, it.weights, it.style_keys)
                                       for it in good]))
            except Exception as e:  # noqa: BLE001 - scoring never fails a row
                scores = [{"quality_error": one_line(e)}] * len(good)
            per_row = (time.perf_counter() - t) * 1000 / len(good)
            for it, sc in zip(good, scores):
                it.row["_quality"] = dict(sc, quality_ms=per_row)
        for it in good:
            it.content = None  # free memory early; the writer only needs the output
            it.styles = []
            it.nbytes = _nbytes(it.image)
            write_gate.enter(it.nbytes)
            to_write.put(it)

    buckets: dict[tuple, list[_Item]] = {}

    def flush(key) -> None:
        compute(buckets.pop(key))

    try:
        finished_readers = 0
        while finished_readers < len(read_threads):
            try:
                got = ready.get(timeout=0.02) if buckets else ready.get()
            except queue.Empty:
                flush(max(buckets, key=lambda k: len(buckets[k])))  # nothing arriving: run the fullest bucket
                continue
            if got is READERS_DONE:
                finished_readers += 1
                continue
            ready_gate.leave(got.nbytes)
            key = (got.row["method"], got.content.size, got.row.get("options_hash"), len(got.styles))
            buckets.setdefault(key, []).append(got)
            if key[:2] not in limits:
                w, h = got.content.size
                limits[key[:2]] = batch_size or call_batch(engine, key[0], (h, w))
            if len(buckets[key]) >= limits[key[:2]]:
                flush(key)
            cancel.check()  # an interrupted process stops after the batch in progress
        for key in list(buckets):
            cancel.check()
            flush(key)
    finally:
        stop.set()
        ready_gate.wake()
        write_gate.wake()
        for _ in write_threads:
            to_write.put(None)
        for t in write_threads:
            t.join()
        _remove_partials_of(written_local)

    out = []
    for rec, res in zip(records, results):
        res = res or {"status": "failed", "error": "internal: row was not processed"}
        m = {k: rec.get(k) for k in ("id", "row", "content", "style", "output", "output_uri", "method", "options_hash")}
        m.update(res)
        m["worker"], m["device"] = worker, device
        for k, v in rec.items():
            if k not in PLAN_COLUMNS and not k.startswith("_") and k not in m:
                m[k] = v
        out.append(m)
    frame = pd.DataFrame(out)
    for col in METRIC_COLUMNS:
        if col not in frame.columns:
            frame[col] = None
    for col in ("read_ms", "compute_ms", "write_ms", "total_ms"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    for col in ("width", "height"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("Int64")
    frame["error"] = frame["error"].fillna("").astype(str)
    first = [c for c in METRIC_COLUMNS]
    return frame[first + [c for c in frame.columns if c not in first]]


__all__ = ["run_shard", "ImageCache", "worker_id", "one_line", "row_options", "METRIC_COLUMNS"]
