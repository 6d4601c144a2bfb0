"""Local storage: URI forms, atomic writes, listing, key refusal."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from stylecore import storage, uris
from stylecore.errors import StorageError


def test_uri_forms(tmp_path, monkeypatch):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a b.jpg").write_bytes(b"A")
    monkeypatch.chdir(tmp_path)
    assert storage.read_bytes("d/a b.jpg") == b"A"  # relative to the current directory
    assert storage.read_bytes(f"file://{tmp_path}/d/a%20b.jpg") == b"A"
    assert storage.resolve("a b.jpg", base=str(tmp_path / "d")) == str(tmp_path / "d" / "a b.jpg")
    assert storage.resolve("../x.png", base=str(tmp_path / "d")) == str(tmp_path / "x.png")
    assert storage.resolve("x/../y.jpg", base="s3://bkt/man") == "s3://bkt/man/y.jpg"
    assert storage.resolve("y.jpg", base="s3://bkt") == "s3://bkt/y.jpg"
    assert storage.resolve("../y.jpg", base="s3://bkt/man") == "s3://bkt/y.jpg"
    for value, base in (("../../y.jpg", "s3://bkt/man"), ("../y.jpg", "s3://bkt")):  # was s3://bkt/../y.jpg
        with pytest.raises(StorageError, match=re.escape(f"{value}: '..' climbs above the bucket of {base}")):
            storage.resolve(value, base=base)
    assert storage.resolve(f"file://{tmp_path}/d") == str(tmp_path / "d")
    with pytest.raises(StorageError, match="unsupported URI scheme 'gs'"):
        storage.resolve("gs://b/k.jpg")
    for typo in ("s3:/nobucket", "S3:bucket/x", "s3//bucket/x", "file:/tmp/x"):  # was a folder under the cwd
        with pytest.raises(StorageError, match="malformed URI; write s3://bucket/key"):
            storage.resolve(typo)
    assert storage.resolve("s3/x.jpg") == str(tmp_path / "s3" / "x.jpg")  # a folder named s3 is fine
    assert uris.parent("s3://b/x/m.csv") == "s3://b/x" and uris.parent("s3://b/m.csv") == "s3://b"


def test_read_errors_name_the_path(tmp_path):
    with pytest.raises(StorageError) as e:
        storage.read_bytes(str(tmp_path / "missing.jpg"))
    assert str(e.value) == f"{tmp_path / 'missing.jpg'}: not found"
    with pytest.raises(StorageError, match="is a directory"):
        storage.read_bytes(str(tmp_path))
    assert storage.stat(str(tmp_path / "missing.jpg")) is None and not storage.exists(str(tmp_path))


def test_a_file_where_a_folder_should_be_is_named(tmp_path):
    """`-o content/a.jpg/x.csv` said 'write failed: File exists' (audit)."""
    (tmp_path / "a.jpg").write_bytes(b"x")
    for rel in ("a.jpg/x.csv", "a.jpg/d/e/x.csv"):
        with pytest.raises(StorageError, match=f"write failed: {re.escape(str(tmp_path / 'a.jpg'))} is a file, not a folder"):
            storage.write_bytes(str(tmp_path / rel), b"data")


def test_write_stat_list(tmp_path):
    root = tmp_path / "out"
    for k in ["b/2.png", "a.JPG", "b/1.jpg", "c/d/e.webp", "notes.txt"]:
        storage.write_bytes(str(root / k), k.encode())
    assert storage.stat(str(root / "a.JPG")).size == len(b"a.JPG")
    assert list(storage.list_prefix(str(root), relative=True)) == ["a.JPG", "b/1.jpg", "b/2.png", "c/d/e.webp"]
    assert list(storage.list_prefix(str(root)))[0] == str(root / "a.JPG")
    assert "notes.txt" in list(storage.list_prefix(str(root), extensions=None, relative=True))
    assert list(storage.list_prefix(str(root), extensions=[".png"], relative=True)) == ["b/2.png"]
    assert list(storage.list_prefix(str(tmp_path / "nothing-here"))) == []


def test_atomic_write_leaves_no_partial_file(tmp_path):
    """A write that fails half-way (file size limit hit: EFBIG) keeps the old file and leaves no temp file."""
    target = tmp_path / "img.png"
    target.write_bytes(b"old complete file")
    code = textwrap.dedent(f"""
        import resource, signal, sys
        from stylecore import storage
        from stylecore.errors import StorageError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
        try:
            storage.write_bytes({str(target)!r}, b"n" * (1024 * 1024))
        except StorageError as e:
            print(e)
            sys.exit(3)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 3, r.stderr
    assert r.stdout.startswith(f"{target}: write failed")
    assert target.read_bytes() == b"old complete file"
    assert os.listdir(tmp_path) == ["img.png"]


