"""Run report: summary extras from per-row metrics, ``metrics.csv`` and ``report.html`` under a report prefix.

The pipeline writes ``metrics.parquet`` and ``summary.json`` to ``{output}/_reports/{run_id}/``;
``build_report(report_dir)`` (also ``stylize report``) adds to them. Every read and write goes through
``stylecore.storage``, so report prefixes may be local directories, ``file://`` or ``s3://`` URIs.
"""
from __future__ import annotations

import io
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from .errors import StorageError, StyleCoreError
from .quality import METRICS

PERCENTILES = (5, 25, 50, 75, 95)
HIGHER_IS_BETTER = {"ssim": True, "content_loss": False, "style_loss": False, "color_distance": False, "total_ms": False}
WEIGHT_COLUMNS = ("encoder", "decoder", "model")
MAX_REASONS = 50
OTHER_REASONS = "(other reasons)"
REQUIRED_COLUMNS = ("id", "status")  # every metrics.parquet the pipeline writes has them (shard and merge)
STATUSES = ("ok", "failed", "skipped")

# Paths and URIs inside error messages, replaced by ``<file>`` so that reasons group (see ``failure_reason``).
# Candidates only: ``_path_or_text`` keeps what is not a real path (``file://,``, ``s3:// URI``, ``and/or``).
_PATH_CHARS = r"[\w.~+@%=-]"
_PATHLIKE = re.compile(
    r"(?P<uri>(?<![\w+.-])(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<rest>[^\s'\"<>`]*))"  # quotes end a URI
    rf"|(?P<win>(?<![\w\\/])[A-Za-z]:[\\/]{_PATH_CHARS}+(?:[\\/]{_PATH_CHARS}+)*)"
    rf"|(?P<abs>(?<![\w.~+@%=/:\\-])(?:~|\.{{1,2}})?(?:/{_PATH_CHARS}+)+/?)"
    rf"|(?P<rel>(?<![\w.~+@%=/:\\-]){_PATH_CHARS}+(?:/{_PATH_CHARS}+)+/?)")
# Run-specific parts of shard-level messages: "shard 00012 did not finish: Crashed: ... <flow run id>".
_SHARD_NUMBER = re.compile(r"\bshard \d+\b")
_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I)
_EXTENSION = re.compile(r"\.[A-Za-z][A-Za-z0-9]{0,7}$")
_TRAILING = ".,;:!?)]}"
# Example forms in the project's own messages ("expected s3://bucket/key"): text, not a row's file.
_PLACEHOLDERS = frozenset({"s3://bucket/key", "file:///absolute/path", "file:///path", "/path/to/file.pth"})


@dataclass(frozen=True)
class ReportPaths:
    """Where ``build_report`` puts its files (URIs or local paths)."""

    html: str
    csv: str
    summary: str


def _join(root: str, name: str) -> str:
    from . import storage

    return storage.join(root, name)


def describe_values(values: Iterable) -> dict[str, float | int | None]:
    """count, mean, min, max and the ``PERCENTILES`` of the finite values (None when there are none); ``infinite``
    counts the values left out for being ±inf (a numerical blow-up is a real worst case: it is not hidden)."""
    raw = pd.to_numeric(pd.Series(list(values), dtype="object"), errors="coerce").to_numpy(dtype=float)
    arr = raw[np.isfinite(raw)]
    out: dict[str, float | int | None] = {"count": int(arr.size)}
    infinite = int(np.isinf(raw).sum())
    if infinite:
        out["infinite"] = infinite
    stats = {"mean": np.mean, "min": np.min, "max": np.max}
    for k, f in stats.items():
        out[k] = float(f(arr)) if arr.size else None
    for p in PERCENTILES:
        out[f"p{p}"] = float(np.percentile(arr, p)) if arr.size else None
    return out


