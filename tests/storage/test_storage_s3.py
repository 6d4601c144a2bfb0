"""Storage over a real S3-compatible server (moto server mode on 127.0.0.1, boto3 over HTTP)."""
from __future__ import annotations

import io
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest
import torch

from stylecore import storage
from stylecore.errors import StorageError, WeightsError
from stylecore.weights import load_state_dict, parse_spec
from tests.s3_server import DUMMY_KEY_ID, DUMMY_SECRET


def no_secrets(msg: str) -> str:
    assert DUMMY_SECRET not in msg and DUMMY_KEY_ID not in msg
    return msg


def test_roundtrip_stat_exists(s3):
    b = s3.bucket()
    uri = f"s3://{b}/dir/a.png"
    storage.write_bytes(uri, b"hello")
    assert s3.get(b, "dir/a.png") == b"hello"
    assert storage.read_bytes(uri) == b"hello"
    st = storage.stat(uri)
    assert st.size == 5 and st.etag
    assert storage.exists(uri) and not storage.exists(f"s3://{b}/dir/b.png")
    assert storage.is_dir(f"s3://{b}/dir") and not storage.is_dir(f"s3://{b}/other")
    assert s3.client.head_object(Bucket=b, Key="dir/a.png")["ContentType"] == "image/png"
    url = storage.presign(uri)
    assert url.startswith(s3.endpoint) and "Signature" in url and DUMMY_SECRET not in url


def test_missing_key_and_missing_bucket(s3):
    b = s3.bucket()
    with pytest.raises(StorageError) as e:
        storage.read_bytes(f"s3://{b}/nope.jpg")
    assert no_secrets(str(e.value)) == f"s3://{b}/nope.jpg: not found"
    for call in (lambda: storage.read_bytes("s3://no-such-bucket-xyz/a.jpg"),
                 lambda: storage.write_bytes("s3://no-such-bucket-xyz/a.jpg", b"x"),
                 lambda: list(storage.list_prefix("s3://no-such-bucket-xyz/p"))):
        with pytest.raises(StorageError) as e:
            call()
        assert no_secrets(str(e.value)).endswith(": no such bucket")
        assert "s3://no-such-bucket-xyz" in str(e.value)
    assert storage.stat(f"s3://{b}/nope.jpg") is None


def test_paginated_listing_over_1000_keys(s3):
    b = s3.bucket()
    names = [f"imgs/{'sub/' if i % 3 else ''}{i:05d}.jpg" for i in range(1010)]
    with ThreadPoolExecutor(8) as pool:  # through stylecore's shared client: concurrent writers
        list(pool.map(lambda k: storage.write_bytes(f"s3://{b}/{k}", b"x"), names))
    s3.put(b, "imgs/notes.txt", b"not an image")
    s3.put(b, "imgsX/1.jpg", b"outside the prefix")
    listed = list(storage.list_prefix(f"s3://{b}/imgs"))
    assert len(listed) == 1010 > 1000
    assert listed == sorted(f"s3://{b}/{k}" for k in names)
    rel = list(storage.list_prefix(f"s3://{b}/imgs/", extensions=None, relative=True))
    assert len(rel) == 1011 and "notes.txt" in rel and "sub/00001.jpg" in rel


def test_existence_lists_the_key_range_instead_of_a_head_per_key(s3, s3_proxy, monkeypatch):
    """Whether outputs exist, decided from one listing of the range their keys span: the same answers as a HEAD
    per key, unrelated keys before, inside and after the range ignored, non-ASCII keys in S3's byte order."""
    b = s3.bucket()
    asked = [f"out/{i:03d}__{'é' if i % 5 == 0 else 'e'}.jpg" for i in range(60)] + ["out/z😀.jpg"]
    present = set(asked[::3])
    for key in sorted(present) + ["a/first.jpg", "out/050_unrelated.jpg", "out/zz.jpg", "z/last.jpg"]:
        s3.put(b, key, b"x")
    uris = [f"s3://{b}/{k}" for k in asked]
    truth = {u: storage.exists(u) for u in uris}
    assert sum(truth.values()) == len(present) == 21
    s3_proxy.requests.clear()
    assert storage.existence(uris) == truth
    assert [r.split("?")[0] for r in s3_proxy.requests] == [f"GET /{b}"]  # one listing request, no HEAD

    # pages of 4 keys: the listing goes on over pages, stopping at the first key past the range
    monkeypatch.setattr(storage, "LIST_PAGE_KEYS", 4)
    s3_proxy.requests.clear()
    assert storage.existence(uris) == truth
    assert len(s3_proxy.requests) == 6 and not any(r.startswith("HEAD") for r in s3_proxy.requests)  # 23 keys in the range

    # a listing budget smaller than the range: the keys past the last listed one are left to the caller's HEADs
    s3_proxy.requests.clear()
    part = storage.existence(uris, max_listed=10)
    assert len(s3_proxy.requests) == 3 and not any(r.startswith("HEAD") for r in s3_proxy.requests)
    assert 0 < len(part) < len(uris) and all(truth[u] == e for u, e in part.items())
    decided = sorted(parse_key(u) for u in part)
    assert decided == sorted(asked)[:len(decided)]  # a prefix of the keys in order, each one decided
    assert storage.existence(uris, max_listed=0) == {}


