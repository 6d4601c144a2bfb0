"""The ``prefect_server`` fixture: one real ``prefect server start`` (SQLite, temporary PREFECT_HOME, free port)
per test session, shared by every test that runs a flow (a server start costs ~15-25 s), and process workers."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PREFECT = str(Path(sys.executable).with_name("prefect"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PrefectServer:
    url: str
    env: dict
    home: Path

    def cli(self, *args: str, timeout: float = 180, cwd=ROOT) -> subprocess.CompletedProcess:
        """Run the ``prefect`` CLI against this server."""
        return subprocess.run([PREFECT, *args], env=self.env, cwd=cwd, capture_output=True, text=True, timeout=timeout)

    def start_worker(self, pool: str, name: str, log: Path, *, limit: int | None = 1) -> subprocess.Popen:
        """Start ``prefect worker start --pool POOL`` (a process worker) in its own process group."""
        env = dict(self.env, STYLIZE_WORKER_NAME=name, PREFECT_WORKER_QUERY_SECONDS="1",
                   PREFECT_WORKER_PREFETCH_SECONDS="1", OMP_NUM_THREADS="1")
        args = [PREFECT, "worker", "start", "--pool", pool, "--name", name]
        if limit:
            args += ["--limit", str(limit)]
        return subprocess.Popen(args, env=env, cwd=ROOT, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                                start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    """Stop a process started by a fixture, and its children (its own process group)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """A real Prefect server for this test session; the test process and subprocesses use it."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    env = dict(os.environ, PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
               PREFECT_UI_ENABLED="false", PREFECT_LOGGING_LEVEL="INFO")
    env.pop("PREFECT_API_URL", None)
    log = home / "server.log"
    proc = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env,
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            pytest.fail(f"prefect server did not start: {log.read_text()[-2000:]}")
        time.sleep(0.3)
    env["PREFECT_API_URL"] = url
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield PrefectServer(url, env, home)
            from prefect.logging.handlers import APILogWorker

            APILogWorker.drain_all(timeout=5)  # send this process's buffered run logs before the server stops
    finally:
        stop(proc)


