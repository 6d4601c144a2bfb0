"""Pool dispatch and deployments against a real Prefect server with real process workers.

One module fixture creates the ``gpu`` and ``cpu`` process pools, runs ``prefect deploy --all`` from
deployments/prefect.yaml and starts two ``gpu`` workers (one flow run at a time each) and a ``cpu`` worker.
"""
from __future__ import annotations

import json

import pandas as pd
import pytest

from flows.stylize_collection import stylize_collection
from tests.conftest import ROOT
from tests.prefect_server import stop
from tests.pipeline.helpers import ENGINE, output_files, write_manifest


@pytest.fixture(scope="module")
def deployed(prefect_server, tmp_path_factory):
    logs = tmp_path_factory.mktemp("worker-logs")
    for pool in ("gpu", "cpu"):
        r = prefect_server.cli("work-pool", "create", pool, "--type", "process")
        assert r.returncode == 0, r.stdout + r.stderr
    deploy = prefect_server.cli("--no-prompt", "deploy", "--all", "--prefect-file", "deployments/prefect.yaml")
    workers = [prefect_server.start_worker("gpu", "w1", logs / "w1.log"),
               prefect_server.start_worker("gpu", "w2", logs / "w2.log"),
               prefect_server.start_worker("cpu", "c1", logs / "c1.log", limit=None)]
    try:
        yield deploy, logs
    finally:
        for w in workers:
            stop(w)


def test_prefect_deploy_all_succeeds(deployed, prefect_server):
    deploy, _ = deployed
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        bulk = client.read_deployment_by_name("stylize-collection/bulk-archive")
        shard = client.read_deployment_by_name("stylize-shard/gpu")
        nightly = client.read_deployment_by_name("augment-dataset/nightly")
    assert (bulk.work_pool_name, shard.work_pool_name, nightly.work_pool_name) == ("cpu", "gpu", "cpu")
    assert bulk.parameters["dispatch"] == "pool" and not bulk.schedules
    [schedule] = nightly.schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("0 2 * * *", "UTC")
    assert schedule.active is False  # off until its placeholder parameters are edited
    assert all("EDIT-ME" in nightly.parameters[k] for k in ("source", "styles", "output"))
    assert {"source", "styles", "k", "seed", "output"} <= set(nightly.parameters)
    limit = nightly.global_concurrency_limit  # one night at a time; an overlapping run is cancelled
    assert limit is not None and limit.limit == 1
    assert str(getattr(nightly.concurrency_options, "collision_strategy", "")).endswith("CANCEL_NEW")
    # The code location is this checkout (deploy ran from the repository root).
    assert bulk.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}]


def test_zombie_run_automation_and_heartbeats_are_deployed(deployed, prefect_server):
    """The automation of docs/pipeline.md ("A worker that dies"), created with the command the docs give,
    reads back from the server as a proactive heartbeat trigger that crashes the run; the deployments set
    the heartbeat frequency, well under the trigger's window."""
    import re
    import shlex
    from datetime import timedelta

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture

    deploy, _ = deployed
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    [command] = re.findall(r"^prefect automation create .*$", (ROOT / "docs/pipeline.md").read_text(), re.M)
    r = prefect_server.cli(*shlex.split(command)[1:])
    assert r.returncode == 0, r.stdout + r.stderr
    with get_client(sync_client=True) as client:
        automations = client.read_automations_by_name("crash-zombie-stylize-runs")
        try:
            assert len(automations) == 1
            [automation] = automations
            deployments = {name: client.read_deployment_by_name(name) for name in (
                "stylize-collection/bulk-archive", "stylize-shard/gpu", "augment-dataset/nightly")}
        finally:
            for a in automations:  # other tests' runs must not meet it (the server lives for the session)
                client.delete_automation(a.id)
    assert automation.enabled
    trigger = automation.trigger
    assert isinstance(trigger, EventTrigger) and trigger.posture == Posture.Proactive
    assert trigger.after == {"prefect.flow-run.heartbeat"}
    assert trigger.expect == {"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
                              "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed"}
    assert trigger.for_each == {"prefect.resource.id"} and trigger.threshold == 1
    assert trigger.match.model_dump() == {"prefect.resource.id": "prefect.flow-run.*"}
    related = trigger.match_related.model_dump()
    assert related["prefect.resource.role"] == "flow"
    assert set(related["prefect.resource.name"]) == {"stylize-collection", "stylize-shard", "augment-dataset"}
    assert trigger.within == timedelta(seconds=300)
    [action] = automation.actions
    assert isinstance(action, ChangeFlowRunState) and action.state == StateType.CRASHED
    # Every deployment's runs beat at 60 s: 5 heartbeats per window, as docs/pipeline.md says.
    for name, deployment in deployments.items():
        env = (deployment.job_variables or {}).get("env") or {}
        assert env.get("PREFECT_FLOWS_HEARTBEAT_FREQUENCY") == "60", (name, deployment.job_variables)
    assert trigger.within.total_seconds() / 60 == 5


