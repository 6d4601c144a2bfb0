"""Prefect artifacts for a ``stylize-collection`` run: the summary table and a link to ``report.html``
(presigned on S3). The progress artifact that the flow advances as shards complete is
``tasks.progress.ProgressArtifact``.

Call these inside a flow or task run so that the artifacts attach to it.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Mapping
from uuid import UUID

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from stylecore.errors import StorageError
from stylecore.quality import METRICS

DEFAULT_EXPIRES = 7 * 24 * 3600


def artifact_key(text: str, prefix: str = "stylize") -> str:
    """A valid artifact key (lowercase letters, digits and dashes) from free text, e.g. a manifest name."""
    slug = re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")
    return f"{prefix}-{slug}"[:100].strip("-") if slug else prefix


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "-" if not math.isfinite(value) else f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items()) or "-"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) or "-"
    return str(value)


def summary_table(summary: Mapping[str, Any]) -> list[dict[str, str]]:
    """The summary as ``[{"field", "value"}]`` rows: counts, speed, latency, devices, methods, evaluator,
    metric mean/p50/p95 and the failure reasons."""
    rows = []
    for k in ("total", "ok", "failed", "skipped", "wall_seconds", "images_per_second", "latency_ms_p50",
              "latency_ms_p95", "devices", "workers", "methods", "manifest", "output"):
        if k in summary:
            rows.append({"field": k, "value": _cell(summary.get(k))})
    ev = summary.get("evaluator") or {}
    rows.append({"field": "evaluator", "value": (_cell(ev.get("encoder")) + (" (untrained weights: losses are not "
                 "perceptual)" if ev.get("random_weights") else "")) if ev else "off"})
    if summary.get("quality_failed"):
        rows.append({"field": "quality scoring failed (ok rows)", "value": str(summary["quality_failed"])})
    for m in METRICS:
        d = (summary.get("metrics") or {}).get(m)
        if d and d.get("count"):
            rows.append({"field": m, "value": f"mean {_cell(d.get('mean'))}, p50 {_cell(d.get('p50'))}, p95 {_cell(d.get('p95'))}"})
    for reason, n in (summary.get("failure_reasons") or {}).items():
        rows.append({"field": f"failed: {reason}", "value": str(n)})
    return rows


def publish_summary(summary: Mapping[str, Any], key: str | None = None, description: str | None = None) -> UUID:
    """Create the table artifact with the run summary."""
    desc = description or f"{summary.get('ok', 0)} ok, {summary.get('failed', 0)} failed, {summary.get('skipped', 0)} skipped"
    return create_table_artifact(summary_table(summary), key=key or "stylize-summary", description=desc)


def report_link(report_uri: str, expires: int = DEFAULT_EXPIRES) -> tuple[str, bool]:
    """``(url, presigned)``: a presigned HTTPS URL for ``s3://`` (when signing works), else a ``file://`` URI."""
    text = str(report_uri)
    if text.startswith("s3://"):
        from stylecore import storage

        try:
            return storage.presign(text, expires=expires), True
        except StorageError:
            return text, False
    if text.startswith("file://"):
        return text, False
    return Path(text).expanduser().resolve().as_uri(), False


def _md(text: Any) -> str:
    """Escape Markdown (and HTML) metacharacters in run-provided text."""
    return re.sub(r"([\\`*_{}\[\]()<>#+!|~])", r"\\\1", str(text))


def report_markdown(report_uri: str, summary: Mapping[str, Any] | None = None, expires: int = DEFAULT_EXPIRES) -> str:
    """The Markdown linking to the report (see ``publish_report_link``)."""
    url, signed = report_link(report_uri, expires)
    safe_url = url.replace(" ", "%20").replace("(", "%28").replace(")", "%29")
    s = summary or {}
    lines = ["# Stylize run report", "", f"[Open report.html]({safe_url})", ""]
    if signed:
        lines.append(f"The link is presigned and expires in {expires // 3600} h; the report lives at `{report_uri}`.")
    else:
        lines.append(f"Report: `{report_uri}`")
    if s:
        lines += ["", f"**{s.get('ok', 0)}** ok, **{s.get('failed', 0)}** failed, **{s.get('skipped', 0)}** skipped "
                      f"of **{s.get('total', 0)}** rows; latency p50 {_cell(s.get('latency_ms_p50'))} ms, "
                      f"p95 {_cell(s.get('latency_ms_p95'))} ms."]
        for reason, n in list((s.get("failure_reasons") or {}).items())[:5]:
            lines.append(f"- {n} × {_md(reason)}")
    return "\n".join(lines) + "\n"


def publish_report_link(report_uri: str, summary: Mapping[str, Any] | None = None, key: str | None = None,
                        expires: int = DEFAULT_EXPIRES) -> UUID:
    """Create the markdown artifact linking to ``report.html`` (presigned URL on S3 where possible)."""
    return create_markdown_artifact(report_markdown(report_uri, summary, expires), key=key or "stylize-report",
                                    description="HTML report of the run")


def publish_run_artifacts(summary: Mapping[str, Any], name: str) -> None:
    """The flow's artifacts for a finished run: the summary table and the report link, keyed by the
    manifest ``name`` so that the Prefect UI keeps one versioned collection per manifest. Never raises
    (observability does not fail a run); problems are logged."""
    from prefect import get_run_logger

    logger = get_run_logger()
    try:
        publish_summary(summary, key=artifact_key(name, "stylize-summary"))
        html = (summary.get("report") or {}).get("html")
        if html:
            publish_report_link(html, summary, key=artifact_key(name, "stylize-report"))
    except Exception as e:  # noqa: BLE001
        logger.warning("could not create the run's artifacts: %s", " ".join(str(e).split())[:300])
