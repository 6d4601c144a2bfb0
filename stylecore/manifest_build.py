"""Manifest builders: pair content and style images found under URIs or prefixes.

``cross`` pairs every content with every style; ``zip`` pairs the i-th content with the i-th style
(both sorted); ``sample:K`` gives each content K distinct styles, drawn from a hash of (seed, content
path relative to its prefix, style URI): the draw for one image does not depend on the other images,
so a dataset can be augmented incrementally (``skip_done_under``) and rebuilt identically.
Rows record ``content_root`` so default output keys keep the sub-folder layout (``train/cat/x``).
"""
from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable

import numpy as np
import pandas as pd

from . import keys, storage, uris
from .errors import ManifestError, StorageError
from .images import is_image_name

_SAMPLE = re.compile(r"^sample:(\d+)$")


def parse_pairing(text: str) -> tuple[str, int]:
    """``cross`` | ``zip`` | ``sample:K`` → (kind, K)."""
    t = str(text).strip().lower()
    if t in ("cross", "zip"):
        return t, 0
    m = _SAMPLE.match(t)
    if m and int(m.group(1)) > 0:
        return "sample", int(m.group(1))
    raise ManifestError(f"pairing {text!r}: expected cross, zip or sample:K with K >= 1")


def expand(sources: list[str], *, base: str | None = None, what: str = "content") -> list[tuple[str, str]]:
    """``(image URI, root)`` for every image named by ``sources`` (files or prefixes, recursive, sorted
    within each source, first occurrence kept). A single file's root is its folder."""
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for src in sources:
        uri = uris.resolve(src, base)
        is_file = is_image_name(uri) and storage.exists(uri)
        if is_file:
            found = [(uri, uris.parent(uri))]
        else:
            root = uri.rstrip("/") if uris.is_s3(uri) else uri
            # macOS AppleDouble files ("._IMG_1.jpg", resource forks copied to other file systems) are never images
            found = [(u, root) for u in storage.list_prefix(root) if not _base_name(u).startswith("._")]
            if not found:
                raise StorageError(f"{uri}: no {what} images found (not an image file or a folder/prefix with images)")
        for u, r in found:
            try:
                u.encode("utf-8")
            except UnicodeEncodeError:  # os.listdir's escapes of bytes that are not UTF-8: a manifest is UTF-8 text
                shown = u.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
                raise StorageError(f"{uris.redact(shown)}: file name is not valid UTF-8; rename it "
                                   f"(manifests hold UTF-8 text)") from None
            if u not in seen:
                seen.add(u)
                out.append((u, r))
    return out


def _base_name(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1].rsplit(os.sep, 1)[-1]


