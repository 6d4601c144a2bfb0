"""One storage layer for local paths, ``file://`` URIs and ``s3://bucket/key``.

S3 goes through boto3's standard credential chain and configuration, so ``AWS_PROFILE``,
``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3`` (MinIO and other S3-compatible stores),
``AWS_DEFAULT_REGION``, ``AWS_RETRY_MODE`` and ``AWS_MAX_ATTEMPTS`` work as boto3 documents them.
stylecore adds (environment or :func:`configure`): ``STYLIZE_S3_CONNECT_TIMEOUT`` (s, default 10),
``STYLIZE_S3_READ_TIMEOUT`` (s, default 60), ``STYLIZE_S3_MAX_POOL`` (connections, default 64),
``STYLIZE_S3_MULTIPART_THRESHOLD`` / ``STYLIZE_S3_MULTIPART_CHUNKSIZE`` (bytes, default 64 MiB / 16 MiB),
``STYLIZE_S3_ADDRESSING_STYLE`` (auto|path|virtual).

One client per process is shared by all threads (boto3 clients are thread-safe). Errors are
``StorageError("s3://b/k: not found")``-style one-liners; credentials never appear in them.
"""
from __future__ import annotations

import mimetypes
import os
import threading
from dataclasses import dataclass
from typing import Iterable, Iterator

from . import uris
from .errors import StorageError
from .fsutil import atomic_write_bytes, nearest_existing
from .uris import is_s3, parse_s3, resolve  # noqa: F401  (resolve is part of the storage API)

MiB = 1024 * 1024
_DEFAULTS = {
    "connect_timeout": 10.0,
    "read_timeout": 60.0,
    "max_attempts": 5,
    "retry_mode": "standard",
    "max_pool": 64,
    "multipart_threshold": 64 * MiB,
    "multipart_chunksize": 16 * MiB,
    "addressing_style": None,
}
_ENV = {
    "connect_timeout": ("STYLIZE_S3_CONNECT_TIMEOUT", float),
    "read_timeout": ("STYLIZE_S3_READ_TIMEOUT", float),
    "max_attempts": ("AWS_MAX_ATTEMPTS", int),
    "retry_mode": ("AWS_RETRY_MODE", str),
    "max_pool": ("STYLIZE_S3_MAX_POOL", int),
    "multipart_threshold": ("STYLIZE_S3_MULTIPART_THRESHOLD", int),
    "multipart_chunksize": ("STYLIZE_S3_MULTIPART_CHUNKSIZE", int),
    "addressing_style": ("STYLIZE_S3_ADDRESSING_STYLE", str),
}
LIST_PAGE_KEYS = 1000  # keys per listing request (S3's most)
DIRECTORY_BUCKET_SUFFIX = "--x-s3"  # S3 Express One Zone bucket names end so
_overrides: dict = {}
_lock = threading.Lock()
_client_cache: dict = {}


@dataclass(frozen=True)
class Stat:
    """Size in bytes, modification time (epoch seconds) and, on S3, the ETag."""

    size: int
    mtime: float
    etag: str | None = None


def settings() -> dict:
    """Effective S3 settings: defaults < environment < :func:`configure`."""
    out = dict(_DEFAULTS)
    for name, (var, typ) in _ENV.items():
        raw = os.environ.get(var)
        if raw not in (None, ""):
            try:
                out[name] = typ(raw)
            except ValueError:
                raise StorageError(f"environment {var}={raw!r}: expected {typ.__name__}") from None
    out.update(_overrides)
    if out["retry_mode"] not in ("standard", "adaptive", "legacy"):
        raise StorageError(f"S3 retry mode {out['retry_mode']!r}: expected standard or adaptive")
    out["multipart_chunksize"] = max(int(out["multipart_chunksize"]), 5 * MiB)
    return out


def configure(**kw) -> None:
    """Override S3 settings for this process (e.g. ``configure(read_timeout=2, max_attempts=3)``);
    ``configure()`` with no arguments clears the overrides. The shared client is rebuilt."""
    unknown = set(kw) - set(_DEFAULTS)
    if unknown:
        raise StorageError(f"unknown storage setting(s): {', '.join(sorted(unknown))}")
    with _lock:
        if kw:
            _overrides.update({k: v for k, v in kw.items()})
        else:
            _overrides.clear()
        _client_cache.clear()


def reset_client() -> None:
    """Forget the cached client (after changing AWS_* environment variables)."""
    with _lock:
        _client_cache.clear()


