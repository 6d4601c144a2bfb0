"""Manifest reading, validation, output keys, resume and planning (local disk and S3)."""
from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from stylecore import manifest, storage
from stylecore.errors import ManifestError
from stylecore.options import StyleOptions


@pytest.fixture
def tree(tmp_path):
    """ds/train/{cat,dog}/*.jpg and styles/{starry,waves,ink}.png (names only matter here)."""
    for rel in ["train/cat/c1.jpg", "train/cat/c2.jpg", "train/dog/d1.jpg", "val/cat/c3.jpg"]:
        p = tmp_path / "ds" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"img")
    (tmp_path / "styles").mkdir()
    for s in ["starry", "waves", "ink"]:
        (tmp_path / "styles" / f"{s}.png").write_bytes(b"sty")
    return tmp_path


def write_csv(path, text):
    path.write_text(textwrap_dedent(text))
    return str(path)


def textwrap_dedent(t):
    return "\n".join(line.strip() for line in t.strip().splitlines()) + "\n"


def test_relative_paths_resolve_against_manifest_folder(tree):
    m = write_csv(tree / "ds" / "m.csv", """
        content,style,label
        train/cat/c1.jpg,../styles/starry.png,cat
        file://{root}/ds/train/dog/d1.jpg,../styles/starry.png|../styles/waves.png,dog
    """.replace("{root}", str(tree)))
    plan = manifest.plan(m, str(tree / "out"))
    r = plan.rows
    assert list(r["content"]) == [str(tree / "ds/train/cat/c1.jpg"), str(tree / "ds/train/dog/d1.jpg")]
    assert r["style"].iat[1] == f"{tree}/styles/starry.png|{tree}/styles/waves.png"
    assert plan.passthrough == ["label"] and list(r["label"]) == ["cat", "dog"]
    assert list(r["id"]) == ["0", "1"] and list(r["status"]) == ["pending", "pending"]
    assert re.fullmatch(r"c1__starry__[0-9a-f]{8}\.jpg", r["output"].iat[0])
    assert re.fullmatch(r"d1__starry\+waves__[0-9a-f]{8}\.jpg", r["output"].iat[1])
    assert r["output_uri"].iat[0] == str(tree / "out" / r["output"].iat[0])


def test_every_problem_reported_at_once(tree):
    m = write_csv(tree / "bad.csv", """
        content,style,style_weights,steps,method,output,preserve_color
        a.jpg,s.png,,10,gatys,,
        ,s.png,,,,,
        b.jpg,,,,,,
        gs://x/c.jpg,s.png,,,,,
        d.jpg,s1.png|s2.png,0.7|x,,,,
        e.jpg,s1.png|s2.png,0.7|0.2|0.1,,,,
        f.jpg,s.png,,-3,,,
        g.jpg,s.png,,,picasso,,
        h.jpg,s.png,,,,../escape.jpg,
        i.jpg,s.png,,,,/abs/x.jpg,
        j.jpg,s.png,,,,same.jpg,maybe
        k.jpg,s.png,,,,same.jpg,
        l.jpg,s.png||t.png,,,,,
        m.jpg,s.png,,,,out/m.txt,
    """)
    with pytest.raises(ManifestError) as e:
        manifest.plan(m, str(tree / "out"))
    got = [re.match(r"row (\d+), column (\w+): ", p).groups() for p in e.value.problems]
    assert [(int(r), c) for r, c in got] == [
        (1, "content"), (2, "style"), (3, "content"), (4, "style_weights"), (5, "style_weights"), (6, "steps"),
        (7, "method"), (8, "output"), (9, "output"), (10, "preserve_color"), (10, "output"), (11, "output"),
        (12, "style"), (13, "output")]
    text = "\n".join(e.value.problems)
    for needle in ["empty cell", "unsupported URI scheme 'gs'", "not a list of numbers", "3 weights for 2 styles",
                   "out of range", "unknown method 'picasso'", "'..' escapes the output root",
                   "absolute path escapes", "duplicate output key 'same.jpg'", "empty style in",
                   "extension must be .jpg, .png or .webp"]:
        assert needle in text, needle
    assert str(e.value).startswith(f"{tree / 'bad.csv'}: 14 problems; first: row 1, column content: empty cell")