def _u64(texts) -> np.ndarray:
    return np.array([int.from_bytes(hashlib.blake2b(t.encode("utf-8"), digest_size=8).digest(), "little")
                     for t in texts], dtype=np.uint64)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (vectorised, wrapping uint64 arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _rel(uri: str, root: str) -> str:
    return keys.content_part(uri, root)


def _done_pairs(rels: list[str], parts: list[str], done: set[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
    """``(content indexes, style indexes)`` of the pairs that already have an output, ``done`` being the
    ``(content part, style part)`` pairs of existing keys (cut to fit as in ``keys.fit_pair``)."""
    by_rel: dict[str, set[str]] = {}
    for rel, part in done:
        by_rel.setdefault(rel, set()).add(part)
    by_part: dict[str, list[int]] = {}
    for j, part in enumerate(parts):
        by_part.setdefault(part, []).append(j)
    any_cut = any(rel.endswith("~") for rel in by_rel)
    dc: list[int] = []
    dj: list[int] = []
    for c, rel in enumerate(rels):
        made = by_rel.get(rel)
        may_cut = len(rel.rpartition("/")[2].encode("utf-8")) > keys.PAIR_BYTES // 2  # shorter ones never are
        if made is None and not (any_cut and may_cut):
            continue  # no output yet
        if made is not None and not may_cut and not any(p.endswith("~") for p in made):  # the usual case
            got = [j for p in made for j in by_part.get(p, ())]
        else:  # a cut key: compare every style's pair, cut the same way
            got = [j for j, part in enumerate(parts) if keys.fit_pair(rel, part) in done]
        dc.extend([c] * len(got))
        dj.extend(got)
    return np.asarray(dc, dtype=np.int64), np.asarray(dj, dtype=np.int64)


def build_manifest(content: list[str], style: list[str], *, pairing: str = "cross", seed: int = 0,
                   label_from_parent: bool = False, skip_done_under: str | None = None,
                   done_keys: Iterable[str] | None = None, done_pairs: Iterable[tuple[str, str]] | None = None,
                   base: str | None = None) -> pd.DataFrame:
    """A manifest DataFrame (``content``, ``style``, ``content_root`` [, ``label``]) pairing the images
    under ``content`` with those under ``style``. ``skip_done_under``: an output root; rows (pairs) that
    already have an output there (a default key ``{content rel}__{style}__...``, of any options) are left
    out, so an image that got only some of its K styles (a failed row, a killed run) gets the rest later.
    With ``sample:K``, done pairs count toward an image's K: it gets only the styles it lacks, drawn in the
    same order, so adding style images later does not re-augment images that already have K.
    ``done_keys``: output keys (relative to the output root) that count as done instead of a listing; they
    match pairs by file names, as keys hold no more. ``done_pairs``: ``(content URI, style URI)`` pairs that are
    done (e.g. from an index), matched exactly; for ``sample:K`` a done pair counts toward its image's K even
    when its style image is no longer listed."""
    kind, k = parse_pairing(pairing)
    contents = expand(content, base=base, what="content")
    styles = [u for u, _ in expand(style, base=base, what="style")]
    piped = next((u for u in styles if "|" in u), None)
    if piped:  # the manifest's style cell would read as two blended styles
        raise ManifestError(f"style image {uris.redact(piped)}: '|' separates blended styles in a manifest's style "
                            f"column; rename the file")
    done: set[tuple[str, str]] = set()
    if done_keys is not None:
        done = {keys.pair_from_key(key) for key in done_keys}
    elif skip_done_under:
        done = {keys.pair_from_key(key) for key in storage.list_prefix(skip_done_under, relative=True, nonempty=True)}
    rels = [_rel(u, r) for u, r in contents]
    parts = [keys.style_part(u) for u in styles]
    notes = []
    if skip_done_under and done_keys is None:
        if not done:
            notes.append(f"--skip-done-under {uris.redact(skip_done_under)}: no outputs there (a new output root, or "
                         f"a typo?); every pair is listed")
        for what, names, uris_ in (("content images", rels, [u for u, _ in contents]), ("style images", parts, styles)):
            shared = pd.Series(names).duplicated(keep=False).to_numpy()
            if shared.any():
                first = [u for u, s in zip(uris_, shared) if s][:2]
                notes.append(f"{int(shared.sum())} {what} share a name with another once the extension (and for "
                             f"styles the folder) is dropped, e.g. {', '.join(uris.redact(u) for u in first)}: "
                             f"--skip-done-under cannot tell their outputs apart, so one done counts for all")
    dc, dj = _done_pairs(rels, parts, done) if done else (np.zeros(0, np.int64), np.zeros(0, np.int64))
    gone = np.zeros(len(contents), dtype=np.int64)  # done pairs of each image whose style is no longer listed
    if done_pairs is not None:
        c_at = {u: i for i, (u, _) in enumerate(contents)}
        s_at = {u: j for j, u in enumerate(styles)}
        given = set(done_pairs)  # iterated twice: any iterable, once
        exact = {(c_at[c], s_at[s]) for c, s in given if c in c_at and s in s_at}
        for c, s in given:
            if c in c_at and s not in s_at:
                gone[c_at[c]] += 1
        if exact:
            both = np.unique(np.concatenate([np.stack([dc, dj], axis=1),
                                             np.array(sorted(exact), dtype=np.int64)]), axis=0)
            dc, dj = both[:, 0], both[:, 1]
    c_uri = np.array([u for u, _ in contents], dtype=object)
    c_root = np.array([r for _, r in contents], dtype=object)
    s_uri = np.array(styles, dtype=object)
    nc, ns = len(c_uri), len(s_uri)
    if kind == "cross":
        ci, si = np.repeat(np.arange(nc), ns), np.tile(np.arange(ns), nc)
    elif kind == "zip":
        if nc != ns:
            raise ManifestError(f"pairing zip: {nc} content images but {ns} style images; they must be equal")
        order_c = np.argsort(c_uri.astype(str), kind="stable")
        ci, si = order_c, np.argsort(s_uri.astype(str), kind="stable")
    else:
        if k > ns:
            raise ManifestError(f"pairing sample:{k}: only {ns} style images to draw from")
        hc = _u64(f"{seed}\x1f{rel}" for rel in rels)
        hs = _u64(s_uri)
        picks = np.empty((nc, k), dtype=np.int64)
        step = max(1, 4_000_000 // max(ns, 1))
        last = np.iinfo(np.uint64).max
        for start in range(0, nc, step):  # bounded memory: chunks of contents × all styles
            scores = _mix(hc[start:start + step, None] ^ _mix(hs[None, :]))
            here = (dc >= start) & (dc < start + step)  # styles an image already has go last: the draw skips them
            scores[dc[here] - start, dj[here]] = last
            part = np.argpartition(scores, k - 1, axis=1)[:, :k] if k < ns else np.tile(np.arange(ns), (len(scores), 1))
            order = np.argsort(np.take_along_axis(scores, part, axis=1), axis=1)
            picks[start:start + step] = np.take_along_axis(part, order, axis=1)
        # an image with d done pairs takes its first K - d new picks
        keep = np.arange(k)[None, :] < (k - np.bincount(dc, minlength=nc) - gone)[:, None]
        ci, si = np.nonzero(keep)[0], picks[keep]
    df = pd.DataFrame({"content": c_uri[ci], "style": s_uri[si], "content_root": c_root[ci]})
    if len(dc):
        df = df[~np.isin(ci * ns + si, dc * ns + dj)].reset_index(drop=True)
    if label_from_parent:
        df["label"] = [os.path.basename(os.path.dirname(u.replace("\\", "/"))) if not uris.is_s3(u)
                       else u.rsplit("/", 2)[-2] for u in df["content"]]
    if notes:
        df.attrs["notes"] = notes  # for the CLI to print
    return df


__all__ = ["build_manifest", "expand", "parse_pairing"]
