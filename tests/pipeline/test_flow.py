"""``stylize-collection`` end to end on local disk (in this process, against the session's Prefect server)."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from PIL import Image

from flows.stylize_collection import stylize_collection
from stylecore.engine import get_engine
from tests.pipeline.helpers import ENGINE, output_files, write_manifest

SUMMARY_KEYS = {"total", "ok", "failed", "skipped", "wall_seconds", "images_per_second", "method", "device",
                "manifest", "flow_run_id"}
METRICS_COLUMNS = ["id", "content", "style", "output", "status", "error", "read_ms", "compute_ms", "write_ms"]


def _report(summary) -> tuple[pd.DataFrame, dict]:
    from pathlib import Path

    rd = Path(summary["report_dir"])
    return pd.read_parquet(rd / "metrics.parquet"), json.loads((rd / "summary.json").read_text())


@pytest.fixture
def count_engine_calls(monkeypatch):
    """Counts the rows the process engine is asked to stylize (the real engine still does the work)."""
    engine = get_engine(ENGINE["encoder"], ENGINE["decoder"], None, ENGINE["device"], progress=False)  # as tasks/shards.py
    calls: list[int] = []
    real = engine.stylize_batch

    def counted(requests):
        calls.append(len(requests))
        return real(requests)

    monkeypatch.setattr(engine, "stylize_batch", counted)
    return calls


def test_local_end_to_end_and_resume(prefect_server, tmp_path, count_engine_calls):
    path = write_manifest(tmp_path, 7)
    out = tmp_path / "out"
    params = dict(manifest=str(path), output=str(out), shard_size=3, **ENGINE)
    state = stylize_collection(**params, return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    metrics, written = _report(summary)

    assert SUMMARY_KEYS <= set(summary) and written == json.loads(json.dumps(written))
    assert (summary["total"], summary["ok"], summary["failed"], summary["skipped"]) == (7, 7, 0, 0)
    assert written["ok"] == 7 and written["flow_run_id"] == str(state.state_details.flow_run_id)
    assert summary["method"] == "adain" and summary["device"] == "cpu" and summary["shards"] == 3
    assert summary["images_per_second"] > 0
    phases = summary["phase_seconds"]  # plan, shards and merge add up to the wall time they split
    assert set(phases) == {"plan", "shards", "merge"} and min(phases.values()) >= 0
    assert abs(sum(phases.values()) - summary["wall_seconds"]) < 0.01 and phases["shards"] > phases["merge"]
    assert list(metrics.columns[: len(METRICS_COLUMNS)]) == METRICS_COLUMNS
    assert metrics["row"].tolist() == list(range(7)) and (metrics["status"] == "ok").all()
    assert metrics["label"].tolist() == [f"class{i % 3}" for i in range(7)]
    from stylecore.manifest import KNOWN, RESULT_COLUMNS  # a manifest column of a result's name is not passed through

    assert set(metrics.columns) - {"label"} <= RESULT_COLUMNS | KNOWN
    # The weights each row used, per row and summed up (summary.json's weight_specs had the method only).
    assert metrics[["encoder", "decoder"]].drop_duplicates().values.tolist() == [["random:0", "random:1"]]
    assert metrics["model"].isna().all()
    assert written["weight_specs"] == [{"method": "adain", "encoder": "random:0", "decoder": "random:1", "model": None,
                                        "rows": 7}]
    # The quality hook scored every row (report issue), and the HTML report was written.
    assert metrics[["content_loss", "style_loss", "ssim", "color_distance"]].notna().all().all()
    assert (out / "_reports" / summary["run_id"] / "report.html").is_file()
    files = output_files(out)
    assert sorted(f.name for f in files) == sorted(metrics["output"])
    for f in files:
        with Image.open(f) as im:
            im.load()
            assert max(im.size) == 32
    assert sum(count_engine_calls) == 7
    # Shard manifests live under the report prefix.
    assert len(list((out / "_reports" / summary["run_id"] / "shards").glob("shard-*.metrics.parquet"))) == 3

    # The run is named after the manifest, and the progress artifact reached 100 %.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
        assert run.name.startswith("pairs-")
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))
    progress = [a for a in arts if a.type == "progress"]
    assert progress and progress[0].data == 100.0

    # Resume: a second run skips every row and asks the engine for nothing.
    count_engine_calls.clear()
    mtimes = {f: f.stat().st_mtime_ns for f in files}
    again = stylize_collection(**params, return_state=True).result()
    assert (again["total"], again["ok"], again["failed"], again["skipped"]) == (7, 0, 0, 7)
    assert count_engine_calls == [] and again["shards"] == 0
    assert {f: f.stat().st_mtime_ns for f in output_files(out)} == mtimes
    metrics2, _ = _report(again)
    assert (metrics2["status"] == "skipped").all() and len(metrics2) == 7


def test_max_failed_count_and_fraction(prefect_server, tmp_path):
    bad = [{"content": "content/gone.jpg", "style": "styles/s0.png", "label": "x"}]
    path = write_manifest(tmp_path, 3, extra_rows=bad)
    common = dict(manifest=str(path), output=str(tmp_path / "out"), quality=False, **ENGINE)
    state = stylize_collection(**common, return_state=True)
    assert state.is_failed() and "1 row(s) failed (max_failed allows 0); most common: not found (1 row(s));" in state.message
    summary = state.result(raise_on_failure=False).summary  # a failed run: RunFailed with its summary
    assert (summary["ok"], summary["failed"], summary["passed"]) == (3, 1, False)
    assert summary["failure_reasons"] == {"not found": 1}
    # A fraction of the rows: 0.25 of 4 rows allows one failure.
    state = stylize_collection(**common, max_failed=0.25, return_state=True)
    assert state.is_completed()
    assert state.result()["failed"] == 1 and state.result()["skipped"] == 3


@pytest.mark.parametrize("settings,error", [
    (dict(device="tpu"), "unknown device 'tpu'; expected one of auto, cpu, cuda, cuda:N"),
    (dict(device="cuda"), "device 'cuda' requested but CUDA is not available"),
    (dict(shard_size=-1), "shard_size: -1 is not a whole number >= 1"),
    (dict(shard_size=0), "shard_size: 0 is not a whole number >= 1"),
    (dict(concurrency=-2), "concurrency: -2 is not a whole number >= 1"),
    (dict(max_shard_retries=-1), "max_shard_retries: -1 is not a whole number >= 0"),
    (dict(batch_size=-1), "batch_size: -1 is not a whole number >= 0"),
    (dict(max_failed=1.5), "max_failed: 1.5 must be a whole count or a fraction in (0, 1)"),
    (dict(decoder=None), "method adain needs decoder weights: --decoder SPEC"),
    (dict(encoder="/nonexistent/vgg.pth"), "encoder /nonexistent/vgg.pth: file not found"),
    (dict(decoder="imagenet"), "decoder: 'imagenet' names torchvision's VGG19 encoder weights only"),
    (dict(decoder="{tmp}/decoder.pth"), "decoder {tmp}/decoder.pth: not a readable state_dict"),
])
def test_bad_run_settings_fail_before_any_shard(prefect_server, tmp_path, settings, error):
    """Settings that would fail every shard after its retries, or every row (weights that do not load), or be
    silently changed fail the run at once with one line, and nothing is written."""
    from stylecore.errors import StyleCoreError

    (tmp_path / "decoder.pth").write_text("not a checkpoint")
    settings = {k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in settings.items()}
    error = error.format(tmp=tmp_path)
    path = write_manifest(tmp_path, 2)
    params = dict(manifest=str(path), output=str(tmp_path / "out"), quality=False, **ENGINE)
    params.update(settings)
    with pytest.raises(StyleCoreError) as info:
        stylize_collection(**params)
    assert str(info.value).startswith(error) and "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_weights_are_checked_for_the_rows_still_to_do(prefect_server, tmp_path):
    """Only the rows a run will do need their weights: a finished manifest re-runs (all skipped) after its decoder
    file is gone, and a decoder that does not load fails the run before any shard only when its rows would be
    more failures than ``max_failed`` allows; within it, those rows fail alone and the other method's rows run."""
    import torch

    from stylecore.adain import load_adain_decoder
    from stylecore.errors import WeightsError

    decoder = tmp_path / "decoder.pth"
    torch.save(load_adain_decoder("random:1").state_dict(), decoder)
    path = write_manifest(tmp_path, 2)
    common = dict(manifest=str(path), output=str(tmp_path / "out"), quality=False, **dict(ENGINE, decoder=str(decoder)))
    assert stylize_collection(**common)["ok"] == 2
    decoder.unlink()
    again = stylize_collection(**common)
    assert (again["ok"], again["failed"], again["skipped"]) == (0, 0, 2)

    bad = tmp_path / "bad.pth"  # another path: this process's engine for decoder.pth keeps what it loaded
    bad.write_text("not a checkpoint")
    mixed = write_manifest(tmp_path / "mixed", 2, extra_rows=[
        {"content": "content/c000.jpg", "style": "styles/s1.png", "label": "g", "method": "gatys"}])
    common.update(manifest=str(mixed), output=str(tmp_path / "mixed-out"), steps=2, decoder=str(bad))
    with pytest.raises(WeightsError, match="decoder .*bad.pth: not a readable state_dict"):
        stylize_collection(**common, max_failed=1)
    assert not (tmp_path / "mixed-out").exists()
    summary = stylize_collection(**common, max_failed=2)
    assert (summary["ok"], summary["failed"]) == (1, 2)
    metrics = pd.read_parquet(f"{summary['report_dir']}/metrics.parquet")
    assert metrics.loc[metrics["status"] == "ok", "method"].tolist() == ["gatys"]
    assert metrics.loc[metrics["status"] == "failed", "error"].str.contains("not a readable state_dict").all()