def test_keys_inside_other_keys_and_over_long_names_are_problems(tree):
    """``d.jpg`` and ``d.jpg/e.jpg`` (one row failed 'is a directory' on every run) and a name over 255 bytes
    ('stat failed: File name too long' at run time) are refused at validation; other cases pass."""
    rows = ["d.jpg", "x/d.jpg/f/e.jpg", "x/d.jpg", "d.JPG/e.jpg", "y" * 300 + ".jpg", "é" * 130 + "/a.jpg",
            "é" * 120 + "/a.jpg", "ok/d.jpg", "d.jpg.png"]
    m = write_csv(tree / "m.csv", "content,style,output\n" + "".join(f"a.jpg,s.png,{k}\n" for k in rows))
    with pytest.raises(ManifestError) as e:
        manifest.load(m)
    assert e.value.problems == [
        "row 1, column output: output key 'x/d.jpg/f/e.jpg' is inside 'x/d.jpg', which is row 2's output key",
        f"row 4, column output: output key {'y' * 80!r}...: a file or folder name over 255 bytes (local file "
        f"systems refuse it)",
        f"row 5, column output: output key {'é' * 80!r}...: a file or folder name over 255 bytes (local file "
        f"systems refuse it)"]


def test_missing_required_columns(tree):
    m = write_csv(tree / "m.csv", "contents,style\na.jpg,s.png\n")
    with pytest.raises(ManifestError) as e:
        manifest.load(m)
    assert e.value.problems == ["column content: missing (required); the header has 'contents', 'style'"]
    m = write_csv(tree / "m.csv", "content;style\na.jpg;s.png\n")  # another separator: one column
    with pytest.raises(ManifestError) as e:
        manifest.load(m)
    assert e.value.problems == [f"column {c}: missing (required); the header has 'content;style'" for c in ("content", "style")]


def test_keys_are_deterministic_and_track_options(tree):
    df = pd.DataFrame({"content": ["ds/train/cat/c1.jpg", "ds/train/dog/d1.jpg"],
                       "style": ["styles/starry.png", "styles/starry.png|styles/ink.png"],
                       "style_weights": ["", "7|3"]})
    base = str(tree)

    def keys(**kw):
        args = dict(method="gatys", options=StyleOptions.make(steps=50), base=base) | kw
        return list(manifest.plan(df, str(tree / "out"), **args).rows["output"])

    k0 = keys()
    assert k0 == keys()  # same inputs, same keys
    assert keys(options=StyleOptions.make(steps=51)) != k0  # an effective option changes the hash
    assert keys(options=StyleOptions.make(steps=50, alpha=0.5)) == k0  # alpha does not affect gatys
    assert keys(encoder="random:1") != k0  # weight spec of the method
    assert keys(decoder="random:9") == k0  # gatys uses no decoder
    assert keys(fmt="png") == [k.replace(".jpg", ".png") for k in k0]
    same_blend = df.assign(style_weights=["", "0.7|0.3"])
    assert list(manifest.plan(same_blend, str(tree / "out"), method="gatys",
                              options=StyleOptions.make(steps=50), base=base).rows["output"]) == k0
    other = df.assign(style_weights=["", "0.5|0.5"])
    k_other = list(manifest.plan(other, str(tree / "out"), method="gatys", options=StyleOptions.make(steps=50),
                                 base=base).rows["output"])
    assert k_other[0] == k0[0] and k_other[1] != k0[1]
    # a per-row override column changes only its own row's key
    k_row = list(manifest.plan(df.assign(steps=["", "60"]), str(tree / "out"), method="gatys",
                               options=StyleOptions.make(steps=50), base=base).rows["output"])
    assert k_row[0] == k0[0] and k_row[1] != k0[1]


