"""Manifest builders (cross / zip / sample:K, labels, structure-preserving keys) and the manifest CLI."""
from __future__ import annotations

import collections
import json
import os
import re

import pandas as pd
import pytest

from stylecore import manifest, storage
from stylecore.errors import ManifestError, StorageError
from stylecore.manifest_build import build_manifest
from tests.conftest import run_cli, run_main
from stylecore.options import StyleOptions


@pytest.fixture
def tree(tmp_path):
    for rel in ["train/cat/c1.jpg", "train/cat/c2.jpg", "train/dog/d1.jpg", "train/dog/d2.png", "val/cat/c3.jpg"]:
        p = tmp_path / "ds" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"img")
    (tmp_path / "ds" / "README.txt").write_text("not an image")
    (tmp_path / "styles").mkdir()
    for s in ["starry", "waves", "ink", "mosaic", "kandinsky"]:
        (tmp_path / "styles" / f"{s}.png").write_bytes(b"sty")
    return tmp_path


def test_cross_with_labels_and_structure(tree):
    df = build_manifest([str(tree / "ds")], [str(tree / "styles/ink.png"), str(tree / "styles/waves.png")],
                        pairing="cross", label_from_parent=True)
    assert len(df) == 5 * 2
    assert list(df["content"].iloc[::2]) == [str(tree / "ds" / r) for r in
                                             ["train/cat/c1.jpg", "train/cat/c2.jpg", "train/dog/d1.jpg",
                                              "train/dog/d2.png", "val/cat/c3.jpg"]]
    assert list(df["label"].iloc[::2]) == ["cat", "cat", "dog", "dog", "cat"]
    assert set(df["content_root"]) == {str(tree / "ds")}
    p = manifest.plan(df, str(tree / "out"))
    out = list(p.rows["output"])
    assert re.fullmatch(r"train/cat/c1__ink__[0-9a-f]{8}\.jpg", out[0])
    assert re.fullmatch(r"val/cat/c3__waves__[0-9a-f]{8}\.jpg", out[-1])
    assert p.passthrough == ["label"]


def test_zip_pairs_sorted(tree):
    df = build_manifest([str(tree / "ds/train/cat"), str(tree / "ds/train/dog")],
                        [str(tree / "styles/waves.png"), str(tree / "styles/ink.png"), str(tree / "styles/starry.png"),
                         str(tree / "styles/mosaic.png")], pairing="zip")
    assert [(c.rsplit("/", 1)[1], s.rsplit("/", 1)[1]) for c, s in zip(df["content"], df["style"])] == [
        ("c1.jpg", "ink.png"), ("c2.jpg", "mosaic.png"), ("d1.jpg", "starry.png"), ("d2.png", "waves.png")]
    with pytest.raises(ManifestError, match="5 content images but 2 style images"):
        build_manifest([str(tree / "ds")], [str(tree / "styles/ink.png"), str(tree / "styles/waves.png")], pairing="zip")


def test_sample_k_deterministic_and_incremental(tree):
    df = build_manifest([str(tree / "ds")], [str(tree / "styles")], pairing="sample:2", seed=7)
    assert len(df) == 10
    per = df.groupby("content")["style"].apply(list)
    assert all(len(set(v)) == 2 for v in per)
    again = build_manifest([str(tree / "ds")], [str(tree / "styles")], pairing="sample:2", seed=7)
    pd.testing.assert_frame_equal(df, again)
    others = [build_manifest([str(tree / "ds")], [str(tree / "styles")], pairing="sample:2", seed=s) for s in range(5)]
    assert any(not o["style"].equals(df["style"]) for o in others)  # the seed matters
    counts = collections.Counter(s for o in others for s in o["style"])
    assert len(counts) == 5  # every style gets drawn across seeds

    # a new image does not change the draws of the others
    (tree / "ds/train/dog/d3.jpg").write_bytes(b"img")
    grown = build_manifest([str(tree / "ds")], [str(tree / "styles")], pairing="sample:2", seed=7)
    assert len(grown) == 12
    pd.testing.assert_frame_equal(grown[grown["content"].isin(df["content"])].reset_index(drop=True), df)

    # incremental augmentation: only images with no outputs yet
    p = manifest.plan(df, str(tree / "out"))
    for uri in p.rows["output_uri"]:
        storage.write_bytes(uri, b"done")
    todo = build_manifest([str(tree / "ds")], [str(tree / "styles")], pairing="sample:2", seed=7,
                          skip_done_under=str(tree / "out"))
    assert set(todo["content"]) == {str(tree / "ds/train/dog/d3.jpg")}
    for uri in manifest.plan(todo, str(tree / "out")).rows["output_uri"]:
        storage.write_bytes(uri, b"done")
    nothing = build_manifest([str(tree / "ds")], [str(tree / "styles")], pairing="sample:2", seed=7,
                             skip_done_under=str(tree / "out"))
    assert len(nothing) == 0 and list(nothing.columns) == ["content", "style", "content_root"]
    # an image with one of its two outputs (the other row failed, or its worker was killed): only the missing row
    first = p.rows.iloc[0]
    os.remove(first["output_uri"])
    rest = build_manifest([str(tree / "ds")], [str(tree / "styles")], pairing="sample:2", seed=7,
                          skip_done_under=str(tree / "out"))
    assert rest[["content", "style"]].values.tolist() == [[first["content"], first["style"]]]
    with pytest.raises(ManifestError, match="only 5 style images"):
        build_manifest([str(tree / "ds")], [str(tree / "styles")], pairing="sample:6")
    with pytest.raises(ManifestError, match="expected cross, zip or sample:K"):
        build_manifest([str(tree / "ds")], [str(tree / "styles")], pairing="sample:0")


