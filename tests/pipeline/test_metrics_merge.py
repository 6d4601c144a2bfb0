"""Merging shard metrics into one row per plan row, including the rows of a shard that never reported."""
from __future__ import annotations

import pandas as pd

from stylecore import manifest, storage, tables
from tasks.metrics import merge_metrics


def test_rows_of_a_lost_shard_are_ok_when_written_and_failed_otherwise(s3, s3_proxy):
    b = s3.bucket()
    rows = pd.DataFrame({"content": [f"s3://{b}/in/c{i:02d}.jpg" for i in range(10)], "style": f"s3://{b}/in/s.png",
                         "label": [f"l{i}" for i in range(10)]})
    plan = manifest.plan(rows, f"s3://{b}/out", method="adain", encoder="random:0", decoder="random:1")
    first, lost = plan.rows.iloc[:4], plan.rows.iloc[4:]
    shards = []
    for index, part in enumerate((first, lost)):
        uri = f"s3://{b}/out/_reports/shards/{index:05d}"
        tables.write_parquet(part, uri + ".parquet")
        shards.append({"index": index, "shard": uri + ".parquet", "metrics": uri + ".metrics.parquet"})
    done = first.assign(status="ok", error="")
    tables.write_parquet(done, shards[0]["metrics"])
    for uri in lost["output_uri"].iloc[[1, 4]]:  # the lost shard's worker wrote two outputs before it died
        storage.write_bytes(uri, b"x")
    s3_proxy.requests.clear()
    merged = merge_metrics(plan.rows, shards, {0: {"status": "ok"}, 1: {"status": "failed", "error": "worker lost"}})
    assert merged["row"].tolist() == list(range(10)) and merged["label"].tolist() == rows["label"].tolist()
    assert merged["status"].tolist() == ["ok"] * 4 + ["failed", "ok", "failed", "failed", "ok", "failed"]
    assert set(merged.loc[merged["status"] == "failed", "error"]) == {"shard 00001 did not finish: worker lost"}
    # the lost shard's outputs are found by one listing, not a HEAD per row
    assert not any(r.startswith("HEAD") for r in s3_proxy.requests)
    assert sum("list-type=2" in r for r in s3_proxy.requests) == 1

    # with overwrite the outputs that exist may be the ones the run was to replace: the lost shard's rows all fail
    again = merge_metrics(plan.rows, shards, {0: {"status": "ok"}, 1: {"status": "failed", "error": "worker lost"}},
                          overwrite=True)
    assert again["status"].tolist() == ["ok"] * 4 + ["failed"] * 6


def test_lost_shard_rows_the_listing_leaves_out_are_checked_in_parallel(tmp_path, monkeypatch):
    import threading
    import time

    rows = pd.DataFrame({"content": [str(tmp_path / f"c{i:02d}.jpg") for i in range(24)], "style": str(tmp_path / "s.png")})
    plan = manifest.plan(rows, str(tmp_path / "out"), method="adain", encoder="random:0", decoder="random:1")
    uri = str(tmp_path / "shard-00000")
    tables.write_parquet(plan.rows, uri + ".parquet")
    for out in plan.rows["output_uri"].iloc[::3]:
        storage.write_bytes(out, b"x")
    real, running, peak, lock = storage.has_data, [0], [0], threading.Lock()

    def slow_has_data(u):  # a HEAD request's latency
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        try:
            return real(u)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(storage, "has_data", slow_has_data)  # an output counts when it holds data
    merged = merge_metrics(plan.rows, [{"index": 0, "shard": uri + ".parquet", "metrics": uri + ".metrics.parquet"}],
                           {0: {"status": "failed", "error": "worker lost"}})
    assert merged["status"].tolist() == ["ok", "failed", "failed"] * 8
    assert peak[0] > 4  # not one check after another