def test_per_row_overrides_and_row_request(tree):
    df = pd.DataFrame({"content": ["a.jpg", "b.jpg", "c.jpg"], "style": ["s.png"] * 3,
                       "method": ["adain", "", "gatys"], "alpha": [0.5, None, None], "steps": ["", "", "20"],
                       "preserve_color": ["yes", "", ""]})
    p = manifest.plan(df, str(tree / "out"), method="johnson", options=StyleOptions.make(size=128), base=str(tree),
                      model="random:3")
    assert list(p.rows["method"]) == ["adain", "johnson", "gatys"]
    m, opts, w = p.row_request(p.rows.iloc[0])
    assert (m, opts.alpha, opts.preserve_color, opts.size, w) == ("adain", 0.5, True, 128, None)
    m, opts, _ = p.row_request(p.rows.iloc[2].to_dict())
    assert (m, opts.steps) == ("gatys", 20)
    assert json.loads(p.rows["options_json"].iat[1]) == StyleOptions.make(size=128).effective("johnson")


def test_resume_skips_existing_outputs(tree):
    m = write_csv(tree / "m.csv", """
        content,style
        ds/train/cat/c1.jpg,styles/starry.png
        ds/train/cat/c2.jpg,styles/starry.png
        ds/train/dog/d1.jpg,styles/waves.png
    """)
    out = tree / "out"
    p = manifest.plan(m, str(out))
    for uri in p.rows["output_uri"].iloc[:2]:
        storage.write_bytes(uri, b"done")
    p2 = manifest.plan(m, str(out))
    assert list(p2.rows["status"]) == ["skipped", "skipped", "pending"] and p2.counts() == {"skipped": 2, "pending": 1}
    assert len(p2.pending) == 1
    assert list(manifest.plan(m, str(out), overwrite=True).rows["status"]) == ["pending"] * 3
    # an option change gives new keys: nothing stale is reused
    p3 = manifest.plan(m, str(out), options=StyleOptions.make(steps=7))
    assert list(p3.rows["status"]) == ["pending"] * 3


def test_check_inputs(tree):
    m = write_csv(tree / "m.csv", """
        content,style
        ds/train/cat/c1.jpg,styles/starry.png
        ds/train/cat/gone.jpg,styles/starry.png|styles/lost.png
    """)
    assert len(manifest.plan(m, str(tree / "out")).rows) == 2  # missing inputs fail their own row later
    with pytest.raises(ManifestError) as e:
        manifest.plan(m, str(tree / "out"), check_inputs=True)
    assert e.value.problems == [f"row 1, column content: input not found: {tree}/ds/train/cat/gone.jpg",
                                f"row 1, column style: input not found: {tree}/styles/lost.png"]
    m2 = write_csv(tree / "m2.csv", """
        content,style
        ds/train/cat,styles/starry.png
    """)
    with pytest.raises(ManifestError) as e:
        manifest.plan(m2, str(tree / "out"), check_inputs=True)
    assert e.value.problems == [f"row 0, column content: input is a folder, not an image file: {tree}/ds/train/cat"]
    # a row with another problem does not hide the missing inputs of the others
    m3 = write_csv(tree / "m3.csv", """
        content,style
        ds/train/cat/c1.jpg,
        ds/train/cat/c1.jpg,styles/starry.png
        ds/train/cat/gone.jpg,styles/starry.png
    """)
    with pytest.raises(ManifestError) as e:
        manifest.plan(m3, str(tree / "out"), check_inputs=True)
    assert e.value.problems == ["row 0, column style: empty cell",
                                f"row 2, column content: input not found: {tree}/ds/train/cat/gone.jpg"]


@pytest.mark.parametrize("ext", [".parquet", ".jsonl", ".csv"])
def test_formats_roundtrip(tree, ext):
    df = pd.DataFrame({"content": ["a.jpg", "b.jpg"], "style": ["s.png", "t.png"], "steps": [10, 20],
                       "split": ["train", "val"], "score": [0.5, 1.5]})
    uri = manifest.write_manifest(df, str(tree / f"m{ext}"))
    p = manifest.plan(uri, str(tree / "out"))
    assert list(p.rows["split"]) == ["train", "val"] and p.passthrough == ["split", "score"]
    assert [p.row_request(r)[1].steps for _, r in p.rows.iterrows()] == [10, 20]
    assert [float(x) for x in p.rows["score"]] == [0.5, 1.5]