def test_builder_over_s3_prefix(s3):
    b = s3.bucket()
    for k in ["ds/train/cat/a.jpg", "ds/train/dog/b.jpg", "styles/s1.png", "styles/s2.png", "ds/notes.txt"]:
        s3.put(b, k, b"x")
    df = build_manifest([f"s3://{b}/ds/"], [f"s3://{b}/styles"], pairing="cross", label_from_parent=True)
    assert len(df) == 4 and list(df["label"]) == ["cat", "cat", "dog", "dog"]
    p = manifest.plan(df, f"s3://{b}/out")
    assert p.rows["output"].str.startswith("train/cat/a__s1__").iat[0]
    manifest.write_manifest(df, f"s3://{b}/m.parquet")
    assert len(manifest.load(f"s3://{b}/m.parquet").rows) == 4


def test_cli_build_and_validate(tree, capsys):
    """The first command through the console script's process, the rest in this process (same code path)."""
    def cli(*args):
        return run_main(capsys, args)

    out = tree / "m.csv"
    r = run_cli("manifest", "build", "--content", tree / "ds", "--style", tree / "styles/ink.png", tree / "styles/waves.png",
            "--pairing", "cross", "--label-from-parent", "-o", out)
    assert r.returncode == 0, r.stderr
    assert "wrote 10 rows" in r.stdout
    r = cli("manifest", "validate", out, "--check-inputs")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["rows: 10", "distinct contents: 5", "distinct styles: 2", "methods: gatys 10"]
    first = manifest.plan(str(out), str(tree / "styled"), method="adain", fmt="png",
                          decoder="random:2").rows["output_uri"].iat[0]
    storage.write_bytes(first, b"done")
    r = cli("manifest", "validate", out, "--method", "adain", "--decoder", "random:2", "--format", "png",
            "--output-root", tree / "styled", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"rows": 10, "distinct_contents": 5, "distinct_styles": 2, "methods": {"adain": 10},
                                    "pending": 9, "skipped": 1, "notes": []}
    # The run's weights and engine options enter the keys: validate takes them like `stylize run` does.
    second = manifest.plan(str(out), str(tree / "styled"), method="adain", fmt="png", decoder="random:1",
                           options=StyleOptions.make(alpha=0.5)).rows["output_uri"].iat[1]
    storage.write_bytes(second, b"done")
    r = cli("manifest", "validate", out, "--method", "adain", "--format", "png", "--decoder", "random:1", "--alpha", "0.5",
            "--output-root", tree / "styled", "--json")
    assert r.returncode == 0, r.stderr
    assert (json.loads(r.stdout)["pending"], json.loads(r.stdout)["skipped"]) == (9, 1)
    r = cli("manifest", "validate", out, "--method", "adain", "--alpha", "2", "--output-root", tree / "styled")
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "alpha" in r.stderr and "Traceback" not in r.stderr
    # What `stylize run` refuses before it starts, validate refuses too: missing or malformed weight specs.
    for args, expected in ((["--method", "adain"], "method adain needs decoder weights"),
                           (["--method", "johnson"], "method johnson needs model weights"),
                           (["--encoder", "s3://AKIAEXAMPLE:ValSecret9@b/vgg.pth"], "credentials in URIs are not supported")):
        r = cli("manifest", "validate", out, *args)
        assert r.returncode == 2 and r.stderr.strip().splitlines() == [r.stderr.strip()] and expected in r.stderr, r.stderr
        assert "ValSecret9" not in r.stderr

    bad = tree / "bad.csv"
    bad.write_text(f"content,style,method\n{tree}/ds/train/cat/c1.jpg,,gatys\n,x.png,cubism\n")
    r = cli("manifest", "validate", bad)
    assert r.returncode == 2
    assert r.stderr.splitlines() == ["row 0, column style: empty cell", "row 1, column content: empty cell",
                                     "row 1, column method: unknown method 'cubism'; expected one of gatys, adain, johnson",
                                     f"error: {bad}: 3 problems"]
    (tree / "ds/train/cat/c1.jpg").unlink()
    r = cli("manifest", "validate", out, "--check-inputs")
    assert r.returncode == 2 and r.stderr.count("input not found") == 2
    r = cli("manifest", "build", "--content", tree / "ds", "--style", tree / "styles", "--pairing", "pairs", "-o", out)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: pairing 'pairs': expected cross, zip or sample:K with K >= 1"]
    with pytest.raises(StorageError, match="no content images found"):
        build_manifest([str(tree / "nope")], [str(tree / "styles")])
    r = cli("manifest", "build", "--content", "", "--style", tree / "styles", "-o", out)  # not the current folder
    assert r.returncode == 2 and r.stderr.strip() == "error: argument --content: empty; give a path or an s3:// URI"
    (tree / "piped").mkdir()
    (tree / "piped" / "ink|waves.png").write_bytes((tree / "styles/ink.png").read_bytes())
    r = cli("manifest", "build", "--content", tree / "ds", "--style", tree / "piped", "-o", tree / "m2.csv")
    assert r.returncode == 2 and "ink|waves.png: '|' separates blended styles" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tree / "m2.csv").exists()