def _path_or_text(m: re.Match) -> str:
    """``<file>`` for a real path or URI matched by ``_PATHLIKE``, else the text unchanged (with the
    punctuation that follows a path, such as a closing parenthesis or a sentence's full stop, kept)."""
    text = m.group(0)
    body, tail = text, ""
    while body and body[-1] in _TRAILING and not (body[-1] == ")" and body.count("(") >= body.count(")")):
        body, tail = body[:-1], body[-1] + tail
    if m.group("uri") is not None:
        rest = body.split("://", 1)[1]
        scheme = m.group("scheme").lower()
        if not rest or rest[0] in _TRAILING or body.lower() in _PLACEHOLDERS:
            return text  # "file://," / "s3:// URI": the word, not a URI
        if scheme == "s3" and not re.match(r"[^/]+/.", rest):
            return text  # "s3://bucket" names no object
        if scheme == "file" and "/" not in rest:
            return text
        return "<file>" + tail
    if body in _PLACEHOLDERS or not re.search(r"[A-Za-z]", body):
        return text  # "/path/to/file.pth", "1/2"
    bare = body.rstrip("/")
    if m.group("win") is None and bare.count("/") < 2 and not _EXTENSION.search(bare):
        return text  # "and/or", "image/jpeg", "</b>": one slash is a path with a file extension only
    return "<file>" + tail


def _bounded(text: str, start: int, end: int) -> bool:
    """Whether ``text[start:end]`` stands as a whole word or path: not inside a longer name or path."""
    before = text[start - 1] if start else ""
    after = text[end:end + 2]
    if before and (before.isalnum() or before in "_/.<-"):
        return False
    if after[:1] and (after[0].isalnum() or after[0] in "_/>-"):
        return False
    return not (after[:1] == "." and len(after) == 2 and (after[1].isalnum() or after[1] == "_"))


def _replace_whole(text: str, parts: set[str], repl: str) -> str:
    """Replace the whole-word occurrences of ``parts`` in ``text`` in one left-to-right pass, the longest part
    first where several start at one place (an id "img" must not eat "img.png" or "<file>"). Plain string
    search: a regex compiled per row cost 90% of a 50,000-failure report."""
    hits = []
    for part in parts:
        at = text.find(part)
        while at >= 0:
            if _bounded(text, at, at + len(part)):
                hits.append((at, -len(part)))
            at = text.find(part, at + 1)
    if not hits:
        return text
    out, pos = [], 0
    for at, neg in sorted(hits):
        if at >= pos:
            out += [text[pos:at], repl]
            pos = at - neg
    return "".join(out) + text[pos:]


def failure_reason(error: str, row: Mapping[str, Any] | None = None) -> str:
    """The row-independent part of an error message, so that rows failing for the same reason group:
    a leading ``<file>: `` is dropped, and the row's files and other paths inside become ``<file>`` (its ``id``
    is left alone: ids are free text, and one such as ``not`` or ``image`` would eat words of the message). The
    run's weight specs (the row's ``encoder``/``decoder``/``model``) stay, since every row shares them; shard
    numbers and run ids become ``shard <n>`` and ``<id>``, so a cause that failed several shards is one reason.

    Only real paths and URIs are replaced (local paths, ``file://``/``s3://bucket/key`` and other URIs);
    quotes, punctuation and words such as ``file://`` or ``s3:// URI`` in the text stay as they are."""
    from .uris import redact

    text = redact(" ".join(str(error or "").split())) or "unknown error"
    if "shard " in text:
        text = _SHARD_NUMBER.sub("shard <n>", text)
    if "-" in text:
        text = _UUID.sub("<id>", text)
    kept = []  # weight specs, shielded from the path replacement below
    for col in ("encoder", "decoder", "model"):
        val = (row or {}).get(col)
        if isinstance(val, str) and len(val) > 2 and val in text:
            text = text.replace(val, f"\x00{len(kept)}\x00")
            kept.append(redact(val))
    parts = set()
    for col in ("content", "style", "output", "output_uri"):  # not ``id``: an id such as "not" is also a word
        val = (row or {}).get(col)
        if isinstance(val, str) and val:
            parts.update(p for p in val.split("|") if len(p) > 2)
    if parts:
        text = _replace_whole(text, parts, "<file>")
    text = _PATHLIKE.sub(_path_or_text, text)
    head, sep, rest = text.partition(": ")
    if sep and (head == "<file>" or (" " not in head and ("/" in head or "\\" in head or "." in head))):
        text = rest or text
    for i, val in enumerate(kept):
        text = text.replace(f"\x00{i}\x00", val)
    return text[:300]