def test_unknown_manifest_extension(tree):
    with pytest.raises(ManifestError, match="unknown manifest format '.txt'"):
        manifest.load(str(tree / "m.txt"))


def test_manifest_and_outputs_on_s3(s3):
    b = s3.bucket()
    s3.put(b, "data/train/cat/c1.jpg", b"img")
    s3.put(b, "styles/starry.png", b"sty")
    s3.put(b, "jobs/m.csv", b"content,style\n../data/train/cat/c1.jpg,s3://%s/styles/starry.png\n" % b.encode())
    p = manifest.plan(f"s3://{b}/jobs/m.csv", f"s3://{b}/out", check_inputs=True)
    assert p.rows["content"].iat[0] == f"s3://{b}/data/train/cat/c1.jpg"
    key = p.rows["output"].iat[0]
    assert p.rows["output_uri"].iat[0] == f"s3://{b}/out/{key}" and p.rows["status"].iat[0] == "pending"
    storage.write_bytes(p.rows["output_uri"].iat[0], b"result")
    assert manifest.plan(f"s3://{b}/jobs/m.csv", f"s3://{b}/out").rows["status"].iat[0] == "skipped"
    with pytest.raises(ManifestError) as e:
        s3.put(b, "jobs/m2.csv", b"content,style\n../data/missing.jpg,../styles/starry.png\n")
        manifest.plan(f"s3://{b}/jobs/m2.csv", f"s3://{b}/out", check_inputs=True)
    assert e.value.problems == [f"row 0, column content: input not found: s3://{b}/data/missing.jpg"]
    with pytest.raises(ManifestError, match="not found"):
        manifest.load(f"s3://{b}/jobs/none.csv")


def test_vectorised_keys_match_the_reference_helpers(tmp_path):
    """The vectorised key builder agrees with keys.output_key / content_part on awkward names."""
    from stylecore import keys

    names = ["/r/a/b.jpg", "/r/a/.hidden", "/r/a/x.tar.gz", "/r/noext", "/r/a..jpg", "/r/d/e.f/g", "/r/b.",
             "/r/.h.jpg", "/r/a b/c d.JPG", "/elsewhere/z.png"]
    df = pd.DataFrame({"content": names, "style": "/s/x__y.png|/s/z.png", "style_weights": "1|3", "content_root": "/r"})
    opts = StyleOptions.make(steps=5)
    p = manifest.plan(df, str(tmp_path), options=opts)
    full = keys.options_json("gatys", opts, {"encoder": "imagenet", "decoder": None, "model": None})
    for name, out in zip(names, p.rows["output"]):
        assert out == keys.output_key(name, "/s/x__y.png|/s/z.png", "0.25|0.75", full, ".jpg", "/r")
        assert keys.content_rel_from_key(out) == keys.content_part(name, "/r")
    assert p.rows["output"].iat[0].startswith("a/b__x_y+z__")