def test_every_manifest_problem_is_in_the_run_log(prefect_server, tmp_path):
    """A deployment's user sees the run's log, not the CLI: every problem of a bad manifest is logged there."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    from stylecore.errors import ManifestError

    bad = [{"content": "content/c000.jpg", "style": "styles/s0.png", "alpha": 2.5},
           {"content": "content/c001.jpg", "style": "styles/s1.png", "method": "bogus"}]
    path = write_manifest(tmp_path, 2, extra_rows=bad)
    state = stylize_collection(manifest=str(path), output=str(tmp_path / "out"), quality=False, return_state=True,
                               **ENGINE)
    assert state.is_failed() and isinstance(state.result(raise_on_failure=False), ManifestError)
    APILogHandler().flush()  # logs are sent in batches
    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    text = "\n".join(log.message for log in logs)
    assert "row 2, column alpha" in text and "row 3, column method" in text, text


def test_a_direct_call_of_a_failed_run_raises_run_failed_with_its_summary(prefect_server, tmp_path):
    """Called as a Python function, a run over its failure limit raises ``RunFailed`` carrying the summary
    (Prefect raised a TypeError: a failed state's data must be an exception)."""
    from stylecore.errors import RunFailed

    bad = [{"content": "content/gone.jpg", "style": "styles/s0.png", "label": "x"}]
    path = write_manifest(tmp_path, 2, extra_rows=bad)
    with pytest.raises(RunFailed, match=r"1 row\(s\) failed \(max_failed allows 0\)") as info:
        stylize_collection(manifest=str(path), output=str(tmp_path / "out"), quality=False, **ENGINE)
    assert (info.value.summary["ok"], info.value.summary["failed"]) == (2, 1)
    assert (tmp_path / "out" / "_reports").is_dir()


def test_storage_down_at_the_end_is_a_report_error_not_a_usage_error(prefect_server, tmp_path, monkeypatch):
    """Shards ran, then the report folder's storage failed: ``ReportError`` (CLI exit 1) that says how far the
    run got, not a ``StorageError`` (exit 2, reserved for bad requests); a re-run skips what was written."""
    import flows.stylize_collection as sc
    from stylecore.errors import ReportError, StorageError, StyleCoreError

    path = write_manifest(tmp_path, 3)
    params = dict(manifest=str(path), output=str(tmp_path / "out"), quality=False, **ENGINE)

    def down(*args, **kwargs):
        raise StorageError("s3://reports/run/shards/shard-00000.metrics.parquet: read failed: no answer from the "
                           "S3 endpoint after 5 attempts (EndpointConnectionError)")

    monkeypatch.setattr(sc, "merge_task", down)
    with pytest.raises(ReportError, match=r"^1 of 1 shard\(s\) finished, but their metrics could not be read back: "
                                          r"s3://reports/.*run again to finish") as info:
        stylize_collection(**params)
    assert not isinstance(info.value, StyleCoreError)
    monkeypatch.undo()
    again = stylize_collection(**params)
    assert (again["ok"], again["skipped"]) == (0, 3)


def test_user_errors_end_the_run_with_their_line_and_no_traceback(prefect_server, tmp_path):
    """A missing manifest or a bad manifest row (user errors) ends the run Failed with the error's one line,
    logged once, with no traceback in the run's logs; a direct call still raises the error itself."""
    from stylecore.errors import ManifestError
    from tests.pipeline.helpers import run_logs

    bad = tmp_path / "bad.csv"
    bad.write_text("content,style\nphoto.jpg,\n")
    with run_logs() as records:
        missing = stylize_collection(manifest=str(tmp_path / "none.csv"), output=str(tmp_path / "out"),
                                     return_state=True, **ENGINE)
        invalid = stylize_collection(manifest=str(bad), output=str(tmp_path / "out"), return_state=True, **ENGINE)
    assert missing.is_failed() and missing.message == f"ManifestError: manifest {tmp_path / 'none.csv'}: not found"
    assert invalid.is_failed() and invalid.message.startswith("ManifestError: ")
    error = invalid.result(raise_on_failure=False)
    assert isinstance(error, ManifestError) and error.problems == ["row 0, column style: empty cell"]
    assert any(r.getMessage() == "row 0, column style: empty cell" for r in records)
    assert not [r for r in records if r.exc_info and r.exc_info[0] is not None]
    assert not any("Traceback" in r.getMessage() for r in records)
    with pytest.raises(ManifestError, match="not found"):
        stylize_collection(manifest=str(tmp_path / "none.csv"), output=str(tmp_path / "out"), **ENGINE)


def test_manifest_columns_named_like_results_or_of_mixed_types_do_not_break_runs_or_resumes(prefect_server, tmp_path):
    """A dataset manifest with ``width``/``status`` columns (or a metrics file fed back in) and a JSON Lines column
    mixing numbers and text: the run's own columns win, the user is told, and the resume run (skipped rows from the
    plan beside new rows from a shard) still writes its metrics."""
    write_manifest(tmp_path, 3)
    rows = [{"content": f"content/c{i:03d}.jpg", "style": "styles/s0.png", "width": "640", "status": "failed",
             "meta": [7, "seven", None][i]} for i in range(3)]
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))
    params = dict(manifest=str(path), output=str(tmp_path / "out"), quality=False, **ENGINE)
    first = stylize_collection(**params)
    assert (first["ok"], first["failed"], first["skipped"]) == (2, 0, 0)
    assert first["manifest_notes"] == [
        "columns width, status ignored: the run writes these names in its metrics (rename to keep)",
        "column meta: mixed value types; passed through as text"]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    again = stylize_collection(**params)
    assert (again["total"], again["ok"], again["failed"], again["skipped"]) == (3, 1, 0, 2)
    metrics, _ = _report(again)
    assert metrics["status"].tolist() == ["skipped", "skipped", "ok"]
    assert metrics["width"].isna().tolist() == [True, True, False] and metrics["width"].iat[2] == 32
    assert metrics["meta"].tolist()[:2] == ["7", "seven"] and pd.isna(metrics["meta"].iat[2])
