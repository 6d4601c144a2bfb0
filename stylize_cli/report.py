"""``stylize report``: rebuild a run's report from its per-row metrics, or compare two runs.

``stylize report RUN`` reads ``RUN/metrics.parquet`` (RUN is a report folder such as
``out/_reports/20260101T020000Z-1a2b3c4d`` or an ``s3://`` prefix) and rewrites ``summary.json`` (with the
extras), ``metrics.csv`` and ``report.html`` there. ``stylize report --compare A B`` prints the two runs'
summaries side by side. Errors exit 2 with one line.
"""
from __future__ import annotations

import argparse
import sys


def print_reasons(summary: dict, limit: int, out=None) -> None:
    """The ``limit`` most frequent failure reasons, one line each, and a line counting the failed rows of the rest."""
    reasons = summary.get("failure_reasons")
    if not isinstance(reasons, dict):
        return
    items = list(reasons.items())
    for reason, n in items[:limit]:
        print(f"  {n} x {reason}", file=out or sys.stdout)
    rest = sum(int(n) for _, n in items[limit:])
    if rest:
        print(f"  ... and {rest} more failed row{'s' * (rest != 1)} for other reasons (see the report)",
              file=out or sys.stdout)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report", help="rebuild a run's report.html from metrics.parquet, or compare two runs",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Rebuild report.html, summary.json (with latency, metric and failure summaries) and metrics.csv\n"
                    "from RUN/metrics.parquet, e.g. after merging runs. RUN is a report folder or an s3:// prefix.\n\n"
                    "examples:\n"
                    "  stylize report out/_reports/20260101T020000Z-1a2b3c4d\n"
                    "  stylize report s3://bucket/styled/_reports/20260101T020000Z-1a2b3c4d --metric ssim\n"
                    "  stylize report --compare out/_reports/RUN_A out/_reports/RUN_B")
    p.add_argument("run", metavar="RUN_DIR_OR_URI", nargs="?", help="report folder holding metrics.parquet")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"), help="print two runs' summaries side by side")
    p.add_argument("--metric", default=None, choices=("style_loss", "content_loss", "ssim", "color_distance", "total_ms"),
                   help="metric that picks the contact sheet's best and worst rows (default: style_loss when measured)")
    p.add_argument("--samples", type=int, default=4, metavar="N", help="rows each of best, worst and random (default: 4)")
    p.add_argument("--breakdown", type=int, default=2, metavar="N",
                   help="sample rows with a per-layer style-loss breakdown and feature maps (0: off; default: 2)")
    p.set_defaults(func=run)


def _load_summary(uri: str) -> dict:
    """A run's summary, computed from metrics.parquet (what `stylize report` shows; a summary.json can be older
    than rows merged or re-run into the folder) with summary.json's extras, else summary.json alone."""
    from stylecore import report, storage
    from stylecore.errors import StorageError

    summary = report.read_summary(uri)
    if not storage.exists(storage.join(uri, "metrics.parquet")):
        if not summary:
            raise StorageError(f"{uri}: no summary.json or metrics.parquet (not a report folder)")
        return summary
    return report.summarize(report.read_metrics(uri), summary)


def run(args) -> int:
    from stylecore import report

    if args.compare:
        if args.run:
            print("error: give either RUN_DIR_OR_URI or --compare A B, not both", file=sys.stderr)
            return 2
        a, b = (_load_summary(u) for u in args.compare)
        ea, eb = ((s.get("evaluator") or {}).get("encoder") for s in (a, b))
        sa, sb = ((s.get("evaluator") or {}).get("size") for s in (a, b))
        print(report.format_table(report.compare_rows(a, b), ("field", "A", "B", "B-A")))
        print(f"A: {args.compare[0]}\nB: {args.compare[1]}")
        if (ea is None) != (eb is None):
            run, s = ("A", a) if ea is None else ("B", b)
            why = (f"its scoring failed for all {s.get('quality_failed')} ok rows" if s.get("quality_failed")
                   else "run with --no-quality")
            print(f"note: run {run} has no quality metrics ({why}); only counts and timings compare")
        elif ea != eb or sa != sb:
            print(f"note: the runs used different quality evaluators ({ea} at {sa} px vs {eb} at {sb} px); their "
                  f"metrics do not compare")
        return 0
    if not args.run:
        print("error: give RUN_DIR_OR_URI (a report folder with metrics.parquet) or --compare A B", file=sys.stderr)
        return 2
    if args.samples < 0 or args.breakdown < 0:
        print("error: --samples and --breakdown must be >= 0", file=sys.stderr)
        return 2
    summary = report.build_report(args.run, metric=args.metric, samples=args.samples, breakdown_rows=args.breakdown)
    print(f"{summary['total']} rows: {summary['ok']} ok, {summary['failed']} failed, {summary['skipped']} skipped")
    print_reasons(summary, 10)
    for note in report.quality_notes(summary):
        print(f"note: {note}")
    print(f"report: {summary['report']['html']}")
    return 0