def test_long_default_names_are_cut_to_255_bytes_and_stay_distinct(tmp_path):
    """Long style (and content) names make default keys whose file names a local disk refuses (> 255 bytes):
    the names are cut to fit, the same in the vectorised and the scalar path, and stay distinct."""
    from stylecore import keys
    from stylecore.images import save_image
    from tests.conftest import make_photo

    long_s = ["s" * 120 + f"{i}.png" for i in range(3)] + ["ü" * 120 + ".png"]
    long_c = "c" * 250 + ".png"  # a name that fits alone, but not with a style part
    for name in long_s + [long_c, "short.png"]:
        make_photo(32, 32, seed=len(name)).save(tmp_path / name)
    rows = [("short.png", "|".join(long_s[:3])), ("short.png", "|".join(long_s[:2])), ("short.png", long_s[3]),
            (long_c, "short.png"), (long_c, long_s[0]), ("short.png", "short.png")]
    df = pd.DataFrame(rows, columns=["content", "style"])
    df.to_csv(tmp_path / "m.csv", index=False)
    opts = StyleOptions.make(steps=1, size=32)
    p = manifest.plan(str(tmp_path / "m.csv"), str(tmp_path / "out"), options=opts)
    full = keys.options_json("gatys", opts, {"encoder": "imagenet"})
    outs = p.rows["output"].tolist()
    for (c, s), out in zip(rows, outs):
        assert len(out.encode("utf-8")) <= 255, out
        assert out == keys.output_key(str(tmp_path / c), "|".join(str(tmp_path / x) for x in s.split("|")), "",
                                      full, ".jpg")
    assert len(set(outs)) == len(outs)
    assert outs[-1].startswith("short__short__") and "~" not in outs[-1]  # short names are unchanged
    assert outs[3].startswith("c" * 200) and outs[3].split("__")[1] == "short"  # a short style part leaves room
    assert "~" in outs[0] and "~" in outs[2]
    for out in outs:  # every key is a file name this disk takes
        save_image(make_photo(8, 8), tmp_path / "out" / out)
    assert len(list((tmp_path / "out").iterdir())) == len(outs)


def test_resume_check_lists_once_instead_of_head_per_row(s3, s3_proxy):
    b = s3.bucket()
    rows = "".join(f"data/c{i:03d}.jpg,styles/a.png\n" for i in range(60))
    s3.put(b, "m.csv", ("content,style\n" + rows).encode())
    first = manifest.plan(f"s3://{b}/m.csv", f"s3://{b}/out")
    for uri in first.rows["output_uri"].iloc[:25]:
        s3.put(b, uri[len(f"s3://{b}/"):], b"done")
    s3_proxy.requests.clear()
    again = manifest.plan(f"s3://{b}/m.csv", f"s3://{b}/out")
    assert again.counts() == {"skipped": 25, "pending": 35}
    seen = list(s3_proxy.requests)
    assert not any(r.startswith("HEAD") for r in seen)
    assert [r.split("?")[0] for r in seen] == [f"GET /{b}/m.csv HTTP/1.1", f"GET /{b}"], seen


def test_vectorised_path_checks_run_on_re2_and_agree_with_python_re():
    """pandas runs str.contains on pyarrow's RE2 engine for some versions and dtypes (an H200 image's pandas
    rejected Python's \\Z there), so the patterns must parse in RE2, and the masks must equal the checks
    written with Python's re."""
    import random

    import pyarrow as pa
    import pyarrow.compute as pc

    from stylecore import manifest as m

    for pattern in (m._PATH_SUSPECT, m._KEY_SUSPECT, m._SCHEME_RE, m.STRIP_EXTENSION):
        pc.match_substring_regex(pa.array(["a/b"]), pattern)  # raises ArrowInvalid if RE2 cannot parse it
    rng = random.Random(3)
    alphabet = list("ab./ ~\\:\n") + ["s3://", "x.jpg", ".PNG", "..", "."]
    values = ["", ".", "..", "/", "a/.", "a/..", " ", ".hidden", "a/.hidden", "a.b.c", "..jpg", "a/b.", "c:/x"]
    values += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 7))) for _ in range(3000)]
    s = pd.Series(values, dtype="str")
    ends = r"(?:/|\Z)"
    path_re = r"(?:^|/)\.{1,2}" + ends + r"|//|^~|/\Z|\\|" + m._SCHEME_RE
    key_re = r"(?:^|/)\.{1,2}" + ends + r"|^/|//|\\|^[A-Za-z][A-Za-z0-9+.\-]*:|^ *\Z"
    path = (s.str.contains(m._PATH_SUSPECT, regex=True).to_numpy(dtype=bool) | m._ends_in_dot_segment(s)
            | s.str.endswith("/").to_numpy(dtype=bool))
    key = (s.str.contains(m._KEY_SUSPECT, regex=True).to_numpy(dtype=bool) | m._ends_in_dot_segment(s)
           | (s.str.strip(" ") == "").to_numpy(dtype=bool))
    assert path.tolist() == [bool(re.search(path_re, v)) for v in values]
    assert key.tolist() == [bool(re.search(key_re, v)) for v in values]
    assert m._strip_extension(s).tolist() == [re.sub(r"^([\s\S]*[^/])\.[^./]*\Z", r"\1", v) for v in values]
    assert m._strip_extension(pd.Series(["new\nline.jpg", "d/new\nline.x.png"], dtype="str")).tolist() == [
        "new\nline", "d/new\nline.x"]  # as keys.content_part (posixpath.splitext) gives them
    # and each pattern gives the same answers on RE2 (pyarrow) as on Python's re
    arr = pa.array(values)
    for pattern in (m._PATH_SUSPECT, m._KEY_SUSPECT):
        assert pc.match_substring_regex(arr, pattern).to_pylist() == [bool(re.search(pattern, v)) for v in values]
    strip = m.STRIP_EXTENSION
    assert pc.replace_substring_regex(arr, strip, r"\1").to_pylist() == [re.sub(strip, r"\1", v) for v in values]


