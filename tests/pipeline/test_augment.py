"""``augment-dataset``: incremental sample:K augmentation of an ImageFolder-style tree, with its index."""
from __future__ import annotations

import pandas as pd

from flows.augment_dataset import augment_dataset
from tests.conftest import make_photo, make_texture
from tests.pipeline.helpers import ENGINE, output_files


def _add_images(root, names):
    for i, name in enumerate(names):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        make_photo(40, 32, seed=hash(name) % 1000).save(path)


def _dataset(tmp_path, *, styles: int, seed: int):
    """Three photos in two class folders and ``styles`` textures; returns (train, output, K=2 flow parameters)."""
    train, style_dir, out = tmp_path / "train", tmp_path / "styles", tmp_path / "aug"
    _add_images(train, ["cat/a.jpg", "cat/b.jpg", "dog/c.jpg"])
    style_dir.mkdir()
    for s in range(styles):
        make_texture(32, seed=s + 3).save(style_dir / f"st{s}.png")
    return train, out, dict(source=str(train), styles=str(style_dir), output=str(out), k=2, seed=seed,
                            quality=False, **ENGINE)


def summary_versions() -> int:
    """Versions of the ``stylize-summary-augment`` artifact on the test server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        return len(client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(
            any_=["stylize-summary-augment"]))))


def test_incremental_augmentation_and_index(prefect_server, tmp_path):
    train, out, params = _dataset(tmp_path, styles=3, seed=7)
    versions_before = summary_versions()

    first = augment_dataset(**params)
    assert (first["total"], first["ok"], first["failed"]) == (6, 6, 0)
    index = pd.read_parquet(out / "index.parquet")
    assert len(index) == first["index_rows"] == 6
    assert list(index.columns[:6]) == ["image", "image_uri", "source", "style", "method", "options_hash"]
    assert sorted(index["label"]) == ["cat"] * 4 + ["dog"] * 2
    assert index.groupby("source")["style"].nunique().eq(2).all()  # K distinct styles per image
    # The class folders survive in the output keys, and the CSV index matches the Parquet one.
    assert all(img.split("/")[0] in ("cat", "dog") for img in index["image"])
    assert pd.read_csv(out / "index.csv")["image"].tolist() == index["image"].tolist()
    assert sorted(str(f.relative_to(out)) for f in output_files(out) if f.suffix == ".jpg") == sorted(index["image"])

    # Nightly: only the new images are processed; the index grows.
    _add_images(train, ["dog/d.jpg"])
    second = augment_dataset(**params)
    assert (second["total"], second["ok"], second["skipped"]) == (2, 2, 0)
    index2 = pd.read_parquet(out / "index.parquet")
    assert len(index2) == 8 and set(index["image"]) < set(index2["image"])
    assert set(index2.loc[~index2["image"].isin(index["image"]), "source"]) == {str(train / "dog" / "d.jpg")}

    assert summary_versions() == versions_before + 2  # one artifact key for every night, not a key per night

    # Nothing new: no stylize run, the index is kept, and not rewritten.
    stamps = {f: (out / f).stat().st_mtime_ns for f in ("index.parquet", "index.csv")}
    third = augment_dataset(**params)
    assert third["total"] == 0 and third["index_rows"] == 8
    assert {f: (out / f).stat().st_mtime_ns for f in stamps} == stamps

    # An image that got only some of its K styles (a failed row, a killed worker) gets the rest next time.
    lost = index2["image"].iloc[0]
    (out / lost).unlink()
    fourth = augment_dataset(**params)
    assert (fourth["total"], fourth["ok"], fourth["index_rows"]) == (1, 1, 8) and (out / lost).is_file()


def test_a_pair_that_keeps_failing_is_left_out_after_max_attempts(prefect_server, tmp_path):
    """A corrupt source image fails its row each night; after ``max_attempts`` failed runs it is left out (and
    counted as such), so later nights pass again; deleting failures.parquet retries it."""
    train, styles, out = tmp_path / "train", tmp_path / "styles", tmp_path / "aug"
    _add_images(train, ["cat/a.jpg", "cat/b.jpg"])
    (train / "cat" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    styles.mkdir()
    make_texture(32, seed=3).save(styles / "st0.png")
    params = dict(source=str(train), styles=str(styles), output=str(out), k=1, quality=False, max_attempts=2,
                  **ENGINE)
    broken = str(train / "cat" / "broken.jpg")

    def night(new: str | None = None):
        if new:
            _add_images(train, [new])
        state = augment_dataset(**params, return_state=True)
        result = state.result(raise_on_failure=False)
        return state, getattr(result, "summary", result)  # a failed run carries its summary on RunFailed

    state, first = night()
    assert state.is_failed() and (first["total"], first["ok"], first["failed"], first["left_out"]) == (3, 2, 1, 0)
    failures = pd.read_parquet(out / "failures.parquet")
    assert failures[["source", "attempts"]].values.tolist() == [[broken, 1]]
    assert "not an image" in failures["error"].iat[0] and failures["last_run"].iat[0] == first["run_id"]

    state, second = night("cat/c.jpg")
    assert state.is_failed() and (second["total"], second["ok"], second["failed"]) == (2, 1, 1)
    assert pd.read_parquet(out / "failures.parquet")["attempts"].tolist() == [2]

    state, third = night("dog/d.jpg")  # two failed runs: left out, the night passes
    assert state.is_completed() and (third["total"], third["ok"], third["failed"], third["left_out"]) == (1, 1, 0, 1)
    assert third["failures"] == 1 and third["index_rows"] == 4

    _add_images(train, ["cat/broken.jpg"])  # repaired; retried once its record is gone
    assert night()[1]["left_out"] == 1
    (out / "failures.parquet").unlink()
    state, fifth = night()
    assert state.is_completed() and (fifth["total"], fifth["ok"], fifth["failures"]) == (1, 1, 0)
    assert fifth["index_rows"] == 5 and pd.read_csv(out / "failures.csv").empty


def test_outputs_of_a_killed_run_reach_the_index_next_night(prefect_server, tmp_path):
    """A nightly killed after its shards wrote outputs but before its index step: the next run plans those
    pairs again, skips them (their files exist) and indexes them, instead of leaving them out for good."""
    train, out, params = _dataset(tmp_path, styles=2, seed=1)
    first = augment_dataset(**params)
    assert first["ok"] == 6
    index = pd.read_parquet(out / "index.parquet")
    made = {f: f.stat().st_mtime_ns for f in output_files(out) if f.suffix == ".jpg"}
    index.iloc[:2].to_parquet(out / "index.parquet")  # the killed night indexed none of 4 of its outputs

    _add_images(train, ["dog/d.jpg"])
    second = augment_dataset(**params)
    assert (second["total"], second["ok"], second["skipped"], second["failed"]) == (6, 2, 4, 0)
    index2 = pd.read_parquet(out / "index.parquet")
    assert second["index_rows"] == len(index2) == 8 and set(index["image"]) < set(index2["image"])
    assert all(f.stat().st_mtime_ns == t for f, t in made.items())  # skipped, not made again
    assert augment_dataset(**params)["total"] == 0


def test_lost_shards_moved_roots_and_deleted_outputs_keep_the_index_and_failures_honest(prefect_server, tmp_path,
                                                                                          monkeypatch):
    """A night whose shards all fail for a setting (not the images) uses up no pair's max_attempts; the index
    keeps only outputs that exist, and follows an output root that was moved; bad settings write no manifest."""
    import shutil

    import pytest

    from stylecore.errors import OptionsError

    train, out, params = _dataset(tmp_path, styles=3, seed=2)
    params.update(format="png", max_attempts=1)
    monkeypatch.setenv("STYLIZE_PNG_LEVEL", "11")  # every shard fails before its first row
    bad = augment_dataset(**params, return_state=True)
    summary = bad.result(raise_on_failure=False).summary
    assert bad.is_failed() and (summary["total"], summary["failed"]) == (6, 6)
    assert summary["failures"] == 0 and not (out / "failures.parquet").exists()  # not attempts of the pairs
    monkeypatch.delenv("STYLIZE_PNG_LEVEL")
    good = augment_dataset(**params)
    assert (good["total"], good["ok"], good["left_out"], good["index_rows"]) == (6, 6, 0, 6)

    # An indexed output deleted, then a night at another size: the pair is made again under its new key and
    # the index lists only files that exist.
    index = pd.read_parquet(out / "index.parquet")
    (out / index["image"].iat[0]).unlink()
    other = augment_dataset(**dict(params, size=24))
    assert (other["total"], other["ok"], other["index_rows"]) == (1, 1, 6)
    index = pd.read_parquet(out / "index.parquet")
    assert all((out / key).is_file() for key in index["image"])

    # The output root moved: nothing to redo, and the index points at the new place.
    moved = tmp_path / "moved"
    shutil.move(str(out), str(moved))
    again = augment_dataset(**dict(params, output=str(moved), size=24))
    assert (again["total"], again["index_rows"]) == (0, 6)
    index = pd.read_parquet(moved / "index.parquet")
    assert all(uri == str(moved / key) for uri, key in zip(index["image_uri"], index["image"]))

    for setting in (dict(format="gif"), dict(size=-5), dict(dispatch="bogus")):
        with pytest.raises(OptionsError):
            augment_dataset(**dict(params, output=str(tmp_path / "fresh"), **setting))
    assert not (tmp_path / "fresh").exists()  # no stray manifest


def test_storage_errors_end_the_run_with_one_line_and_run_names_hold_no_credentials(prefect_server, tmp_path):
    """A whole-bucket source with credentials named the run 'augment-KEY:SECRET@data-...' (in every log line and
    the UI), and a StorageError in the build task logged a traceback before the flow's one line."""
    from tests.pipeline.helpers import run_logs

    with run_logs() as records:
        state = augment_dataset(source="s3://AKIALEAK:leakSecret@data/", styles=str(tmp_path), output=str(tmp_path / "o"),
                                quality=False, return_state=True, **ENGINE)
    assert state.is_failed() and state.message.startswith("StorageError: s3://***@data/: credentials in URIs")
    text = "\n".join(r.getMessage() for r in records)
    assert "augment-***@data-" in text and "leakSecret" not in text and "AKIALEAK" not in text, text
    assert not [r for r in records if r.exc_info and r.exc_info[0] is not None]
    assert "Traceback" not in text