def test_deployment_run_bulk_archive_uses_both_workers(deployed, prefect_server, tmp_path):
    """``prefect deployment run stylize-collection/bulk-archive``: the parent runs on the cpu pool, its two shards
    run at once on the two gpu workers, as child runs named after the manifest and tagged with their shard."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (DeploymentFilter, DeploymentFilterName, FlowRunFilter,
                                                FlowRunFilterParentFlowRunId)

    path = write_manifest(tmp_path, 4)
    out = tmp_path / "out"
    params = ["--param", f"manifest={path}", "--param", f"output={out}", "--param", "shard_size=2",
              "--param", "concurrency=2", "--param", "quality=false"]
    for key, value in ENGINE.items():
        params += ["--param", f"{key}={value}"]
    run = prefect_server.cli("deployment", "run", "stylize-collection/bulk-archive", *params, "--watch",
                             "--watch-timeout", "300", timeout=360)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    [summary_file] = list((out / "_reports").glob("*/summary.json"))
    summary = json.loads(summary_file.read_text())
    assert (summary["total"], summary["ok"], summary["failed"], summary["dispatch"]) == (4, 4, 0, "pool")
    metrics = pd.read_parquet(summary_file.parent / "metrics.parquet")
    assert metrics["row"].tolist() == list(range(4)) and (metrics["status"] == "ok").all()
    assert {w.split(":")[0] for w in metrics["worker"]} == {"w1", "w2"}
    assert len(output_files(out)) == 4

    with get_client(sync_client=True) as client:
        [parent] = client.read_flow_runs(deployment_filter=DeploymentFilter(
            name=DeploymentFilterName(any_=["bulk-archive"])))
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent.id])))
    names = sorted(r.name for r in runs)
    assert names == [f"pairs-shard-{i:05d}" for i in range(2)]
    assert all(f"shard:{r.name[-5:]}" in r.tags for r in runs)


def test_a_pool_without_an_online_worker_is_reported(deployed, prefect_server):
    import time

    from prefect.client.orchestration import get_client

    from flows.stylize_collection import idle_pool_warning

    r = prefect_server.cli("work-pool", "create", "idle", "--type", "process")
    assert r.returncode == 0, r.stdout + r.stderr
    with get_client(sync_client=True) as client:
        assert idle_pool_warning(client, "no-such-pool") is None  # advice only: an unreadable pool never fails a run
        assert idle_pool_warning(client, "idle") == (
            "work pool 'idle' has no online worker, so its shard runs wait in state Scheduled; "
            "start one with: prefect worker start --pool idle")
        deadline = time.monotonic() + 30
        while idle_pool_warning(client, "gpu") is not None and time.monotonic() < deadline:
            time.sleep(1)  # the gpu workers register with their first heartbeat
        assert idle_pool_warning(client, "gpu") is None


def _idle_shard_deployment(pool: str, work_pool: str):
    """A ``stylize-shard/{pool}`` deployment on the process work pool ``work_pool``, which has no worker (its runs
    wait in state Scheduled); returns the deployment's id."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=work_pool, type="process"), overwrite=True)
        flow_id = client.create_flow_from_name("stylize-shard")
        return client.create_deployment(flow_id=flow_id, name=pool, work_pool_name=work_pool,
                                        entrypoint="flows/stylize_shard.py:stylize_shard", path=str(ROOT))


