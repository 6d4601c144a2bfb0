"""``stylize-collection`` end to end on the S3 test server (moto over HTTP; boto3 is not patched)."""
from __future__ import annotations

import io
import json

import pandas as pd
from PIL import Image

from flows.stylize_collection import stylize_collection
from tests.conftest import make_photo, make_texture
from tests.pipeline.helpers import ENGINE


def _png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_s3_end_to_end_and_resume(prefect_server, s3):
    bucket = s3.bucket("pipe")
    for i in range(5):
        s3.put(bucket, f"data/content/c{i}.png", _png(make_photo(48, 40, seed=i)))
    s3.put(bucket, "data/styles/a.png", _png(make_texture(32, seed=2)))
    rows = [{"content": f"content/c{i}.png", "style": "styles/a.png", "split": "train"} for i in range(5)]
    rows.append({"content": "content/lost.png", "style": "styles/a.png", "split": "val"})
    s3.put(bucket, "data/pairs.csv", pd.DataFrame(rows).to_csv(index=False).encode())
    params = dict(manifest=f"s3://{bucket}/data/pairs.csv", output=f"s3://{bucket}/styled", shard_size=2,
                  format="png", max_failed=1, quality=False, **ENGINE)

    summary = stylize_collection(**params)
    assert (summary["total"], summary["ok"], summary["failed"], summary["skipped"]) == (6, 5, 1, 0)
    assert summary["report_dir"].startswith(f"s3://{bucket}/styled/_reports/")
    report_key = summary["report_dir"][len(f"s3://{bucket}/"):]
    written = json.loads(s3.get(bucket, f"{report_key}/summary.json"))
    assert written["ok"] == 5 and written["manifest"] == params["manifest"]
    metrics = pd.read_parquet(io.BytesIO(s3.get(bucket, f"{report_key}/metrics.parquet")))
    assert metrics["split"].tolist() == ["train"] * 5 + ["val"]
    assert "lost.png: not found" in metrics["error"].iloc[5]
    outputs = [k for k in s3.keys(bucket, "styled/") if "/_reports/" not in k]
    assert sorted(outputs) == sorted(f"styled/{o}" for o in metrics.loc[metrics["status"] == "ok", "output"])
    for key in outputs:
        assert max(Image.open(io.BytesIO(s3.get(bucket, key))).size) == 32
    assert any(k.endswith(".metrics.parquet") for k in s3.keys(bucket, f"{report_key}/shards/"))

    again = stylize_collection(**params)
    assert (again["ok"], again["failed"], again["skipped"]) == (0, 1, 5)


def test_missing_s3_weights_fail_the_run_before_any_shard(prefect_server, s3):
    """With shards run here, an S3 weights spec that does not exist is one line before any work (one HEAD),
    not the same failure on every row."""
    import pytest

    from stylecore.errors import WeightsError

    bucket = s3.bucket("weights")
    s3.put(bucket, "c.png", _png(make_photo(40, 32, seed=1)))
    s3.put(bucket, "m.csv", b"content,style\nc.png,c.png\n")
    params = dict(manifest=f"s3://{bucket}/m.csv", output=f"s3://{bucket}/out", quality=False,
                  **dict(ENGINE, method="johnson", model=f"s3://{bucket}/w/missing.pth"))
    with pytest.raises(WeightsError) as info:
        stylize_collection(**params)
    assert str(info.value) == f"model s3://{bucket}/w/missing.pth: not found"
    assert s3.keys(bucket, "out/") == []