def _counts(series: pd.Series) -> dict[str, int]:
    s = series.dropna().astype(str)
    s = s[s != ""]
    return {str(k): int(v) for k, v in s.value_counts().sort_index().items()}


def summarize(metrics: pd.DataFrame, base: Mapping[str, Any] | None = None, *, evaluator: Mapping | None = None,
              parameters: Mapping | None = None) -> dict[str, Any]:
    """Summary of a run: ``base`` (the pipeline's summary.json keys) plus extras computed from ``metrics``.

    Counts (total/ok/failed/skipped) are recomputed from the rows, so a report rebuilt after merging runs
    stays consistent: ``passed`` is recomputed against ``max_failed_rows``, and when the counts differ from
    ``base``'s, its run-level timings (``wall_seconds``, ``images_per_second``, ``phase_seconds``), which
    describe another set of rows, become None. ``failure_reasons`` ({reason: rows}) adds up to ``failed``;
    ``failure_examples`` names up to five row ids per reason.
    """
    df = metrics
    out: dict[str, Any] = dict(base or {})
    status = df["status"].astype(str) if "status" in df else pd.Series(["ok"] * len(df))
    before = tuple(out.get(s) for s in ("total", "ok", "failed", "skipped"))
    out["total"] = int(len(df))
    for s in ("ok", "failed", "skipped"):
        out[s] = int((status == s).sum())
    if None not in before and before != tuple(out[s] for s in ("total", "ok", "failed", "skipped")):
        for key in ("wall_seconds", "images_per_second", "phase_seconds"):
            if key in out:
                out[key] = None
    if isinstance(out.get("max_failed_rows"), (int, float)) and "passed" in out:
        out["passed"] = out["failed"] <= out["max_failed_rows"]
    ok = df[status == "ok"]
    lat = ok["total_ms"] if "total_ms" in ok else pd.Series(dtype=float)
    desc = describe_values(lat)
    out["latency_ms_p50"], out["latency_ms_p95"], out["latency_ms_mean"] = desc["p50"], desc["p95"], desc["mean"]
    out["latency_ms_max"] = desc["max"]
    out["timings_ms"] = {c: describe_values(ok[c]) for c in ("read_ms", "compute_ms", "write_ms", "total_ms") if c in ok}
    done = df[status != "skipped"]
    for col, key in (("device", "devices"), ("worker", "workers"), ("method", "methods")):
        counts = _counts(done[col]) if col in done else {}
        out[key] = sorted(counts)  # the pipeline's list-valued keys, kept as lists
        out[f"rows_by_{col}"] = counts
    out["weight_specs"] = _weight_specs(done)
    out["evaluator"] = _evaluator(df, evaluator if evaluator is not None else out.get("evaluator"))
    errors = ok["quality_error"].astype("object").dropna().astype(str) if "quality_error" in ok else pd.Series([], dtype=str)
    errors = errors[errors.str.strip() != ""]
    out["quality_failed"] = int(len(errors))  # ok rows whose scoring failed (their metrics are missing)
    out["quality_errors"] = {str(k): int(v) for k, v in errors.value_counts().head(5).items()}
    out["quality_cost"] = _quality_cost(df, out.get("wall_seconds"))
    out["metrics"] = {m: describe_values(ok[m]) for m in METRICS if m in ok}
    out["failure_reasons"], out["failure_examples"] = _failure_reasons(df[status == "failed"])
    params = dict(out.get("parameters") or {})
    params.update(parameters or {})
    out["parameters"] = params
    return out


def _evaluator(df: pd.DataFrame, given: Mapping | None) -> dict[str, Any] | None:
    """The evaluator entry: ``given`` (e.g. ``QualityEvaluator.describe()``) completed from the rows'
    ``evaluator``/``evaluator_size`` columns; None when no row was measured."""
    out = dict(given or {})
    if "evaluator" in df and df["evaluator"].notna().any():
        specs = sorted({str(v) for v in df["evaluator"].dropna()})
        out.setdefault("network", "vgg19")
        out["encoder"] = specs[0] if len(specs) == 1 else specs
        if "evaluator_size" in df and df["evaluator_size"].notna().any():
            sizes = sorted({int(v) for v in df["evaluator_size"].dropna()})
            out["size"] = sizes[0] if len(sizes) == 1 else sizes
    if out.get("encoder") is not None:
        specs = out["encoder"] if isinstance(out["encoder"], list) else [out["encoder"]]
        out["random_weights"] = any(str(s).lower().startswith("random:") for s in specs)
    return out or None


