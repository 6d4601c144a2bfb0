"""Merge per-shard metrics into one table per run, summarise it, and write the run's report files."""
from __future__ import annotations

from typing import Any

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from stylecore import storage, tables
from stylecore.keys import used_specs
from stylecore.report import WEIGHT_COLUMNS
from stylecore.shard import METRIC_COLUMNS

# The first columns of metrics.parquet, in this order (the rest follow: run details, quality, passthrough).
LEAD_COLUMNS = ("id", "content", "style", "output", "status", "error", "read_ms", "compute_ms", "write_ms")


SHARD_LOST = "did not finish: "  # in "shard 00012 did not finish: <the shard run's reason>"


def lost_with_shard(error: Any) -> bool:
    """True for the error of a row that failed because its whole shard did not finish (a crashed worker, an
    outage, a bad worker setting), not because of the row itself."""
    text = str(error or "")
    return text.startswith("shard ") and SHARD_LOST in text[:32]


def _from_plan(rows: pd.DataFrame, status: str, error: str = "") -> pd.DataFrame:
    """Metrics rows for plan rows that no shard reported (skipped by the plan, or lost with a shard)."""
    out = rows.drop(columns=[c for c in ("options_json", "style_weights") if c in rows.columns]).copy()
    out["status"] = status
    out["error"] = error
    return out


def with_weight_specs(metrics: pd.DataFrame, engine: dict[str, Any]) -> pd.DataFrame:
    """``metrics`` with the weight specs each row's method used: ``encoder``, ``decoder``, ``model`` (None where
    its method uses none; ``keys.METHOD_SPECS``), so reports count rows per weights."""
    out = metrics.copy()
    methods = out["method"].astype(str) if "method" in out.columns else pd.Series([""] * len(out), dtype=str)
    used = {m: used_specs(m, engine) for m in methods.unique()}  # per distinct method, not per row
    for role in WEIGHT_COLUMNS:
        out[role] = methods.map({m: specs.get(role) for m, specs in used.items()}).astype(object)
    return out


def merge_metrics(plan_rows: pd.DataFrame, shards: list[dict[str, Any]], outcomes: dict[int, dict[str, Any]], *,
                  overwrite: bool = False) -> pd.DataFrame:
    """One metrics row per plan row, in manifest order.

    ``skipped`` means the output existed before this run. A row that an earlier attempt of a retried
    shard wrote counts as ``ok``; the rows of a shard that never finished are ``ok`` when their output
    exists and ``failed`` with the shard's reason otherwise. With ``overwrite`` an existing output may be the
    one the run was to replace, so every row of a shard that never finished is ``failed``.
    """
    frames = [_from_plan(plan_rows[plan_rows["status"] == "skipped"], "skipped")]
    for shard in shards:
        outcome = outcomes.get(shard["index"], {})
        if outcome.get("status") == "ok":
            frames.append(tables.read_parquet(shard["metrics"]))
            continue
        rows = tables.read_parquet(shard["shard"])
        reason = f"shard {shard['index']:05d} {SHARD_LOST}{outcome.get('error') or 'unknown error'}"
        if overwrite:
            frames.append(_from_plan(rows, "failed", reason))
            continue
        uris = rows["output_uri"].astype(str)
        known = storage.exists_many(uris, nonempty=True)  # a listing of the shard's key range on S3, the rest checked in parallel
        written = uris.map(known).astype(bool)
        frames.append(_from_plan(rows[written], "ok"))
        frames.append(_from_plan(rows[~written], "failed", reason))
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=list(METRIC_COLUMNS))
    merged = pd.concat(frames, ignore_index=True, sort=False)
    if "row" in merged.columns:
        merged = merged.sort_values("row", kind="stable").reset_index(drop=True)
    # Rows the plan found missing but a shard found present were written by an earlier attempt of this run.
    pending = set(plan_rows.loc[plan_rows["status"] != "skipped", "row"]) if "row" in plan_rows.columns else set()
    again = merged["row"].isin(pending) & (merged["status"] == "skipped")
    merged.loc[again, "status"] = "ok"
    merged["error"] = merged["error"].fillna("").astype(str)
    lead = [c for c in LEAD_COLUMNS if c in merged.columns]
    return merged[lead + [c for c in merged.columns if c not in lead]]


def summarize(metrics: pd.DataFrame, *, wall_seconds: float, extra: dict[str, Any]) -> dict[str, Any]:
    """The run's ``summary.json`` (counts, throughput, methods, devices, workers) plus ``extra`` keys."""
    counts = metrics["status"].value_counts() if len(metrics) else pd.Series(dtype=int)
    ok, failed, skipped = (int(counts.get(k, 0)) for k in ("ok", "failed", "skipped"))
    done = metrics[metrics["status"] != "skipped"] if len(metrics) else metrics

    def distinct(col: str) -> list[str]:
        if col not in done.columns:
            return []
        return sorted({str(v) for v in done[col].dropna() if str(v)})

    methods = distinct("method") or sorted({str(v) for v in metrics.get("method", pd.Series(dtype=str)).dropna()})
    devices = distinct("device")
    summary = {
        "total": int(len(metrics)), "ok": ok, "failed": failed, "skipped": skipped,
        "wall_seconds": round(float(wall_seconds), 3),
        "images_per_second": round(ok / wall_seconds, 3) if wall_seconds > 0 else None,
        "method": methods[0] if len(methods) == 1 else ",".join(methods),
        "methods": methods,
        "device": devices[0] if len(devices) == 1 else ",".join(devices),
        "devices": devices,
        "workers": distinct("worker"),
    }  # failure_reasons and the other extras come from stylecore.report.summarize in write_reports
    summary.update(extra)
    return summary


@task(name="write-reports", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def write_reports(metrics: pd.DataFrame, summary: dict[str, Any], report_dir: str, html: bool = True) -> dict[str, Any]:
    """Write ``metrics.parquet`` and ``summary.json`` under ``report_dir``, then the report
    (``stylecore.report.build_report``: summary extras, ``metrics.csv``, ``report.html``); returns the summary as written."""
    logger = get_run_logger()
    tables.write_parquet(metrics, storage.join(report_dir, "metrics.parquet"))
    tables.write_json(summary, storage.join(report_dir, "summary.json"))
    if html:
        from stylecore import report

        try:  # adds the summary extras, metrics.csv and report.html
            summary = report.build_report(report_dir, metrics=metrics, base_summary=summary)
        except Exception as e:  # noqa: BLE001 - the metrics and summary are already written
            logger.warning("HTML report failed: %s", " ".join(str(e).split())[:300])
    logger.info("report written to %s", report_dir)
    return summary
