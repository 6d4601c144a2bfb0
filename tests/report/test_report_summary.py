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


def test_untrained_evaluators_mixed_evaluators_and_failed_scoring_are_said(tmp_path, capsys):
    """Metrics of a random-weight evaluator, of rows scored by different evaluators, and rows whose scoring failed
    were shown like any others (audit): the summary flags them, `stylize report` prints them, report.html and
    --compare say them."""
    from stylecore.report import quality_notes
    from stylize_cli.main import main

    frame = sample_metrics()
    ok = frame.index[frame.status == "ok"]
    frame["evaluator"], frame["evaluator_size"] = None, None
    frame.loc[ok, "evaluator"], frame.loc[ok, "evaluator_size"] = "random:0", 96
    s = summarize(frame)
    assert s["evaluator"]["random_weights"] is True and s["quality_failed"] == 0
    assert len(quality_notes(s)) == 1 and "untrained network (evaluator random:0" in quality_notes(s)[0]
    frame.loc[ok[0], "evaluator"] = "imagenet"
    frame["quality_error"] = None
    frame.loc[ok[1], ["quality_error", "style_loss", "content_loss", "ssim", "color_distance", "evaluator"]] = [
        "RuntimeError: out of memory", None, None, None, None, None]
    s = summarize(frame)
    notes = quality_notes(s)
    assert s["quality_failed"] == 1 and s["quality_errors"] == {"RuntimeError: out of memory": 1}
    assert any("different quality evaluators (imagenet, random:0)" in n for n in notes), notes
    assert any(n.startswith("quality scoring failed for 1 ok row, whose metrics are missing (e.g. RuntimeError")
               for n in notes), notes
    trained = sample_metrics()
    trained["evaluator"], trained["evaluator_size"] = "imagenet", 96
    assert quality_notes(summarize(trained)) == [] and summarize(trained)["evaluator"]["random_weights"] is False
    # the CLI and the HTML
    (tmp_path / "a").mkdir()
    frame.to_parquet(tmp_path / "a" / "metrics.parquet")
    assert main(["report", str(tmp_path / "a"), "--breakdown", "0"]) == 0
    out = capsys.readouterr().out
    assert "note: quality scoring failed for 1 ok row" in out and "note: rows were scored by different" in out
    html = (tmp_path / "a" / "report.html").read_text()
    assert html.count('<p class="warn">') == 3 and "untrained network" in html
    # --compare: another evaluation size is another evaluator
    (tmp_path / "b").mkdir()
    (tmp_path / "c").mkdir()
    trained.to_parquet(tmp_path / "b" / "metrics.parquet")
    trained.assign(evaluator_size=32).to_parquet(tmp_path / "c" / "metrics.parquet")
    assert main(["report", "--compare", str(tmp_path / "b"), str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "note: the runs used different quality evaluators (imagenet at 96 px vs imagenet at 32 px)" in out, out
    assert [line.split()[2:] for line in out.splitlines() if line.startswith("evaluator size")] == [["96", "32", "-64"]]


def test_infinite_values_are_counted_and_scoring_time_is_a_share_of_every_workers_wall_time():
    """An inf metric (a blow-up) vanished from the statistics without a trace, and quality_ms summed over
    parallel workers was divided by one wall time, so fraction_of_wall could pass 1 (audit)."""
    from stylecore.report import describe_values

    d = describe_values([1.0, float("nan"), float("inf"), -float("inf")])
    assert d["count"] == 1 and d["mean"] == 1.0 and d["infinite"] == 2
    assert "infinite" not in describe_values([1.0, 2.0])
    frame = sample_metrics()
    ok = frame.index[frame.status == "ok"]
    frame.loc[ok, "quality_ms"] = 1000.0  # 3 rows x 1 s of scoring
    frame.loc[ok, "worker"] = ["a:1", "b:1", "b:1"]
    cost = summarize(frame, {"wall_seconds": 2.0, "total": 7, "ok": 3, "failed": 3, "skipped": 1})["quality_cost"]
    assert cost["workers"] == 2 and cost["fraction_of_wall"] == pytest.approx(3.0 / (2.0 * 2))
