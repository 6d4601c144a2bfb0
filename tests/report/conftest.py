"""Fixtures for the report area: one quality evaluator per test session (the network is built once)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def evaluator():
    from stylecore.quality import get_evaluator

    return get_evaluator("random:0", device="cpu")  # the default size, shared with the flow test


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server over HTTP on 127.0.0.1 with one bucket; yields the bucket name. AWS_* point at it."""
    import os

    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"]).create_bucket(Bucket="report-bucket")
    try:
        from stylecore import storage

        storage.reset_client()
    except (ImportError, AttributeError):
        pass
    yield "report-bucket"
    server.stop()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
