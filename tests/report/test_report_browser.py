"""report.html in a real browser: headless Chromium loads every thumbnail and logs nothing to the console.

A checker script is put in a copy of the report, before the page's Content-Security-Policy (so the
policy still applies to everything the report itself contains); it writes the state of every <img>
and any error event into the DOM, which ``--dump-dom`` prints. Console messages go to stderr with
``--enable-logging=stderr`` as ``CONSOLE`` lines. A control page with an external image proves that
both checks fire.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from tests.report.helpers import build_sample_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; .ci/run installs it)")

CHECKER = """<script>window.__errs=[];window.addEventListener('error',function(e){window.__errs.push(String(e.message||
(e.target&&(e.target.currentSrc||e.target.src))||'error').slice(0,200))},true);
window.addEventListener('load',function(){var ok=0,bad=[],imgs=document.images;for(var i=0;i<imgs.length;i++){
var im=imgs[i];if(im.complete&&im.naturalWidth>0&&im.naturalHeight>0)ok++;else bad.push(im.alt||im.src.slice(0,80))}
var svgs=document.querySelectorAll('svg'),shown=0;for(var j=0;j<svgs.length;j++){var r=svgs[j].getBoundingClientRect();if(r.width>0&&r.height>0)shown++}
var p=document.createElement('pre');p.id='__check';p.textContent=JSON.stringify({total:imgs.length,ok:ok,bad:bad,
errors:window.__errs,svg:svgs.length,svg_shown:shown});document.body.appendChild(p)});</script>"""


def load_in_chromium(html_path, profile) -> tuple[dict, list[str]]:
    """Load ``html_path`` with the checker; returns (checker result, console lines)."""
    page = html_path.with_name("checked-" + html_path.name)
    html = html_path.read_text()
    assert html.startswith("<!DOCTYPE html><html lang=\"en\"><head>")
    page.write_text(html.replace("<head>", "<head>" + CHECKER, 1))
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
            f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000",
            "--dump-dom", page.as_uri()]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = re.search(r'<pre id="__check">(.*?)</pre>', proc.stdout, re.S)
    assert m, f"checker did not run; stderr: {proc.stderr[-1500:]}"
    result = json.loads(m.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return result, console


def test_report_renders_in_chromium(tmp_path, evaluator):
    report_dir, _ = build_sample_report(tmp_path / "run", evaluator)
    result, console = load_in_chromium(report_dir / "report.html", tmp_path / "profile")
    assert result["total"] == 9 + 40 and result["ok"] == result["total"], result["bad"]
    assert result["errors"] == [] and console == []
    assert result["svg"] == 8 and result["svg_shown"] == 8  # six histograms, two per-layer charts


def test_checker_catches_broken_and_external_images(tmp_path, evaluator):
    report_dir, _ = build_sample_report(tmp_path / "run", evaluator, breakdown_rows=0)
    page = report_dir / "report.html"
    page.write_text(page.read_text().replace("</body>", '<img src="missing.png" alt="local"><img src="https://example.invalid/x.png" alt="remote"></body>'))
    result, console = load_in_chromium(page, tmp_path / "profile")
    assert set(result["bad"]) == {"local", "remote"} and result["ok"] == 9
    assert any("Content Security Policy" in line for line in console)  # the CSP refused the external image
