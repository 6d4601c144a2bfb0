"""Deterministic output keys: ``{content rel path without ext}__{style stem}[+...]__{hash8}.{ext}``.

The 8-hex hash covers the content URI, the style URIs and their normalised weights, the engine
method, its effective options (``StyleOptions.effective(method)``) and the weight specs that method
uses. Same inputs → same key; any change → a new key, so stale outputs are never reused.
"""
from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re

from .options import StyleOptions

FORMATS = {"jpg": ".jpg", "jpeg": ".jpg", "png": ".png", "webp": ".webp"}
# Which weight specs each method's output depends on.
METHOD_SPECS = {"gatys": ("encoder",), "adain": ("encoder", "decoder"), "johnson": ("model",)}


def extension(fmt: str) -> str:
    """``jpg|png|webp`` → ``.jpg|.png|.webp``."""
    from .errors import OptionsError

    ext = FORMATS.get(str(fmt).lower().lstrip("."))
    if ext is None:
        raise OptionsError(f"output format {fmt!r}: expected one of jpg, png, webp")
    return ext


def used_specs(method: str, specs: dict[str, str | None]) -> dict[str, str | None]:
    """The weight specs ``method`` uses (``METHOD_SPECS``), the encoder defaulting to ``imagenet``."""
    return {k: specs.get(k) or ("imagenet" if k == "encoder" else None) for k in METHOD_SPECS.get(method, ())}


def options_json(method: str, options: StyleOptions, specs: dict[str, str | None]) -> str:
    """Canonical JSON of what, besides the images, determines an output: method, effective options, specs."""
    used = {k: (None if specs.get(k) is None else str(specs.get(k))) for k in METHOD_SPECS.get(method, ())}
    return json.dumps({"method": method, "options": options.effective(method), "weights": used},
                      sort_keys=True, separators=(",", ":"))


def canonical_weights(weights: list[float] | None) -> str:
    """Normalised weights as ``|``-joined text ("" when not given): 7|3 and 0.7|0.3 are the same blend."""
    if not weights:
        return ""
    total = float(sum(weights))
    return "|".join(format(w / total, ".6g") for w in weights)


SEP = "\x1f"


def row_hash(content: str, styles: str, weights: str, opts_json: str) -> str:
    """The 8-hex hash of one row: SHA-256 over the options JSON, the content URI, the ``|``-joined
    resolved style URIs and the canonical weights."""
    return hashes(opts_json, [SEP.join((content, styles, weights))])[0]


def hashes(opts_json: str, rows: list[str]) -> list[str]:
    """``row_hash`` for many rows sharing one options JSON; ``rows`` are ``content SEP styles SEP weights``."""
    prefix = hashlib.sha256((opts_json + SEP).encode("utf-8"))
    out = []
    for t in rows:
        h = prefix.copy()
        h.update(t.encode("utf-8"))
        out.append(h.hexdigest()[:8])
    return out


def stem(uri: str) -> str:
    """File name without extension."""
    return os.path.splitext(posixpath.basename(str(uri).replace("\\", "/")))[0]


_MULTI_US = re.compile(r"_{2,}")


def style_part(styles: str) -> str:
    """``a/x.jpg|b/y.png`` → ``x+y`` (double underscores collapsed so ``__`` stays a separator)."""
    return "+".join(_MULTI_US.sub("_", stem(s)) or "style" for s in styles.split("|"))


def content_part(content: str, content_root: str | None) -> str:
    """Content path relative to its root (or its bare file name), without extension."""
    if content_root:
        root = content_root.rstrip("/") + "/"
        if content.startswith(root):
            rel = content[len(root):]
            return posixpath.splitext(rel.replace(os.sep, "/"))[0]
    return stem(content)


MAX_NAME_BYTES = 255  # a file name's limit on ext4, XFS, APFS and NTFS (S3 allows longer; keys stay the same there)
# "{content}__{style}" gets what "__{hash8}.webp" (the longest tail) leaves, whatever the extension, so that a
# pair is cut the same way in every key (and manifest_build can match cut keys to their pairs).
PAIR_BYTES = MAX_NAME_BYTES - len("__12345678.webp") - len("__")


def _cut(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes on a character boundary, without trailing underscores."""
    return text.encode("utf-8")[:max(limit, 0)].decode("utf-8", "ignore").rstrip("_")


def _nbytes(text: str) -> int:
    return len(text.encode("utf-8"))


def fit_pair(content_rel: str, style: str) -> tuple[str, str]:
    """``(content_part, style_part)`` of a default key, cut to fit a file name of ``MAX_NAME_BYTES``: the longer
    of the content's file name and the style part is cut first, each to at most half when both are long; ``~``
    marks a cut. Unchanged when they fit. The key's hash covers the full URIs, so cut keys stay distinct."""
    head, slash, c_name = content_rel.rpartition("/")
    cb, sb = _nbytes(c_name), _nbytes(style)
    if cb + sb <= PAIR_BYTES:
        return content_rel, style
    half = PAIR_BYTES // 2
    if sb <= half:
        c_name = _cut(c_name, PAIR_BYTES - sb - 1) + "~"
    elif cb <= half:
        style = _cut(style, PAIR_BYTES - cb - 1) + "~"
    else:
        c_name = _cut(c_name, half - 1) + "~"
        style = _cut(style, PAIR_BYTES - _nbytes(c_name) - 1) + "~"
    return head + slash + c_name, style


def fit_name(key: str) -> str:
    """A default key with its pair fitted (``fit_pair``) so that its file name is at most ``MAX_NAME_BYTES``."""
    parts = key.rsplit("__", 2)
    if len(parts) != 3:
        return key
    c, s = fit_pair(parts[0], parts[1])
    return f"{c}__{s}__{parts[2]}"


def output_key(content: str, styles: str, weights: str, opts_json: str, ext: str, content_root: str | None = None) -> str:
    """The default output key of one row (its file name fitted to ``MAX_NAME_BYTES``)."""
    return fit_name(f"{content_part(content, content_root)}__{style_part(styles)}__"
                    f"{row_hash(content, styles, weights, opts_json)}{ext}")


def content_rel_from_key(key: str) -> str:
    """Inverse of the key layout: the content's relative path (without extension) a default key came from."""
    return key.rsplit("__", 2)[0]


def pair_from_key(key: str) -> tuple[str, str]:
    """``(content rel path, style part)`` of a default key; ``(key, "")`` for keys of another layout."""
    parts = key.rsplit("__", 2)
    return (parts[0], parts[1]) if len(parts) == 3 else (key, "")
