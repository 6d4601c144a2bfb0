"""Stop the ephemeral Prefect server when ``stylize run`` dies without cleaning up (SIGKILL, the OOM killer).

Prefect stops its ephemeral server process at interpreter exit, which a killed process never reaches, so
the server would live on (about 150 MB, holding the run database). ``guard_ephemeral_server`` starts a tiny
watcher process that blocks on a pipe whose only writer is this process: when this process ends, in any way,
the pipe reaches end-of-file and the watcher stops the server, if it is still the same process (its start
time in ``/proc`` is checked, so a reused PID is never signalled). Linux only; elsewhere it does nothing.
"""
from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time


def process_start_time(pid: int) -> str | None:
    """Field 22 of ``/proc/PID/stat`` (start time in clock ticks since boot), or ``None``."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def watch(pid: int, started: str) -> None:
    """The watcher: wait for end-of-file on stdin, then stop ``pid`` (SIGTERM, after 5 s SIGKILL) while it is
    still the process that started at ``started``."""
    sys.stdin.buffer.read()  # returns when the guarded process has ended
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
        if process_start_time(pid) != started:
            return
        os.kill(pid, sig)
        end = time.monotonic() + wait
        while time.monotonic() < end and process_start_time(pid) == started:
            time.sleep(0.05)


def detach_ephemeral_server() -> None:
    """Make the ephemeral Prefect server this process starts (if it starts one) a session of its own, so that a
    terminal's Ctrl-C, which signals the whole foreground process group, reaches ``stylize run`` only. Before,
    Ctrl-C stopped the server at once and the interrupted run then retried the dead API for minutes, with pages
    of errors. This process still stops the server at exit (Prefect's atexit), or the guard does. Nothing to do
    with ``PREFECT_API_URL`` set (the server module is then not even imported: ~3 s of a run's start)."""
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the singleton that get_client starts in ephemeral mode
    if getattr(server, "running", False) or getattr(server, "_stylize_detached", False):
        return
    launch = server._run_uvicorn_command

    def detached():
        real = subprocess.Popen
        subprocess.Popen = functools.partial(real, start_new_session=True)  # only for this one call
        try:
            return launch()
        finally:
            subprocess.Popen = real

    server._run_uvicorn_command = detached
    server._stylize_detached = True


_guards: list[subprocess.Popen] = []


def guard_ephemeral_server() -> int | None:
    """Start the watcher for this process's ephemeral Prefect server; returns the server's PID, or ``None``
    when there is none (``PREFECT_API_URL`` set) or no ``/proc``."""
    server_module = sys.modules.get("prefect.server.api.server")
    if server_module is None:  # never imported: no ephemeral server was started
        return None
    SubprocessASGIServer = server_module.SubprocessASGIServer

    proc = SubprocessASGIServer().server_process  # the singleton the Prefect client started, if any
    if proc is None or proc.poll() is not None:
        return None
    started = process_start_time(proc.pid)
    if started is None:
        return None
    watcher = subprocess.Popen([sys.executable, "-m", "stylize_cli.server_guard", str(proc.pid), started],
                               stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    _guards.append(watcher)  # its stdin stays open (never written) for the life of this process
    return proc.pid


__all__ = ["detach_ephemeral_server", "guard_ephemeral_server", "process_start_time", "watch"]

if __name__ == "__main__":
    watch(int(sys.argv[1]), sys.argv[2])