def s3_client():
    """The process-wide boto3 S3 client (created on first use, rebuilt after fork or configure())."""
    pid = os.getpid()
    client = _client_cache.get(pid)
    if client is not None:
        return client
    with _lock:
        client = _client_cache.get(pid)
        if client is None:
            import boto3
            from botocore.config import Config

            s = settings()
            cfg = Config(
                retries={"total_max_attempts": int(s["max_attempts"]), "mode": s["retry_mode"]},
                connect_timeout=float(s["connect_timeout"]),
                read_timeout=float(s["read_timeout"]),
                max_pool_connections=int(s["max_pool"]),
                s3={"addressing_style": s["addressing_style"]} if s["addressing_style"] else None,
                signature_version="s3v4",  # presigned links too (SigV2 links fail in regions opened since 2014)
            )
            # A fresh Session reads AWS_PROFILE, credentials and endpoint settings (AWS_ENDPOINT_URL[_S3]).
            client = boto3.session.Session().client("s3", config=cfg)
            _client_cache.clear()
            _client_cache[pid] = client
    return client


# --- error translation -------------------------------------------------------------------------

_SECRET_VARS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECURITY_TOKEN")
_ENDPOINT_VARS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


def scrub(text: str) -> str:
    """Remove credentials (URL user info, AWS key values from the environment) from a message."""
    for var in _ENDPOINT_VARS:  # an endpoint with user info but no scheme ("u:p@host") escapes uris.redact
        val = os.environ.get(var)
        if val and "@" in val:
            text = text.replace(val, "***@" + val.rsplit("@", 1)[1])
    text = uris.redact(text)
    for var in _SECRET_VARS:
        val = os.environ.get(var)
        if val and len(val) >= 4:
            text = text.replace(val, "***")
    return text


_CODES = {
    "NoSuchKey": "not found",
    "404": "not found",
    "NotFound": "not found",
    "NoSuchBucket": "no such bucket",
    "AccessDenied": "access denied",
    "403": "access denied (or invalid credentials)",
    "AllAccessDisabled": "access denied",
    "InvalidAccessKeyId": "invalid credentials (access key not recognised)",
    "SignatureDoesNotMatch": "invalid credentials (signature does not match)",
    "ExpiredToken": "credentials expired",
    "InvalidObjectState": "object not readable in its storage class",
    "SlowDown": "throttled by the server after retries",
}


