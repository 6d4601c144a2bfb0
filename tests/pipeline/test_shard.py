"""The streaming shard runner with the real engine and the real storage layer (local disk)."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from stylecore import manifest, storage
from stylecore.engine import get_engine
from stylecore.options import StyleOptions
from stylecore.shard import METRIC_COLUMNS, run_shard
from tests.conftest import make_photo

from tests.pipeline.helpers import ENGINE, write_manifest


class CountingEngine:
    """The real process engine, counting ``stylize_batch`` calls and the content sizes of each batch."""

    def __init__(self, engine):
        self.engine, self.device, self.max_pixels = engine, engine.device, engine.max_pixels
        self.batches: list[list[tuple[int, int]]] = []

    def stylize_batch(self, requests):
        self.batches.append([r.content.size for r in requests])
        return self.engine.stylize_batch(requests)


def _plan(tmp_path, manifest_path):
    opts = StyleOptions.make(size=ENGINE["size"])
    return manifest.plan(str(manifest_path), str(tmp_path / "out"), method=ENGINE["method"], options=opts,
                         encoder=ENGINE["encoder"], decoder=ENGINE["decoder"], fmt="png")


@pytest.fixture(scope="module")
def engine():
    return get_engine(ENGINE["encoder"], ENGINE["decoder"], None, ENGINE["device"], progress=False)


def test_bad_rows_fail_alone_with_reasons(tmp_path, engine):
    good = make_photo(48, 40, seed=9)
    buf = io.BytesIO()
    good.save(buf, format="JPEG")
    (tmp_path / "content").mkdir()
    (tmp_path / "content" / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (tmp_path / "content" / "notes.jpg").write_text("this is not an image\n")
    bad = [{"content": "content/truncated.jpg", "style": "styles/s0.png", "label": "x"},
           {"content": "content/missing.jpg", "style": "styles/s0.png", "label": "y"},
           {"content": "content/notes.jpg", "style": "styles/s1.png", "label": "z"},
           {"content": "content/c000.jpg", "style": "styles/nostyle.png", "label": "w"}]
    path = write_manifest(tmp_path, 5, extra_rows=bad)
    plan = _plan(tmp_path, path)
    counting = CountingEngine(engine)
    metrics = run_shard(plan.rows, counting, batch_size=4)

    assert list(metrics.columns[: len(METRIC_COLUMNS)]) == list(METRIC_COLUMNS)
    assert len(metrics) == len(plan.rows) == 9
    assert metrics["row"].tolist() == list(range(9))
    status = metrics.set_index("row")["status"]
    errors = metrics.set_index("row")["error"]
    assert (status[:5] == "ok").all()
    assert status[5:].tolist() == ["failed"] * 4
    assert "truncated" in errors[5] and "truncated.jpg" in errors[5]
    assert "missing.jpg" in errors[6] and "not found" in errors[6]
    assert "notes.jpg" in errors[7] and "not an image" in errors[7]
    assert "nostyle.png" in errors[8] and "not found" in errors[8]
    assert all("\n" not in e for e in errors)
    # Passthrough columns and per-row details.
    assert metrics["label"].tolist() == ["class0", "class1", "class2", "class0", "class1", "x", "y", "z", "w"]
    ok = metrics[metrics["status"] == "ok"]
    assert ok[["read_ms", "compute_ms", "write_ms", "total_ms"]].notna().all().all()
    assert (ok["total_ms"] >= ok["compute_ms"]).all()
    assert set(ok["device"]) == {"cpu"} and ok["worker"].str.contains(":").all()
    umask = os.umask(0)
    os.umask(umask)
    for _, r in ok.iterrows():
        assert os.stat(r["output_uri"]).st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
        img = Image.open(r["output_uri"])
        img.load()
        assert img.size == (r["width"], r["height"]) and max(img.size) == 32
    # Failed rows wrote nothing; only ok rows reached the engine.
    assert sum(len(b) for b in counting.batches) == 5
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(ok["output"])


def test_rerun_skips_written_rows_without_engine_work(tmp_path, engine):
    path = write_manifest(tmp_path, 6)
    rows = _plan(tmp_path, path).rows
    first = run_shard(rows, CountingEngine(engine), batch_size=4)
    assert (first["status"] == "ok").all()
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()}

    counting = CountingEngine(engine)
    done: list[tuple[int, int]] = []
    again = run_shard(rows, counting, on_progress=lambda d, t: done.append((d, t)))
    assert (again["status"] == "skipped").all()
    assert counting.batches == []
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()} == mtimes
    assert sorted(done) == [(i, 6) for i in range(1, 7)]

    # overwrite=True redoes every row.
    counting = CountingEngine(engine)
    third = run_shard(rows, counting, overwrite=True)
    assert (third["status"] == "ok").all() and sum(len(b) for b in counting.batches) == 6

    # An empty file at an output's key (another tool's, never one of ours: outputs are written whole) is not done:
    # neither for the plan nor for the shard, which writes the row again.
    emptied = Path(rows["output_uri"].iat[2])
    emptied.write_bytes(b"")
    replan = _plan(tmp_path, path).rows
    assert replan["status"].tolist() == ["skipped"] * 2 + ["pending"] + ["skipped"] * 3
    fourth = run_shard(rows, CountingEngine(engine))
    assert fourth["status"].tolist() == ["skipped"] * 2 + ["ok"] + ["skipped"] * 3
    assert Image.open(emptied).size == (first["width"].iat[2], first["height"].iat[2])


def test_batches_hold_same_size_contents(tmp_path, engine):
    (tmp_path / "content").mkdir()
    rows = []
    for i in range(8):
        # Landscape and portrait contents give two output sizes at size=32.
        make_photo(48, 40, seed=i).save(tmp_path / "content" / f"l{i}.jpg") if i % 2 else \
            make_photo(40, 48, seed=i).save(tmp_path / "content" / f"l{i}.jpg")
        rows.append({"content": f"content/l{i}.jpg", "style": "styles/s0.png"})
    path = write_manifest(tmp_path, 0, extra_rows=rows, styles=1)
    counting = CountingEngine(engine)
    metrics = run_shard(_plan(tmp_path, path).rows, counting, batch_size=4)
    assert (metrics["status"] == "ok").all()
    assert sum(len(b) for b in counting.batches) == 8
    assert all(len(set(b)) == 1 for b in counting.batches)
    assert max(len(b) for b in counting.batches) > 1


class GPUSizedEngine(CountingEngine):
    """The real engine behind an engine that says it is on a GPU whose forward passes take ``per_pass`` images."""

    def __init__(self, engine, per_pass: int):
        super().__init__(engine)
        self.device, self.per_pass, self.asked = "cuda:0", per_pass, []

    def batch_limit(self, hw):
        self.asked.append(hw)
        return self.per_pass


def test_auto_batch_size_gathers_one_forward_pass_per_call_on_gpus(tmp_path, engine):
    path = write_manifest(tmp_path, 24, styles=1)
    rows = _plan(tmp_path, path).rows
    gpu = GPUSizedEngine(engine, per_pass=11)
    metrics = run_shard(rows, gpu)  # batch_size 0: auto
    assert (metrics["status"] == "ok").all()
    assert sum(len(b) for b in gpu.batches) == 24
    assert 8 < max(len(b) for b in gpu.batches) <= 11  # above the CPU's 8, never above one pass
    w, h = gpu.batches[0][0]
    assert gpu.asked == [(h, w)]  # asked once per method and size, as (height, width)

    cpu = CountingEngine(engine)  # on the CPU: 8 rows per call
    run_shard(rows, cpu, overwrite=True)
    assert max(len(b) for b in cpu.batches) <= 8 and sum(len(b) for b in cpu.batches) == 24


def test_slow_writers_do_not_hold_up_the_next_engine_call(tmp_path, engine):
    """Outputs wait for the writers within WRITE_BYTES, not within a row count: a GPU call of 40 rows used to
    block the calling thread (and the GPU) until the writers had taken all but 17 of them."""
    from stylecore import shard

    import threading
    import time

    rows = _plan(tmp_path, write_manifest(tmp_path, 80, styles=1)).rows
    written, writes_at_call = [0], []

    class SlowStorage(CountingStorage):
        def write_bytes(self, uri, data):
            time.sleep(0.02)
            storage.write_bytes(uri, data)
            written[0] += 1

    class Recording(GPUSizedEngine):
        def stylize_batch(self, requests):
            writes_at_call.append(written[0])
            return super().stylize_batch(requests)

    gpu = Recording(engine, per_pass=40)  # auto: 40 rows per call
    metrics = run_shard(rows, gpu, readers=2, writers=1, storage=SlowStorage())
    assert shard.WRITE_BYTES >= 80 * 32 * 27 * 3  # every output of this shard fits
    assert (metrics["status"] == "ok").all() and sum(len(b) for b in gpu.batches) == 80
    assert len(gpu.batches) >= 2 and len(gpu.batches[0]) == 40
    # the second call starts while the first call's rows wait for the writer (the row-bounded queue made it wait
    # for 22 of the 40 to be written; at 20 ms per write that is the GPU idle for 0.45 s)
    assert writes_at_call[1] <= 5, writes_at_call
    assert threading.active_count() < 10  # the writer and reader threads have ended


def test_partials_of_killed_attempts_are_removed_with_one_listing_per_folder(tmp_path, engine, monkeypatch):
    """A killed writer leaves ``.{name}.<random>.part`` beside its output. Rewriting the row removes it; the folder
    is listed once per shard (a glob per written file cost 33 ms each in a folder of 50,000 outputs)."""
    import os

    from stylecore import fsutil

    rows = _plan(tmp_path, write_manifest(tmp_path, 6, styles=1)).rows
    out = tmp_path / "out"
    out.mkdir()
    names = [os.path.basename(str(u)) for u in rows["output_uri"]]
    planted = [out / f".{names[0]}.a1b2c3d4.part", out / f".{names[3]}.q_9z8y7x.part"]
    other = out / ".not-this-shard.jpg.abcdefgh.part"
    for p in planted + [other]:
        p.write_bytes(b"half an image")
    listings = []
    real_scandir = os.scandir
    monkeypatch.setattr(fsutil.os, "scandir", lambda p=".": listings.append(str(p)) or real_scandir(p))
    metrics = run_shard(rows, engine, writers=3)
    assert (metrics["status"] == "ok").all()
    assert not any(p.exists() for p in planted) and other.exists()
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted(names)
    assert listings.count(str(out)) == 1


def test_write_failure_fails_the_row(tmp_path, engine):
    path = write_manifest(tmp_path, 2)
    rows = _plan(tmp_path, path).rows
    (tmp_path / "out").mkdir()
    # A directory where the first output file should go: the write fails, the other row is ok.
    storage_path = rows["output_uri"].iloc[0]
    (tmp_path / "out" / rows["output"].iloc[0]).mkdir()
    metrics = run_shard(rows, engine)
    assert metrics["status"].tolist() == ["failed", "ok"]
    assert rows["output"].iloc[0] in metrics["error"].iloc[0] or storage_path in metrics["error"].iloc[0]
    assert not storage.exists(storage_path)


def test_reader_and_writer_threads_follow_the_environment(tmp_path, engine, monkeypatch):
    import threading

    from stylecore.errors import StyleCoreError
    from stylecore.shard import io_threads

    monkeypatch.delenv("STYLIZE_READERS", raising=False)
    assert io_threads("readers") == max(4, min(16, os.cpu_count() or 4))
    monkeypatch.setenv("STYLIZE_READERS", "1")
    monkeypatch.setenv("STYLIZE_WRITERS", "3")
    plan = _plan(tmp_path, write_manifest(tmp_path, 3))
    names: set[str] = set()

    def seen(done, total):
        names.update(t.name for t in threading.enumerate() if t.name.startswith("shard-"))

    metrics = run_shard(plan.rows, engine, batch_size=2, on_progress=seen)
    assert (metrics["status"] == "ok").all()
    assert {n for n in names if n.startswith("shard-read")} <= {"shard-read-0"}
    # writers live until the shard ends, so every progress call sees all of them
    assert {n for n in names if n.startswith("shard-write")} == {"shard-write-0", "shard-write-1", "shard-write-2"}
    monkeypatch.setenv("STYLIZE_READERS", "many")
    with pytest.raises(StyleCoreError, match="STYLIZE_READERS='many': expected a whole number of threads >= 1"):
        run_shard(plan.rows, engine)
    monkeypatch.setenv("STYLIZE_READERS", "1")
    monkeypatch.setenv("STYLIZE_PNG_LEVEL", "11")
    with pytest.raises(StyleCoreError, match="STYLIZE_PNG_LEVEL='11': expected a zlib level from 0 to 9"):
        run_shard(plan.rows, engine, overwrite=True)  # the whole shard, before any row is read


class CountingStorage:
    """The real storage module, counting ``read_bytes`` per URI."""

    def __init__(self):
        self.reads: dict[str, int] = {}

    def __getattr__(self, name):
        return getattr(storage, name)

    def read_bytes(self, uri):
        self.reads[uri] = self.reads.get(uri, 0) + 1
        return storage.read_bytes(uri)


def test_a_content_with_several_styles_is_read_once_and_a_bad_one_fails_each_row(tmp_path, engine):
    write_manifest(tmp_path, 2, styles=3)
    (tmp_path / "content" / "bad.jpg").write_text("not an image")
    rows = [{"content": f"content/{c}", "style": f"styles/s{k}.png"}
            for c in ("c000.jpg", "c001.jpg", "bad.jpg") for k in range(3)]
    path = tmp_path / "cross.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    plan = _plan(tmp_path, path)
    counting = CountingStorage()
    metrics = run_shard(plan.rows, engine, batch_size=4, readers=4, storage=counting)
    content_reads = {uri.rsplit("/", 1)[-1]: n for uri, n in counting.reads.items() if "/content/" in uri}
    # a failed content is not cached: each of its rows tries again (a transient error fails one row only)
    assert content_reads == {"c000.jpg": 1, "c001.jpg": 1, "bad.jpg": 3}
    assert sum(n for uri, n in counting.reads.items() if "/styles/" in uri) == 3
    assert metrics["status"].tolist() == ["ok"] * 6 + ["failed"] * 3
    assert metrics["error"].iloc[6:].nunique() == 1 and "not an image" in metrics["error"].iloc[6]
    # the shared decoded content gives the pixels of a run that reads each row alone
    shared = [np.asarray(Image.open(storage.resolve(u))).astype(int) for u in metrics["output_uri"].iloc[:6]]
    alone = run_shard(plan.rows.iloc[:6], engine, batch_size=1, readers=1, overwrite=True)
    assert (alone["status"] == "ok").all()
    for i, uri in enumerate(alone["output_uri"]):
        assert np.abs(np.asarray(Image.open(storage.resolve(uri))).astype(int) - shared[i]).max() <= 1


def _recording_reader(reads: list[str]):
    """``storage.read_bytes`` that appends each URI it reads to ``reads``."""
    def read(uri):
        reads.append(uri)
        return storage.read_bytes(uri)
    return read


def test_image_cache_keeps_at_most_its_byte_budget(tmp_path):
    from stylecore.shard import ImageCache

    for i in range(3):
        make_photo(40, 30, seed=i).save(tmp_path / f"p{i}.png")
    reads: list[str] = []
    read = _recording_reader(reads)

    cache = ImageCache(read, 0, 2 * 40 * 30 * 3)  # room for two 40x30 images
    for i in (0, 1, 0, 2, 0, 1):
        cache.get(str(tmp_path / f"p{i}.png"), 0)
    # p0 stays (recently used); p1 is evicted by p2 and read again
    assert [r.rsplit("/", 1)[-1] for r in reads] == ["p0.png", "p1.png", "p2.png", "p1.png"]
    tiny = ImageCache(read, 0, 100)  # smaller than any image: nothing is kept
    reads.clear()
    tiny.get(str(tmp_path / "p0.png"), 0)
    tiny.get(str(tmp_path / "p0.png"), 0)
    assert len(reads) == 2


def test_a_style_used_at_many_sizes_is_fetched_once_and_kept_within_its_budget(tmp_path):
    """Styles are decoded at each content's size; with ``size=0`` a shard of mixed photo sizes used to keep every
    size of a style for the whole shard (60 sizes of a 1200x900 style: 67 MB held for a 3 MB style)."""
    from stylecore.shard import ImageCache

    make_photo(40, 30, seed=3).save(tmp_path / "s.png")
    reads: list[str] = []
    read = _recording_reader(reads)

    styles = ImageCache(read, 0, 10 * 32 * 24 * 3, keep_files=True, keep_failures=True)
    uri = str(tmp_path / "s.png")
    assert styles.get(uri, 20).size == (20, 15) and styles.get(uri, 32).size == (32, 24)
    assert styles.get(uri, 20).size == (20, 15)
    assert reads == [uri]
    for side in range(8, 40):
        assert max(styles.get(uri, side).size) == side
    entries, decoded, files = styles.held
    assert reads == [uri] and 0 < decoded <= 10 * 32 * 24 * 3 and files == (tmp_path / "s.png").stat().st_size
    assert entries >= 5  # the most recent sizes
    with pytest.raises(Exception, match="not found|No such file"):
        styles.get(str(tmp_path / "missing.png"), 20)
    with pytest.raises(Exception, match="not found|No such file"):
        styles.get(str(tmp_path / "missing.png"), 20)
    assert reads.count(str(tmp_path / "missing.png")) == 1  # a failed style is kept: its rows fail without a fetch


def test_two_loads_of_one_key_are_counted_once(tmp_path):
    """A failed load drops the key's lock while another reader still waits on it; a third reader then loads the key
    beside the waiting one. Both keep it: the bytes used to be counted twice and never given back, until the cache
    kept nothing."""
    import threading
    import time

    from stylecore.shard import ImageCache

    make_photo(64, 64, seed=1).save(tmp_path / "k.png")
    uri, calls = str(tmp_path / "k.png"), [0]
    second_waits, third_started = threading.Event(), threading.Event()

    def read(u):
        calls[0] += 1
        if calls[0] == 1:  # a transient failure while the second reader waits for the key's lock
            second_waits.wait()
            time.sleep(0.1)
            raise OSError("read timed out")
        if calls[0] == 2:  # the second reader, under the dropped lock, loads slowly
            third_started.wait(5)
        if calls[0] == 3:  # the third reader got a new lock and loads beside it
            third_started.set()
        return storage.read_bytes(u)

    one = 64 * 64 * 3
    cache = ImageCache(read, 0, int(one * 1.5))
    results = {}

    def get(name):
        try:
            results[name] = cache.get(uri, 0).size
        except OSError as e:
            results[name] = str(e)

    first = threading.Thread(target=get, args=("first",))
    first.start()
    time.sleep(0.05)
    second = threading.Thread(target=get, args=("second",))
    second.start()
    time.sleep(0.05)
    second_waits.set()
    first.join()
    time.sleep(0.05)
    third = threading.Thread(target=get, args=("third",))
    third.start()
    second.join(10)
    third.join(10)
    assert results == {"first": "read timed out", "second": (64, 64), "third": (64, 64)}
    assert cache.held[:2] == (1, one)


def test_decoded_rows_waiting_for_the_engine_stay_within_ready_bytes(tmp_path, engine, monkeypatch):
    import time

    from stylecore import shard

    plan = _plan(tmp_path, write_manifest(tmp_path, 40, styles=1))
    row_bytes = 32 * 27 * 3  # a 48x40 photo decoded at size 32
    monkeypatch.setattr(shard, "READY_BYTES", 3 * row_bytes)
    counting = CountingStorage()
    contents_read = []

    class SlowFirstCall(CountingEngine):
        def stylize_batch(self, requests):
            if not self.batches:  # the readers run ahead as far as the budget lets them
                time.sleep(0.4)
                contents_read.append(sum(n for u, n in counting.reads.items() if "/content/" in u))
            return super().stylize_batch(requests)

    slow = SlowFirstCall(engine)
    metrics = run_shard(plan.rows, slow, batch_size=8, readers=2, storage=counting)
    assert (metrics["status"] == "ok").all() and sum(len(b) for b in slow.batches) == 40
    assert slow.batches[0] == [(32, 27)] * 8
    # the first batch, three rows in the queue and one held by each reader (the count-bounded queue before took 28)
    assert contents_read[0] <= 8 + 3 + 2

    monkeypatch.setattr(shard, "READY_BYTES", 1)  # smaller than one row: rows still pass one at a time
    again = run_shard(plan.rows, CountingEngine(engine), batch_size=8, readers=2, overwrite=True)
    assert (again["status"] == "ok").all()


def test_on_s3_outputs_of_an_earlier_attempt_are_found_by_one_listing(tmp_path, engine, s3, s3_proxy):
    """A shard skips the outputs an earlier attempt wrote after the plan was made, found by listing the shard's key
    range: a row costs a GET and a PUT, where it cost a HEAD too."""
    write_manifest(tmp_path, 12, styles=1)
    b = s3.bucket()
    for path in sorted((tmp_path / "content").iterdir()) + [tmp_path / "styles" / "s0.png"]:
        s3.put(b, f"in/{path.parent.name}/{path.name}", path.read_bytes())
    rows = pd.DataFrame({"content": [f"s3://{b}/in/content/c{i:03d}.jpg" for i in range(12)],
                         "style": f"s3://{b}/in/styles/s0.png"})
    plan = manifest.plan(rows, f"s3://{b}/out", method=ENGINE["method"], options=StyleOptions.make(size=ENGINE["size"]),
                         encoder=ENGINE["encoder"], decoder=ENGINE["decoder"], fmt="png")
    assert plan.counts() == {"pending": 12}
    earlier = plan.rows["output_uri"].iloc[[0, 5, 6, 11]]
    for uri in earlier:  # written by an attempt that was killed before it reported
        storage.write_bytes(uri, b"done")
    s3_proxy.requests.clear()
    metrics = run_shard(plan.rows, engine, batch_size=4, readers=3, writers=2)
    assert metrics.loc[metrics["status"] == "skipped", "output_uri"].tolist() == earlier.tolist()
    assert (metrics["status"] == "ok").sum() == 8
    methods = [r.split(" ", 1)[0] for r in s3_proxy.requests]
    lists = [r for r in s3_proxy.requests if "list-type=2" in r]
    assert "HEAD" not in methods and len(lists) == 1
    assert methods.count("PUT") == 8 and methods.count("GET") == 1 + 8 + 1  # the listing, 8 contents, the style
    assert storage.read_bytes(earlier.iloc[0]) == b"done"  # left as it was


def test_a_style_file_replaced_under_its_path_is_a_new_style_for_a_long_lived_engine(tmp_path, engine):
    """The process engine outlives shards (a worker serving many runs) and caches style statistics by key: the
    key holds a hash of the style's bytes, so a style replaced under the same path is encoded again, and the
    outputs are those of a fresh engine with the new style."""
    from stylecore.engine import Engine
    from tests.conftest import make_texture

    def shard(out: str, eng) -> Image.Image:
        rows = pd.DataFrame({"content": [str(tmp_path / "c.jpg")], "style": [str(tmp_path / "style.png")]})
        plan = manifest.plan(rows, str(tmp_path / out), method=ENGINE["method"],
                             options=StyleOptions.make(size=ENGINE["size"]), encoder=ENGINE["encoder"],
                             decoder=ENGINE["decoder"], fmt="png")
        metrics = run_shard(plan.rows, eng, batch_size=1, readers=1, writers=1)
        assert metrics["status"].tolist() == ["ok"], metrics["error"].tolist()
        return np.asarray(Image.open(plan.rows["output_uri"].iloc[0]).convert("RGB")).astype(int)

    make_photo(48, 40, seed=3).save(tmp_path / "c.jpg")
    make_texture(32, seed=11).save(tmp_path / "style.png")
    first = shard("out1", engine)
    misses = engine.style_cache.misses
    assert np.array_equal(shard("out2", engine), first) and engine.style_cache.misses == misses  # same file: cached
    Image.fromarray(255 - np.asarray(make_texture(32, seed=12))).save(tmp_path / "style.png")  # replaced
    second = shard("out3", engine)
    assert engine.style_cache.misses == misses + 1
    fresh = shard("out4", Engine(ENGINE["encoder"], ENGINE["decoder"], None, ENGINE["device"], progress=False))
    assert np.array_equal(second, fresh)
    assert np.abs(second - first).mean() > 5  # the new style shows


def test_weights_load_before_the_first_row_is_timed(tmp_path, monkeypatch):
    """A fresh engine loads its networks before the first engine call, so no row's compute_ms includes reading
    the weights (a slow read, here 2 s, used to land on the first row and skew the report's max/p95)."""
    import time as _time

    import stylecore.engine as engine_module
    from stylecore.engine import Engine

    real = engine_module.load_adain_decoder

    def slow_decoder(spec):
        _time.sleep(2.0)
        return real(spec)

    monkeypatch.setattr(engine_module, "load_adain_decoder", slow_decoder)
    fresh = Engine(ENGINE["encoder"], ENGINE["decoder"], None, ENGINE["device"], progress=False)
    rows = _plan(tmp_path, write_manifest(tmp_path, 3)).rows
    metrics = run_shard(rows, fresh)
    assert (metrics["status"] == "ok").all(), metrics["error"].tolist()
    assert metrics["compute_ms"].max() < 1500, metrics["compute_ms"].tolist()


def test_too_small_rows_name_their_files(tmp_path, engine):
    """A content or style too small for the method after resizing fails its row, naming the file (not "content")."""
    (tmp_path / "content").mkdir()
    make_photo(64, 2, seed=3).save(tmp_path / "content" / "strip.png")  # 32x1 at --size 32
    make_photo(48, 40, seed=4).save(tmp_path / "content" / "ok.png")
    (tmp_path / "styles").mkdir()
    make_photo(40, 40, seed=5).save(tmp_path / "styles" / "s.png")
    make_photo(300, 2, seed=6).save(tmp_path / "styles" / "thin.png")  # 32x0.2 -> 32x1 at the content's size
    pd.DataFrame({"content": ["content/strip.png", "content/ok.png", "content/ok.png"],
                  "style": ["styles/s.png", "styles/thin.png", "styles/s.png"]}).to_csv(tmp_path / "m.csv", index=False)
    metrics = run_shard(_plan(tmp_path, tmp_path / "m.csv").rows, engine, batch_size=4)
    assert metrics["status"].tolist() == ["failed", "failed", "ok"]
    assert metrics["error"].iat[0].startswith(str(tmp_path / "content" / "strip.png") + ": 32x1 px is too small")
    assert metrics["error"].iat[1].startswith(str(tmp_path / "styles" / "thin.png") + ": 32x1 px is too small")