def parse_key(uri: str) -> str:
    return storage.parse_s3(uri).key


def test_existence_leaves_undecidable_keys_to_the_caller(s3, tmp_path):
    """A bucket that cannot be listed decides nothing (the caller's HEAD then reports it per row), and local
    paths are left to the caller's own checks."""
    b = s3.bucket()
    s3.put(b, "out/a.jpg", b"x")
    (tmp_path / "a.jpg").write_bytes(b"x")
    mixed = ["s3://no-such-bucket-xyz/a.jpg", str(tmp_path / "a.jpg"), f"s3://{b}/out/a.jpg", f"s3://{b}/out/b.jpg"]
    assert storage.existence(mixed) == {f"s3://{b}/out/a.jpg": True, f"s3://{b}/out/b.jpg": False}


def test_existence_does_not_list_directory_buckets(s3, s3_proxy):
    """S3 Express directory buckets list out of key order, so a range listing could call an output missing."""
    s3_proxy.requests.clear()
    assert storage.existence(["s3://outputs--usw2-az1--x-s3/out/a.jpg"]) == {}
    assert s3_proxy.requests == []


def test_multipart_upload(s3):
    b = s3.bucket()
    storage.configure(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024)
    try:
        data = os.urandom(11 * 1024 * 1024 + 123)
        uri = f"s3://{b}/big/weights.bin"
        storage.write_bytes(uri, data)
        head = s3.client.head_object(Bucket=b, Key="big/weights.bin")
        assert head["ETag"].strip('"').endswith("-3")  # completed from 3 parts
        assert storage.read_bytes(uri) == data
        assert s3.client.list_multipart_uploads(Bucket=b).get("Uploads", []) == []
        storage.write_bytes(f"s3://{b}/small.bin", b"abc")  # under the threshold: one put_object
        assert "-" not in s3.client.head_object(Bucket=b, Key="small.bin")["ETag"]
    finally:
        storage.configure()


def test_s3_weight_spec(s3):
    b = s3.bucket()
    sd = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(2)}
    buf = io.BytesIO()
    torch.save(sd, buf)
    uri = s3.put(b, "models/dec.pth", buf.getvalue())
    loaded = load_state_dict(parse_spec(uri))
    assert set(loaded) == {"w", "b"} and torch.equal(loaded["w"], sd["w"])
    with pytest.raises(WeightsError, match="not found"):
        load_state_dict(parse_spec(f"s3://{b}/models/missing.pth"))


def test_server_not_listening_fails_fast_with_reason(s3, monkeypatch):
    from tests.s3_server import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{free_port()}")
    storage.configure(connect_timeout=0.5, read_timeout=0.5, max_attempts=2)
    try:
        with pytest.raises(StorageError) as e:
            storage.read_bytes("s3://any-bucket/a.jpg")
        msg = no_secrets(str(e.value))
        assert msg.startswith("s3://any-bucket/a.jpg: read failed: no answer from the S3 endpoint after 2 attempts")
    finally:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3.endpoint)
        storage.configure()


def test_server_stops_answering_mid_run(s3, s3_proxy):
    """Writers run while the endpoint hangs: every write reported done is complete on the server, every
    other one failed with a timeout reason after the retries."""
    b = s3.bucket()
    storage.write_bytes(f"s3://{b}/before.bin", b"early")
    payload = {i: os.urandom(2048) + bytes([i]) for i in range(14)}
    reported: dict[int, str | None] = {}
    ok_count = 0
    lock = threading.Lock()

    def write(i):
        nonlocal ok_count
        try:
            storage.write_bytes(f"s3://{b}/out/{i:02d}.bin", payload[i])
            err = None
        except StorageError as e:
            err = str(e)
        with lock:
            reported[i] = err
            if err is None:
                ok_count += 1
                if ok_count == 6:
                    s3_proxy.freeze()  # the server stops answering mid-run

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(14)))
    with pytest.raises(StorageError) as e:
        storage.read_bytes(f"s3://{b}/before.bin")
    assert "timed out after 2 attempts" in no_secrets(str(e.value))

    ok = {i for i, err in reported.items() if err is None}
    failed = {i: err for i, err in reported.items() if err is not None}
    assert len(ok) >= 6 and len(failed) >= 4
    for i, err in failed.items():
        no_secrets(err)
        assert err.startswith(f"s3://{b}/out/{i:02d}.bin: write ")
        assert "after 2 attempts" in err
    on_server = {k: s3.get(b, k) for k in s3.keys(b, "out/")}  # checked directly, bypassing the proxy
    for i in ok:  # nothing reported as written that was not (and nothing partial)
        assert on_server[f"out/{i:02d}.bin"] == payload[i]
    for k, data in on_server.items():
        assert data == payload[int(k[4:6])]