def _s3_error(uri: str, exc: BaseException, op: str) -> StorageError:
    from botocore import exceptions as bx

    if isinstance(exc, StorageError):  # ours already (a bad AWS_MAX_ATTEMPTS, say): not a fault of this object
        return exc
    if isinstance(exc, bx.ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        reason = _CODES.get(code) or f"{op} failed: {code} {err.get('Message', '')}".strip()
        if code in ("NoSuchKey", "404", "NotFound") and op == "list":
            reason = "no such bucket"
    elif isinstance(exc, bx.NoCredentialsError):
        reason = "no AWS credentials found (environment, AWS_PROFILE, config files or instance role)"
    elif isinstance(exc, (bx.ConnectTimeoutError, bx.ReadTimeoutError)):
        reason = f"{op} timed out after {settings()['max_attempts']} attempts ({type(exc).__name__})"
    elif isinstance(exc, (bx.EndpointConnectionError, bx.ConnectionClosedError, bx.ConnectionError)):
        reason = f"{op} failed: no answer from the S3 endpoint after {settings()['max_attempts']} attempts ({type(exc).__name__})"
    elif isinstance(exc, bx.BotoCoreError):
        reason = f"{op} failed: {exc}"
    else:
        reason = f"{op} failed: {type(exc).__name__}: {exc}"
    return StorageError(scrub(" ".join(f"{uri}: {reason}".split())))  # botocore's messages span lines


def _local_error(path: str, exc: OSError, op: str) -> StorageError:
    if isinstance(exc, FileNotFoundError):
        reason = "not found"
    elif isinstance(exc, IsADirectoryError):
        reason = "is a directory"
    elif isinstance(exc, PermissionError):
        reason = "access denied"
    elif isinstance(exc, (FileExistsError, NotADirectoryError)) and op == "write":
        # a folder on the way is a file (mkdir's EEXIST, open's ENOTDIR): name it
        parent = nearest_existing(os.path.dirname(os.path.abspath(path)))
        reason = (f"write failed: {parent} is a file, not a folder" if not os.path.isdir(parent)
                  else f"{op} failed: {exc.strerror or exc}")
    else:
        reason = f"{op} failed: {exc.strerror or exc}"
    return StorageError(f"{path}: {reason}")


def _local(uri: str) -> str:
    return resolve(uri)


# --- operations ----------------------------------------------------------------------------------

def read_bytes(uri: str) -> bytes:
    """The whole content of ``uri``. Raises StorageError (not found, no such bucket, access denied, timeout)."""
    uri = str(uri)
    if is_s3(uri):
        loc = parse_s3(uri)
        try:
            resp = s3_client().get_object(Bucket=loc.bucket, Key=loc.key)
            return resp["Body"].read()
        except Exception as e:  # botocore and urllib3 errors (a body read can time out too)
            raise _s3_error(uri, e, "read") from None
    path = _local(uri)
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise _local_error(path, e, "read") from None


def write_bytes(uri: str, data: bytes, *, content_type: str | None = None) -> None:
    """Write ``data`` atomically: local temp file + rename; S3 ``put_object`` or, above the multipart
    threshold, a multipart upload (aborted on failure). Returns only once the object is complete."""
    uri = str(uri)
    if is_s3(uri):
        loc = parse_s3(uri)
        if not loc.key or loc.key.endswith("/"):
            raise StorageError(f"{uri}: cannot write an object without a key")
        content_type = content_type or mimetypes.guess_type(loc.key)[0]
        extra = {"ContentType": content_type} if content_type else {}
        s = settings()
        try:
            if len(data) > int(s["multipart_threshold"]):
                _multipart_upload(loc, data, int(s["multipart_chunksize"]), extra)
            else:
                s3_client().put_object(Bucket=loc.bucket, Key=loc.key, Body=data, **extra)
        except StorageError:
            raise
        except Exception as e:
            raise _s3_error(uri, e, "write") from None
        return
    path = _local(uri)
    try:
        atomic_write_bytes(path, data)
    except OSError as e:
        raise _local_error(path, e, "write") from None


def _multipart_upload(loc: uris.S3Location, data: bytes, chunk: int, extra: dict) -> None:
    client = s3_client()
    upload_id = client.create_multipart_upload(Bucket=loc.bucket, Key=loc.key, **extra)["UploadId"]
    try:
        parts = []
        view = memoryview(data)
        for number, start in enumerate(range(0, len(data), chunk), start=1):
            resp = client.upload_part(Bucket=loc.bucket, Key=loc.key, UploadId=upload_id, PartNumber=number,
                                      Body=bytes(view[start:start + chunk]))
            parts.append({"PartNumber": number, "ETag": resp["ETag"]})
        client.complete_multipart_upload(Bucket=loc.bucket, Key=loc.key, UploadId=upload_id,
                                         MultipartUpload={"Parts": parts})
    except BaseException as e:
        try:  # best effort: the object never appears, only the upload's parts need cleaning
            client.abort_multipart_upload(Bucket=loc.bucket, Key=loc.key, UploadId=upload_id)
        except Exception:
            pass
        if isinstance(e, Exception):
            raise _s3_error(loc.uri, e, "write (multipart)") from None
        raise


def stat(uri: str) -> Stat | None:
    """Size/mtime of ``uri``, or None when it does not exist. Other failures raise StorageError."""
    uri = str(uri)
    if is_s3(uri):
        loc = parse_s3(uri)
        try:
            h = s3_client().head_object(Bucket=loc.bucket, Key=loc.key)
        except Exception as e:
            err = _s3_error(uri, e, "stat")
            if str(err).endswith(": not found"):
                return None
            raise err from None
        return Stat(int(h["ContentLength"]), h["LastModified"].timestamp(), str(h.get("ETag", "")).strip('"'))
    path = _local(uri)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise _local_error(path, e, "stat") from None
    if not os.path.isfile(path):
        return None
    return Stat(st.st_size, st.st_mtime)


def exists(uri: str) -> bool:
    """True when ``uri`` names an existing file/object."""
    return stat(uri) is not None


def has_data(uri: str) -> bool:
    """True when ``uri`` names an existing file/object of at least one byte: an output that counts as done (an
    empty file at an output's key, left by another tool, is not an image)."""
    st = stat(uri)
    return st is not None and st.size > 0


def existence(uri_list: Iterable[str], *, max_listed: int | None = None, nonempty: bool = False) -> dict[str, bool]:
    """Whether each S3 URI of ``uri_list`` exists, as ``exists`` would say, for the keys that a listing of the key
    range of their bucket covers: 1,000 keys a request, where each key would cost a HEAD (from the smallest key
    on, stopping past the largest). The listing stops after ``max_listed`` keys (default: 1,000 + 4 per key asked,
    so keys scattered among many others do not turn into a listing of the whole bucket). Left out, for the caller
    to check with ``exists``: keys past that point, all keys of a bucket whose listing fails or is found out of key
    order, of S3 Express directory buckets (which list out of order), and local paths (a local check costs no
    request, and callers check them in parallel). Other stores must list in key order, as S3's general purpose
    buckets, MinIO and Ceph do. ``nonempty``: an empty object counts as missing (``has_data``)."""
    known: dict[str, bool] = {}
    by_bucket: dict[str, dict[str, list[str]]] = {}
    for u in map(str, uri_list):
        if is_s3(u):
            loc = parse_s3(u)
            by_bucket.setdefault(loc.bucket, {}).setdefault(loc.key, []).append(u)
    for bucket, keys in by_bucket.items():
        if bucket.endswith(DIRECTORY_BUCKET_SUFFIX):
            continue  # S3 Express directory buckets do not list in key order
        budget = 1000 + 4 * len(keys) if max_listed is None else max(0, int(max_listed))
        present: set[str] = set()
        decided_to = _list_range(bucket, sorted(keys), budget, present, nonempty)
        if decided_to is not None:
            known.update((u, k in present) for k, us in keys.items() if k <= decided_to for u in us)
    return known


def exists_many(uri_list: Iterable[str], *, workers: int = 32, nonempty: bool = False) -> dict[str, bool]:
    """Whether each URI exists: S3 keys by :func:`existence`'s listings where they decide, the rest by
    :func:`exists` (a HEAD or a stat each) in up to ``workers`` threads. A lost shard's rows scattered through a
    large output prefix (a nightly augment) were checked one HEAD after another: 15-30 ms each on S3."""
    from concurrent.futures import ThreadPoolExecutor

    asked = list(dict.fromkeys(map(str, uri_list)))
    known = existence(asked, nonempty=nonempty)
    rest = [u for u in asked if u not in known]
    if rest:
        with ThreadPoolExecutor(max_workers=max(1, min(int(workers), len(rest)))) as pool:
            known.update(zip(rest, pool.map(has_data if nonempty else exists, rest)))
    return known


def _list_range(bucket: str, ordered: list[str], budget: int, present: set[str], nonempty: bool = False) -> str | None:
    """Lists ``bucket`` from the smallest of the sorted keys ``ordered`` on, adding the listed ones to ``present``;
    returns the largest key the listing decided (every key up to it was listed or is missing), or None."""
    low, high = ordered[0], ordered[-1]
    wanted = set(ordered)
    if budget <= 0:
        return None
    last, listed = None, 0
    start = {"StartAfter": low[:-1]} if len(low) > 1 else {}  # just below the smallest key
    try:
        pages = s3_client().get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=os.path.commonprefix(ordered), PaginationConfig={"PageSize": min(LIST_PAGE_KEYS, budget)},
            **start)
        for page in pages:
            for obj in page.get("Contents", ()):
                key = obj["Key"]
                if last is not None and key <= last:
                    present.clear()
                    return None  # not in key order (S3 Express directory buckets): HEAD every key
                if key > high:
                    return high
                if key in wanted and (obj.get("Size", 1) > 0 or not nonempty):
                    present.add(key)
                last, listed = key, listed + 1
            if not page.get("IsTruncated"):
                return high
            if listed >= budget:
                return last
    except Exception:  # noqa: BLE001 - no ListBucket permission, no StartAfter support: HEAD every key
        present.clear()
        return None
    return last


