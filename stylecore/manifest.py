"""Manifests: reading (CSV / Parquet / JSON Lines, local or S3), validation and planning.

Columns: ``content`` and ``style`` (required; several styles separated by ``|``), ``style_weights``
(``0.7|0.3``), ``output`` (key under the output root), ``id``, ``content_root`` (the prefix the content
was listed from; its sub-path is kept in default keys), per-row option overrides (``method`` and every
``stylecore.options.SPECS`` name); any other column passes through untouched.

Rows are numbered from 0 (the ``row`` column of metrics); in a CSV file, row N is on line N + 2.
Validation is vectorised (pandas): per-row Python work runs on distinct values only, except the
output-key hash.
"""
from __future__ import annotations

import csv
import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from . import keys, storage, uris
from .errors import ManifestError, OptionsError, StorageError
from .options import SPECS, StyleOptions, check_method, coerce, parse_style_weights

REQUIRED = ("content", "style")
OPTION_COLUMNS = ("method", *SPECS)
KNOWN = frozenset({"content", "style", "style_weights", "output", "id", "content_root", *OPTION_COLUMNS})
# Columns the run writes in its metrics (stylecore.shard, stylecore.quality, tasks.metrics). A manifest column
# of one of these names is not passed through: the run's own value would replace it, or mix types with it.
RESULT_COLUMNS = frozenset({"row", "output_uri", "status", "error", "options_json", "options_hash", "read_ms",
                            "compute_ms", "write_ms", "total_ms", "width", "height", "worker", "device",
                            "content_loss", "style_loss", "ssim", "color_distance", "evaluator", "evaluator_size",
                            "quality_ms", "encoder", "decoder", "model"})
PLAN_COLUMNS = ["row", "id", "content", "style", "style_weights", "method", "options_json", "options_hash",
                "output", "output_uri", "status"]
FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}


# --- reading -------------------------------------------------------------------------------------

def manifest_format(uri: str) -> str:
    """``csv``, ``parquet`` or ``jsonl`` from the file extension."""
    ext = os.path.splitext(str(uri).lower())[1]
    fmt = FORMATS.get(ext)
    if fmt is None:
        raise ManifestError(f"{uri}: unknown manifest format {ext or '(no extension)'!r}; use .csv, .parquet or .jsonl")
    return fmt


def read_manifest(uri: str) -> pd.DataFrame:
    """Read a manifest into a DataFrame (CSV cells as text; Parquet/JSONL types kept)."""
    import pyarrow as pa

    fmt = manifest_format(uri)
    src = uris.resolve(uri)
    try:
        data: Any = storage.read_bytes(src) if uris.is_s3(src) else None
    except StorageError as e:
        if not str(e).startswith(src):
            raise  # not about this object: a bad S3 setting in the environment, say
        raise ManifestError(f"manifest {e}") from None
    if data is None and not os.path.isfile(src):
        raise ManifestError(f"manifest {src}: {'is a folder, not a file' if os.path.isdir(src) else 'not found'}")
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(pa.BufferReader(data) if data is not None else src)
            return table.to_pandas()
        if fmt == "jsonl":
            if data is None:
                with open(src, "rb") as f:
                    data = f.read()
            if data.startswith(b"\xef\xbb\xbf"):  # a byte-order mark, as some exporters write (CSV reads it too)
                data = data[3:]
            return pd.read_json(io.BytesIO(data), lines=True, dtype=False)
        return _read_csv(src, data)
    except ManifestError:
        raise
    except Exception as e:  # pyarrow / pandas parse errors
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        where = _first_bad_line(fmt, src, data) if fmt in ("csv", "jsonl") else None
        if where:  # the line, which pyarrow and pandas do not give
            reason = f"{where} ({reason})"
        reason = uris.redact(reason)  # a parse error may quote the row's text, URIs with credentials too
        raise ManifestError(f"manifest {src}: cannot parse as {fmt}: {reason[:300]}") from None


def _first_bad_line(fmt: str, src: str, data: bytes | None) -> str | None:
    """``line N: what is wrong`` for the first line of a CSV / JSON Lines manifest that does not parse, or None."""
    try:
        if data is None:
            with open(src, "rb") as f:
                data = f.read()
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            return f"line {data.count(10, 0, e.start) + 1}: not valid UTF-8 text"
        if fmt == "jsonl":
            for n, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    try:
                        json.loads(line)
                    except ValueError as e:
                        return f"line {n}: not a JSON object ({e.msg})"
            return None
        rows = csv.reader(io.StringIO(text, newline=""))
        width = len(next(rows, []))
        for row in rows:
            if row and len(row) != width:
                return f"line {rows.line_num}: {len(row)} fields, the header has {width}"
    except (OSError, csv.Error):
        return None
    return None


