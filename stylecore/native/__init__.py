"""Small C kernels, compiled on first use with the machine's C compiler and loaded through ctypes.

``winograd()`` returns the Winograd tile transforms of ``winograd.c`` (see ``fast_layers.WinogradConv2d``),
``instance_norm()`` the fused instance norm of ``instance_norm.c`` (``fast_layers.InstanceNorm2d``); each is
``None`` when it is unavailable (no C compiler, a failed build, ``STYLECORE_NATIVE=0``, not Linux/macOS);
callers then use their torch form. The shared library is built with ``-O3 -march=native -fopenmp`` (without
OpenMP where the compiler lacks it) into ``$STYLECORE_CACHE_DIR`` (default ``~/.cache/stylecore``), named by
a hash of the source, the compiler, the flags and the CPU's feature flags, so a cache shared between different
machines never hands one a library built for another's instruction set. The build writes a temporary file
and renames it: concurrent workers never load a half-written library.
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("winograd.c")
NORM_SOURCE = SOURCE.with_name("instance_norm.c")
FLAGS = ["-O3", "-march=native", "-fPIC", "-shared", "-std=c99"]
# OpenMP first (the loops then share torch's thread pool); a compiler without it (Apple clang) builds serial loops.
FLAG_SETS = [FLAGS + ["-fopenmp"], FLAGS]
_lock = threading.Lock()
_cache: dict[str, object] = {}


def cache_dir() -> Path:
    """Where compiled kernels are kept: ``$STYLECORE_CACHE_DIR``, else ``$XDG_CACHE_HOME/stylecore``, else
    ``~/.cache/stylecore``."""
    env = os.environ.get("STYLECORE_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "stylecore"


def enabled() -> bool:
    """``STYLECORE_NATIVE`` (default on): ``0``/``off``/``false`` keeps every layer in its torch form."""
    return os.environ.get("STYLECORE_NATIVE", "1").strip().lower() not in ("0", "off", "false", "no")


def _cpu_signature() -> str:
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    flags = line
                    break
    except OSError:
        pass
    return f"{platform.machine()}|{platform.processor()}|{flags}"


def _compiler() -> str | None:
    cc = os.environ.get("CC") or "cc"
    return shutil.which(cc) or shutil.which("gcc") or shutil.which("clang")


def _writable_dir() -> Path:
    """``cache_dir()``, or a per-user folder in the temporary directory where it cannot be created or written
    (a read-only home in a container): the kernels then rebuild once per machine boot instead of not at all."""
    for d in (cache_dir(), Path(tempfile.gettempdir()) / f"stylecore-{os.getuid() if hasattr(os, 'getuid') else 0}"):
        try:
            d.mkdir(parents=True, exist_ok=True)
            if os.access(d, os.W_OK | os.X_OK):
                return d
        except OSError:
            continue
    raise RuntimeError(f"no writable folder for compiled kernels ({cache_dir()} nor the temporary directory)")


def _build(cc: str, source: Path) -> Path:
    """The cached library for ``source``, compiled first if needed; raises with the compiler's last line."""
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    errors, text, cpu, folder = [], source.read_text(), _cpu_signature(), _writable_dir()
    for flags in FLAG_SETS:
        key = hashlib.sha256("\0".join([text, cc, version, " ".join(flags), cpu]).encode()).hexdigest()[:20]
        target = folder / f"{source.stem}-{key}.so"
        if target.is_file():
            return target
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        os.close(fd)
        try:
            proc = subprocess.run([cc, *flags, str(source), "-o", tmp], capture_output=True, text=True, timeout=120)
            if proc.returncode == 0:
                os.replace(tmp, target)
                return target
            last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
            errors.append(f"{Path(cc).name} {' '.join(flags[-1:])} exited {proc.returncode}: {last[0]}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise RuntimeError("; ".join(errors))


def _load(name: str, source: Path, declare) -> object | None:
    with _lock:
        if name in _cache:
            return _cache[name]
        lib = None
        if enabled() and sys.platform.startswith(("linux", "darwin")):
            cc = _compiler()
            if cc is None:
                log.info("stylecore: no C compiler found; %s kernels use their torch form", name)
            else:
                try:
                    started = time.perf_counter()
                    path = _build(cc, source)
                    lib = ctypes.CDLL(str(path))
                    declare(lib)
                    log.info("stylecore: %s kernels ready in %.2f s (%s)", name, time.perf_counter() - started, path)
                except Exception as exc:  # a failed build or load must never stop inference
                    log.warning("stylecore: could not build the native %s kernels (%s); using the torch form",
                                name, exc)
                    lib = None
        _cache[name] = lib
        return lib


def _declare_winograd(lib) -> None:
    f, i, p, l = ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_long
    lib.stylecore_winograd_input.argtypes = [p, l, l, l, l, i, l, l, i, i, i, p, i]
    lib.stylecore_winograd_input.restype = i
    lib.stylecore_winograd_output.argtypes = [p, i, i, i, i, f, p, i, i, i, i]
    lib.stylecore_winograd_output.restype = i
    lib.stylecore_winograd45_input.argtypes = [p, l, l, l, l, i, l, l, i, i, i, p, i]
    lib.stylecore_winograd45_input.restype = i
    lib.stylecore_winograd45_output_shuffle.argtypes = [p, i, i, i, f, i, i, i, p, i, i, i, i]
    lib.stylecore_winograd45_output_shuffle.restype = i


def winograd():
    """The compiled Winograd transforms (``stylecore_winograd_input`` / ``_output``), or ``None``."""
    return _load("winograd", SOURCE, _declare_winograd)


def _declare_instance_norm(lib) -> None:
    i, p, l = ctypes.c_int, ctypes.c_void_p, ctypes.c_long
    lib.stylecore_instance_norm.argtypes = [p, l, l, i, p, p, ctypes.c_float, i, i, p, i]
    lib.stylecore_instance_norm.restype = i


def instance_norm():
    """The compiled instance norm + ReLU + reflection pad (``stylecore_instance_norm``), or ``None``."""
    return _load("instance_norm", NORM_SOURCE, _declare_instance_norm)


def reset() -> None:
    """Forget loaded kernels (tests: after changing ``STYLECORE_NATIVE`` or the cache directory)."""
    with _lock:
        _cache.clear()
