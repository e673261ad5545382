"""An S3 server for DVC remote tests: moto's ThreadedMotoServer on a free loopback port.

    from s3server import s3, use_remote   # the fixture and the `dvc remote modify --local` helper
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BUCKET = "tlpipe-test"
BIN = Path(sys.executable).parent
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture
def s3():
    """An empty bucket BUCKET on moto's S3 at 127.0.0.1; yields (endpoint, boto3 client)."""
    moto_server = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        client.create_bucket(Bucket=BUCKET)
        yield endpoint, client
    finally:
        server.stop()


def use_remote(repo: Path, endpoint: str, env: dict) -> None:
    """What a user does once per checkout: point the committed default remote `storage` at a bucket."""
    for args in (["url", f"s3://{BUCKET}/dvc"], ["endpointurl", endpoint]):
        done = subprocess.run([str(BIN / "dvc"), "remote", "modify", "--local", "storage", *args], cwd=repo,
                              env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


def objects(client) -> list[dict]:
    return client.list_objects_v2(Bucket=BUCKET).get("Contents", [])