def test_profile_and_generic_endpoint_are_honoured(s3, tmp_path, monkeypatch):
    """boto3's own configuration works unchanged: AWS_PROFILE with credentials and endpoint_url in the
    config files, and the generic AWS_ENDPOINT_URL."""
    b = s3.bucket()
    s3.put(b, "p.png", b"via profile")
    (tmp_path / "config").write_text(f"[profile minio]\nregion = us-east-1\nendpoint_url = {s3.endpoint}\n")
    (tmp_path / "credentials").write_text(f"[minio]\naws_access_key_id = {DUMMY_KEY_ID}\n"
                                          f"aws_secret_access_key = {DUMMY_SECRET}\n")
    for var in ("AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_PROFILE", "minio")
    monkeypatch.setenv("AWS_RETRY_MODE", "adaptive")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "7")
    storage.reset_client()
    try:
        assert storage.read_bytes(f"s3://{b}/p.png") == b"via profile"
        retries = storage.s3_client().meta.config.retries
        assert retries["mode"] == "adaptive" and retries["total_max_attempts"] == 7
        monkeypatch.delenv("AWS_PROFILE")
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", DUMMY_KEY_ID)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", DUMMY_SECRET)
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
        storage.reset_client()
        assert storage.read_bytes(f"s3://{b}/p.png") == b"via profile"
    finally:
        monkeypatch.undo()
        storage.reset_client()


def test_check_inputs_lists_s3_instead_of_a_head_per_input(s3, s3_proxy):
    """``--check-inputs`` on an S3 manifest: one listing of the inputs' key range, no HEAD per input, and the
    missing inputs are still problems of exactly the rows that use them."""
    from stylecore import manifest
    from stylecore.errors import ManifestError

    b = s3.bucket()
    for i in range(40):
        if i not in (7, 23):
            s3.put(b, f"in/c{i:02d}.jpg", b"x")
    s3.put(b, "in/style.png", b"x")
    df = pd.DataFrame({"content": [f"s3://{b}/in/c{i:02d}.jpg" for i in range(40)], "style": f"s3://{b}/in/style.png"})
    s3_proxy.requests.clear()
    with pytest.raises(ManifestError) as e:
        manifest.load(df, check_inputs=True)
    assert e.value.problems == [f"row {i}, column content: input not found: s3://{b}/in/c{i:02d}.jpg" for i in (7, 23)]
    assert s3_proxy.requests and not any(r.startswith("HEAD") for r in s3_proxy.requests)
    assert len(s3_proxy.requests) == 1
    s3.put(b, "in/c07.jpg", b"x")
    s3.put(b, "in/c23.jpg", b"x")
    assert len(manifest.load(df, check_inputs=True).rows) == 40


def test_an_empty_object_at_an_output_key_is_not_a_done_output(s3):
    """Outputs are written whole (one PUT of the encoded image), so an empty object there was left by something
    else: re-runs, the lost-shard check and augmentation must not count it as done."""
    b = s3.bucket()
    s3.put(b, "out/full.jpg", b"jpeg")
    s3.put(b, "out/empty.jpg", b"")
    full, empty, missing = (f"s3://{b}/out/{n}.jpg" for n in ("full", "empty", "missing"))
    assert storage.exists(empty) and not storage.has_data(empty) and storage.has_data(full)
    assert storage.existence([full, empty, missing]) == {full: True, empty: True, missing: False}
    assert storage.existence([full, empty, missing], nonempty=True) == {full: True, empty: False, missing: False}
    assert storage.exists_many([full, empty, missing], nonempty=True) == {full: True, empty: False, missing: False}
    assert list(storage.list_prefix(f"s3://{b}/out", relative=True, nonempty=True)) == ["full.jpg"]
    assert list(storage.list_prefix(f"s3://{b}/out", relative=True)) == ["empty.jpg", "full.jpg"]


def test_a_bad_s3_setting_is_not_blamed_on_the_manifest(monkeypatch):
    """``AWS_MAX_ATTEMPTS=abc`` read as 'manifest s3://...: read failed: StorageError: environment ...'."""
    from stylecore import manifest
    from stylecore.errors import ManifestError, StorageError

    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "abc")
    storage.reset_client()
    try:
        with pytest.raises(StorageError) as e:
            manifest.read_manifest("s3://bucket/m.csv")
        assert not isinstance(e.value, ManifestError) and str(e.value) == "environment AWS_MAX_ATTEMPTS='abc': expected int"
    finally:
        monkeypatch.undo()
        storage.reset_client()
