"""report.html: written through the storage layer, self-contained, escaped, with real thumbnails."""
from __future__ import annotations

import json
from html.parser import HTMLParser

import pandas as pd
import pytest

from tests.report.helpers import build_sample_report, sample_metrics

URL_ATTRS = {"src", "href", "srcset", "action", "data", "poster", "xlink:href", "formaction", "background"}


class Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.urls, self.styles, self.imgs, self.text = [], [], [], [], []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        a = dict(attrs)
        self.urls += [(tag, k, v) for k, v in attrs if k in URL_ATTRS]
        if a.get("style"):
            self.styles.append(a["style"])
        if tag == "img":
            self.imgs.append(a)
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        (self.styles if self._in_style else self.text).append(data)


def parse(html: str) -> Collector:
    c = Collector()
    c.feed(html)
    return c


@pytest.fixture(scope="module")
def report(tmp_path_factory, evaluator):
    root = tmp_path_factory.mktemp("run")
    report_dir, summary = build_sample_report(root, evaluator)
    return root, report_dir, summary


def test_files_are_written(report):
    root, report_dir, summary = report
    assert {p.name for p in report_dir.iterdir()} == {"report.html", "metrics.csv", "summary.json", "metrics.parquet"}
    on_disk = json.loads((report_dir / "summary.json").read_text())
    assert (on_disk["total"], on_disk["ok"], on_disk["failed"], on_disk["skipped"]) == (7, 3, 3, 1)
    assert on_disk["evaluator"]["encoder"] == "random:0" and on_disk["manifest"] == "m.csv"
    assert on_disk["report"]["html"] == str(report_dir / "report.html")
    csv = pd.read_csv(report_dir / "metrics.csv")
    assert len(csv) == 7 and list(csv["id"]) == list(sample_metrics()["id"]) and "label" in csv


def test_cards_split_the_wall_time(report):
    text = " ".join(" ".join(parse((report[1] / "report.html").read_text()).text).split())
    assert "0.25 / 0.7 / 0.05 plan / shards / merge (s)" in text


def test_html_has_no_external_references(report):
    html = (report[1] / "report.html").read_text()
    doc = parse(html)
    assert doc.urls, "expected embedded images"
    assert all(v.startswith("data:image/") for _, _, v in doc.urls), [u for u in doc.urls if not u[2].startswith("data:")][:3]
    assert not {"script", "link", "iframe", "object", "embed", "base"} & set(doc.tags)
    css = " ".join(doc.styles).lower()
    assert "@import" not in css and "url(" not in css
    assert "http://" not in html and "https://" not in html


def test_text_is_escaped(report):
    html = (report[1] / "report.html").read_text()
    doc = parse(html)
    assert not any(i.get("src") == "x" or "onerror" in i for i in doc.imgs)  # the hostile file name stayed text
    assert "onerror=alert(1)&gt;&quot;x.jpg" in html
    assert "decoder &lt;b&gt;exploded&lt;/b&gt;" in html
    assert any("decoder <b>exploded</b>" in t for t in doc.text)


def test_contact_sheet_and_breakdown(report, evaluator):
    from PIL import Image

    root, report_dir, summary = report
    doc = parse((report_dir / "report.html").read_text())
    thumbs = [i for i in doc.imgs if i["src"].startswith("data:image/jpeg")]
    assert len(thumbs) == 9  # best, worst and one random row: content | style | output each
    alts = [i["alt"] for i in thumbs]
    assert alts.count(f"style {root}/in/style.png") == 3 and sum(a.startswith("output out/") for a in alts) == 3
    maps = [i for i in doc.imgs if i["src"].startswith("data:image/png")]
    assert len(maps) == 2 * 5 * 4  # two sample rows, five style layers, four channels
    best = evaluator.breakdown(Image.open(root / "in" / "c0.png"), [Image.open(root / "in" / "style.png")],
                               Image.open(root / "out" / "c0.jpg"))
    text = " ".join(doc.text)
    assert "c0" in text and f"{best['per_layer']['relu1_1']:.4g}" in text  # per-layer losses of the best row


def test_missing_images_show_placeholders(tmp_path, evaluator):
    report_dir, _ = build_sample_report(tmp_path, evaluator, breakdown_rows=0)
    (tmp_path / "out" / "c1.jpg").unlink()
    from stylecore.report import build_report

    build_report(str(report_dir), metric="ssim", samples=1, breakdown_rows=0)  # rebuilt from the files
    html = (report_dir / "report.html").read_text()
    doc = parse(html)
    assert len([i for i in doc.imgs if i["src"].startswith("data:image/jpeg")]) == 8
    assert "output unavailable" in html and "Images the report could not read" in html


def test_one_row_too_small_for_a_breakdown_keeps_the_page(tmp_path, evaluator):
    report_dir, _ = build_sample_report(tmp_path, evaluator, breakdown_rows=0)
    from PIL import Image

    from stylecore.report import build_report

    for i in range(3):  # 1x1 contents (the shard only ever used them enlarged): VGG cannot take them
        Image.new("RGB", (1, 1), (200, 10, 10)).save(tmp_path / "in" / f"c{i}.png")
    summary = build_report(str(report_dir), metric="ssim", samples=1, breakdown_rows=2, evaluator_obj=evaluator)
    html = (report_dir / "report.html").read_text()
    assert summary["report"]["html"] == str(report_dir / "report.html")
    assert html.count(": no breakdown (") == 2


def test_report_on_s3(s3, tmp_path, evaluator):
    import urllib.request

    from stylecore import storage, tables
    from stylecore.report import build_report
    from tasks.artifacts import report_link

    m = sample_metrics(tmp_path)
    bucket = s3.bucket("report")
    prefix = f"s3://{bucket}/runs/_reports/r1"
    for i in range(3):  # outputs live on S3 under the output root
        storage.write_bytes(f"s3://{bucket}/runs/out/c{i}.jpg", (tmp_path / "out" / f"c{i}.jpg").read_bytes())
    tables.write_parquet(m, storage.join(prefix, "metrics.parquet"))
    storage.write_bytes(storage.join(prefix, "summary.json"), b'{"wall_seconds": 2.5, "flow_run_id": "abc"}')
    summary = build_report(prefix, metric="ssim", samples=1, breakdown_rows=0)
    assert summary["wall_seconds"] == 2.5 and summary["failed"] == 3
    html = storage.read_bytes(prefix + "/report.html").decode()
    assert len([i for i in parse(html).imgs if i["src"].startswith("data:image/jpeg")]) == 9
    assert json.loads(storage.read_bytes(prefix + "/summary.json"))["report"]["html"] == prefix + "/report.html"
    url, signed = report_link(prefix + "/report.html")
    assert signed
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/html") and r.read().decode() == html


def test_breakdown_never_downloads_imagenet(tmp_path, evaluator, monkeypatch):
    from stylecore.report import build_report

    report_dir, _ = build_sample_report(tmp_path / "run", evaluator, breakdown_rows=0)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    m = pd.read_parquet(report_dir / "metrics.parquet")
    m["evaluator"] = m["evaluator"].where(m["evaluator"].isna(), "imagenet")
    summary = build_report(str(report_dir), metrics=m, metric="ssim", samples=1, breakdown_rows=2)
    assert summary["evaluator"]["encoder"] == "imagenet"
    html = (report_dir / "report.html").read_text()
    assert "no breakdown: the evaluator&#x27;s imagenet weights are not cached on this machine" in html
    assert not (tmp_path / "empty-torch-home").exists()
