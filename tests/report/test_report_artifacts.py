"""Prefect artifacts: created inside a flow run and read back through the client."""
from __future__ import annotations

import pytest

from tests.report.helpers import sample_summary


@pytest.fixture(scope="module")
def prefect_api():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def test_artifacts_are_created(prefect_api, tmp_path):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from tasks.artifacts import Progress, publish_report_link, publish_summary

    summary = sample_summary()
    report = tmp_path / "run 1" / "report.html"

    @flow(name="artifact-check")
    def run():
        from prefect.runtime import flow_run

        publish_summary(summary, key="stylize-summary-test")
        publish_report_link(str(report), summary, key="stylize-report-test")
        p = Progress(4, description="shards")
        for _ in range(4):
            p.advance()
        return flow_run.id

    run_id = run()
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
    by_type = {a.type: a for a in arts}
    assert set(by_type) == {"table", "markdown", "progress"}
    table = by_type["table"].data
    rows = {r["field"]: r["value"] for r in (table if isinstance(table, list) else __import__("json").loads(table))}
    assert rows["ok"] == "3" and rows["failed"] == "3" and rows["total"] == "7"
    assert rows["failed: <file>: not an image (unrecognised format)"] == "2"
    md = by_type["markdown"].data
    assert report.resolve().as_uri().replace(" ", "%20") in md
    assert "decoder \\<b\\>exploded" in md  # run-provided text is escaped
    assert by_type["progress"].data == pytest.approx(100.0)
    assert by_type["progress"].description == "4 of 4 shards"


def test_presigned_link_for_s3(s3_server):
    from tasks.artifacts import report_markdown

    md = report_markdown(f"s3://{s3_server}/runs/_reports/r1/report.html", sample_summary())
    assert "X-Amz-Signature=" in md and "expires in 168 h" in md