@pytest.mark.parametrize("key", ["../x.jpg", "a/../../x.jpg", "/etc/x.jpg", "s3://b/k.jpg", "a//b.jpg", "C:/x.jpg",
                                 "a\\..\\x.jpg", "", "./x.jpg"])
def test_join_refuses_escaping_keys(tmp_path, key):
    with pytest.raises(StorageError, match="output key"):
        storage.join(str(tmp_path), key)


def test_join(tmp_path):
    assert storage.join(str(tmp_path), "train/cat/a.jpg") == str(tmp_path / "train" / "cat" / "a.jpg")
    assert storage.join("s3://b/out/", "x/y.png") == "s3://b/out/x/y.png"
    with pytest.raises(StorageError, match="only for s3"):
        storage.presign(str(tmp_path / "a.jpg"))


def test_scrub_removes_credentials(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-value")
    msg = storage.scrub("http://user:pw@host:9000/b failed with very-secret-value")
    assert "pw" not in msg and "very-secret-value" not in msg and "host:9000/b" in msg
    # An endpoint set without a scheme is echoed whole by botocore ("Invalid endpoint: u:pw@host:9"): not its password.
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "u:endpoint-pw@127.0.0.1:9")
    msg = storage.scrub("read failed: ValueError: Invalid endpoint: u:endpoint-pw@127.0.0.1:9")
    assert "endpoint-pw" not in msg and "127.0.0.1:9" in msg


def test_remove_partials_removes_only_the_named_files_partials(tmp_path):
    from stylecore.fsutil import atomic_write_bytes, remove_partials

    atomic_write_bytes(tmp_path / "a.b.jpg", b"done")
    left = [".a.b.jpg.k3x_9zq1.part", ".c.png.abcd1234.part", ".d.jpg.zz.part", ".a.b.jpg.part", "x.part"]
    for name in left:
        (tmp_path / name).write_bytes(b"half")
    assert remove_partials(tmp_path, ["a.b.jpg", "c.png", "missing.jpg"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["a.b.jpg", ".d.jpg.zz.part", ".a.b.jpg.part", "x.part"])
    assert remove_partials(tmp_path / "no-such-folder", ["a.jpg"]) == 0


def test_names_up_to_the_filesystem_limit_write_atomically_and_their_partials_are_found(tmp_path):
    """A temporary name adds 15 bytes to the output's; names of 241-255 bytes (long content stems in the default
    output keys) used to fail with 'File name too long'. Their temporary names carry a shortened, hashed stem."""
    from stylecore.fsutil import atomic_write_bytes, remove_partials, temp_stem

    names = ["c" * 230 + "__style__0123abcd.jpg", "é" * 120 + ".png", "short.jpg"]  # 251, 244 and 9 bytes
    for name in names:
        atomic_write_bytes(tmp_path / name, b"done")
        assert (tmp_path / name).read_bytes() == b"done"
    stems = [temp_stem(n) for n in names]
    assert stems[2] == "short.jpg" and all(len(s.encode()) <= 200 for s in stems) and len(set(stems)) == 3
    assert temp_stem("c" * 230 + "__style__9999abcd.jpg") != stems[0]  # same start, another name
    for stem in stems:
        (tmp_path / f".{stem}.k3x_9zq1.part").write_bytes(b"half")
    assert remove_partials(tmp_path, names[:2]) == 2
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".part")) == [".short.jpg.k3x_9zq1.part"]


def test_a_mount_that_refuses_chmod_still_takes_the_write_and_no_descriptor_leaks(tmp_path, monkeypatch):
    import os

    from stylecore import fsutil

    def refuse(*a, **k):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(fsutil.os, "fchmod", refuse)
    monkeypatch.setattr(fsutil.os, "chmod", refuse)
    fds = len(os.listdir("/proc/self/fd"))
    for i in range(20):
        fsutil.atomic_write_bytes(tmp_path / f"{i}.jpg", b"data")
    assert all((tmp_path / f"{i}.jpg").read_bytes() == b"data" for i in range(20))
    assert len(os.listdir("/proc/self/fd")) == fds
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_a_file_that_is_not_parquet_is_a_one_line_error(tmp_path):
    """``stylize-shard`` given a CSV where its Parquet shard belongs: the file is named, with pyarrow's reason."""
    from stylecore import tables
    from stylecore.errors import StorageError

    (tmp_path / "shard.parquet").write_text("content,style\na.jpg,b.png\n")
    with pytest.raises(StorageError, match=r"shard\.parquet: not a readable Parquet table \(ArrowInvalid: .*magic"):
        tables.read_parquet(str(tmp_path / "shard.parquet"))
    frame = pd.DataFrame({"a": [1, 2]})
    tables.write_parquet(frame, str(tmp_path / "ok.parquet"))
    pd.testing.assert_frame_equal(tables.read_parquet(str(tmp_path / "ok.parquet")), frame)
