"""Summary extras: counts add up, percentiles, failure reasons, weight specs, evaluator, comparison."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stylecore.report import compare_rows, failure_reason, summarize
from tests.report.helpers import sample_metrics, sample_summary


def test_counts_add_up():
    s = sample_summary()
    assert (s["total"], s["ok"], s["failed"], s["skipped"]) == (7, 3, 3, 1)
    assert s["ok"] + s["failed"] + s["skipped"] == s["total"]
    assert sum(s["failure_reasons"].values()) == s["failed"]
    assert sum(s["rows_by_worker"].values()) == s["total"] - s["skipped"]
    assert sum(w["rows"] for w in s["weight_specs"]) == s["total"] - s["skipped"]


def test_many_reasons_still_add_up():
    import pandas as pd

    m = pd.DataFrame({"id": [f"r{i}" for i in range(80)], "status": ["failed"] * 70 + ["ok"] * 10,
                      "error": [f"engine error code {i % 60}" for i in range(70)] + [""] * 10})
    s = summarize(m)
    assert len(s["failure_reasons"]) == 51 and s["failure_reasons"]["(other reasons)"] == 10
    assert sum(s["failure_reasons"].values()) == s["failed"] == 70


def test_failure_reasons_are_grouped_without_file_names():
    s = sample_summary()

    assert s["failure_reasons"]["not an image (unrecognised format)"] == 2
    assert s["failure_examples"]["not an image (unrecognised format)"] == ["f1", "f2"]
    assert s["failure_reasons"]["decoder <b>exploded</b>"] == 1
    assert failure_reason("s3://bucket/a/b.jpg: not found") == "not found"
    assert failure_reason("cannot read /data/x.png (EOF)") == "cannot read <file> (EOF)"


def test_latency_and_metric_statistics():
    m = sample_metrics()
    s = summarize(m, {"wall_seconds": 3.0})
    ok = m[m.status == "ok"]
    assert s["latency_ms_p50"] == pytest.approx(np.percentile(ok.total_ms, 50))
    assert s["latency_ms_p95"] == pytest.approx(np.percentile(ok.total_ms, 95))
    assert s["metrics"]["ssim"]["mean"] == pytest.approx(ok.ssim.mean())
    assert s["metrics"]["style_loss"]["p5"] == pytest.approx(np.percentile(ok.style_loss, 5))
    assert s["metrics"]["color_distance"]["count"] == 3
    assert s["wall_seconds"] == 3.0  # the pipeline's keys are kept
    assert s["devices"] == ["cpu"] and s["methods"] == ["adain"] and s["workers"] == ["host:1", "host:2"]
    assert s["weight_specs"] == [{"method": "adain", "encoder": None, "decoder": None, "rows": 3},
                                {"method": "adain", "encoder": "random:0", "decoder": "/w/decoder.pth", "rows": 3}]


def test_evaluator_comes_from_the_rows():
    m = sample_metrics()
    m.loc[m.status == "ok", "evaluator"] = "random:0"
    m.loc[m.status == "ok", "evaluator_size"] = 128
    s = summarize(m)
    assert s["evaluator"]["encoder"] == "random:0" and s["evaluator"]["size"] == 128
    assert summarize(sample_metrics())["evaluator"] is None


def test_compare_table():
    a = sample_summary()
    b = dict(a, ok=5, total=9, latency_ms_p50=50.0)
    rows = {r[0]: r for r in compare_rows(a, b)}
    assert rows["ok"][1:] == ("3", "5", "+2")
    assert rows["latency_ms_p50"][3].startswith("-")
    assert rows["evaluator"][1] == "random:0"


def test_a_rebuild_over_other_rows_recomputes_passed_and_drops_the_old_run_timings():
    """Metrics merged from two runs, summarised with run A's summary.json: ``passed`` follows the new counts, and
    A's wall time and throughput (which describe A's rows) are not carried over."""
    base = {"total": 2, "ok": 2, "failed": 0, "skipped": 0, "passed": True, "max_failed_rows": 0,
            "wall_seconds": 3.0, "images_per_second": 0.667, "phase_seconds": {"plan": 1.0}}
    merged = pd.DataFrame({"id": list("abcd"), "status": ["ok", "ok", "failed", "failed"],
                           "error": ["", "", "x.png: not found", "y.png: not found"]})
    s = summarize(merged, base)
    assert (s["total"], s["failed"], s["passed"]) == (4, 2, False)
    assert s["wall_seconds"] is None and s["images_per_second"] is None and s["phase_seconds"] is None
    same = summarize(merged.iloc[:2], base)  # the run's own rows: everything kept
    assert same["passed"] is True and same["wall_seconds"] == 3.0 and same["images_per_second"] == 0.667