def test_sample_k_counts_done_pairs_so_new_styles_do_not_re_augment(tmp_path):
    """Adding style images later: images that have their K outputs get none more; an image with some of them
    gets only the styles it lacks, drawn in the order it would have had."""
    for i in range(60):
        (tmp_path / "ds" / f"img{i:02d}.jpg").parent.mkdir(exist_ok=True)
        (tmp_path / "ds" / f"img{i:02d}.jpg").write_bytes(b"img")
    (tmp_path / "styles").mkdir()
    for s in range(4):
        (tmp_path / "styles" / f"s{s}.png").write_bytes(b"img")
    args = ([str(tmp_path / "ds")], [str(tmp_path / "styles")])
    first = build_manifest(*args, pairing="sample:2", seed=3)
    made = set(manifest.plan(first, str(tmp_path / "out")).rows["output"])
    for name in ["s4.png", "s5.png"]:  # the style library grows
        (tmp_path / "styles" / name).write_bytes(b"img")
    fresh = build_manifest(*args, pairing="sample:2", seed=3)
    moved = (fresh.groupby("content")["style"].apply(set) != first.groupby("content")["style"].apply(set)).sum()
    assert moved > 5  # without outputs, the new styles displace some earlier draws (the test would be vacuous otherwise)
    assert len(build_manifest(*args, pairing="sample:2", seed=3, done_keys=made)) == 0
    # one image lost one output (failed, or deleted): it gets one style again, not the one it still has
    lost = sorted(made)[0]
    again = build_manifest(*args, pairing="sample:2", seed=3, done_keys=made - {lost})
    kept = first[[k in made - {lost} and k.startswith(lost.split("__")[0] + "__")
                  for k in manifest.plan(first, str(tmp_path / "out")).rows["output"]]]
    assert len(again) == 1 and len(kept) == 1 and again["content"].iat[0] == kept["content"].iat[0]
    assert again["style"].iat[0] != kept["style"].iat[0]
    # K grows from 2 to 3: every image gets exactly one more style, one it does not have
    more = build_manifest(*args, pairing="sample:3", seed=3, done_keys=made)
    assert len(more) == 60 and more["content"].is_unique
    have = first.groupby("content")["style"].apply(set)
    assert all(row.style not in have[row.content] for row in more.itertuples())