def test_option_values_parse_exactly_and_refuse_json_booleans_and_unusable_seeds():
    """Seeds above 2**53 stay exact (they went through a float), JSON ``true`` is not a size or an alpha, and a
    seed the random generators cannot take is refused in one line (it was a ValueError traceback)."""
    import numpy as np

    from stylecore.errors import OptionsError
    from stylecore.options import coerce

    assert coerce("seed", "9007199254740993") == 9007199254740993 == coerce("seed", 2**53 + 1)
    assert coerce("seed", np.int64(2**62 + 1)) == 2**62 + 1
    assert coerce("size", "32.0") == 32 and coerce("size", " 64 ") == 64 and coerce("alpha", "0.5") == 0.5
    assert coerce("preserve_color", True) is True
    assert coerce("tile_size", 0) == 0 and coerce("tile_size", "64") == 64
    for name, value, reason in [("size", True, "invalid value True"), ("alpha", np.bool_(True), "invalid value"),
                                ("seed", "99999999999999999999", "out of range (in [0, 2**63))"),
                                ("seed", -1, "out of range"), ("size", "3.5", "invalid value"),
                                ("tile_size", "10", "out of range (0 for automatic, or >= 64)"),
                                ("alpha", "1e400", "invalid value '1e400' (expected float)")]:  # was 'inf'
        with pytest.raises(OptionsError, match=re.escape(reason)):
            coerce(name, value)


def test_json_cells_that_are_not_text_are_problems_of_their_rows(tmp_path):
    """JSON Lines cells holding a number, list, object or boolean where a path belongs are refused with the row
    and the kind named (they became paths such as ``['..']`` and ``5``); text rows beside them are fine."""
    from stylecore.errors import ManifestError

    lines = [{"content": "a.jpg", "style": "s.png"}, {"content": 5, "style": "s.png"},
             {"content": "b.jpg", "style": [".."]}, {"content": "c.jpg", "style": "s.png", "size": True},
             {"content": True, "style": {"x": 1}}]
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    with pytest.raises(ManifestError) as info:
        manifest.load(str(path))
    assert info.value.problems == [
        "row 1, column content: expected text (a path or URI), got a number 5",
        "row 2, column style: expected text (a path or URI), got a list ['..']",
        "row 3, column size: option size: invalid value True (expected int)",
        "row 4, column content: expected text (a path or URI), got a boolean True",
        "row 4, column style: expected text (a path or URI), got an object {'x': 1}"]
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(lines[0]) + "\n")
    assert len(manifest.load(str(good)).rows) == 1