def _read_csv(src: str, data: bytes | None) -> pd.DataFrame:
    import pyarrow as pa
    from pyarrow import csv as pcsv

    if data is not None:
        first = data[: (data.find(b"\n") + 1) or len(data)]
    else:
        with open(src, "rb") as f:
            first = f.readline()
    header = next(csv.reader([first.decode("utf-8-sig").rstrip("\r\n")]), [])
    if not header:
        raise ManifestError(f"manifest {src}: empty file (no header row)")
    # Every CSV cell is text; empty cells stay "" (never NaN), so validation sees exactly what was written.
    convert = pcsv.ConvertOptions(column_types={h: pa.string() for h in header}, strings_can_be_null=False,
                                  quoted_strings_can_be_null=False)
    table = pcsv.read_csv(pa.BufferReader(data) if data is not None else src, convert_options=convert)
    return table.to_pandas()


def write_manifest(df: pd.DataFrame, uri: str) -> str:
    """Write ``df`` as CSV / Parquet / JSONL (by extension) to a local path or S3, atomically."""
    fmt = manifest_format(uri)
    dest = uris.resolve(uri)
    buf = io.BytesIO()
    if fmt == "parquet":
        df.to_parquet(buf, index=False)
    elif fmt == "jsonl":
        df.to_json(buf, orient="records", lines=True, force_ascii=False)
    else:
        df.to_csv(buf, index=False)
    storage.write_bytes(dest, buf.getvalue())
    return dest


# --- validation helpers ---------------------------------------------------------------------------

class _Problems:
    def __init__(self):
        self.items: list[tuple[int, int, str]] = []

    # Messages quote cells, and a cell may hold a URI with credentials (itself a problem of its row): every
    # message is redacted here, where they are collected.
    def column(self, col: str, msg: str):
        self.items.append((-1, 0, uris.redact(f"column {col}: {msg}")))

    def rows(self, rows, col: str, msg, order: int = 0):
        """``msg`` is a string or a per-row sequence of strings."""
        rows = np.asarray(rows)
        if isinstance(msg, str):
            msg = uris.redact(msg)
            self.items.extend((int(r), order, f"row {int(r)}, column {col}: {msg}") for r in rows)
        else:
            self.items.extend((int(r), order, uris.redact(f"row {int(r)}, column {col}: {m}")) for r, m in zip(rows, msg))

    def sorted(self) -> list[str]:
        return [m for _, _, m in sorted(self.items, key=lambda t: (t[0], t[1]))]


def _text(s: pd.Series) -> pd.Series:
    """Cells as stripped text ("" for missing)."""
    if pd.api.types.is_string_dtype(s.dtype) and not pd.api.types.is_object_dtype(s.dtype):
        return s.fillna("").str.strip()
    return s.map(lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v).strip()).astype("str")


def _check_text_cells(s: pd.Series, col: str, probs: "_Problems") -> None:
    """Paths and URIs are text: JSON Lines / Parquet cells holding numbers, booleans, lists or objects are
    problems (they would become paths such as ``['..']`` or ``5``). CSV cells are always text."""
    if pd.api.types.is_string_dtype(s.dtype) and not pd.api.types.is_object_dtype(s.dtype):
        return
    if pd.api.types.infer_dtype(s, skipna=True) in ("string", "empty"):  # one C pass: the usual JSONL column
        return
    kinds = s.map(lambda v: "" if v is None or isinstance(v, str) or (isinstance(v, float) and np.isnan(v))
                  else ("a list" if isinstance(v, (list, tuple, np.ndarray)) else
                        "an object" if isinstance(v, dict) else
                        "a boolean" if isinstance(v, (bool, np.bool_)) else
                        "a number" if isinstance(v, (int, float, np.number)) else f"a {type(v).__name__} value"))
    bad = np.nonzero((kinds != "").to_numpy())[0]
    probs.rows(bad, col, [f"expected text (a path or URI), got {kinds.iat[i]} {s.iat[i]!r}"[:200] for i in bad])


