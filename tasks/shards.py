"""Shard tasks: split a plan into shard manifests, run one shard with the process's engine."""
from __future__ import annotations

import math
import time
from typing import Any

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from stylecore import storage, tables
from stylecore.engine import get_engine
from stylecore.shard import run_shard

from . import progress

# Rows per shard when not given: a shard should take minutes, and per-row cost differs by method.
# A shard run on a process worker costs ~6 s before its first image (measured on the CPU: worker poll, process
# start, imports, Prefect's run bootstrap; CUDA adds its context), so a feed-forward shard must hold enough rows
# to amortise that at GPU speed (hundreds of images/s): 5000 rows are ~4 min of Johnson on a 2-core CPU.
DEFAULT_SHARD_SIZE = {"gatys": 32, "adain": 5000, "johnson": 5000}


def default_shard_size(method: str) -> int:
    """Rows per shard so that a shard takes minutes on one GPU."""
    return DEFAULT_SHARD_SIZE.get(str(method), 256)


def shard_uris(report_dir: str, index: int) -> tuple[str, str]:
    """(shard manifest URI, shard metrics URI) of shard ``index`` under the report prefix."""
    base = storage.join(report_dir, f"shards/shard-{index:05d}")
    return base + ".parquet", base + ".metrics.parquet"


@task(name="write-shard-manifests", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def write_shard_manifests(rows: pd.DataFrame, report_dir: str, shard_size: int) -> list[dict[str, Any]]:
    """Split the rows to run into shards of ``shard_size`` and write each as a small Parquet manifest."""
    logger = get_run_logger()
    shard_size = max(1, int(shard_size))
    count = math.ceil(len(rows) / shard_size)
    shards = []
    for i in range(count):
        part = rows.iloc[i * shard_size:(i + 1) * shard_size]
        shard_uri, metrics_uri = shard_uris(report_dir, i)
        tables.write_parquet(part, shard_uri)
        shards.append({"index": i, "shard": shard_uri, "metrics": metrics_uri, "rows": len(part)})
    logger.info("wrote %d shard manifest(s) of up to %d rows under %s", count, shard_size, report_dir)
    return shards


def make_quality(enabled: bool, device: str):
    """The process's quality evaluator (``stylecore.quality``), or None when off or unavailable."""
    if not enabled:
        return None
    try:
        from stylecore.quality import get_evaluator
    except ImportError:
        return None
    return get_evaluator(device=device).evaluate_batch


def execute_shard(shard_uri: str, metrics_uri: str, *, encoder: str = "imagenet", decoder: str | None = None,
                  model: str | None = None, device: str = "auto", overwrite: bool = False, batch_size: int = 0,
                  quality: bool = True, index: int = 0, logger=None) -> dict[str, Any]:
    """Run one shard manifest with this process's engine and write its metrics; returns the counts."""
    t0 = time.perf_counter()
    rows = tables.read_parquet(shard_uri)
    engine = get_engine(encoder, decoder, model, device, progress=False)
    evaluator = make_quality(quality, str(engine.device))

    def on_progress(done: int, total: int) -> None:
        progress.emit({"event": "rows", "shard": index, "done": done, "total": total})

    metrics = run_shard(rows, engine, overwrite=overwrite, batch_size=batch_size, quality=evaluator,
                        on_progress=on_progress)
    tables.write_parquet(metrics, metrics_uri)
    counts = metrics["status"].value_counts()
    out = {"index": index, "rows": len(metrics), "ok": int(counts.get("ok", 0)), "failed": int(counts.get("failed", 0)),
           "skipped": int(counts.get("skipped", 0)), "metrics": metrics_uri, "seconds": time.perf_counter() - t0,
           "worker": metrics["worker"].iloc[0] if len(metrics) else None, "device": str(engine.device)}
    if logger is not None:
        logger.info("shard %05d: %d ok, %d failed, %d skipped in %.1f s on %s (%s)", index, out["ok"], out["failed"],
                    out["skipped"], out["seconds"], out["worker"], out["device"])
        for err in metrics.loc[metrics["status"] == "failed", "error"].head(5):
            logger.warning("shard %05d: row failed: %s", index, err)
    return out


@task(name="run-shard", cache_policy=NO_CACHE, task_run_name="shard-{shard[index]:05d}")
def run_shard_task(shard: dict[str, Any], engine: dict[str, Any], overwrite: bool = False, batch_size: int = 0,
                   quality: bool = True) -> dict[str, Any]:
    """Run one shard in this process (``local`` dispatch)."""
    result = execute_shard(shard["shard"], shard["metrics"], overwrite=overwrite, batch_size=batch_size,
                           quality=quality, index=shard["index"], logger=get_run_logger(), **engine)
    progress.emit({"event": "shard", "shard": shard["index"], "done": shard["rows"], "total": shard["rows"],
                   "status": "ok"})
    return result
