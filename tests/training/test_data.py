import numpy as np
import pytest
import torch
from PIL import Image

from stylecore.errors import OptionsError
from stylecore.training.data import CropSampler, list_images


def test_list_images_recursive_and_filtered(data):
    found = list_images(data["content"])
    assert [p.rsplit("/", 1)[-1] for p in found] == ["p0.png", "p1.png", "p2.png", "p9.jpg"]
    with pytest.raises(OptionsError, match="no such file"):
        list_images(data["root"] / "missing")
    (data["root"] / "empty").mkdir()
    with pytest.raises(OptionsError, match="no images found"):
        list_images(data["root"] / "empty", what="style")


def test_crops_deterministic_per_seed_and_taken_from_the_images(data):
    paths = list_images(data["content"])
    a = CropSampler(paths, crop=24, load_size=32, batch_size=3, seed=5, workers=2)
    b = CropSampler(paths, crop=24, load_size=32, batch_size=3, seed=5, workers=1)
    c = CropSampler(paths, crop=24, load_size=32, batch_size=3, seed=6, workers=1)
    x = a.batch(7)
    assert x.shape == (3, 3, 24, 24) and 0 <= x.min() and x.max() <= 1
    assert np.array_equal(x.numpy(), b.batch(7).numpy())  # same seed, same step: same batch (threads or not)
    assert not np.array_equal(x.numpy(), c.batch(7).numpy())
    assert not np.array_equal(x.numpy(), a.batch(8).numpy())
    # Every crop is a window of one of the resized images.
    resized = [np.asarray(Image.open(p).convert("RGB").resize((32, 32), Image.Resampling.BILINEAR)) for p in paths]
    for crop in (x.numpy() * 255).round().astype(np.uint8).transpose(0, 2, 3, 1):
        hits = [any(np.array_equal(r[i:i + 24, j:j + 24], crop) for i in range(9) for j in range(9)) for r in resized]
        assert sum(hits) >= 1


def test_each_epoch_visits_every_image_once(data):
    paths = list_images(data["content"])
    s = CropSampler(paths, crop=8, load_size=8, batch_size=1, seed=0, workers=1)
    assert sorted(s._order(k) for k in range(4)) == [0, 1, 2, 3]
    assert sorted(s._order(k) for k in range(4, 8)) == [0, 1, 2, 3]


def _put_photos(s3, bucket: str, prefix: str, n: int) -> None:
    """Upload n small PNG photos as {prefix}{i}.png."""
    import io

    from tests.conftest import make_photo

    for i in range(n):
        buf = io.BytesIO()
        make_photo(48, 40, seed=i).save(buf, format="PNG")
        s3.client.put_object(Bucket=bucket, Key=f"{prefix}{i}.png", Body=buf.getvalue())


def test_training_images_from_an_s3_prefix(s3, data):
    bucket = s3.bucket()
    _put_photos(s3, bucket, "train/set/", 3)
    s3.client.put_object(Bucket=bucket, Key="train/readme.txt", Body=b"x")
    paths = list_images(f"s3://{bucket}/train")
    assert paths == [f"s3://{bucket}/train/set/{i}.png" for i in range(3)]
    x = CropSampler(paths, crop=16, load_size=24, batch_size=3, seed=0, workers=1).batch(0)
    assert x.shape == (3, 3, 16, 16) and x.std() > 0
    with pytest.raises(OptionsError, match="no images found"):
        list_images(f"s3://{bucket}/nothing-here")