def is_dir(uri: str) -> bool:
    """True for a local directory; for S3, True when at least one object lies under ``uri/``."""
    uri = str(uri)
    if is_s3(uri):
        loc = parse_s3(uri)
        prefix = loc.key if (not loc.key or loc.key.endswith("/")) else loc.key + "/"
        try:
            resp = s3_client().list_objects_v2(Bucket=loc.bucket, Prefix=prefix, MaxKeys=1)
        except Exception as e:
            raise _s3_error(uri, e, "list") from None
        return resp.get("KeyCount", 0) > 0
    return os.path.isdir(_local(uri))


def _empty(path: str) -> bool:
    try:
        return os.stat(path).st_size == 0
    except OSError:  # gone since it was listed
        return True


def _ext_ok(name: str, exts: tuple[str, ...] | None) -> bool:
    return exts is None or os.path.splitext(name)[1].lower() in exts


def list_prefix(uri: str, extensions: Iterable[str] | None = "images", *, relative: bool = False,
                nonempty: bool = False) -> Iterator[str]:
    """Every file under the folder/prefix ``uri`` (recursive), sorted. ``extensions``: "images" (default,
    ``images.IMAGE_EXTENSIONS``), an iterable of suffixes, or None for all files. ``relative=True`` yields
    keys relative to ``uri`` instead of full URIs. A missing local folder lists nothing; on S3 the
    listing is paginated (1,000 keys a page) and a missing bucket raises StorageError. ``nonempty=True`` leaves
    out empty files (outputs that count as done: ``has_data``)."""
    if extensions == "images":
        from .images import IMAGE_EXTENSIONS

        exts: tuple[str, ...] | None = tuple(IMAGE_EXTENSIONS)
    else:
        exts = None if extensions is None else tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
    uri = str(uri)
    if is_s3(uri):
        loc = parse_s3(uri)
        prefix = loc.key if (not loc.key or loc.key.endswith("/")) else loc.key + "/"
        head = f"s3://{loc.bucket}/"
        keys: list[str] = []
        try:
            pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=prefix)
            for page in pages:
                for obj in page.get("Contents", ()):
                    k = obj["Key"]
                    if not k.endswith("/") and _ext_ok(k, exts) and (obj.get("Size", 1) > 0 or not nonempty):
                        keys.append(k[len(prefix):] if relative else head + k)
        except Exception as e:
            raise _s3_error(uri, e, "list") from None
        keys.sort()
        yield from keys
        return
    root = _local(uri)
    out: list[str] = []
    seen: set[tuple[int, int]] = set()  # folders listed: a symlink cycle is listed once

    def unreadable(e: OSError) -> None:
        # a missing root lists nothing, and a folder removed while listing is gone; any other folder that cannot be
        # listed (permissions, I/O) is an error rather than a silent gap in the listing
        if isinstance(e, FileNotFoundError) or (isinstance(e, NotADirectoryError)
                                                and os.path.normpath(e.filename or "") == os.path.normpath(root)):
            return
        raise StorageError(f"{e.filename}: cannot list folder: {e.strerror or e}")

    # symlinked sub-folders are followed (datasets are often assembled from links); os.walk skips them by default
    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in seen:
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        rel_dir = os.path.relpath(dirpath, root)
        for name in filenames:
            if name.startswith(".") and name.endswith(".part"):
                continue  # an atomic write in progress
            if _ext_ok(name, exts) and not (nonempty and _empty(os.path.join(dirpath, name))):
                rel = name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/")
                out.append(rel if relative else os.path.join(root, rel))
    out.sort()
    yield from out