def _take(values: list, codes: np.ndarray, categorical: bool = False) -> pd.Series:
    """``values[codes]`` (code -1 takes the last value) as a str Series, or as a categorical one, where
    a repeated value (the options JSON) costs a small integer per row instead of a string."""
    idx = np.where(codes < 0, len(values) - 1, codes)
    if not categorical:
        return pd.Series(pd.array(values, dtype="str").take(idx))
    cats, remap = np.unique(np.asarray(values, dtype=object).astype(str), return_inverse=True)
    return pd.Series(pd.Categorical.from_codes(remap.reshape(-1)[idx], categories=pd.Index(cats, dtype="str")))


def _resolve_unique(values: np.ndarray, base: str | None) -> tuple[list[str], list[str | None]]:
    out, errs = [], []
    for v in values:
        try:
            out.append(uris.resolve(v, base))
            errs.append(None)
        except StorageError as e:
            out.append("")
            errs.append(str(e).split(": ", 1)[-1])
    return out, errs


_SCHEME_RE = r"^[A-Za-z][A-Za-z0-9+.\-]*://"
# The vectorised patterns run on pyarrow's RE2 engine or on Python's re, depending on the pandas version and
# string dtype, so they use only what both read alike: no \s and no end anchors (\Z is Python's, \z RE2's,
# and $ differs on a trailing newline; _strip_extension shows where $ is safe). Endings use str.endswith.
# Local values that need os.path.normpath / expanduser / a scheme parser: these, or a dot segment at the end,
# or a trailing slash.
_PATH_SUSPECT = r"(?:^|/)\.{1,2}/|//|^~|\\|" + _SCHEME_RE


def _ends_in_dot_segment(s: pd.Series) -> np.ndarray:
    """Values whose last path segment is ``.`` or ``..``."""
    return s.str.endswith(("/.", "/..")).to_numpy(dtype=bool) | s.isin((".", "..")).to_numpy(dtype=bool)


def _resolve_column(s: pd.Series, base: str | None, col: str, probs: _Problems) -> pd.Series:
    """Resolve URIs of a text column. Plain ``s3://bucket/key`` values and clean absolute or relative
    local paths are handled vectorised; only unusual values go through ``uris.resolve``."""
    base_uri = uris.resolve(base) if base is not None else os.getcwd()
    plain_s3 = s.str.match(r"s3://[^/@:]+/").to_numpy(dtype=bool)  # user info goes to uris.resolve (refused)
    suspect = (s.str.contains(_PATH_SUSPECT, regex=True).to_numpy(dtype=bool) | _ends_in_dot_segment(s)
               | s.str.endswith("/").to_numpy(dtype=bool)) & ~plain_s3
    absolute = s.str.startswith("/").to_numpy(dtype=bool) & ~plain_s3 & ~suspect
    relative = ~(plain_s3 | suspect | absolute) & (s != "").to_numpy(dtype=bool)
    out = s.copy()
    if relative.any():
        out = out.where(~relative, base_uri.rstrip("/") + "/" + s)
    slow = np.nonzero(suspect)[0]
    if len(slow):
        values = s.iloc[slow]
        codes, uniq = pd.factorize(values, sort=False)
        resolved, errs = _resolve_unique(np.asarray(uniq, dtype=object), base)
        out.iloc[slow] = np.asarray(resolved, dtype=object)[codes]
        bad_u = np.array([e is not None for e in errs], dtype=bool)
        bad = bad_u[codes]
        probs.rows(slow[bad], col, [errs[c] for c in codes[bad]])
    return out.astype("str")


# keys that escape, are absolute or URIs, or hold empty segments; also dot-segment endings and blank keys
_KEY_SUSPECT = r"(?:^|/)\.{1,2}/|^/|//|\\|^[A-Za-z][A-Za-z0-9+.\-]*:|\x00"


def _check_keys(k: pd.Series, rows_mask: np.ndarray, col: str, probs: _Problems) -> None:
    """Key problems (escape, absolute, URIs, empty segments), vectorised with a Python pass on suspects."""
    suspect = (k.str.contains(_KEY_SUSPECT, regex=True).to_numpy(dtype=bool) | _ends_in_dot_segment(k)
               | (k.str.strip(" ") == "").to_numpy(dtype=bool)) & rows_mask
    rows = np.nonzero(suspect)[0]
    msgs, bad = [], []
    for r in rows:
        p = uris.key_problem(k.iat[r])
        if p:
            bad.append(r)
            msgs.append(f"output key {uris.redact(k.iat[r])!r}: {p}")
    probs.rows(bad, col, msgs, order=1)