def test_cut_output_names_count_as_done(tmp_path):
    """Pairs whose default key was cut to 255 bytes (long names) are recognised as done from their keys."""
    (tmp_path / "ds").mkdir()
    (tmp_path / "styles").mkdir()
    contents = ["a.jpg", "c" * 200 + ".jpg", "é" * 100 + ".jpg"]
    styles = ["s.png", "t" * 180 + ".png", "u" * 240 + ".png"]
    for name in contents:
        (tmp_path / "ds" / name).write_bytes(b"img")
    for name in styles:
        (tmp_path / "styles" / name).write_bytes(b"img")
    for pairing in ("cross", "sample:2"):
        df = build_manifest([str(tmp_path / "ds")], [str(tmp_path / "styles")], pairing=pairing)
        made = list(manifest.plan(df, str(tmp_path / "out")).rows["output"])
        assert sum("~" in k for k in made) >= 2 and all(len(k.encode()) <= 255 for k in made)
        assert len(build_manifest([str(tmp_path / "ds")], [str(tmp_path / "styles")], pairing=pairing,
                                  done_keys=made)) == 0
        rest = build_manifest([str(tmp_path / "ds")], [str(tmp_path / "styles")], pairing=pairing,
                              done_keys=made[1:])
        assert rest[["content", "style"]].values.tolist() == df[["content", "style"]].values.tolist()[:1]


def test_done_pairs_match_exact_uris_and_count_toward_k_after_a_style_is_removed(tmp_path):
    """Done pairs given as URIs (augment-dataset's index): styles of the same name in two folders and contents
    that differ only by extension are different pairs; a done pair whose style image was removed still counts
    toward its image's K (the image does not get a K+1th output)."""
    for name in ["ds/a.jpg", "ds/a.png", "ds/b.jpg", "styles/monet/1.jpg", "styles/monet/2.jpg",
                 "styles/vangogh/1.jpg", "styles/vangogh/2.jpg"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"img")
    args = ([str(tmp_path / "ds")], [str(tmp_path / "styles")])
    first = build_manifest(*args, pairing="sample:2", seed=1)
    done = list(zip(first["content"], first["style"]))
    assert len(done) == 6
    more = build_manifest(*args, pairing="sample:3", seed=1, done_pairs=done)
    assert len(more) == 3 and more["content"].is_unique  # one more each, whatever the file names share
    assert not set(zip(more["content"], more["style"])) & set(done)
    a_jpg = [p for p in done if p[0].endswith("a.jpg")]
    only_jpg = build_manifest(*args, pairing="sample:2", seed=1, done_pairs=a_jpg)
    assert sorted(set(only_jpg["content"])) == [str(tmp_path / "ds/a.png"), str(tmp_path / "ds/b.jpg")]
    # a style image removed: its done pairs still count
    removed = done[0][1]
    os.remove(removed)
    assert len(build_manifest(*args, pairing="sample:2", seed=1, done_pairs=done)) == 0


def test_listings_follow_symlinked_folders_once_and_skip_appledouble_files(tree):
    """Datasets assembled from symlinked folders lost those images without a word; a link cycle is listed once;
    macOS '._*' resource-fork files are not images (audit)."""
    extra = tree / "extra"
    (extra / "deep").mkdir(parents=True)
    (extra / "e1.jpg").write_bytes(b"img")
    (extra / "deep" / "e2.jpg").write_bytes(b"img")
    os.symlink(extra, tree / "ds" / "train" / "linked")
    os.symlink(tree / "ds" / "train", extra / "deep" / "loop")  # a cycle back to train/
    (tree / "ds" / "train" / "cat" / "._c1.jpg").write_bytes(b"\x00\x05\x16\x07")
    df = build_manifest([str(tree / "ds" / "train")], [str(tree / "styles" / "ink.png")])
    rel = sorted(os.path.relpath(c, tree / "ds" / "train") for c in df["content"])
    assert rel == ["cat/c1.jpg", "cat/c2.jpg", "dog/d1.jpg", "dog/d2.png", "linked/deep/e2.jpg", "linked/e1.jpg"]


def test_a_file_name_that_is_not_utf8_is_one_line_naming_it(tree, capsys):
    bad = os.path.join(os.fsencode(tree / "ds" / "val" / "cat"), b"bad\xff.jpg")
    with open(bad, "wb") as f:
        f.write(b"img")
    with pytest.raises(StorageError, match=r"bad\\xff\.jpg: file name is not valid UTF-8; rename it"):
        build_manifest([str(tree / "ds" / "val")], [str(tree / "styles")])
    r = run_main(capsys, ["manifest", "build", "--content", tree / "ds" / "val", "--style", tree / "styles",
                          "-o", tree / "m.csv"])
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr, r.stderr
    assert "bad\\xff.jpg" in r.stderr and not (tree / "m.csv").exists()


