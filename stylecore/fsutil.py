"""Local filesystem helpers: atomic writes."""
from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Read once at import (os.umask can only be read by setting it, which is not thread-safe later on).
_UMASK = _current_umask()


# Bytes of a file name kept in its temporary name: ``.{name}.XXXXXXXX.part`` adds 15 bytes, so a legal name of
# 241-255 bytes would give an illegal temporary one; longer names are shortened, with a hash of the whole name.
TEMP_NAME_BYTES = 200


def temp_stem(name: str) -> str:
    """The part of ``name`` that its temporary files carry: the name itself, or for a name longer than
    ``TEMP_NAME_BYTES`` in UTF-8 its start plus ``~`` and a hash of the whole name."""
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) <= TEMP_NAME_BYTES:
        return name
    head = raw[:TEMP_NAME_BYTES - 17].decode("utf-8", "ignore")
    return f"{head}~{hashlib.sha1(raw).hexdigest()[:16]}"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file in the same directory, fsync, rename.

    A reader (or a resumed run) never sees a partial file: either the old file, no file, or the whole new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{temp_stem(path.name)}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            # mkstemp creates 0600 files; give the result the permissions a plain open() would (those of the file
            # it replaces, else 0666 minus the umask). Best effort: some mounts refuse chmod but take the write.
            try:
                mode = path.stat().st_mode & 0o7777
            except OSError:
                mode = 0o666 & ~_UMASK
            with contextlib.suppress(OSError):
                os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def remove_partials(folder: str | os.PathLike, names) -> int:
    """Remove the temporary files that ``atomic_write_bytes`` left in ``folder`` for the files named in ``names``
    (None: for any file) when their writer was killed (``.{temp_stem(name)}.<random>.part``, the name mkstemp
    gives); returns how many were removed.

    One listing of the folder serves every name: a glob per written file listed the whole folder each time, which
    cost 33 ms per file in a folder of 50,000 outputs (quadratic in the size of a flat output folder)."""
    names, removed = (None if names is None else {temp_stem(n) for n in names}), 0
    try:
        entries = os.scandir(folder)
    except OSError:
        return 0
    with entries:
        for entry in entries:
            n = entry.name
            if not (n.startswith(".") and n.endswith(".part")):
                continue
            if names is None or n[1:-len(".part")].rpartition(".")[0] in names:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed += 1
    return removed


def nearest_existing(path: str) -> str:
    """``path`` or its nearest ancestor that exists (a folder, or a file in the way of creating ``path``)."""
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path