def quality_notes(summary: Mapping[str, Any]) -> list[str]:
    """Lines that qualify a run's quality metrics: an untrained evaluator, rows scored by different evaluators,
    rows whose scoring failed. Printed by ``stylize run`` / ``stylize report`` and shown in report.html."""
    notes = []
    ev = summary.get("evaluator") or {}
    enc = ev.get("encoder")
    if isinstance(enc, list) and len(enc) > 1:
        notes.append(f"rows were scored by different quality evaluators ({', '.join(map(str, enc))}): their metric "
                     f"means mix values that do not compare")
    if ev.get("random_weights"):
        notes.append(f"quality metrics come from an untrained network (evaluator {enc}: torchvision's VGG19 weights "
                     f"were not cached where the rows were scored), so content_loss and style_loss are not "
                     f"perceptual measures; compare them only with runs of the same evaluator")
    n = summary.get("quality_failed") or 0
    if n:
        first = next(iter(summary.get("quality_errors") or {}), "")
        notes.append(f"quality scoring failed for {n} ok row{'s' if n != 1 else ''}, whose metrics are missing"
                     + (f" (e.g. {first})" if first else ""))
    return notes


def _quality_cost(df: pd.DataFrame, wall_seconds) -> dict[str, Any] | None:
    """Time spent on quality metrics (the shard runner's ``quality_ms`` per row) against stylization
    (``compute_ms``), the rows' total time and the run's wall time."""
    if "quality_ms" not in df or not df["quality_ms"].notna().any():
        return None
    q = float(pd.to_numeric(df["quality_ms"], errors="coerce").sum())
    out: dict[str, Any] = {"quality_ms_total": q}
    for col, key in (("compute_ms", "fraction_of_compute"), ("total_ms", "fraction_of_row_time")):
        total = float(pd.to_numeric(df[col], errors="coerce").sum()) if col in df else 0.0
        out[key] = q / total if total > 0 else None
    wall = float(wall_seconds) if isinstance(wall_seconds, (int, float)) and wall_seconds else 0.0
    # rows scored on N workers in parallel: their scoring time is a share of N workers' wall time, not of one
    scored = df[pd.to_numeric(df["quality_ms"], errors="coerce").notna()]
    workers = max(1, int(scored["worker"].nunique())) if "worker" in scored else 1
    out["workers"] = workers
    out["fraction_of_wall"] = q / 1000 / (wall * workers) if wall > 0 else None
    return out


def _weight_specs(df: pd.DataFrame) -> list[dict[str, Any]]:
    cols = [c for c in ("method", *WEIGHT_COLUMNS) if c in df]
    if not cols or df.empty:
        return []
    g = df[cols].astype("object").fillna("").astype(str)
    rows = []
    for key, n in g.value_counts(sort=False, dropna=False).sort_index().items():
        key = key if isinstance(key, tuple) else (key,)
        entry = {c: (v or None) for c, v in zip(cols, key)}
        entry["rows"] = int(n)
        rows.append(entry)
    return rows


def _failure_reasons(failed: pd.DataFrame, limit: int = MAX_REASONS) -> tuple[dict[str, int], dict[str, list[str]]]:
    """({reason: rows}, {reason: up to 5 example ids}), most frequent first; reasons beyond ``limit``
    are counted under ``(other reasons)`` so that the counts always add up to the failed rows."""
    groups: dict[str, list[str]] = {}
    for rec in failed.to_dict("records"):
        reason = failure_reason(rec.get("error"), rec)
        groups.setdefault(reason, []).append(str(rec.get("id", rec.get("row", ""))))
    ordered = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    counts = {r: len(ids) for r, ids in ordered[:limit]}
    examples = {r: ids[:5] for r, ids in ordered[:limit]}
    rest = ordered[limit:]
    if rest:
        counts[OTHER_REASONS] = sum(len(ids) for _, ids in rest)
        examples[OTHER_REASONS] = [i for _, ids in rest for i in ids][:5]
    return counts, examples