def test_an_unreadable_folder_is_an_error_not_a_silent_gap(tree):
    from stylecore import storage as st

    locked = tree / "ds" / "train" / "locked"
    locked.mkdir()
    (locked / "x.jpg").write_bytes(b"img")
    os.chmod(locked, 0)
    try:
        if os.access(locked, os.R_OK):  # root reads anything: make os.walk's listing itself fail instead
            import unittest.mock

            real = os.scandir

            def scandir(path="."):
                if os.fspath(path).endswith("locked"):
                    raise PermissionError(13, "Permission denied", os.fspath(path))
                return real(path)

            with unittest.mock.patch("os.scandir", scandir), pytest.raises(StorageError, match="locked: cannot list folder: Permission denied"):
                list(st.list_prefix(str(tree / "ds" / "train")))
        else:
            with pytest.raises(StorageError, match="locked: cannot list folder"):
                list(st.list_prefix(str(tree / "ds" / "train")))
    finally:
        os.chmod(locked, 0o755)
    assert list(st.list_prefix(str(tree / "missing"))) == []  # a missing root still lists nothing


def test_skip_done_under_says_when_its_root_is_empty_or_names_collide(tree, capsys):
    """A mistyped --skip-done-under root re-did the whole job silently, and outputs of x.jpg counted for x.png
    without a word (documented in docs/manifests.md, now said when it happens) (audit)."""
    (tree / "ds" / "val" / "cat" / "c3.png").write_bytes(b"img")
    r = run_main(capsys, ["manifest", "build", "--content", tree / "ds" / "val", "--style", tree / "styles",
                          "--skip-done-under", tree / "outptu", "-o", tree / "m.csv"])
    assert r.returncode == 0, r.stderr
    notes = [line for line in r.stdout.splitlines() if line.startswith("note: ")]
    assert len(notes) == 2, r.stdout
    assert "outptu: no outputs there (a new output root, or a typo?); every pair is listed" in notes[0]
    assert notes[1].startswith("note: 2 content images share a name with another") and "c3.jpg" in notes[1]
    assert r.stdout.splitlines()[-1].startswith("wrote 10 rows (2 contents, 5 styles, pairing cross)")
    assert len(pd.read_csv(tree / "m.csv")) == 10
    r = run_main(capsys, ["manifest", "build", "--content", tree / "ds" / "val" / "cat" / "c3.jpg", "--style",
                          tree / "styles" / "ink.png", "-o", tree / "one.csv"])
    assert r.stdout.strip().startswith("wrote 1 row (1 content, 1 style, pairing cross)"), r.stdout


def test_small_cli_answers_of_the_manifest_commands(tree, capsys):
    """An unsupported -o scheme is refused before listing; a folder given as a manifest says so; a negative
    --max-problems is a usage error; a build with every pair done says what its header-only file means (audit)."""
    r = run_main(capsys, ["manifest", "build", "--content", tree / "nowhere", "--style", tree / "styles",
                          "-o", "ftp://host/m.csv"])
    assert r.returncode == 2 and "unsupported URI scheme 'ftp'" in r.stderr and "nowhere" not in r.stderr, r.stderr
    (tree / "folder.csv").mkdir()
    r = run_main(capsys, ["manifest", "validate", tree / "folder.csv"])
    assert r.returncode == 2 and "folder.csv: is a folder, not a file" in r.stderr, r.stderr
    r = run_main(capsys, ["manifest", "validate", tree / "folder.csv", "--max-problems", "-5"])
    assert r.returncode == 2 and "--max-problems: value -5 must be >= 0" in r.stderr, r.stderr
    done = tree / "out"
    (done / "cat").mkdir(parents=True)
    (done / "cat" / "c3__ink__0123abcd.jpg").write_bytes(b"x")
    r = run_main(capsys, ["manifest", "build", "--content", tree / "ds" / "val", "--style", tree / "styles" / "ink.png",
                          "--skip-done-under", done, "-o", tree / "rest.csv"])
    assert r.returncode == 0 and "note: no pairs to stylize (every pair is done)" in r.stdout, r.stdout
    assert r.stdout.splitlines()[-1].startswith("wrote 0 rows"), r.stdout