def test_an_output_key_with_a_nul_character_is_a_problem_of_its_row(tmp_path):
    """It passed validation, then failed its row on every run with Python's bare 'embedded null byte'."""
    from stylecore.errors import ManifestError

    df = pd.DataFrame({"content": ["a.jpg", "b.jpg"], "style": ["s.png", "s.png"], "output": ["x\x00.jpg", "ok.jpg"]})
    with pytest.raises(ManifestError) as e:
        manifest.plan(df, str(tmp_path / "out"))
    assert e.value.problems == [
        "row 0, column output: output key 'x\\x00.jpg': a NUL character cannot be in a file name or an S3 key"]
    # Without an output column the key is made from the content path: the problem is that column's.
    with pytest.raises(ManifestError) as e:
        manifest.plan(df.drop(columns="output").assign(content=["a.jpg", "c\x00x.jpg"]), str(tmp_path / "out"))
    assert [p.split(":")[0] for p in e.value.problems] == ["row 1, column content"], e.value.problems


def test_a_repeated_header_name_is_one_problem(tmp_path):
    (tmp_path / "m.csv").write_text("content,style,content,label,label\na.jpg,s.png,b.jpg,x,y\n")
    with pytest.raises(ManifestError) as e:
        manifest.load(str(tmp_path / "m.csv"))
    assert e.value.problems == ["column content: appears 2 times in the header",
                                "column label: appears 2 times in the header"]


def test_credentials_holding_a_slash_are_refused_and_redacted(tmp_path):
    """AWS secret keys often contain "/": such a URI is user info too, never a bucket named "KEY:SECRET"."""
    from stylecore import uris
    from stylecore.errors import StorageError

    slashed = "s3://AKIAEXAMPLE:wJalr/XUtnFEMI+K7@bucket/photos/a.jpg"
    assert uris.has_userinfo(slashed) and uris.redact(slashed) == "s3://***@bucket/photos/a.jpg"
    assert uris.redact(f"error: {slashed}: not found") == "error: s3://***@bucket/photos/a.jpg: not found"
    no_user = "s3://:wJalrXUtnFEMI@bucket/a.jpg"  # a password with an empty user name
    assert uris.has_userinfo(no_user) and uris.redact(no_user) == "s3://***@bucket/a.jpg"
    for plain in ("s3://bucket/a:b@c.jpg", "s3://bucket/dir/x@y.png", "file:///tmp/a@b.png", "/d/a:b@c.png"):
        assert not uris.has_userinfo(plain) and uris.redact(plain) == plain
    with pytest.raises(StorageError, match="credentials in URIs are not supported") as e:
        uris.parse_s3(slashed)
    assert "XUtnFEMI" not in str(e.value)
    df = pd.DataFrame({"content": [slashed, "a.jpg"], "style": ["s.png", slashed.replace("photos/a.jpg", "s.png")]})
    with pytest.raises(ManifestError) as e:
        manifest.load(df, base=str(tmp_path))
    problems = e.value.problems
    assert [p.split(",")[0] for p in problems] == ["row 0", "row 1"]
    assert all("credentials in URIs are not supported" in p and "XUtnFEMI" not in p and "wJalr" not in p
               for p in problems)
    # An output cell holding a URI with credentials: refused as such, the key shown redacted.
    df = pd.DataFrame({"content": ["a.jpg"], "style": ["s.png"], "output": [slashed]})
    with pytest.raises(ManifestError) as e:
        manifest.load(df, base=str(tmp_path))
    assert "credentials in URIs are not supported" in e.value.problems[0], e.value.problems
    assert "XUtnFEMI" not in str(e.value.problems) and "wJalr" not in str(e.value.problems)


