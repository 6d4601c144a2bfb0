"""Flow ``augment-dataset``: stylize the images of a dataset that have no augmented outputs yet, and keep
an index of every augmented image at the output prefix (``index.parquet`` and ``index.csv``).

Incremental: each run builds a ``sample:K`` manifest of only the (image, style) pairs not yet in the index
with their output under ``output`` (a nightly run processes the images added since the last one), runs
``stylize-collection`` on it, then merges the run's rows (made or skipped) into the index, so outputs of a
killed run are indexed by the next one. Pairs that keep failing (a corrupt source image) are
recorded in ``failures.parquet`` / ``failures.csv`` and left out after ``max_attempts`` failed runs, so one
bad file does not fail every later run; deleting ``failures.parquet`` retries them all.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run as runtime_run

from stylecore import storage, tables, uris
from stylecore.errors import OptionsError, RunFailed
from stylecore.keys import extension
from stylecore.manifest import write_manifest
from stylecore.manifest_build import build_manifest
from stylecore.options import StyleOptions, check_method
from stylecore.run_checks import check_run_settings
from flows.failures import fail_plainly
from flows.stylize_collection import stylize_collection
from tasks.metrics import lost_with_shard

# Index columns, then the manifest's passthrough (label) columns.
INDEX_COLUMNS = ["image", "image_uri", "source", "style", "method", "options_hash"]
FAILURE_COLUMNS = ["source", "style", "attempts", "error", "last_run"]
_BUILT = {"content", "style", "content_root", "style_weights", "output", "id"}


def _run_name() -> str:
    params = runtime_run.parameters or {}
    src = uris.redact(str(params.get("source", "dataset"))).rstrip("/").rsplit("/", 1)[-1] or "dataset"
    return f"augment-{src}-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}"


def read_failures(output: str) -> pd.DataFrame:
    """The pairs that failed in earlier runs (``{output}/failures.parquet``), with their failed attempts."""
    uri = storage.join(output, "failures.parquet")
    if not storage.exists(uri):
        return pd.DataFrame({c: pd.Series(dtype="int64" if c == "attempts" else "object") for c in FAILURE_COLUMNS})
    return tables.read_parquet(uri)


def done_pairs(output: str) -> list[tuple[str, str]]:
    """``(source URI, style URI)`` of the index rows (``{output}/index.parquet``) whose output is still under
    ``output``: the pairs that are done, matched exactly (not by file names, which two folders can share). An
    output a killed run wrote but never indexed is not done: the next run plans it again, the collection run
    skips it (its file exists) and its row reaches the index; an indexed output that was deleted is made again."""
    index_uri = storage.join(output, "index.parquet")
    if not storage.exists(index_uri):
        return []
    index = tables.read_parquet(index_uri, columns=["image", "source", "style"])
    present = index["image"].astype(str).isin(set(storage.list_prefix(output, relative=True, nonempty=True)))
    return list(zip(index.loc[present, "source"].astype(str), index.loc[present, "style"].astype(str)))


@task(name="build-augment-manifest", cache_policy=NO_CACHE)
@fail_plainly
def build_task(source: str, styles: str, output: str, k: int, seed: int, label_from_parent: bool,
               max_attempts: int = 0) -> tuple[str | None, list[str], int]:
    """Write a ``sample:K`` manifest of the pairs not done yet (:func:`done_pairs`; they count toward each image's
    K), less those that failed ``max_attempts`` runs (0: none left out); returns (URI or None, label columns,
    pairs left out)."""
    logger = get_run_logger()
    df = build_manifest([source], [styles], pairing=f"sample:{int(k)}", seed=int(seed),
                        label_from_parent=label_from_parent, done_pairs=done_pairs(output))
    labels = [c for c in df.columns if c not in _BUILT]
    left_out = 0
    if max_attempts and len(df):
        failures = read_failures(output)
        given_up = failures[failures["attempts"] >= int(max_attempts)]
        if len(given_up):
            pairs = set(zip(given_up["source"], given_up["style"]))
            keep = [(c, st) not in pairs for c, st in zip(df["content"], df["style"])]
            left_out = len(df) - sum(keep)
            df = df[keep].reset_index(drop=True)
            if left_out:
                logger.warning("%d pair(s) left out after %d failed run(s) each: see %s (delete failures.parquet "
                               "to retry them)", left_out, int(max_attempts), storage.join(output, "failures.csv"))
    if not len(df):
        logger.info("no new images under %s: nothing to augment", source)
        return None, labels, left_out
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    uri = write_manifest(df, storage.join(output, f"_manifests/augment-{stamp}.parquet"))
    logger.info("%d pair(s) to stylize, for %d image(s) short of their %d style(s): manifest %s", len(df),
                df["content"].nunique(), int(k), uri)
    return uri, labels, left_out


@task(name="record-failures", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
@fail_plainly
def record_failures(output: str, m: pd.DataFrame, run_id: str) -> int:
    """Count this run's failed pairs (metrics ``m``) in ``{output}/failures.parquet`` / ``.csv`` (one more attempt
    each, with the latest error) and drop the pairs that now succeeded; returns the pairs recorded. Rows lost
    with their shard (a crashed worker, an outage, a bad worker setting) are not attempts of their pairs: they
    are neither counted nor settled, so a bad night does not use up every pair's ``max_attempts``."""
    failures = read_failures(output)
    settled = set(zip(m.loc[m["status"] != "failed", "content"], m.loc[m["status"] != "failed", "style"]))
    failed = m[(m["status"] == "failed") & ~m["error"].map(lost_with_shard)]
    if not len(failures) and not len(failed) and not storage.exists(storage.join(output, "failures.csv")):
        return 0  # nothing recorded, nothing to record (a stale CSV is rewritten empty)
    failures = failures[[(c, st) not in settled for c, st in zip(failures["source"], failures["style"])]]
    new = pd.DataFrame({"source": failed["content"].to_numpy(), "style": failed["style"].to_numpy(),
                        "attempts": 1, "error": failed["error"].to_numpy(), "last_run": run_id})
    merged = pd.concat([failures, new], ignore_index=True)
    merged["attempts"] = merged.groupby(["source", "style"])["attempts"].transform("sum").astype("int64")
    merged = merged.drop_duplicates(["source", "style"], keep="last").sort_values(["source", "style"])
    merged = merged[FAILURE_COLUMNS].reset_index(drop=True)
    tables.write_parquet(merged, storage.join(output, "failures.parquet"))
    tables.write_csv(merged, storage.join(output, "failures.csv"))
    return len(merged)


