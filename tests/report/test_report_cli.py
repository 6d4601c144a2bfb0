"""``stylize report``: rebuild from metrics.parquet, compare two runs, one-line errors."""
from __future__ import annotations

import json

from tests.conftest import run_cli
from tests.report.helpers import build_sample_report


def test_rebuild_and_compare(tmp_path, evaluator):
    report_dir, _ = build_sample_report(tmp_path / "a", evaluator, breakdown_rows=0)
    for name in ("report.html", "metrics.csv"):
        (report_dir / name).unlink()
    (report_dir / "summary.json").write_text(json.dumps({"wall_seconds": 4.0, "ok": 99}))  # stale counts
    proc = run_cli("report", report_dir, "--metric", "ssim", "--samples", "1", "--breakdown", "1")
    assert proc.returncode == 0, proc.stderr
    assert "7 rows: 3 ok, 3 failed, 1 skipped" in proc.stdout and "2 x not an image (unrecognised format)" in proc.stdout
    summary = json.loads((report_dir / "summary.json").read_text())
    assert summary["ok"] == 3 and summary["wall_seconds"] == 4.0 and summary["metrics"]["ssim"]["count"] == 3
    html = (report_dir / "report.html").read_text()
    assert html.count('src="data:image/png') == 20  # one breakdown row: 5 layers x 4 feature maps
    assert (report_dir / "metrics.csv").exists()

    other, _ = build_sample_report(tmp_path / "b", evaluator, breakdown_rows=0)
    proc = run_cli("report", "--compare", report_dir, other)
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line.split() for line in proc.stdout.splitlines() if line.strip()}
    assert lines["wall_seconds"][1:] == ["4", "1", "-3"]
    assert lines["ok"][1:] == ["3", "3", "+0"]
    assert "note:" not in proc.stdout
    plain = tmp_path / "c"  # a --no-quality run: no evaluator (was "different quality evaluators (random:0 vs None)")
    plain.mkdir()
    (plain / "summary.json").write_text(json.dumps({"ok": 3, "latency_ms_p50": 5.0, "failure_reasons": {}}))
    proc = run_cli("report", "--compare", report_dir, plain)
    assert proc.returncode == 0 and proc.stdout.splitlines()[-1] == (
        "note: run B has no quality metrics (run with --no-quality); only counts and timings compare"), proc.stdout


def test_errors_exit_2_with_one_line(tmp_path, capsys):
    proc = run_cli("report", tmp_path / "nope")  # through the console script's process
    assert proc.returncode == 2 and proc.stderr.strip() == f"error: {tmp_path / 'nope' / 'metrics.parquet'}: not found"
    from stylize_cli.main import main

    for args in (("report",), ("report", "--compare", str(tmp_path), str(tmp_path / "x")),
                 ("report", str(tmp_path), "--metric", "bogus"), ("report", str(tmp_path), "--compare", "a", "b")):
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse usage errors
            code = e.code
        err = capsys.readouterr().err
        assert code == 2, (args, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, err)


def test_a_parquet_that_is_not_a_metrics_file_is_an_error(tmp_path, capsys):
    import pandas as pd

    from stylize_cli.main import main

    from tests.report.helpers import sample_metrics

    other = tmp_path / "good"
    other.mkdir()
    sample_metrics().to_parquet(other / "metrics.parquet")
    assert main(["report", "--compare", str(other), str(other)]) == 0  # a real metrics file still compares
    capsys.readouterr()
    cases = {"cols": (pd.DataFrame({"x": [1]}), "no id, status columns"),
             "nostatus": (pd.DataFrame({"id": ["a"], "x": [1]}), "no status column"),
             "status": (pd.DataFrame({"id": ["a"], "status": ["done"]}), "status 'done'")}
    for name, (frame, why) in cases.items():
        d = tmp_path / name
        d.mkdir()
        frame.to_parquet(d / "metrics.parquet")
        expected = f"error: {d / 'metrics.parquet'}: not a stylize metrics file ({why}"
        for args in (("report", str(d)), ("report", "--compare", str(other), str(d))):
            code = main(list(args))
            out, err = capsys.readouterr()
            assert code == 2, (args, out, err)
            assert len(err.strip().splitlines()) == 1 and err.startswith(expected), (args, err)
            assert "rows:" not in out and "ok" not in out
        assert not (d / "report.html").exists() and not (d / "summary.json").exists()


def test_metric_choice_on_a_report_without_metric_columns(tmp_path, capsys):
    """Metrics of a run where nothing was stylized hold no metric columns: ``--metric`` says so rather than
    'choose one of none'."""
    from stylecore.quality import METRICS
    from stylize_cli.main import main
    from tests.report.helpers import sample_metrics

    frame = sample_metrics()
    frame = frame[frame.status != "ok"].drop(columns=[c for c in (*METRICS, "total_ms") if c in frame])
    frame.to_parquet(tmp_path / "metrics.parquet")
    assert main(["report", str(tmp_path), "--metric", "ssim"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: report metric 'ssim': not a column of the metrics; "
                   "these metrics have no metric columns (no row was stylized)"), err
    assert sorted(f.name for f in tmp_path.iterdir()) == ["metrics.parquet"]  # refused before any write (audit)


def test_compare_counts_the_rows_of_metrics_parquet_not_an_older_summary(tmp_path, capsys):
    """A summary.json written before rows were merged or re-run into the folder (it has every field) was
    compared as it was, disagreeing with `stylize report` on the same folder (audit)."""
    from stylize_cli.main import main
    from tests.report.helpers import sample_metrics

    frame = sample_metrics()
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        frame.to_parquet(tmp_path / name / "metrics.parquet")
    stale = {"total": 40, "ok": 30, "failed": 9, "skipped": 1, "latency_ms_p50": 5.0, "failure_reasons": {},
             "wall_seconds": 12.0}
    (tmp_path / "b" / "summary.json").write_text(json.dumps(stale))
    assert main(["report", "--compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    lines = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines() if line.strip()}
    n_ok = int((frame.status == "ok").sum())
    assert lines["ok"][1:] == [str(n_ok), str(n_ok), "+0"], lines["ok"]
    assert lines["wall_seconds"][2] == "-"  # the summary's timings were of other rows: not shown as this run's


def test_run_summary_accounts_for_the_reasons_it_does_not_list(capsys):
    """``stylize run`` lists the 5 most frequent reasons; the failed rows of the others are counted in one more
    line (60 failed rows showed as five lines of 1 and nothing else)."""
    import io

    from stylize_cli.run import print_summary

    reasons = {f"reason {i}": 12 - i for i in range(7)} | {"(other reasons)": 4}  # 12+11+...+6 + 4 = 67 rows
    buf = io.StringIO()
    print_summary({"total": 70, "ok": 3, "failed": 67, "skipped": 0, "failure_reasons": reasons,
                   "report_dir": "r"}, out=buf)
    lines = buf.getvalue().splitlines()
    assert lines[1:6] == [f"  {12 - i} x reason {i}" for i in range(5)]
    assert lines[6] == "  ... and 17 more failed rows for other reasons (see the report)"  # 7 + 6 + 4
    shown = sum(int(line.split(" x ")[0]) for line in lines[1:6])
    assert shown + 17 == 67 and lines[7] == "report: r"  # the lines account for every failed row
