"""Flow ``augment-dataset``: stylize the images of a dataset that have no augmented outputs yet, and keep
an index of every augmented image at the output prefix (``index.parquet`` and ``index.csv``).

Incremental: each run builds a ``sample:K`` manifest of only the source images without outputs under
``output`` (a nightly run processes the images added since the last one), runs ``stylize-collection``
on it, then merges the run's rows into the index.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run as runtime_run

from stylecore import storage, tables
from stylecore.manifest import write_manifest
from stylecore.manifest_build import build_manifest
from stylecore.options import check_method

from flows.stylize_collection import check_run_settings, stylize_collection

# Index columns, then the manifest's passthrough (label) columns.
INDEX_COLUMNS = ["image", "image_uri", "source", "style", "method", "options_hash"]
_BUILT = {"content", "style", "content_root", "style_weights", "output", "id"}


def _run_name() -> str:
    params = runtime_run.parameters or {}
    src = str(params.get("source", "dataset")).rstrip("/").rsplit("/", 1)[-1] or "dataset"
    return f"augment-{src}-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}"


@task(name="build-augment-manifest", cache_policy=NO_CACHE)
def build_task(source: str, styles: str, output: str, k: int, seed: int, label_from_parent: bool) -> tuple[str | None, list[str]]:
    """Write a ``sample:K`` manifest of the source images with no output yet; returns (URI or None, label columns)."""
    logger = get_run_logger()
    df = build_manifest([source], [styles], pairing=f"sample:{int(k)}", seed=int(seed),
                        label_from_parent=label_from_parent, skip_done_under=output)
    labels = [c for c in df.columns if c not in _BUILT]
    if not len(df):
        logger.info("no new images under %s: nothing to augment", source)
        return None, labels
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    uri = write_manifest(df, storage.join(output, f"_manifests/augment-{stamp}.parquet"))
    logger.info("%d new image(s) x %d style(s): manifest %s", df["content"].nunique(), int(k), uri)
    return uri, labels


@task(name="refresh-index", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def refresh_index(output: str, report_dir: str | None, labels: list[str]) -> int:
    """Merge the run's ok and skipped rows into ``{output}/index.parquet`` and ``index.csv``; returns its rows."""
    index_uri = storage.join(output, "index.parquet")
    frames = []
    if storage.exists(index_uri):
        frames.append(tables.read_parquet(index_uri))
    if report_dir:
        m = tables.read_parquet(storage.join(report_dir, "metrics.parquet"))
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
    index = index.drop_duplicates("image", keep="last").sort_values("image").reset_index(drop=True)
    index = index[INDEX_COLUMNS + [c for c in index.columns if c not in INDEX_COLUMNS]]
    tables.write_parquet(index, index_uri)
    tables.write_csv(index, storage.join(output, "index.csv"))
    get_run_logger().info("index %s: %d augmented image(s)", index_uri, len(index))
    return len(index)


@flow(name="augment-dataset", flow_run_name=_run_name, persist_result=False)
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
) -> dict[str, Any]:
    """Give each new image under ``source`` ``k`` styles drawn from ``styles`` (deterministic for ``seed``),
    stylize them into ``output`` (keeping the source's folder layout, e.g. ``train/<class>/``) and refresh
    the index. Returns the stylize-collection summary plus ``index_rows``."""
    check_method(method)
    check_run_settings(device=device, dispatch=dispatch, shard_size=shard_size, concurrency=concurrency,
                       max_shard_retries=max_shard_retries, batch_size=batch_size, max_failed=max_failed)
    manifest_uri, labels = build_task(source, styles, output, k, seed, label_from_parent)
    if manifest_uri is None:
        return {"total": 0, "ok": 0, "failed": 0, "skipped": 0, "index_rows": refresh_index(output, None, labels)}
    state = stylize_collection(
        manifest=manifest_uri, output=output, method=method, encoder=encoder, decoder=decoder, model=model,
        device=device, size=size, style_size=style_size, steps=steps, alpha=alpha, seed=seed,
        preserve_color=preserve_color, options=options, format=format, shard_size=shard_size, dispatch=dispatch,
        pool=pool, max_failed=max_failed, max_shard_retries=max_shard_retries, concurrency=concurrency,
        batch_size=batch_size, quality=quality, return_state=True)
    summary = state.result(raise_on_failure=False)
    if not isinstance(summary, dict):  # the run failed before writing its report
        raise summary if isinstance(summary, BaseException) else RuntimeError(str(state.message))
    summary = dict(summary, index_rows=refresh_index(output, summary["report_dir"], labels))
    if state.is_failed():
        from prefect.states import Failed

        return Failed(message=state.message, data=summary)
    return summary
