"""Flow ``stylize-collection``: plan a manifest, split it into shards, run them, merge metrics, write reports.

Parameter names are the ``stylize run`` option names with underscores.
"""
from __future__ import annotations

import re
import time
from collections import deque
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run as runtime_run
from prefect.states import Failed

from stylecore import storage, uris
from stylecore.errors import OptionsError, ReportError, RunFailed, StorageError
from stylecore.options import StyleOptions, check_method
from stylecore.run_checks import allowed_failures, check_run_settings, check_weights
from tasks import progress
from tasks.artifacts import publish_run_artifacts
from tasks.metrics import merge_metrics, summarize, with_weight_specs, write_reports
from tasks.plan import plan_task
from tasks.shards import default_shard_size, run_shard_task, write_shard_manifests
from flows.failures import fail_plainly

IDLE_POOL_CHECK_SECONDS = 30.0  # while shard runs wait to start, check this often that the pool has a worker


_STAMP = re.compile(r"-\d{8}T\d{6}Z$")


def manifest_name(uri: str) -> str:
    """The manifest's file name without its extension or a trailing ``-YYYYMMDDTHHMMSSZ`` time stamp (used in run
    names, tags and artifact keys, so the manifests of a nightly job, ``augment-<time>``, share one name)."""
    base = uris.redact(str(uri)).rstrip("/").rsplit("/", 1)[-1]  # never a credential in a run name
    return _STAMP.sub("", base.split(".", 1)[0]) or "manifest"


def _run_name() -> str:
    params = runtime_run.parameters or {}
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{manifest_name(params.get('manifest', 'manifest'))}-{stamp}"