@task(name="refresh-index", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
@fail_plainly
def refresh_index(output: str, m: pd.DataFrame | None, labels: list[str]) -> int:
    """Merge the run's ok and skipped rows (metrics ``m``) into ``{output}/index.parquet`` and ``index.csv``, keeping
    only rows whose output is still under ``output`` (its ``image_uri`` taken from ``output``, so a moved output
    root indexes its new place); returns its rows."""
    index_uri = storage.join(output, "index.parquet")
    frames = []
    before = None
    if storage.exists(index_uri):
        before = tables.read_parquet(index_uri)
        frames.append(before)
    if m is not None:
        m = m[m["status"].isin(["ok", "skipped"])]
        new = pd.DataFrame({"image": m["output"], "image_uri": m["output_uri"], "source": m["content"],
                            "style": m["style"], "method": m["method"], "options_hash": m["options_hash"]})
        for col in labels:
            if col in m.columns:
                new[col] = m[col].to_numpy()
        frames.append(new)
    if not frames:
        return 0
    index = pd.concat(frames, ignore_index=True, sort=False)
    index = index.drop_duplicates("image", keep="last")
    index = index[index["image"].astype(str).isin(set(storage.list_prefix(output, relative=True, nonempty=True)))]
    index = index.sort_values("image").reset_index(drop=True)
    index["image_uri"] = [storage.join(output, str(key)) for key in index["image"]]
    index = index[INDEX_COLUMNS + [c for c in index.columns if c not in INDEX_COLUMNS]]
    if before is not None and index.equals(before) and storage.exists(storage.join(output, "index.csv")):
        get_run_logger().info("index %s: %d augmented image(s), unchanged", index_uri, len(index))
        return len(index)  # a night with nothing new rewrites nothing (41 s at 200k images)
    tables.write_parquet(index, index_uri)
    tables.write_csv(index, storage.join(output, "index.csv"))
    get_run_logger().info("index %s: %d augmented image(s)", index_uri, len(index))
    return len(index)


@flow(name="augment-dataset", flow_run_name=_run_name, persist_result=False)
@fail_plainly
def augment_dataset(
    source: str,
    styles: str,
    output: str,
    k: int = 1,
    seed: int = 0,
    label_from_parent: bool = True,
    method: str = "adain",
    encoder: str = "imagenet",
    decoder: str | None = None,
    model: str | None = None,
    device: str = "auto",
    size: int | None = None,
    style_size: int | None = None,
    steps: int | None = None,
    alpha: float | None = None,
    preserve_color: bool | None = None,
    options: dict[str, Any] | None = None,
    format: str = "jpg",
    shard_size: int | None = None,
    dispatch: str = "local",
    pool: str = "gpu",
    max_failed: float = 0.01,
    max_shard_retries: int = 2,
    concurrency: int | None = None,
    batch_size: int = 0,
    quality: bool = True,
    max_attempts: int = 3,
) -> dict[str, Any]:
    """Give each new image under ``source`` ``k`` styles drawn from ``styles`` (deterministic for ``seed``),
    stylize them into ``output`` (keeping the source's folder layout, e.g. ``train/<class>/``) and refresh
    the index. A pair that failed in ``max_attempts`` runs is left out (0: never). Returns the
    stylize-collection summary plus ``index_rows``, ``left_out`` (pairs not tried) and ``failures`` (pairs
    recorded in ``failures.parquet``)."""
    check_method(method)
    check_run_settings(device=device, dispatch=dispatch, shard_size=shard_size, concurrency=concurrency,
                       max_shard_retries=max_shard_retries, batch_size=batch_size, max_failed=max_failed)
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 0:
        raise OptionsError(f"max_attempts: {max_attempts!r} is not a whole number >= 0 (0: always retry)")
    extension(format)  # these fail fast, before a manifest is written
    named = dict(size=size, style_size=style_size, steps=steps, alpha=alpha, seed=seed, preserve_color=preserve_color)
    StyleOptions.make(**{**dict(options or {}), **{k: v for k, v in named.items() if v is not None}})
    manifest_uri, labels, left_out = build_task(source, styles, output, k, seed, label_from_parent, max_attempts,
                                                  return_state=True).result()  # raises its error
    if manifest_uri is None:
        index_rows = refresh_index(output, None, labels, return_state=True).result()
        return {"total": 0, "ok": 0, "failed": 0, "skipped": 0, "left_out": left_out,
                "failures": len(read_failures(output)), "index_rows": index_rows}
    state = stylize_collection(
        manifest=manifest_uri, output=output, method=method, encoder=encoder, decoder=decoder, model=model,
        device=device, size=size, style_size=style_size, steps=steps, alpha=alpha, seed=seed,
        preserve_color=preserve_color, options=options, format=format, shard_size=shard_size, dispatch=dispatch,
        pool=pool, max_failed=max_failed, max_shard_retries=max_shard_retries, concurrency=concurrency,
        batch_size=batch_size, quality=quality, return_state=True)
    summary = state.result(raise_on_failure=False)
    if isinstance(summary, RunFailed):
        summary = summary.summary
    if not isinstance(summary, dict):  # the run failed before writing its report
        raise summary if isinstance(summary, BaseException) else RuntimeError(str(state.message))
    metrics = tables.read_parquet(storage.join(summary["report_dir"], "metrics.parquet"))  # once, for both
    index_rows = refresh_index(output, metrics, labels, return_state=True).result()
    failures = record_failures(output, metrics, str(summary.get("run_id", "")), return_state=True).result()
    summary = dict(summary, index_rows=index_rows, left_out=left_out, failures=failures)
    if state.is_failed():
        from prefect.states import Failed

        return Failed(message=state.message, data=RunFailed(str(state.message), summary))
    return summary