def join(root: str, key: str) -> str:
    """``root`` + ``/`` + ``key``; refuses keys that would escape ``root`` ('..', absolute, URIs)."""
    problem = uris.key_problem(key)
    if problem:
        raise StorageError(f"output key {uris.redact(key)!r}: {problem}")
    root = str(root)
    if is_s3(root):
        return root.rstrip("/") + "/" + key
    return os.path.join(_local(root), *key.split("/"))


def _session_token(client) -> bool:
    """True when ``client`` signs with temporary credentials (STS, SSO, instance roles carry a session token)."""
    creds = getattr(getattr(client, "_request_signer", None), "_credentials", None)
    try:
        return bool(creds is not None and creds.get_frozen_credentials().token)
    except Exception:  # noqa: BLE001 - credentials that cannot be resolved: presigning fails on its own
        return False


def presign(uri: str, expires: int = 7 * 24 * 3600) -> str:
    """A presigned HTTPS GET URL for an ``s3://`` object (for reports). Local URIs raise StorageError."""
    if not is_s3(uri):
        raise StorageError(f"{uri}: presigned URLs exist only for s3:// objects")
    loc = parse_s3(uri)
    client = s3_client()
    if _session_token(client):
        raise StorageError(f"{uri}: not presigned: the credentials are temporary (a session token), which a "
                           "presigned link would carry in its query string and which would end its life early")
    try:
        return client.generate_presigned_url("get_object", Params={"Bucket": loc.bucket, "Key": loc.key},
                                             ExpiresIn=int(expires))
    except Exception as e:
        raise _s3_error(uri, e, "presign") from None


__all__ = ["Stat", "read_bytes", "write_bytes", "exists", "has_data", "stat", "is_dir", "list_prefix", "join", "resolve",
           "presign", "configure", "settings", "s3_client", "reset_client", "is_s3", "scrub"]

