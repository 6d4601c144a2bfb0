"""A real S3-compatible HTTP server for tests: moto's server mode on 127.0.0.1, reached through boto3
over HTTP with dummy credentials and ``AWS_ENDPOINT_URL_S3`` (boto3 is never patched).

Registered in tests/conftest.py with ``pytest_plugins``. Fixtures:

- ``s3_server`` (session): starts the server and points the environment at it.
- ``s3`` (function): ``s3.bucket()`` creates a fresh bucket (one per test), ``s3.client`` is a direct
  boto3 client for checks, ``s3.endpoint`` the server URL.
- ``s3_proxy`` (function): a TCP proxy between stylecore and the server that records request lines
  (``proxy.requests``) and can ``freeze()`` (stop answering, as a hung endpoint does); while it is in
  use stylecore talks through it with 1 s timeouts and 2 attempts, so outages fail within seconds.
"""
from __future__ import annotations

import itertools
import logging
import os
import re
import socket
import threading

import pytest

DUMMY_KEY_ID = "AKIATESTDUMMYKEY0001"
DUMMY_SECRET = "dummy-secret-Zq8RvX2mT5"
_counter = itertools.count()
_REQUEST_LINE = re.compile(rb"(?:GET|HEAD|PUT|POST|DELETE) \S+ HTTP/1\.1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        import boto3

        self.client = boto3.session.Session().client(
            "s3", endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id=DUMMY_KEY_ID, aws_secret_access_key=DUMMY_SECRET)

    def bucket(self, prefix: str = "test") -> str:
        """Create a new, uniquely named bucket and return its name."""
        name = f"{prefix}-{os.getpid()}-{next(_counter)}".lower()
        self.client.create_bucket(Bucket=name)
        return name

    def put(self, bucket: str, key: str, data: bytes) -> str:
        self.client.put_object(Bucket=bucket, Key=key, Body=data)
        return f"s3://{bucket}/{key}"

    def get(self, bucket: str, key: str) -> bytes:
        return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        out = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            out.extend(o["Key"] for o in page.get("Contents", ()))
        return out


@pytest.fixture(scope="session")
def s3_server():
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ENDPOINT_URL_S3": endpoint, "AWS_ACCESS_KEY_ID": DUMMY_KEY_ID,
           "AWS_SECRET_ACCESS_KEY": DUMMY_SECRET, "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in [*env, "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"]}
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        os.environ.pop(k, None)
    os.environ.update(env)
    from stylecore import storage

    storage.reset_client()
    try:
        yield S3Server(endpoint)
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        storage.reset_client()


@pytest.fixture
def s3(s3_server):
    return s3_server


class FreezableProxy:
    """Forwards TCP connections to ``target``; after ``freeze()`` it drops live connections and accepts
    new ones without ever answering (a server that stopped responding)."""

    def __init__(self, target_port: int):
        self.target = ("127.0.0.1", target_port)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        self.frozen = threading.Event()
        self.closed = threading.Event()
        self.live: set[socket.socket] = set()
        self.held: list[socket.socket] = []
        self.lock = threading.Lock()
        self.requests: list[str] = []  # request lines seen (list.extend is atomic under the GIL)
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self):
        while not self.closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.frozen.is_set():
                with self.lock:
                    self.held.append(conn)  # accepted, never read, never answered
                continue
            try:
                up = socket.create_connection(self.target)
            except OSError:
                conn.close()
                continue
            with self.lock:
                self.live.update((conn, up))
            threading.Thread(target=self._pump, args=(conn, up, self.requests), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, conn), daemon=True).start()

    def _pump(self, src, dst, requests: list | None = None):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if requests is not None:  # client → server: note each request line ("HEAD /b/k HTTP/1.1")
                    requests.extend(m.group(0).decode("latin-1") for m in _REQUEST_LINE.finditer(data))
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def freeze(self):
        self.frozen.set()
        with self.lock:
            live, self.live = list(self.live), set()
        for s in live:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass

    def close(self):
        self.closed.set()
        self.freeze()
        self.sock.close()
        with self.lock:
            for s in self.held:
                s.close()


@pytest.fixture
def s3_proxy(s3_server, monkeypatch):
    from stylecore import storage

    port = int(s3_server.endpoint.rsplit(":", 1)[1])
    proxy = FreezableProxy(port)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
    storage.configure(connect_timeout=1.0, read_timeout=1.0, max_attempts=2)
    try:
        yield proxy
    finally:
        proxy.close()
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.endpoint)
        storage.configure()