# -- storage ---------------------------------------------------------------------------------------
def check_metrics(metrics: pd.DataFrame, uri: str) -> pd.DataFrame:
    """``metrics`` when it is a stylize metrics table (the ``REQUIRED_COLUMNS``, statuses among ``STATUSES``);
    raises StorageError naming ``uri`` otherwise. The one check for every metrics file a report reads."""
    missing = [c for c in REQUIRED_COLUMNS if c not in metrics.columns]
    if missing:
        what = ", ".join(missing)
        raise StorageError(f"{uri}: not a stylize metrics file (no {what} column{'s' if len(missing) > 1 else ''})")
    bad = sorted({str(v) for v in metrics["status"].tolist() if v not in STATUSES})
    if bad:
        shown = ", ".join(repr(v) for v in bad[:3]) + (", ..." if len(bad) > 3 else "")
        raise StorageError(f"{uri}: not a stylize metrics file (status {shown}; expected one of {', '.join(STATUSES)})")
    return metrics


def read_metrics(report_dir: str) -> pd.DataFrame:
    """``metrics.parquet`` of a report prefix. Raises StorageError when it is missing, unreadable or not a
    stylize metrics file (``check_metrics``)."""
    from . import storage

    uri = _join(report_dir, "metrics.parquet")
    data = storage.read_bytes(uri)
    try:
        metrics = pd.read_parquet(io.BytesIO(data))
    except Exception as e:  # pyarrow raises several types for a corrupt file
        raise StorageError(f"{uri}: not a readable Parquet file ({str(e).splitlines()[0][:160]})") from None
    return check_metrics(metrics, uri)


