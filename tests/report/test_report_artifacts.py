"""Prefect artifacts: created inside a flow run and read back through the client."""
from __future__ import annotations

import pytest

from tests.report.helpers import sample_summary


def test_flow_writes_report_and_artifacts(prefect_server, tmp_path):
    """stylize-collection with the quality hook on: metrics carry the quality columns, the report is
    written, and the run has its table, markdown and progress artifacts."""
    import json

    import pandas as pd
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from flows.stylize_collection import stylize_collection
    from stylecore.quality import resolve_evaluator_spec
    from tests.pipeline.helpers import ENGINE, write_manifest

    manifest = write_manifest(tmp_path, 3, extra_rows=[{"content": "content/b<a>d.jpg", "style": "styles/s0.png", "label": "x"}])
    (tmp_path / "content" / "b<a>d.jpg").write_bytes(b"not an image")
    summary = stylize_collection(manifest=str(manifest), output=str(tmp_path / "out"), max_failed=1, **ENGINE)
    assert (summary["ok"], summary["failed"], summary["total"]) == (3, 1, 4)
    report_dir = tmp_path / "out" / "_reports" / summary["run_id"]
    assert {"report.html", "metrics.csv", "metrics.parquet", "summary.json"} <= {p.name for p in report_dir.iterdir()}
    metrics = pd.read_parquet(report_dir / "metrics.parquet")
    ok = metrics[metrics.status == "ok"]
    assert ok["ssim"].between(0, 1).all() and (ok["color_distance"] > 0).all() and ok["quality_ms"].notna().all()
    on_disk = json.loads((report_dir / "summary.json").read_text())
    assert on_disk["evaluator"]["encoder"] == resolve_evaluator_spec("auto")
    assert on_disk["quality_cost"]["fraction_of_wall"] > 0 and on_disk["parameters"]["size"] == 32
    assert on_disk["failure_reasons"] == {"not an image (unrecognised format)": 1}

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[summary["flow_run_id"]])))
    by_type = {a.type: a for a in arts}
    assert set(by_type) == {"table", "markdown", "progress"}
    table = by_type["table"].data
    rows = {r["field"]: r["value"] for r in (table if isinstance(table, list) else json.loads(table))}
    assert rows["ok"] == "3" and rows["failed"] == "1" and rows["total"] == "4"
    assert rows["failed: not an image (unrecognised format)"] == "1"
    assert by_type["table"].key == "stylize-summary-pairs" and by_type["markdown"].key == "stylize-report-pairs"
    assert (report_dir / "report.html").resolve().as_uri() in by_type["markdown"].data
    assert by_type["progress"].data == pytest.approx(100.0)


def test_markdown_escapes_run_text(tmp_path):
    from tasks.artifacts import report_markdown

    md = report_markdown(str(tmp_path / "run (1)" / "report.html"), sample_summary())
    assert "run%20%281%29/report.html)" in md  # the link target cannot be cut short
    assert "decoder \\<b\\>exploded\\</b\\>" in md  # run-provided text is escaped


def test_presigned_link_for_s3(s3):
    from tasks.artifacts import report_markdown

    md = report_markdown(f"s3://{s3.bucket('report')}/runs/_reports/r1/report.html", sample_summary())
    assert "Signature=" in md and "expires in 168 h" in md and "](http://127.0.0.1:" in md


def test_no_presigned_link_with_temporary_credentials(s3, monkeypatch):
    """A session token (STS, SSO, instance roles) would ride in a presigned link's query string, into Prefect's
    database and UI: with one, the artifact names the report's s3:// URI instead. Links are SigV4."""
    from stylecore import storage
    from tasks.artifacts import report_markdown

    uri = f"s3://{s3.bucket('report')}/runs/_reports/r1/report.html"
    assert "X-Amz-Signature=" in report_markdown(uri, sample_summary())  # SigV4, not the legacy AWSAccessKeyId form
    monkeypatch.setenv("AWS_SESSION_TOKEN", "DummySessionTokenZZ9988")
    storage.reset_client()
    try:
        md = report_markdown(uri, sample_summary())
        assert "DummySessionTokenZZ9988" not in md and "Signature" not in md and "expires" not in md
        assert f"Report: `{uri}`" in md
    finally:
        monkeypatch.delenv("AWS_SESSION_TOKEN")
        storage.reset_client()