def test_shard_runs_waiting_on_an_idle_pool_warn_and_a_cancelled_run_fails_its_rows(
        deployed, prefect_server, tmp_path, monkeypatch):
    """End to end: stylize-collection dispatches to a pool that has no worker; while its shard runs wait the
    flow logs the idle-pool warning, and when the waiting runs are cancelled their rows fail, counted, and
    the cancelled runs are not started again (retries are for failed and crashed runs)."""
    import contextvars
    import logging
    import threading
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.states import Cancelled

    import flows.stylize_collection as collection

    pool, work_pool = "idle-e2e", "idle-e2e-pool"  # the deployment stylize-shard/idle-e2e, on another pool name
    deployment_id = _idle_shard_deployment(pool, work_pool)
    monkeypatch.setattr(collection, "IDLE_POOL_CHECK_SECONDS", 1.0)
    warnings: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:
                warnings.append(record.getMessage())

    handler = Capture()
    logging.getLogger("prefect.flow_runs").addHandler(handler)
    path = write_manifest(tmp_path, 4)
    result: dict = {}

    def run() -> None:
        result["state"] = stylize_collection(manifest=str(path), output=str(tmp_path / "out"), dispatch="pool",
                                             pool=pool, shard_size=2, concurrency=2,
                                             quality=False, return_state=True, **ENGINE)

    # the flow thread needs this thread's Prefect settings context (PREFECT_API_URL of the test server)
    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(run,), daemon=True)
    try:
        thread.start()
        deadline = time.monotonic() + 90
        while not any("has no online worker" in w for w in warnings) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert any(f"work pool {work_pool!r} has no online worker" in w for w in warnings), warnings
        with get_client(sync_client=True) as client:
            children = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))
            assert len(children) == 2 and all(c.state.is_scheduled() for c in children)
            for child in children:
                client.set_flow_run_state(child.id, Cancelled(message="cancelled by the test"), force=True)
        thread.join(timeout=60)
        assert not thread.is_alive()
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))
        assert sorted(r.id for r in runs) == sorted(c.id for c in children)  # no retry runs
    finally:
        logging.getLogger("prefect.flow_runs").removeHandler(handler)
    state = result["state"]
    assert state.is_failed() and "4 row(s) failed" in state.message
    summary = state.result(raise_on_failure=False).summary  # a failed run: RunFailed with its summary
    assert (summary["total"], summary["ok"], summary["failed"], summary["shards_failed"]) == (4, 0, 4, 2)
    assert output_files(tmp_path / "out") == []


