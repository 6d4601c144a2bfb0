"""``report.html``: one self-contained page (inline CSS, inline SVG charts, thumbnails as data URIs).

No scripts, fonts, stylesheets or images are fetched from anywhere; every text from the run (file
names, errors, parameters) is HTML-escaped.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from PIL import Image

from .errors import StyleCoreError
from .images import load_image, resize_long_side
from .quality import METRICS

THUMB = 160
# The page needs nothing but itself: a browser refuses (and logs) any fetch, script or external style.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_CSS = """
*{box-sizing:border-box}body{margin:0;padding:24px;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:#1d2433;background:#f5f6f8}h1{margin:0 0 4px;font-size:22px}h2{margin:28px 0 10px;font-size:18px;
border-bottom:1px solid #d5d9e0;padding-bottom:4px}h3{margin:14px 0 6px;font-size:15px}.muted{color:#5d6678}
.warn{background:#fff4e0;border:1px solid #e0a030;border-radius:6px;padding:8px 12px;margin:0 0 10px}
.cards{display:flex;flex-wrap:wrap;gap:10px}.card{background:#fff;border:1px solid #d5d9e0;border-radius:8px;
padding:10px 14px;min-width:130px}.card .v{font-size:20px;font-weight:600}.card .k{color:#5d6678;font-size:12px}
.card.bad .v{color:#b42318}.card.good .v{color:#067647}.sheet{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:12px}
figure{margin:0;background:#fff;border:1px solid #d5d9e0;border-radius:8px;padding:8px}.trio{display:flex;gap:6px}
.trio div{flex:1;text-align:center}.trio img,.ph{width:160px;height:160px;object-fit:contain;background:#eceef2;border-radius:4px}
.ph{display:flex;align-items:center;justify-content:center;color:#8a93a6;font-size:12px;margin:auto}
.lbl{font-size:11px;color:#5d6678}figcaption{font-size:12px;margin-top:6px;word-break:break-all}
.charts{display:flex;flex-wrap:wrap;gap:12px}.charts svg{background:#fff;border:1px solid #d5d9e0;border-radius:8px}
table{border-collapse:collapse;background:#fff;font-size:13px;width:100%}th,td{border:1px solid #d5d9e0;padding:4px 8px;
text-align:left;vertical-align:top}th{background:#eceef2}td.err{word-break:break-word;color:#b42318}
.maps{display:flex;flex-wrap:wrap;gap:14px}.maps img{width:56px;height:56px;image-rendering:pixelated;border-radius:3px}
.layer{background:#fff;border:1px solid #d5d9e0;border-radius:6px;padding:6px}pre{background:#fff;border:1px solid #d5d9e0;
padding:10px;overflow:auto;font-size:12px}
"""


def esc(value: Any) -> str:
    """HTML-escape any value (quotes included)."""
    return html.escape("" if value is None else str(value), quote=True)


def fmt(value: Any, digits: int = 4) -> str:
    """Short number formatting; '-' for missing values."""
    if value is None:
        return "-"
    if isinstance(value, (float, np.floating)):
        return "-" if not math.isfinite(float(value)) else f"{float(value):.{digits}g}"
    return str(value)


def data_uri(img: Image.Image, fmt_name: str = "JPEG") -> str:
    """Encode a PIL image as a base64 data URI (JPEG or PNG)."""
    buf = io.BytesIO()
    if fmt_name == "PNG":
        img.save(buf, format="PNG", optimize=True)
        mime = "image/png"
    else:
        img.convert("RGB").save(buf, format="JPEG", quality=80)
        mime = "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


# -- charts ----------------------------------------------------------------------------------------
def svg_histogram(values: Sequence[float], title: str, unit: str = "", bins: int = 20, width: int = 380,
                  height: int = 190) -> str:
    """A histogram as an inline SVG element (axis labels: min, max, count of the tallest bar)."""
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    head = (f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'role="img" aria-label="{esc(title)}"><text x="10" y="18" font-size="13" font-weight="600">{esc(title)}</text>')
    if arr.size == 0:
        return head + f'<text x="10" y="{height // 2}" font-size="12" fill="#5d6678">no data</text></svg>'
    lo, hi = float(arr.min()), float(arr.max())
    if hi == lo:
        lo, hi = lo - 0.5 * (abs(lo) or 1), hi + 0.5 * (abs(hi) or 1)
    counts, edges = np.histogram(arr, bins=bins, range=(lo, hi))
    x0, y0, pw, ph = 40, 28, width - 56, height - 62
    top = int(counts.max()) or 1
    bw = pw / len(counts)
    parts = [head, f'<line x1="{x0}" y1="{y0 + ph}" x2="{x0 + pw}" y2="{y0 + ph}" stroke="#8a93a6"/>']
    for i, c in enumerate(counts):
        if c:
            h = ph * c / top
            parts.append(f'<rect x="{x0 + i * bw + 1:.1f}" y="{y0 + ph - h:.1f}" width="{max(bw - 2, 1):.1f}" '
                         f'height="{h:.1f}" fill="#4f6bed"><title>{esc(fmt(edges[i]))} to {esc(fmt(edges[i + 1]))}: '
                         f'{int(c)}</title></rect>')
    parts.append(f'<text x="{x0 - 4}" y="{y0 + 10}" font-size="11" text-anchor="end">{top}</text>')
    parts.append(f'<text x="{x0}" y="{y0 + ph + 16}" font-size="11">{esc(fmt(lo))}</text>')
    parts.append(f'<text x="{x0 + pw}" y="{y0 + ph + 16}" font-size="11" text-anchor="end">{esc(fmt(hi))}</text>')
    stats = f"n={arr.size}  median={fmt(float(np.median(arr)))}  p95={fmt(float(np.percentile(arr, 95)))} {unit}"
    parts.append(f'<text x="{x0}" y="{height - 8}" font-size="11" fill="#5d6678">{esc(stats.strip())}</text></svg>')
    return "".join(parts)


def svg_bars(values: Mapping[str, float], title: str, width: int = 380, height: int = 170) -> str:
    """Horizontal bar chart (one bar per key) as inline SVG."""
    items = [(k, float(v)) for k, v in values.items()]
    top = max((v for _, v in items if math.isfinite(v)), default=0.0) or 1.0
    row = (height - 34) / max(len(items), 1)
    parts = [f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
             f'role="img" aria-label="{esc(title)}"><text x="10" y="18" font-size="13" font-weight="600">{esc(title)}</text>']
    for i, (k, v) in enumerate(items):
        y = 28 + i * row
        w = (width - 170) * (v / top if math.isfinite(v) else 0)
        parts.append(f'<text x="10" y="{y + row * 0.65:.1f}" font-size="11">{esc(k)}</text>'
                     f'<rect x="80" y="{y + 2:.1f}" width="{max(w, 0.5):.1f}" height="{max(row - 4, 2):.1f}" fill="#e8590c"/>'
                     f'<text x="{84 + w:.1f}" y="{y + row * 0.65:.1f}" font-size="11">{esc(fmt(v))}</text>')
    return "".join(parts) + "</svg>"


# -- images ----------------------------------------------------------------------------------------
class _Images:
    """Loads images through the storage layer once each; failures become None (shown as placeholders)."""

    def __init__(self, output_root: str | None):
        self.output_root = output_root
        self._thumbs: dict[str, str | None] = {}
        self.errors: dict[str, str] = {}

    def output_uri(self, row: Mapping[str, Any]) -> str | None:
        uri = row.get("output_uri")
        if isinstance(uri, str) and uri:
            return uri
        out = row.get("output")
        if not isinstance(out, str) or not out:
            return None
        if "://" in out or out.startswith("/") or not self.output_root:
            return out
        from . import storage

        try:
            return storage.join(self.output_root, out)
        except StyleCoreError as e:
            self.errors[out] = str(e)
            return None

    def load(self, uri: str | None) -> Image.Image | None:
        if not uri:
            return None
        from . import storage

        try:
            return load_image(storage.read_bytes(uri), name=uri)
        except StyleCoreError as e:
            self.errors[uri] = str(e)
            return None

    def thumb(self, uri: str | None) -> str | None:
        if not uri:
            return None
        if uri not in self._thumbs:
            img = self.load(uri)
            self._thumbs[uri] = data_uri(resize_long_side(img, min(THUMB, max(img.size)))) if img else None
        return self._thumbs[uri]


def _img(src: str | None, label: str, alt: str) -> str:
    if not src:
        return f'<div><div class="ph">{esc(label)} unavailable</div><div class="lbl">{esc(label)}</div></div>'
    return f'<div><img src="{esc(src)}" alt="{esc(alt)}" loading="eager"><div class="lbl">{esc(label)}</div></div>'


def _styles(row: Mapping[str, Any]) -> list[str]:
    s = row.get("style")
    return [p for p in str(s).split("|") if p] if isinstance(s, str) and s else []


# -- sections --------------------------------------------------------------------------------------
def _cards(summary: Mapping[str, Any]) -> str:
    def card(key, value, cls=""):
        return f'<div class="card {cls}"><div class="v">{esc(value)}</div><div class="k">{esc(key)}</div></div>'

    m = summary.get("metrics") or {}
    cards = [card("rows", summary.get("total")), card("ok", summary.get("ok"), "good"),
             card("failed", summary.get("failed"), "bad" if summary.get("failed") else ""),
             card("skipped", summary.get("skipped")),
             card("wall time (s)", fmt(summary.get("wall_seconds"))),
             card("plan / shards / merge (s)", _phases(summary.get("phase_seconds"))),
             card("images / s", fmt(summary.get("images_per_second"))),
             card("latency p50 (ms)", fmt(summary.get("latency_ms_p50"))),
             card("latency p95 (ms)", fmt(summary.get("latency_ms_p95"))),
             card("devices", ", ".join(summary.get("devices") or {}) or "-"),
             card("methods", ", ".join(summary.get("methods") or {}) or "-")]
    for name in METRICS:
        if (m.get(name) or {}).get("count"):
            cards.append(card(f"mean {name}", fmt(m[name]["mean"])))
    ev = summary.get("evaluator") or {}
    cards.append(card("evaluator", f"{ev.get('encoder', 'off')}{' (untrained)' if ev.get('random_weights') else ''}"))
    cost = summary.get("quality_cost") or {}
    if cost.get("fraction_of_wall") is not None:
        cards.append(card("quality metrics / wall time", f"{100 * cost['fraction_of_wall']:.1f}%"))
    return '<div class="cards">' + "".join(cards) + "</div>"


def _quality_warnings(summary: Mapping[str, Any]) -> str:
    from .report import quality_notes

    return "".join(f'<p class="warn">{esc(n)}</p>' for n in quality_notes(summary))


def _phases(phases: Any) -> str:
    if not isinstance(phases, Mapping) or not phases:
        return "-"
    return " / ".join(fmt(phases.get(k)) if isinstance(phases.get(k), (int, float)) else "-"
                      for k in ("plan", "shards", "merge"))


def _select(df: pd.DataFrame, metric: str | None, n: int, seed: int) -> list[tuple[str, pd.DataFrame]]:
    ok = df[df["status"] == "ok"] if "status" in df else df
    if metric is None or metric not in ok:  # nothing to rank by: a seeded sample
        return [("sample", ok.sample(n=min(n, len(ok)), random_state=seed) if len(ok) else ok)]
    vals = pd.to_numeric(ok[metric], errors="coerce")
    ranked = ok[np.isfinite(vals.to_numpy(dtype=float))].assign(_v=vals).sort_values("_v", kind="stable")
    higher = {"ssim": True}.get(metric, False)
    best = ranked.tail(n).iloc[::-1] if higher else ranked.head(n)
    worst = ranked.head(n) if higher else ranked.tail(n).iloc[::-1]
    worst = worst[~worst.index.isin(best.index)]
    rest = ok[~ok.index.isin(best.index) & ~ok.index.isin(worst.index)]
    rand = rest.sample(n=min(n, len(rest)), random_state=seed) if len(rest) else rest
    return [("best", best), ("worst", worst), ("random", rand)]


def _contact_sheet(df: pd.DataFrame, metric: str, n: int, seed: int, images: _Images) -> str:
    if not n:
        return '<p class="muted">contact sheet turned off</p>'
    out = []
    for label, sel in _select(df, metric, n, seed):
        out.append(f"<h3>{esc(label.capitalize())}" + (f" by {esc(metric)}" if metric else " (no metric to rank by)") + "</h3>")
        if sel.empty:
            out.append('<p class="muted">no rows</p>')
            continue
        out.append('<div class="sheet">')
        for rec in sel.to_dict("records"):
            styles = _styles(rec)
            style_label = "style" if len(styles) <= 1 else f"style 1 of {len(styles)}"
            trio = (_img(images.thumb(rec.get("content")), "content", f"content {rec.get('content')}")
                    + _img(images.thumb(styles[0] if styles else None), style_label, f"style {styles[0] if styles else ''}")
                    + _img(images.thumb(images.output_uri(rec)), "output", f"output {rec.get('output')}"))
            vals = "  ".join(f"{m}={fmt(rec.get(m))}" for m in (*METRICS, "total_ms") if m in rec)
            cap = f"<b>{esc(rec.get('id'))}</b> · {esc(rec.get('method', ''))} · {esc(vals)}"
            out.append(f'<figure><div class="trio">{trio}</div><figcaption>{cap}</figcaption></figure>')
        out.append("</div>")
    return "".join(out)


def _charts(df: pd.DataFrame) -> str:
    ok = df[df["status"] == "ok"] if "status" in df else df
    charts = []
    for col, unit in (("total_ms", "ms"), ("compute_ms", "ms")):
        if col in ok:
            charts.append(svg_histogram(pd.to_numeric(ok[col], errors="coerce").tolist(), f"latency: {col}", unit))
    for m in METRICS:
        if m in ok and ok[m].notna().any():
            charts.append(svg_histogram(pd.to_numeric(ok[m], errors="coerce").tolist(), m))
    return '<div class="charts">' + "".join(charts) + "</div>" if charts else '<p class="muted">no timings</p>'


def _failures(df: pd.DataFrame, summary: Mapping[str, Any], limit: int = 200) -> str:
    reasons = summary.get("failure_reasons") or {}
    if not reasons:
        return '<p class="muted">no failed rows</p>'
    examples = summary.get("failure_examples") or {}
    rows = "".join(f'<tr><td class="err">{esc(r)}</td><td>{esc(n)}</td><td>{esc(", ".join(examples.get(r, [])))}</td></tr>'
                   for r, n in reasons.items())
    parts = [f"<table><tr><th>reason</th><th>rows</th><th>example ids</th></tr>{rows}</table>"]
    failed = df[df["status"] == "failed"] if "status" in df else df.iloc[:0]
    body = "".join(f'<tr><td>{esc(r.get("id"))}</td><td>{esc(r.get("row"))}</td><td>{esc(r.get("content"))}</td>'
                   f'<td>{esc(r.get("style"))}</td><td class="err">{esc(r.get("error"))}</td></tr>'
                   for r in failed.head(limit).to_dict("records"))
    parts.append(f"<h3>Failed rows</h3><table><tr><th>id</th><th>row</th><th>content</th><th>style</th><th>error</th></tr>{body}</table>")
    if len(failed) > limit:
        parts.append(f'<p class="muted">{len(failed) - limit} more failed rows in metrics.csv</p>')
    return "".join(parts)


def _breakdowns(df: pd.DataFrame, metric: str | None, n: int, images: _Images, evaluator, note: str | None) -> str:
    if not n:
        return '<p class="muted">breakdown turned off</p>'
    if evaluator is None:
        return f'<p class="muted">no breakdown: {esc(note or "the run measured no quality metrics")}</p>'
    ok = df[df["status"] == "ok"] if "status" in df else df
    picks = [sel.head(1) for _, sel in _select(ok, metric, 1, 0)] if metric in ok else [ok.head(n)]
    rows = pd.concat(picks).head(n)
    out = []
    for rec in rows.to_dict("records"):
        content = images.load(rec.get("content"))
        styles = [images.load(s) for s in _styles(rec)]
        output = images.load(images.output_uri(rec))
        if content is None or output is None or not styles or any(s is None for s in styles):
            out.append(f'<p class="muted">{esc(rec.get("id"))}: images unavailable</p>')
            continue
        weights = [float(w) for w in str(rec.get("style_weights") or "").split("|") if w.strip()] or None
        try:
            b = evaluator.breakdown(content, styles, output, weights if weights and len(weights) == len(styles) else None)
        except StyleCoreError as e:
            out.append(f'<p class="muted">{esc(rec.get("id"))}: {esc(e)}</p>')
            continue
        except Exception as e:  # noqa: BLE001 - one row's breakdown (a 1x1 content, say) never costs the page
            out.append(f'<p class="muted">{esc(rec.get("id"))}: no breakdown ({esc(" ".join(str(e).split())[:200])})</p>')
            continue
        maps = "".join(
            f'<div class="layer"><div class="lbl">{esc(layer)}</div>'
            + "".join(f'<img src="{data_uri(im.resize((56, 56), Image.Resampling.NEAREST) if max(im.size) < 56 else im, "PNG")}" '
                      f'alt="{esc(layer)} channel">' for im in ims) + "</div>"
            for layer, ims in b["feature_maps"].items())
        out.append(f'<h3>{esc(rec.get("id"))} <span class="muted">({esc(metric)}={esc(fmt(rec.get(metric) if metric else None))})</span></h3>'
                   f'<div class="charts">{svg_bars(b["per_layer"], "style loss per layer (unweighted; from the original files)")}</div>'
                   f'<p class="lbl">strongest output feature maps per style layer (evaluator {esc(evaluator.spec)})</p>'
                   f'<div class="maps">{maps}</div>')
    return "".join(out) or '<p class="muted">no ok rows</p>'


def render_report(metrics: pd.DataFrame, summary: Mapping[str, Any], *, output_root: str | None = None,
                  metric: str | None = "style_loss", samples: int = 4, breakdown_rows: int = 2, evaluator=None,
                  seed: int = 0, breakdown_note: str | None = None) -> str:
    """The complete HTML page for a run (see ``stylecore.report.build_report``)."""
    df = metrics.reset_index(drop=True)
    images = _Images(output_root)
    title = f"Stylize run {summary.get('flow_run_id') or summary.get('run_id') or ''}".strip()
    sheet = _contact_sheet(df, metric, samples, seed, images)
    breakdown = _breakdowns(df, metric, breakdown_rows, images, evaluator, breakdown_note)
    details = {k: summary.get(k) for k in ("manifest", "manifest_notes", "output", "method", "weight_specs", "workers",
                                           "evaluator", "parameters") if summary.get(k) not in (None, [])}
    unreadable = ""
    if images.errors:
        items = "".join(f"<li>{esc(e)}</li>" for e in list(images.errors.values())[:20])
        unreadable = f'<h3>Images the report could not read</h3><ul class="muted">{items}</ul>'
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>"
        f'<h1>{esc(title)}</h1><div class="muted">manifest {esc(summary.get("manifest", "-"))} · generated {esc(now)}</div>'
        f"<h2>Summary</h2>{_quality_warnings(summary)}{_cards(summary)}"
        f"<h2>Contact sheet</h2>{sheet}{unreadable}"
        f"<h2>Distributions</h2>{_charts(df)}"
        f"<h2>Failures</h2>{_failures(df, summary)}"
        f"<h2>Interpretability</h2>{breakdown}"
        f"<h2>Run details</h2><pre>{esc(json.dumps(details, indent=2, default=str))}</pre>"
        "</body></html>\n"
    )