def test_training_images_from_a_local_manifest(data, tmp_path):
    import pandas as pd

    root = data["root"]
    # A cross manifest repeats each content per style; paths are relative to the manifest's folder.
    rows = [{"content": f"content/p{i}.png", "style": s} for i in range(3) for s in ("style/t1.png", "style/t2.png")]
    rows.append({"content": "content/sub/p9.jpg", "style": "style/t2.png|style/t1.png"})
    manifest = root / "pairs.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    contents = list_images(manifest)
    assert contents == [str(root / "content" / f"p{i}.png") for i in range(3)] + [str(root / "content" / "sub" / "p9.jpg")]
    assert list_images(manifest, what="style") == [str(root / "style" / "t1.png"), str(root / "style" / "t2.png")]
    x = CropSampler(contents, crop=16, load_size=32, batch_size=4, seed=0, workers=1).batch(0)
    assert x.shape == (4, 3, 16, 16) and x.std() > 0

    pd.DataFrame({"content": ["content/p0.png"]}).to_csv(tmp_path / "no_style.csv", index=False)
    with pytest.raises(OptionsError, match="no 'style' column"):
        list_images(tmp_path / "no_style.csv", what="style")
    with pytest.raises(OptionsError, match="not found"):
        list_images(tmp_path / "missing.parquet")


def test_training_images_from_a_parquet_manifest_on_s3(s3, data):
    import io

    import pandas as pd

    bucket = s3.bucket()
    _put_photos(s3, bucket, "data/img/", 2)
    buf = io.BytesIO()
    pd.DataFrame({"content": ["img/0.png", f"s3://{bucket}/data/img/1.png", "img/0.png"],
                  "style": ["x.png"] * 3}).to_parquet(buf)
    s3.client.put_object(Bucket=bucket, Key="data/m.parquet", Body=buf.getvalue())
    paths = list_images(f"s3://{bucket}/data/m.parquet")
    assert paths == [f"s3://{bucket}/data/img/0.png", f"s3://{bucket}/data/img/1.png"]
    x = CropSampler(paths, crop=16, load_size=24, batch_size=2, seed=0, workers=1).batch(0)
    assert x.shape == (2, 3, 16, 16) and x.std() > 0


def test_unreadable_images_are_skipped_until_every_image_has_failed(tmp_path, capsys):
    """A bad draw falls back to the other images (all of them, if need be), deterministically for (seed, step)."""
    from stylecore.errors import ImageError
    from tests.conftest import make_photo

    folder = tmp_path / "mixed"
    folder.mkdir()
    make_photo(48, 48, seed=1).save(folder / "a_good.png")
    make_photo(48, 48, seed=2).save(tmp_path / "full.png")
    whole = (tmp_path / "full.png").read_bytes()
    (folder / "b_truncated.png").write_bytes(whole[:len(whole) // 3])
    (folder / "c_text.png").write_text("not an image")
    paths = list_images(folder)
    assert len(paths) == 3
    good = np.asarray(Image.open(folder / "a_good.png").convert("RGB").resize((32, 32), Image.Resampling.BILINEAR))
    for seed in range(6):
        s = CropSampler(paths, crop=32, load_size=32, batch_size=1, seed=seed, resize="short", workers=1)
        batches = [s.batch(step) for step in range(4)]  # the old retry loop gave up here for most seeds
        for x in batches:
            assert np.array_equal((x[0].numpy() * 255).round().astype(np.uint8).transpose(1, 2, 0), good)
        # a fresh sampler (a resumed run) sees the same batch at a later step
        fresh = CropSampler(paths, crop=32, load_size=32, batch_size=1, seed=seed, resize="short", workers=1)
        assert torch.equal(fresh.batch(3), batches[3])
        err = capsys.readouterr().err
        assert err.count("warning: skipping training image") <= 4 and "c_text.png" in err
    # batches that mix bad first draws with good ones stay a pure function of (seed, step)
    mixed = CropSampler(paths + list_images(tmp_path / "full.png"), crop=16, load_size=32, batch_size=3, seed=4,
                        resize="short", workers=2)
    xs = [mixed.batch(step) for step in range(5)]
    again = CropSampler(mixed.paths, crop=16, load_size=32, batch_size=3, seed=4, resize="short", workers=1)
    assert all(torch.equal(again.batch(step), xs[step]) for step in (4, 2, 0))
    capsys.readouterr()
    (folder / "a_good.png").write_bytes(b"broken now")
    s = CropSampler(paths, crop=32, load_size=32, batch_size=1, seed=0, resize="short", workers=1)
    with pytest.raises(ImageError, match="none of the 3 training images could be read"):
        s.batch(0)
    assert capsys.readouterr().err.count("warning: skipping training image") == 3  # each file tried (and named) once