def _check_name_lengths(k: pd.Series, rows_mask: np.ndarray, probs: _Problems) -> None:
    """Explicit keys with a file or folder name over ``keys.MAX_NAME_BYTES`` in UTF-8, which local file systems
    refuse (the run failed each such row with "stat failed: File name too long"). Only keys of more than a
    quarter of that many characters can have one."""
    rows = np.nonzero((k.str.len() > keys.MAX_NAME_BYTES // 4).to_numpy(dtype=bool) & rows_mask)[0]
    bad = [r for r in rows if any(len(p.encode("utf-8", "surrogateescape")) > keys.MAX_NAME_BYTES
                                  for p in k.iat[r].split("/"))]
    probs.rows(bad, "output", [f"output key {_short(uris.redact(k.iat[r]))}: a file or folder name over "
                               f"{keys.MAX_NAME_BYTES} bytes (local file systems refuse it)" for r in bad], order=1)


def _short(text: str, limit: int = 80) -> str:
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}..."


def _check_nested_keys(k: pd.Series, row_numbers: pd.Series, probs: _Problems) -> None:
    """Keys that are also a folder of another row's key (``d.jpg`` and ``d.jpg/e.jpg``): on local disk one of the
    two rows fails on every run. Only keys with a folder named like an image can be inside another key."""
    rows = np.nonzero(k.str.contains(r"(?i)\.(?:jpe?g|png|webp)/", regex=True).to_numpy(dtype=bool))[0]
    if not len(rows):
        return
    first = {}
    for r, key in zip(row_numbers.tolist(), k.tolist()):
        if key:
            first.setdefault(key, r)
    bad, msgs = [], []
    for r in rows:
        key = k.iat[r]
        parts = key.split("/")
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth])
            if folder in first:
                bad.append(r)
                msgs.append(f"output key {key!r} is inside {folder!r}, which is row {first[folder]}'s output key")
                break
    probs.rows(bad, "output", msgs, order=2)


@dataclass
class Prepared:
    """A validated manifest: plan columns except ``output_uri``/``status``, plus passthrough columns."""

    rows: pd.DataFrame
    passthrough: list[str]
    problems: list[str]
    notes: list[str] = field(default_factory=list)  # not problems: columns ignored or passed through as text


