"""URI parsing: local paths (absolute or relative to a base), ``file://`` and ``s3://bucket/key``.

Canonical forms used everywhere after resolution: an absolute local path (``/data/a.jpg``) or
``s3://bucket/key``. ``file://`` URIs are turned into local paths.
"""
from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlparse

from .errors import StorageError

SCHEMES = ("s3", "file")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
# ``scheme://user@`` or ``scheme://user:password@``, where a password may hold ``/`` (about half of AWS secret
# keys do): after ``user:`` everything up to the last ``@`` of the word is taken (a bucket never holds ``:``).
_USERINFO = re.compile(r"(\w+://)(?:[^/@\s:]*:\S*|[^/@\s:]+)@")  # the user may be empty: s3://:SECRET@b
NO_CREDENTIALS = ("credentials in URIs are not supported; give them through the environment (AWS_ACCESS_KEY_ID "
                  "and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE) or an instance role")


# The query parameters that carry credentials in pre-signed URLs (SigV4 and SigV2) and SAS-style tokens.
_SIGNED_QUERY = re.compile(r"(?i)([?&](?:X-Amz-(?:Signature|Credential|Security-Token)|Signature|AWSAccessKeyId|"
                           r"x-amz-security-token|sig|token)=)[^&:\s'\"]*")  # encoded values hold no ':'


def redact(text: str) -> str:
    """``text`` with the user info of any URI in it (``s3://KEY:SECRET@bucket``) and the signature, access key and
    session token of a pre-signed URL's query replaced by ``***``."""
    return _SIGNED_QUERY.sub(r"\1***", _USERINFO.sub(r"\1***@", str(text)))


def has_userinfo(value: str) -> bool:
    """True when a URI carries user info (``scheme://user[:password]@...``)."""
    return bool(_USERINFO.match(str(value).strip()))


def scheme_of(value: str) -> str | None:
    """The URI scheme of ``value`` (lower case) or None for a plain path."""
    m = _SCHEME.match(value)
    return m.group(1).lower() if m else None


def is_s3(uri: str) -> bool:
    return str(uri)[:5].lower() == "s3://"


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def parse_s3(uri: str) -> S3Location:
    """Split ``s3://bucket/key`` (the key may be empty for a bucket-level prefix)."""
    rest = str(uri)[5:]
    bucket, _, key = rest.partition("/")
    if "@" in bucket or has_userinfo(uri):
        raise StorageError(f"{redact(uri)}: {NO_CREDENTIALS}")
    if ":" in bucket:
        raise StorageError(f"{uri}: malformed S3 URI; a bucket name has no ':' (set an endpoint with "
                           f"AWS_ENDPOINT_URL_S3, not in the URI)")
    if not bucket:
        raise StorageError(f"{uri}: malformed S3 URI; expected s3://bucket/key")
    return S3Location(bucket, key)


def file_uri_to_path(uri: str) -> str:
    """``file:///a/b.jpg`` → ``/a/b.jpg`` (``file://localhost/...`` accepted)."""
    parsed = urlparse(uri)
    if parsed.netloc not in ("", "localhost"):
        raise StorageError(f"{redact(uri)}: file:// URIs must name a local path (file:///path)")
    return unquote(parsed.path)


def resolve(value: str, base: str | None = None) -> str:
    """Canonical URI for ``value``: relative paths are taken against ``base`` (a folder: local path or
    ``s3://`` prefix; default: the current directory). Raises StorageError for an unknown scheme."""
    value = str(value).strip()
    scheme = scheme_of(value)
    if scheme == "s3":
        loc = parse_s3(value)
        return f"s3://{loc.bucket}/{loc.key}"
    if scheme == "file":
        return os.path.abspath(file_uri_to_path(value))
    if scheme is not None:
        raise StorageError(f"{redact(value)}: unsupported URI scheme {scheme!r}; use a local path, file:// or s3://")
    if re.match(r"(?i)(s3|file)(:|//)", value):  # s3:/b, s3:b, s3//b: a mistyped URI, not a local folder
        raise StorageError(f"{redact(value)}: malformed URI; write s3://bucket/key or file:///path")
    value = os.path.expanduser(value)
    if os.path.isabs(value):
        return os.path.normpath(value)
    if base is None:
        return os.path.abspath(value)
    base = resolve(base)
    if is_s3(base):
        loc = parse_s3(base)
        key = posixpath.normpath(posixpath.join(loc.key, value)) if loc.key else posixpath.normpath(value)
        if key == ".." or key.startswith("../"):
            raise StorageError(f"{value}: '..' climbs above the bucket of {redact(base)}")
        return f"s3://{loc.bucket}/{key.lstrip('/')}"
    return os.path.normpath(os.path.join(base, value))


def parent(uri: str) -> str:
    """The folder containing ``uri`` (``s3://b/x/y.csv`` → ``s3://b/x``)."""
    if is_s3(uri):
        loc = parse_s3(uri)
        return f"s3://{loc.bucket}/{posixpath.dirname(loc.key)}".rstrip("/") if "/" in loc.key else f"s3://{loc.bucket}"
    return os.path.dirname(os.path.abspath(uri))


def basename(uri: str) -> str:
    return posixpath.basename(str(uri).rstrip("/")) if is_s3(uri) else os.path.basename(str(uri).rstrip(os.sep))


def key_problem(key: str) -> str | None:
    """Why ``key`` cannot be used as an output key under a root (None when it is fine)."""
    if not key or not str(key).strip():
        return "empty key"
    key = str(key)
    if has_userinfo(key):
        return NO_CREDENTIALS
    if scheme_of(key):
        return "must be a key relative to the output root, not a URI"
    if key.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", key):
        return "absolute path escapes the output root"
    if "\\" in key:
        return "backslashes are not allowed in keys"
    if "\x00" in key:
        return "a NUL character cannot be in a file name or an S3 key"
    parts = key.split("/")
    if ".." in parts:
        return "'..' escapes the output root"
    if any(p in ("", ".") for p in parts):
        return "empty or '.' path segment"
    return None