def test_every_problem_that_quotes_a_cell_with_credentials_is_redacted(tmp_path, capsys):
    """The extension, duplicate-key and nested-key problems, and a CSV parse error, quote the cell or row text:
    a URI with credentials in it was printed whole by `stylize manifest validate` (audit)."""
    from stylize_cli.main import main

    key = "s3://AKIAEXAMPLE:wJalr/XUtnFEMI@bkt"
    df = pd.DataFrame({"content": ["a.jpg", "b.jpg", "c.jpg", "d.jpg"], "style": ["s.png"] * 4,
                       "output": [f"{key}/x", f"{key}/y.jpg", f"{key}/y.jpg", f"{key}/z.jpg/w.jpg"]})
    df.loc[4] = ["e.jpg", "s.png", f"{key}/z.jpg"]
    with pytest.raises(ManifestError) as e:
        manifest.load(df, base=str(tmp_path))
    text = "\n".join(e.value.problems) + str(e.value)
    assert "extension must be" in text and "duplicate output key" in text and "is inside" in text, text
    assert "wJalr" not in text and "XUtnFEMI" not in text and "s3://***@bkt/y.jpg" in text
    (tmp_path / "ragged.csv").write_text(f"content,style\na.jpg,s.png,{key}/extra.jpg\n")
    with pytest.raises(ManifestError) as e:
        manifest.load(str(tmp_path / "ragged.csv"))
    assert "cannot parse as csv" in str(e.value) and "wJalr" not in str(e.value), str(e.value)
    df.to_csv(tmp_path / "creds.csv", index=False)
    assert main(["manifest", "validate", str(tmp_path / "creds.csv")]) == 2
    err = capsys.readouterr().err
    assert "duplicate output key" in err and "wJalr" not in err and "XUtnFEMI" not in err, err


def test_parse_errors_name_the_line_and_jsonl_takes_a_byte_order_mark(tmp_path):
    """pyarrow's and pandas' parse errors name a column or a byte position, not the line: in a 100k-row manifest
    the bad row could not be found (audit)."""
    cases = {"latin.csv": (b"content,style\n" + b"a.jpg,s.png\n" * 5000 + b"caf\xe9.jpg,s.png\n",
                           "line 5002: not valid UTF-8 text"),
             "ragged.csv": (b'content,style\n"multi\nline.jpg",s.png\nb.jpg,s.png,extra\n', "line 4: 3 fields, the header has 2"),
             "bad.jsonl": (b'{"content": "a.jpg", "style": "s.png"}\n\n{"content": "b.jpg" "style": 1}\n',
                           "line 3: not a JSON object")}
    for name, (data, where) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ManifestError, match=re.escape(f"cannot parse as {name.split('.')[1]}: {where}")):
            manifest.read_manifest(str(tmp_path / name))
    (tmp_path / "bom.jsonl").write_bytes(b'\xef\xbb\xbf{"content": "a.jpg", "style": "s.png"}\n')
    assert manifest.read_manifest(str(tmp_path / "bom.jsonl")).to_dict("records") == [{"content": "a.jpg",
                                                                                        "style": "s.png"}]


def test_the_credentials_of_a_pre_signed_url_are_redacted():
    """A pre-signed URL pasted as an input was printed whole in its error: access key id, signature and session
    token (audit)."""
    from stylecore import storage, uris

    url = ("https://b.s3.amazonaws.com/c.jpg?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE"
           "%2F20260101%2Fus-east-1&X-Amz-Date=20260101T000000Z&X-Amz-Signature=deadbeefcafe&X-Amz-Security-Token=FQoGZX")
    text = uris.redact(f"error: {url}: unsupported URI scheme 'https'")
    assert "AKIAIOSFODNN7EXAMPLE" not in text and "deadbeefcafe" not in text and "FQoGZX" not in text, text
    assert text == ("error: https://b.s3.amazonaws.com/c.jpg?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=***"
                    "&X-Amz-Date=20260101T000000Z&X-Amz-Signature=***&X-Amz-Security-Token=***: unsupported URI scheme "
                    "'https'")
    v2 = "s3://b/k.jpg?AWSAccessKeyId=AKIAV2&Signature=abc%2Bdef&Expires=1"
    assert storage.scrub(v2) == "s3://b/k.jpg?AWSAccessKeyId=***&Signature=***&Expires=1"
    assert uris.redact("s3://b/photos/signature_v2.jpg?size=3") == "s3://b/photos/signature_v2.jpg?size=3"