def run_id() -> str:
    """A sortable id for this run's report folder: UTC time plus the start of the flow run id."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    fid = str(runtime_run.id or "")[:8]
    return f"{stamp}-{fid}" if fid else stamp


@task(name="merge-metrics", cache_policy=NO_CACHE)
def merge_task(plan_rows, shards, outcomes, overwrite=False):
    return merge_metrics(plan_rows, shards, outcomes, overwrite=overwrite)


def _run_local(shards, engine, *, overwrite, batch_size, quality, concurrency, retries, on_done) -> dict[int, dict]:
    """Run shards in this process, at most ``concurrency`` at a time (one engine per process)."""
    from prefect.futures import as_completed

    runner = run_shard_task.with_options(retries=retries, retry_delay_seconds=1)
    todo, running, outcomes = deque(shards), {}, {}
    while todo or running:
        while todo and len(running) < concurrency:
            shard = todo.popleft()
            running[runner.submit(shard, engine, overwrite, batch_size, quality)] = shard
        fut = next(iter(as_completed(list(running))))
        shard = running.pop(fut)
        result = fut.result(raise_on_failure=False)
        if isinstance(result, dict):
            outcomes[shard["index"]] = {**result, "status": "ok"}
        else:
            reason = f"{type(result).__name__}: {result}" if isinstance(result, BaseException) else str(fut.state.message)
            outcomes[shard["index"]] = {"status": "failed", "error": " ".join(reason.split())}
        on_done(shard, outcomes[shard["index"]])
    return outcomes


def idle_pool_warning(client, pool: str) -> str | None:
    """A one-line warning when work pool ``pool`` has no online worker (its runs then wait), else None (also
    when the pool cannot be read: the check only advises, it never fails the run)."""
    from prefect.client.schemas.objects import WorkerStatus

    try:
        workers = client.read_workers_for_work_pool(work_pool_name=pool)
    except Exception:  # noqa: BLE001 - a pool deleted mid-run, a server hiccup: no advice this time
        return None
    if any(w.status == WorkerStatus.ONLINE for w in workers):
        return None
    return (f"work pool {pool!r} has no online worker, so its shard runs wait in state Scheduled; "
            f"start one with: prefect worker start --pool {pool}")


def server_label(url: str | None) -> str:
    """The Prefect server of ``url`` for messages: scheme, host, port and path only (never credentials)."""
    if not url:
        return "the ephemeral Prefect server (PREFECT_API_URL is not set, so no worker could reach this run)"
    parts = urlsplit(url)
    return f"the Prefect server at {parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"


def check_shard_deployment(pool: str) -> str | None:
    """The work pool of the ``stylize-shard/{pool}`` deployment (``pool`` names the deployment; its work pool
    may be named otherwise). Raise a one-line ``OptionsError`` when the deployment does not exist on the
    Prefect server (before any planning, instead of Prefect's bare ``ObjectNotFound`` mid-run)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL

    name = f"stylize-shard/{pool}"
    with get_client(sync_client=True) as client:
        try:
            return client.read_deployment_by_name(name).work_pool_name
        except ObjectNotFound:
            pass
    raise OptionsError(f"dispatch pool: no deployment {name!r} on {server_label(PREFECT_API_URL.value())}; create it with "
                       f"`prefect deploy --all --prefect-file deployments/prefect.yaml` or choose a deployed pool")


def stop_runs(client, run_ids: list, logger) -> None:
    """Cancel shard runs still in flight when their parent stops: a waiting run at once, a running one through
    Cancelling (its worker then stops its process). Best effort: the parent is already ending."""
    from prefect.states import Cancelled, Cancelling

    stopped = 0
    for run_id in run_ids:
        try:
            state = client.read_flow_run(run_id).state
            if state is None or state.is_final():
                continue
            new = Cancelled if state.is_scheduled() or state.is_pending() else Cancelling
            client.set_flow_run_state(run_id, new(message="its stylize-collection parent run stopped"), force=True)
            stopped += 1
        except Exception as e:  # noqa: BLE001 - one run that cannot be reached does not stop the others
            logger.warning("could not cancel shard run %s: %s", run_id, " ".join(str(e).split()))
    if stopped:
        logger.warning("parent run stopping: cancelled %d shard run(s) still in flight", stopped)


def _run_pool(shards, engine, *, pool, work_pool, name, run, overwrite, batch_size, quality, concurrency, retries,
              on_done, poll: float = 1.0) -> dict[int, dict]:
    """Run each shard as a ``stylize-shard/{pool}`` deployment run, at most ``concurrency`` in flight; a
    shard run that fails or crashes is started again up to ``retries`` times (a cancelled one is not). While
    runs wait to start on ``work_pool`` (the deployment's) with no online worker, a warning says so every
    ``IDLE_POOL_CHECK_SECONDS``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.deployments import run_deployment

    logger = get_run_logger()
    deployment = f"stylize-shard/{pool}"
    next_idle_check = time.monotonic() + IDLE_POOL_CHECK_SECONDS
    todo = deque((s, 0) for s in shards)
    running: dict[Any, tuple[dict, int]] = {}
    outcomes: dict[int, dict] = {}
    with get_client(sync_client=True) as client:
        try:
            while todo or running:
                while todo and len(running) < concurrency:
                    shard, attempt = todo.popleft()
                    label = f"{name}-shard-{shard['index']:05d}" + (f"-retry{attempt}" if attempt else "")
                    fr = run_deployment(
                        deployment, timeout=0, as_subflow=True, flow_run_name=label,
                        tags=["stylize-shard", f"manifest:{name}", f"run:{run}", f"shard:{shard['index']:05d}"],
                        parameters={"shard": shard["shard"], "metrics": shard["metrics"], "index": shard["index"],
                                    "overwrite": overwrite, "batch_size": batch_size, "quality": quality, **engine})
                    running[fr.id] = (shard, attempt)
                    logger.info("started %s (flow run %s) on %s", label, fr.id, deployment)
                time.sleep(poll)
                runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(running))))
                if time.monotonic() >= next_idle_check:
                    next_idle_check = time.monotonic() + IDLE_POOL_CHECK_SECONDS
                    if work_pool and any(fr.state is not None and fr.state.is_scheduled() for fr in runs):
                        warning = idle_pool_warning(client, work_pool)
                        if warning:
                            logger.warning(warning)
                for fr in runs:
                    if fr.state is None or not fr.state.is_final():
                        continue
                    shard, attempt = running.pop(fr.id)
                    if fr.state.is_completed():
                        outcomes[shard["index"]] = {"status": "ok", "flow_run_id": str(fr.id)}
                    elif attempt < retries and not fr.state.is_cancelled():  # a cancelled run was stopped on purpose
                        logger.warning("shard %05d run %s ended %s (%s); retrying", shard["index"], fr.name,
                                       fr.state.name, fr.state.message)
                        todo.append((shard, attempt + 1))
                        continue
                    else:
                        outcomes[shard["index"]] = {"status": "failed", "flow_run_id": str(fr.id),
                                                    "error": f"{fr.state.name}: {' '.join(str(fr.state.message or '').split())}"}
                    on_done(shard, outcomes[shard["index"]])
        except BaseException:  # cancelled (SIGTERM from the worker), interrupted, or failed: stop the shard runs
            stop_runs(client, list(running), logger)
            raise
    return outcomes


@flow(name="stylize-collection", flow_run_name=_run_name, persist_result=False)
@fail_plainly
def stylize_collection(
    manifest: str,
    output: str,
    method: str = "gatys",
    encoder: str = "imagenet",
    decoder: str | None = None,
    model: str | None = None,
    device: str = "auto",
    size: int | None = None,
    style_size: int | None = None,
    steps: int | None = None,
    alpha: float | None = None,
    seed: int | None = None,
    preserve_color: bool | None = None,
    options: dict[str, Any] | None = None,
    format: str = "jpg",
    shard_size: int | None = None,
    dispatch: str = "local",
    pool: str = "gpu",
    max_failed: float = 0,
    max_shard_retries: int = 2,
    overwrite: bool = False,
    report_dir: str | None = None,
    concurrency: int | None = None,
    batch_size: int = 0,
    quality: bool = True,
    check_inputs: bool = False,
) -> dict[str, Any]:
    """Stylize every row of ``manifest`` into ``output``; returns the run summary.

    ``options`` takes any other engine option by name (``{"style_weight": 1e5}``). ``shard_size``
    defaults to a size that takes minutes per shard. ``dispatch="pool"`` runs each shard as a run of the
    ``stylize-shard/{pool}`` deployment. ``max_failed`` is a row count or a fraction of the rows; the run
    ends Failed (after writing its reports) when more rows fail. ``concurrency`` bounds the shards in
    flight (default 1 locally, 4 on a pool).
    """
    logger = get_run_logger()
    t0 = time.perf_counter()
    started = datetime.now(timezone.utc)
    method = check_method(method)
    check_run_settings(device=device, dispatch=dispatch, shard_size=shard_size, concurrency=concurrency,
                       max_shard_retries=max_shard_retries, batch_size=batch_size, max_failed=max_failed)
    overrides = dict(options or {})
    overrides.update({k: v for k, v in dict(size=size, style_size=style_size, steps=steps, alpha=alpha, seed=seed,
                                            preserve_color=preserve_color).items() if v is not None})
    StyleOptions.make(**overrides)  # fail fast on a bad option
    work_pool = check_shard_deployment(pool) if dispatch == "pool" else None
    engine = {"encoder": encoder or "imagenet", "decoder": decoder, "model": model, "device": device}
    name = manifest_name(manifest)
    run = run_id()
    report_dir = report_dir or storage.join(output, f"_reports/{run}")
    shard_size = int(shard_size or default_shard_size(method))
    concurrency = max(1, int(concurrency or (1 if dispatch == "local" else 4)))

    plan = plan_task(manifest, output, method=method, options=overrides, engine=engine, fmt=format,
                     overwrite=overwrite, check_inputs=check_inputs, return_state=True).result()  # raises its error
    rows = plan.rows
    pending = rows[rows["status"] != "skipped"]
    allowed = allowed_failures(max_failed, len(rows))
    check_weights(pending["method"].value_counts().to_dict(), engine, dispatch, allowed=allowed)
    shards = write_shard_manifests(pending, report_dir, shard_size) if len(pending) else []
    phases = {"plan": time.perf_counter() - t0}

    artifact = progress.ProgressArtifact(f"stylize-collection {name}: {len(pending)} row(s) in {len(shards)} shard(s)")
    progress.emit({"event": "start", "total": len(pending), "skipped": len(rows) - len(pending), "shards": len(shards)})
    finished = {"shards": 0, "rows": 0}

    def on_done(shard: dict, outcome: dict) -> None:
        finished["shards"] += 1
        finished["rows"] += shard["rows"]
        artifact.update(finished["rows"], len(pending))
        progress.emit({"event": "shard", "shard": shard["index"], "done": shard["rows"], "total": shard["rows"],
                       "status": outcome["status"]})
        rows = (f": {outcome['ok']} ok, {outcome['failed']} failed, {outcome['skipped']} skipped"
                if "failed" in outcome and "ok" in outcome else "")  # local runs carry counts; pool runs, a state
        done = "ran" if outcome["status"] == "ok" else "failed"
        logger.info("shard %05d %s%s (%d/%d shards)", shard["index"], done, rows, finished["shards"], len(shards))

    common = dict(overwrite=overwrite, batch_size=batch_size, quality=quality, concurrency=concurrency,
                  retries=max_shard_retries, on_done=on_done)
    if not shards:
        outcomes = {}
    elif dispatch == "local":
        outcomes = _run_local(shards, engine, **common)
    else:
        outcomes = _run_pool(shards, engine, pool=pool, work_pool=work_pool, name=name, run=run, **common)
    artifact.update(1, 1)
    phases["shards"] = time.perf_counter() - t0 - phases["plan"]

    finished = sum(1 for o in outcomes.values() if o.get("status") == "ok")
    try:
        metrics = with_weight_specs(merge_task(rows, shards, outcomes, overwrite), engine)
    except StorageError as e:
        raise ReportError(f"{finished} of {len(shards)} shard(s) finished, but their metrics could not be read "
                          f"back: {e}; run again to finish and report (written outputs are skipped)") from None
    wall = time.perf_counter() - t0
    phases["merge"] = wall - phases["plan"] - phases["shards"]
    summary = summarize(metrics, wall_seconds=wall, extra={
        "manifest": manifest, "manifest_notes": list(plan.notes), "output": output, "report_dir": report_dir,
        "run_id": run,
        "flow_run_id": str(runtime_run.id or ""), "flow_run_name": runtime_run.name,
        "started_at": started.isoformat(), "finished_at": datetime.now(timezone.utc).isoformat(),
        "phase_seconds": {k: round(v, 3) for k, v in phases.items()},
        "dispatch": dispatch, "shards": len(shards), "shard_size": shard_size,
        "shards_failed": sum(1 for o in outcomes.values() if o.get("status") != "ok"),
        "max_failed": max_failed, "max_failed_rows": allowed,
        "engine": engine, "options": overrides, "format": format,
        "parameters": {k: v for k, v in dict(runtime_run.parameters or {}).items()},
    })
    summary["passed"] = summary["failed"] <= allowed
    t_report = time.perf_counter()
    try:
        summary = write_reports(metrics, summary, report_dir)
    except StorageError as e:
        logger.error("%s: %d ok, %d failed, %d skipped of %d rows, but the report could not be written", name,
                     summary["ok"], summary["failed"], summary["skipped"], summary["total"])
        raise ReportError(f"{summary['ok']} ok, {summary['failed']} failed, {summary['skipped']} skipped of "
                          f"{summary['total']} rows, but the report could not be written: {e}") from None
    publish_run_artifacts(summary, name)
    logger.info("%s: %d ok, %d failed, %d skipped of %d rows in %.1f s (%.2f images/s; plan %.1f s, shards %.1f s, "
                "merge %.1f s, then the report %.1f s); report: %s", name, summary["ok"], summary["failed"],
                summary["skipped"], summary["total"], wall, summary["images_per_second"] or 0.0, phases["plan"],
                phases["shards"], phases["merge"], time.perf_counter() - t_report, report_dir)
    if not summary["passed"]:
        reasons = summary.get("failure_reasons") or {}
        top = max(reasons.items(), key=lambda kv: kv[1], default=None)
        common = f"; most common: {top[0][:160]} ({top[1]} row(s))" if top else ""
        message = f"{summary['failed']} row(s) failed (max_failed allows {allowed}){common}; report: {report_dir}"
        return Failed(message=message, data=RunFailed(message, summary))  # a direct call raises it
    return summary