def prepare(df: pd.DataFrame, *, base: str | None, method: str = "gatys", options: StyleOptions | None = None,
            encoder: str | None = "imagenet", decoder: str | None = None, model: str | None = None,
            fmt: str = "jpg", check_inputs: bool = False) -> Prepared:
    """Validate ``df`` and compute effective options and output keys for every row. Never raises for row
    problems: they are collected in ``Prepared.problems`` (every problem, row and column named)."""
    method = check_method(method)
    options = options or StyleOptions.make()
    ext = keys.extension(fmt)
    specs = {"encoder": encoder, "decoder": decoder, "model": model}
    probs = _Problems()
    n = len(df)
    df = df.reset_index(drop=True)
    names = pd.Index(df.columns)
    if names.duplicated().any():  # every later step reads one column per name
        for col, k in names.value_counts(sort=False).items():
            if k > 1:
                probs.column(str(col), f"appears {k} times in the header")
        return Prepared(pd.DataFrame({"row": np.arange(n, dtype=np.int64)}), [], probs.sorted())
    absent = [col for col in REQUIRED if col not in df.columns]
    if absent:  # show what the header holds: ' content ' (spaces), 'content;style' (another separator), 'Content'
        shown = [repr(str(c)) for c in list(df.columns)[:12]] + (["..."] if len(df.columns) > 12 else [])
        header = f"; the header has {', '.join(shown)}" if shown else "; the header is empty"
        for col in absent:
            probs.column(col, f"missing (required){header}")
    for col in ("content", "style", "content_root", "output"):
        if col in df.columns:
            _check_text_cells(df[col], col, probs)
    empty_series = pd.Series([""] * n, dtype="str")
    out = pd.DataFrame({"row": np.arange(n, dtype=np.int64)})

    # id
    ids = _text(df["id"]) if "id" in df.columns else empty_series
    out["id"] = ids.where(ids != "", out["row"].astype("str"))

    # content (+ content_root)
    content = _text(df["content"]) if "content" in df.columns else None
    if content is not None:
        empty = (content == "").to_numpy()
        probs.rows(np.nonzero(empty)[0], "content", "empty cell")
        out["content"] = _resolve_column(content, base, "content", probs)
    else:
        out["content"] = empty_series
    root = None
    if "content_root" in df.columns:
        root_txt = _text(df["content_root"])
        root = _resolve_column(root_txt, base, "content_root", probs).where(root_txt != "", "")
        out["content_root"] = root

    # style: distinct values only
    n_styles = np.zeros(n, dtype=np.int64)
    if "style" in df.columns:
        style = _text(df["style"])
        codes, uniq = pd.factorize(style, sort=False)
        res_u, n_u, err_u = [], [], []
        for v in uniq:
            parts = [p.strip() for p in str(v).split("|")]
            if not v or any(p == "" for p in parts):
                res_u.append(""), n_u.append(0), err_u.append("empty cell" if not v else f"empty style in {v!r}")
                continue
            r, errs = _resolve_unique(parts, base)
            bad = [e for e in errs if e]
            res_u.append("|".join(r)), n_u.append(len(parts)), err_u.append(bad[0] if bad else None)
        n_arr = np.asarray(n_u + [0], dtype=np.int64)
        out["style"] = _take(res_u + [""], codes)
        n_styles = n_arr[codes]
        bad_u = np.array([e is not None for e in err_u] + [True], dtype=bool)
        bad_rows = np.nonzero(bad_u[codes])[0]
        probs.rows(bad_rows, "style", [(err_u[c] if c >= 0 else "empty cell") for c in codes[bad_rows]])
    else:
        out["style"] = empty_series

    # style_weights
    weights = pd.Series([""] * n, dtype="str")
    if "style_weights" in df.columns:
        wtxt = _text(df["style_weights"])
        codes, uniq = pd.factorize(wtxt, sort=False)
        canon_u, len_u, err_u = [], [], []
        for v in uniq:
            try:
                w = parse_style_weights(v, sep="|")
                canon_u.append(keys.canonical_weights(w)), len_u.append(len(w) if w else 0), err_u.append(None)
            except OptionsError as e:
                canon_u.append(""), len_u.append(0), err_u.append(str(e))
        lens = np.asarray(len_u + [0], dtype=np.int64)[codes]
        errs = np.asarray(err_u + [None], dtype=object)[codes]
        bad = np.array([e is not None for e in err_u] + [False], dtype=bool)[codes]
        rows = np.nonzero(bad)[0]
        probs.rows(rows, "style_weights", [f"malformed: {e}" for e in errs[rows]])
        mismatch = (~bad) & (lens > 0) & (n_styles > 0) & (lens != n_styles)
        rows = np.nonzero(mismatch)[0]
        probs.rows(rows, "style_weights", [f"{lens[r]} weights for {n_styles[r]} styles" for r in rows])
        weights = _take(canon_u + [""], codes)
    out["style_weights"] = weights

    # per-row option overrides: distinct values, then distinct combinations
    present = [c for c in OPTION_COLUMNS if c in df.columns]
    combo_codes = np.zeros((n, len(present)), dtype=np.int64)
    values_per_col: list[list] = []
    for j, col in enumerate(present):
        codes, uniq = pd.factorize(df[col], sort=False)  # NaN/None → -1
        vals, errs = [], []
        for v in uniq:
            if isinstance(v, str) and v.strip() == "":
                vals.append(None), errs.append(None)
                continue
            try:
                vals.append(check_method(v) if col == "method" else coerce(col, v)), errs.append(None)
            except OptionsError as e:
                vals.append(None), errs.append(str(e))
        bad = np.array([e is not None for e in errs] + [False], dtype=bool)[codes]
        rows = np.nonzero(bad)[0]
        probs.rows(rows, col, [errs[c] for c in codes[rows]])
        vals.append(None)  # code -1
        values_per_col.append(vals)
        combo_codes[:, j] = np.where(codes < 0, len(vals) - 1, codes)
    if present:  # mixed-radix code per row, then hash-based factorize (no sort)
        radix = np.array([len(v) for v in values_per_col], dtype=np.int64)
        flat = np.zeros(n, dtype=np.int64)
        for j in range(len(present)):
            flat = flat * radix[j] + combo_codes[:, j]
        inverse, uniq_flat = pd.factorize(flat, sort=False)
        uniq_combos = np.zeros((len(uniq_flat), len(present)), dtype=np.int64)
        rest = np.asarray(uniq_flat, dtype=np.int64)
        for j in reversed(range(len(present))):
            rest, uniq_combos[:, j] = np.divmod(rest, radix[j])
    else:
        uniq_combos, inverse = np.zeros((1, 0), dtype=np.int64), np.zeros(n, dtype=np.int64)
    meth_u, json_u, hash_u, full_u = [], [], [], []
    for combo in uniq_combos:
        over = {col: values_per_col[j][c] for j, (col, c) in enumerate(zip(present, combo))}
        m = over.pop("method", None) or method
        opts = StyleOptions.make(options, **over)
        meth_u.append(m)
        json_u.append(json.dumps(opts.effective(m), sort_keys=True, separators=(",", ":")))
        full = keys.options_json(m, opts, specs)
        full_u.append(full)
        hash_u.append(keys.row_hash("", "", "", full))
    out["method"] = _take(meth_u, inverse, categorical=True)
    out["options_json"] = _take(json_u, inverse, categorical=True)
    out["options_hash"] = _take(hash_u, inverse, categorical=True)

    # output keys: explicit cells, else the default deterministic key
    explicit = _text(df["output"]) if "output" in df.columns else empty_series
    has_explicit = (explicit != "").to_numpy()
    _check_keys(explicit, has_explicit, "output", probs)
    _check_name_lengths(explicit, has_explicit, probs)
    no_ext = has_explicit & ~explicit.str.lower().str.endswith((".jpg", ".jpeg", ".png", ".webp")).to_numpy(dtype=bool)
    rows = np.nonzero(no_ext)[0]
    probs.rows(rows, "output", [f"output key {explicit.iat[r]!r}: extension must be .jpg, .png or .webp" for r in rows], order=1)
    # rows whose inputs already have problems get no default key (no derivative duplicate-key problems)
    flagged = np.zeros(n, dtype=bool)
    flagged[[r for r, _, _ in probs.items if r >= 0]] = True
    need = ~has_explicit & ~flagged
    if need.any():
        c, st = out["content"], out["style"]
        rel = _relative(c, root) if root is not None else c.str.replace(r"^.*/", "", regex=True)
        rel = _strip_extension(rel)
        s_codes, s_uniq = pd.factorize(st, sort=False)
        s_part = _take([keys.style_part(v) for v in s_uniq] + [""], s_codes)
        hashes = np.empty(n, dtype=object)
        for g in range(len(full_u)):  # one options JSON per group of rows (usually a single group)
            idx = np.nonzero(need & (inverse == g))[0]
            for start in range(0, len(idx), 100_000):  # chunks bound the temporary Python strings
                part = idx[start:start + 100_000]
                joined = c.iloc[part].astype("str") + keys.SEP + st.iloc[part].astype("str") + keys.SEP + \
                    weights.iloc[part].astype("str")
                hashes[part] = keys.hashes(full_u[g], joined.tolist())
        hashes[~need] = ""
        hashes = pd.Series(pd.array(hashes, dtype="str"))
        default = rel + "__" + s_part + "__" + hashes + ext
        long = np.nonzero((default.str.len() > keys.MAX_NAME_BYTES // 4).to_numpy(dtype=bool) & need)[0]
        if len(long):  # only these can have a file name over MAX_NAME_BYTES (UTF-8: at most 4 bytes a character)
            default.iloc[long] = [keys.fit_name(k) for k in default.iloc[long].tolist()]
        out["output"] = default if need.all() else explicit.where(~need, default).where(has_explicit | need, "")
        # a default key's problem comes from the content path (or its content_root): that is the column to fix
        _check_keys(out["output"], need, "content", probs)
    else:
        out["output"] = explicit
    dup = out["output"].duplicated(keep=False).to_numpy() & (out["output"] != "").to_numpy()
    if dup.any():
        first = out.loc[dup].groupby("output", sort=False)["row"].transform("min").to_numpy()
        rows = np.nonzero(dup)[0]
        probs.rows(rows, "output", [f"duplicate output key {out['output'].iat[r]!r} (also row {f})"
                                    if f != r else f"duplicate output key {out['output'].iat[r]!r}"
                                    for r, f in zip(rows, first)], order=2)
    _check_nested_keys(out["output"], out["row"], probs)
    if check_inputs and not any(r < 0 for r, _, _ in probs.items):  # rows with problems already are not checked
        flagged = np.zeros(n, dtype=bool)
        flagged[[r for r, _, _ in probs.items if r >= 0]] = True
        if not flagged.all():
            _check_inputs(out[~flagged], probs)

    notes = []
    ignored = [str(c) for c in df.columns if c in RESULT_COLUMNS and c not in KNOWN]
    if ignored:
        notes.append(f"column{'s' * (len(ignored) > 1)} {', '.join(ignored)} ignored: the run writes "
                     f"{'these names' if len(ignored) > 1 else 'this name'} in its metrics (rename to keep)")
    passthrough = [c for c in df.columns if c not in KNOWN and c not in RESULT_COLUMNS]
    for col in passthrough:
        values, as_text = _one_type(df[col])
        out[col] = values
        if as_text:
            notes.append(f"column {col}: mixed value types; passed through as text")
    return Prepared(out, passthrough, probs.sorted(), notes)


def _one_type(s: pd.Series) -> tuple[pd.Series | Any, bool]:
    """A passthrough column as written to Parquet: unchanged when its cells share one type, else as text (JSON
    for lists and objects, missing cells stay missing); and whether it was turned into text."""
    if not pd.api.types.is_object_dtype(s.dtype):
        return s.array, False
    import pyarrow as pa

    try:
        pa.array(s, from_pandas=True)
        return s.array, False
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        def text(v):
            if v is None or (isinstance(v, float) and np.isnan(v)):
                return None
            return json.dumps(v, default=str) if isinstance(v, (dict, list, tuple)) else str(v)
        return s.map(text).astype(object).array, True


def _strip_extension(rel: pd.Series) -> pd.Series:
    """``os.path.splitext(v)[0]`` of each value, except that a name made of dots keeps none (``..jpg`` -> ``.``).

    ``$`` reads alike in RE2 and Python's re here: the extension class also takes newlines, so it always runs
    to the very end of the value. ``[\\s\\S]``, not ``.``, which matches no newline in either: a name holding one
    kept its extension in its key, so ``--skip-done-under`` (``keys.content_part``) never matched its outputs."""
    return rel.str.replace(STRIP_EXTENSION, r"\1", regex=True)


STRIP_EXTENSION = r"^([\s\S]*[^/])\.[^./]*$"


def _relative(content: pd.Series, root: pd.Series) -> pd.Series:
    """Content path relative to its root where it lies under it, else the bare file name."""
    rel = content.str.replace(r"^.*/", "", regex=True)
    r_codes, r_uniq = pd.factorize(root, sort=False)
    for j, r in enumerate(r_uniq):
        if not r:
            continue
        prefix = r.rstrip("/") + "/"
        mask = (r_codes == j) & content.str.startswith(prefix).to_numpy(dtype=bool)
        rel = rel.where(~mask, content.str.slice(len(prefix)))
    return rel


def _check_inputs(out: pd.DataFrame, probs: _Problems, workers: int = 32) -> None:
    """Check every distinct input exists (S3 keys by listing their key ranges where that is cheaper, the rest by
    a parallel stat/HEAD); missing ones become problems of the rows using them."""
    styles = out["style"].str.split("|").explode()
    distinct = pd.unique(pd.concat([out["content"], styles], ignore_index=True))
    distinct = [u for u in distinct if u]
    found = {u: None if there else "input not found" for u, there in storage.existence(distinct).items()}
    distinct = [u for u in distinct if u not in found]

    def check(u):
        try:
            if storage.exists(u):
                return u, None
            return u, ("input is a folder, not an image file" if not uris.is_s3(u) and os.path.isdir(u)
                       else "input not found")
        except StorageError as e:
            return u, str(e).split(": ", 1)[-1]

    with ThreadPoolExecutor(max_workers=workers) as pool:
        missing = {u: why for u, why in [*found.items(), *pool.map(check, distinct)] if why}
    if not missing:
        return
    bad = out["content"].isin(list(missing)).to_numpy()
    rows = out.index[bad]  # row numbers (``out`` may be a subset of the rows)
    probs.rows(rows, "content", [f"{missing[out['content'].at[r]]}: {out['content'].at[r]}" for r in rows], order=3)
    sbad = styles[styles.isin(list(missing))]
    for r, u in zip(sbad.index, sbad):
        probs.rows([r], "style", f"{missing[u]}: {u}", order=3)


# --- planning ------------------------------------------------------------------------------------

@dataclass
class Plan:
    """One row per manifest row (see docs/ARCHITECTURE.md, "Manifest plan contract")."""

    rows: pd.DataFrame
    passthrough: list[str]
    manifest: str
    output_root: str
    method: str
    options: StyleOptions
    fmt: str
    specs: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # ``Prepared.notes``
    _opts: dict = field(default_factory=dict, repr=False, compare=False)

    def row_request(self, row) -> tuple[str, StyleOptions, list[float] | None]:
        """``(method, StyleOptions, style_weights or None)`` for one plan row (Series, dict or namedtuple)."""
        get = (lambda k: row[k]) if isinstance(row, (dict, pd.Series)) else (lambda k: getattr(row, k))
        text = str(get("options_json"))
        opts = self._opts.get(text)
        if opts is None:
            opts = self._opts[text] = StyleOptions.make(self.options, **json.loads(text))
        w = get("style_weights")
        weights = [float(x) for x in str(w).split("|")] if isinstance(w, str) and w else None
        return str(get("method")), opts, weights

    @property
    def pending(self) -> pd.DataFrame:
        return self.rows[self.rows["status"] == "pending"]

    def counts(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.rows["status"].value_counts().items()}


def load(manifest: str | pd.DataFrame, *, base: str | None = None, method: str = "gatys",
         options: StyleOptions | None = None, encoder: str | None = "imagenet", decoder: str | None = None,
         model: str | None = None, fmt: str = "jpg", check_inputs: bool = False) -> Prepared:
    """Read (when given a URI) and validate a manifest; raises ManifestError listing every problem.
    Relative paths resolve against ``base`` (default: the manifest's folder, or the current directory)."""
    if isinstance(manifest, pd.DataFrame):
        df, label = manifest, "manifest"
    else:
        label = uris.resolve(str(manifest))
        df = read_manifest(label)
        base = base if base is not None else uris.parent(label)
    prep = prepare(df, base=base, method=method, options=options, encoder=encoder, decoder=decoder,
                   model=model, fmt=fmt, check_inputs=check_inputs)
    if prep.problems:
        n = len(prep.problems)
        raise ManifestError(f"{label}: {n} problem{'s' if n != 1 else ''}; first: {prep.problems[0]}",
                            problems=prep.problems)
    if not len(prep.rows):
        raise ManifestError(f"{label}: no rows", problems=[f"{label}: no rows"])
    return prep


def plan(manifest: str | pd.DataFrame, output_root: str, *, method: str = "gatys", options: StyleOptions | None = None,
         encoder: str | None = "imagenet", decoder: str | None = None, model: str | None = None, fmt: str = "jpg",
         overwrite: bool = False, check_inputs: bool = False, base: str | None = None) -> Plan:
    """Validate the manifest and plan every row: output keys and URIs under ``output_root`` and the
    resume status (``skipped`` when the output exists, unless ``overwrite``), found by listing
    ``output_root`` once."""
    prep = load(manifest, base=base, method=method, options=options, encoder=encoder, decoder=decoder,
                model=model, fmt=fmt, check_inputs=check_inputs)
    root = uris.resolve(str(output_root))
    rows = prep.rows
    sep = "/" if uris.is_s3(root) else os.sep
    rows["output_uri"] = root.rstrip("/") + sep + rows["output"]
    if overwrite:
        rows["status"] = "pending"
    else:
        existing = list(storage.list_prefix(root, extensions=None, relative=True, nonempty=True))
        done = rows["output"].isin(existing).to_numpy() if existing else np.zeros(len(rows), dtype=bool)
        rows["status"] = pd.Series(np.where(done, "skipped", "pending"), dtype="str")
    front = [c for c in PLAN_COLUMNS if c in rows.columns] + (["content_root"] if "content_root" in rows.columns else [])
    rows = rows[front + prep.passthrough]
    return Plan(rows, prep.passthrough, manifest if isinstance(manifest, str) else "manifest", root, check_method(method),
                options or StyleOptions.make(), fmt, {"encoder": encoder, "decoder": decoder, "model": model},
                notes=prep.notes)


def summary(prep: Prepared) -> dict[str, Any]:
    """Rows, distinct contents, distinct styles and rows per method."""
    r = prep.rows
    styles = r["style"].str.split("|").explode()
    return {"rows": int(len(r)), "distinct_contents": int(r["content"].nunique()),
            "distinct_styles": int(styles.nunique()),
            "methods": {k: int(v) for k, v in r["method"].value_counts().sort_index().items()}}


__all__ = ["read_manifest", "write_manifest", "prepare", "load", "plan", "Plan", "Prepared", "summary",
           "manifest_format", "REQUIRED", "OPTION_COLUMNS"]
