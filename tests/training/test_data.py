import numpy as np
import pytest
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


def test_training_images_from_an_s3_prefix(s3, data):
    import io

    from tests.conftest import make_photo

    bucket = s3.bucket()
    for i in range(3):
        buf = io.BytesIO()
        make_photo(48, 40, seed=i).save(buf, format="PNG")
        s3.client.put_object(Bucket=bucket, Key=f"train/set/{i}.png", Body=buf.getvalue())
    s3.client.put_object(Bucket=bucket, Key="train/readme.txt", Body=b"x")
    paths = list_images(f"s3://{bucket}/train")
    assert paths == [f"s3://{bucket}/train/set/{i}.png" for i in range(3)]
    x = CropSampler(paths, crop=16, load_size=24, batch_size=3, seed=0, workers=1).batch(0)
    assert x.shape == (3, 3, 16, 16) and x.std() > 0
    with pytest.raises(OptionsError, match="no images found"):
        list_images(f"s3://{bucket}/nothing-here")