def test_a_shard_run_whose_worker_is_killed_is_crashed_by_the_zombie_automation(deployed, prefect_server, tmp_path):
    """End to end: a stylize-shard deployment run sends its first heartbeat and blocks reading its shard (a FIFO);
    its worker and process are SIGKILLed, as if its machine died; the automation of
    deployments/automations.yaml then sets it Crashed (with its message: no worker reported anything).
    To stay short, the automation is narrowed to this test's deployment and its window cut to 10 s (Prefect's
    minimum); the runs beat every 30 s. So this checks that real heartbeats of a deployment run match the
    shipped trigger and that its action crashes the run; that a live run beating within the window is left
    alone is Prefect's trigger semantics (5 beats per shipped window, see the test above), not tested here."""
    import contextlib
    import os
    import signal
    import time

    import yaml
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.events.schemas.automations import AutomationCore

    [spec] = yaml.safe_load((ROOT / "deployments/automations.yaml").read_text())["automations"]
    pool, fifo = "zombie", tmp_path / "shard.parquet"
    os.mkfifo(fifo)  # reading the shard blocks until a writer opens it: the run stays Running
    worker = automation_id = writer = None
    try:
        with get_client(sync_client=True) as client:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"), overwrite=True)
            deployment_id = client.create_deployment(
                flow_id=client.create_flow_from_name("stylize-shard"), name=pool, work_pool_name=pool,
                entrypoint="flows/stylize_shard.py:stylize_shard", path=str(ROOT),
                job_variables={"env": {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30"}},
                pull_steps=[{"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}])
            spec["name"], spec["trigger"]["within"] = "crash-zombie-test", 10
            spec["trigger"]["match_related"] = [spec["trigger"]["match_related"],
                                                {"prefect.resource.id": f"prefect.deployment.{deployment_id}"}]
            automation_id = client.create_automation(AutomationCore.model_validate(spec))
            run_id = client.create_flow_run_from_deployment(deployment_id, parameters={"shard": str(fifo)}).id
            worker = prefect_server.start_worker(pool, "z1", tmp_path / "z1.log")
            deadline = time.monotonic() + 60
            while writer is None and time.monotonic() < deadline:
                try:  # succeeds once the flow body opened the shard, after its heartbeat thread sent a first beat
                    writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # kept open: the reader waits for data
                except OSError:
                    time.sleep(0.2)
            run = client.read_flow_run(run_id)
            assert writer is not None and run.state.is_running(), run.state
            time.sleep(3)  # let the run's events client send that beat
            os.killpg(worker.pid, signal.SIGKILL)  # the machine dies: its worker, then the run's process
            worker.wait(timeout=10)
            with contextlib.suppress(ProcessLookupError, ValueError, TypeError):
                os.kill(int(str(run.infrastructure_pid).rsplit(":", 1)[-1]), signal.SIGKILL)
            deadline = time.monotonic() + 45  # 10 s after the beat, evaluated every 5 s
            while not (state := client.read_flow_run(run_id).state).is_final() and time.monotonic() < deadline:
                time.sleep(1)
            assert state.is_crashed() and state.message == spec["actions"][0]["message"], state
    finally:
        with contextlib.suppress(OSError):  # release a reader still blocked (it then fails on an empty shard)
            os.close(writer if writer is not None else os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        if worker is not None:
            stop(worker)
        if automation_id is not None:
            with get_client(sync_client=True) as client:
                client.delete_automation(automation_id)


def test_pool_dispatch_without_the_shard_deployment_is_a_one_line_error(prefect_server, tmp_path):
    """A pool whose ``stylize-shard/POOL`` deployment does not exist fails before planning, with the fix."""
    from stylecore.errors import OptionsError

    path = write_manifest(tmp_path, 2)
    with pytest.raises(OptionsError) as err:
        stylize_collection(manifest=str(path), output=str(tmp_path / "out"), dispatch="pool", pool="nowhere",
                           quality=False, **ENGINE)
    host = prefect_server.url.split("//")[1].split("/")[0]
    assert str(err.value) == (f"dispatch pool: no deployment 'stylize-shard/nowhere' on the Prefect server at "
                              f"http://{host}/api; create it with `prefect deploy --all --prefect-file "
                              f"deployments/prefect.yaml` or choose a deployed pool")
    assert not (tmp_path / "out").exists()  # nothing planned or written


def test_server_label_never_shows_credentials():
    from flows.stylize_collection import server_label

    assert server_label("https://user:s3cret@prefect.example.com:4200/api?token=abc") == \
        "the Prefect server at https://prefect.example.com:4200/api"
    assert server_label(None).startswith("the ephemeral Prefect server (PREFECT_API_URL is not set")


def test_a_parent_that_stops_cancels_its_shard_runs_in_flight(prefect_server, tmp_path, monkeypatch):
    """When the parent run stops while shard runs are in flight (cancelled: its worker sends SIGTERM; Ctrl-C;
    an error), it cancels them, so no queued shard starts on a GPU afterwards. Here the parent fails by an
    error raised in its wait loop, while its two shard runs wait on a pool with no worker."""
    import contextvars
    import threading

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    import flows.stylize_collection as collection

    pool = "stop-e2e"
    deployment_id = _idle_shard_deployment(pool, pool)
    monkeypatch.setattr(collection, "IDLE_POOL_CHECK_SECONDS", 1.0)

    def stop_here(client, work_pool):
        raise RuntimeError("the parent stops here")

    monkeypatch.setattr(collection, "idle_pool_warning", stop_here)
    path = write_manifest(tmp_path, 4)
    result: dict = {}

    def run() -> None:
        result["state"] = stylize_collection(manifest=str(path), output=str(tmp_path / "out"), dispatch="pool",
                                             pool=pool, shard_size=2, concurrency=2, quality=False,
                                             return_state=True, **ENGINE)

    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(run,), daemon=True)
    thread.start()
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert result["state"].is_failed() and "the parent stops here" in result["state"].message
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))
    assert len(runs) == 2 and all(r.state.is_cancelled() for r in runs), [r.state for r in runs]
    assert {r.state.message for r in runs} == {"its stylize-collection parent run stopped"}