def read_summary(report_dir: str) -> dict[str, Any]:
    """``summary.json`` of a report prefix, or {} when there is none."""
    from . import storage

    uri = _join(report_dir, "summary.json")
    if not storage.exists(uri):
        return {}
    try:
        data = json.loads(storage.read_bytes(uri).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StorageError(f"{uri}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise StorageError(f"{uri}: expected a JSON object")
    return data


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    return obj


def summary_json(summary: Mapping[str, Any]) -> bytes:
    """Summary as indented JSON (NaN/inf become null)."""
    return (json.dumps(_jsonable(dict(summary)), indent=2, sort_keys=False) + "\n").encode("utf-8")


def output_root_for(report_dir: str, summary: Mapping[str, Any]) -> str | None:
    """The run's output root: from the summary (``output``), else the parent of ``_reports/<run_id>``."""
    for key in ("output", "output_root"):
        val = summary.get(key) or (summary.get("parameters") or {}).get(key)
        if isinstance(val, str) and val:
            return val
    m = re.match(r"^(.*?)/?_reports/[^/]+/?$", str(report_dir))
    return m.group(1) if m and m.group(1) else None


def build_report(report_dir: str, *, metrics: pd.DataFrame | None = None, base_summary: Mapping | None = None,
                 evaluator: Mapping | None = None, parameters: Mapping | None = None, metric: str | None = None,
                 samples: int = 4, breakdown_rows: int = 2, evaluator_obj=None, seed: int = 0) -> dict[str, Any]:
    """Write ``summary.json`` (with extras), ``metrics.csv`` and ``report.html`` under ``report_dir``;
    returns the summary as written (its ``report`` entry names the files).

    ``metrics``/``base_summary`` default to the files already there. ``metric`` chooses the contact
    sheet's best/worst rows (default ``style_loss`` when measured, else ``total_ms``); ``samples`` rows
    each of best, worst and random. ``breakdown_rows`` sample rows get a per-layer style-loss breakdown
    and encoder feature maps, measured with ``evaluator_obj`` (a ``QualityEvaluator``; built from the
    summary's evaluator spec when None; 0 turns the breakdown off).
    """
    from . import storage
    from .report_html import render_report

    if metrics is None:
        metrics = read_metrics(report_dir)
    if base_summary is None:
        base_summary = read_summary(report_dir)
    summary = summarize(metrics, base_summary, evaluator=evaluator, parameters=parameters)
    paths = ReportPaths(_join(report_dir, "report.html"), _join(report_dir, "metrics.csv"), _join(report_dir, "summary.json"))
    summary["report"] = {"html": paths.html, "csv": paths.csv, "parquet": _join(report_dir, "metrics.parquet")}
    if metric is None:
        measured = [c for c in ("style_loss", "total_ms") if c in metrics and metrics[c].notna().any()]
        metric = measured[0] if measured else None
    if metric is not None and metric not in metrics:  # refused before anything is written
        present = [c for c in (*METRICS, "total_ms") if c in metrics]
        raise StyleCoreError(f"report metric {metric!r}: not a column of the metrics; "
                             + (f"choose one of {', '.join(present)}" if present
                                else "these metrics have no metric columns (no row was stylized)"))
    storage.write_bytes(paths.csv, metrics.to_csv(index=False).encode("utf-8"), content_type="text/csv; charset=utf-8")
    ev = summary.get("evaluator") or {}
    skipped_breakdown = None
    if breakdown_rows and evaluator_obj is None and isinstance(ev.get("encoder"), str):
        from .quality import DEFAULT_SIZE, get_evaluator, imagenet_cache_file

        if ev["encoder"] == "imagenet" and not imagenet_cache_file().is_file():
            # Never start a 550 MB download for a report: the workers had the weights, this machine has not.
            skipped_breakdown = f"the evaluator's imagenet weights are not cached on this machine ({imagenet_cache_file()})"
        else:
            size = ev.get("size") if isinstance(ev.get("size"), int) else DEFAULT_SIZE
            evaluator_obj = get_evaluator(ev["encoder"], size=size, device="cpu")
    html = render_report(metrics, summary, output_root=output_root_for(report_dir, summary), metric=metric,
                         samples=samples, breakdown_rows=breakdown_rows, evaluator=evaluator_obj, seed=seed,
                         breakdown_note=skipped_breakdown)
    storage.write_bytes(paths.html, html.encode("utf-8"), content_type="text/html; charset=utf-8")
    storage.write_bytes(paths.summary, summary_json(summary), content_type="application/json")
    return summary


# -- comparison ------------------------------------------------------------------------------------
def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={n}" for k, n in v.items()) or "-"
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v)) or "-"
    return str(v)


def compare_rows(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """Rows (field, A, B, B-A) comparing two summaries: counts, speed, latency, devices, evaluator, metric means."""
    fields: list[tuple[str, Any, Any]] = []
    for k in ("total", "ok", "failed", "skipped", "wall_seconds", "images_per_second", "latency_ms_p50",
              "latency_ms_p95", "methods", "devices"):
        fields.append((k, a.get(k), b.get(k)))
    ea, eb = a.get("evaluator") or {}, b.get("evaluator") or {}
    fields.append(("evaluator", ea.get("encoder"), eb.get("encoder")))
    fields.append(("evaluator size", ea.get("size"), eb.get("size")))
    for m in METRICS:
        ma, mb = (a.get("metrics") or {}).get(m) or {}, (b.get("metrics") or {}).get(m) or {}
        fields.append((f"{m} mean", ma.get("mean"), mb.get("mean")))
        fields.append((f"{m} p50", ma.get("p50"), mb.get("p50")))
    fields.append(("failure reasons", len(a.get("failure_reasons") or {}), len(b.get("failure_reasons") or {})))
    rows = []
    for name, va, vb in fields:
        delta = ""
        if isinstance(va, (int, float)) and isinstance(vb, (int, float)) and not isinstance(va, bool):
            if math.isfinite(va) and math.isfinite(vb):
                d = vb - va
                delta = f"{d:+d}" if isinstance(d, int) else f"{d:+.4g}"
        rows.append((name, _fmt(va), _fmt(vb), delta))
    return rows


def format_table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    """Plain-text table with left-aligned columns."""
    allrows = [header, *rows]
    widths = [max(len(r[i]) for r in allrows) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(tuple("-" * w for w in widths)), *map(line, rows)])
