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


# ---- S3Process: moto in its own process, which can go away mid-transfer and come back with what it stored
class S3Process:
    """moto's S3 in a child process (`python tests/s3server.py`), bucket BUCKET already made.

        server = S3Process(auth=True).start()   # auth: real IAM checks (moto's INITIAL_NO_AUTH_ACTION_COUNT)
        server.endpoint, server.key, server.secret, server.client()
        server.down_after(12)   # armed: once 12 objects are stored, stop listening and cut every connection
        server.wait_down()      # -> how many objects it had when it went down
        server.up()             # listen again on the same port; the stored objects are still there
        server.stop()

    Going down keeps the process (and moto's in-memory objects): the listening socket is closed and every
    open connection is shut, so a client sees refused/reset connections, as from a store that went away.
    An upload cut mid-body is not stored (moto, like S3, stores an object only once its body is whole).
    """

    def __init__(self, auth: bool = False):
        self.auth = auth
        self.proc = None
        self.endpoint = self.key = self.secret = ""

    def start(self) -> "S3Process":
        import json
        import os
        cmd = [sys.executable, __file__, "--auth"] if self.auth else [sys.executable, __file__]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
                                     env={**os.environ, **AWS_ENV})
        ready = json.loads(self._read())
        self.endpoint, self.key, self.secret = ready["endpoint"], ready["key"], ready["secret"]
        return self

    def _read(self, timeout: float = 60) -> str:
        import select
        if not select.select([self.proc.stdout], [], [], timeout)[0]:
            raise TimeoutError(f"the S3 server process said nothing for {timeout} s")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the S3 server process exited ({self.proc.wait()})")
        return line.strip()

    def _say(self, command: str) -> str:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._read()

    def client(self, key: str | None = None, secret: str | None = None):
        import boto3
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=key or self.key, aws_secret_access_key=secret or self.secret)

    def env(self) -> dict:
        """The AWS variables for a client of this server (its IAM user's key when auth is on)."""
        return {**AWS_ENV, "AWS_ACCESS_KEY_ID": self.key, "AWS_SECRET_ACCESS_KEY": self.secret}

    def down_after(self, count: int) -> None:
        assert self._say(f"down-after {count}") == "armed"

    def wait_down(self, timeout: float = 5) -> int:
        reply = self._read(timeout).split()
        assert reply[0] == "down", reply
        return int(reply[1])

    def down(self) -> int:
        reply = self._say("down").split()
        assert reply[0] == "down", reply
        return int(reply[1])

    def up(self) -> None:
        assert self._say("up") == "up"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _serve(auth: bool) -> None:
    """The child of S3Process: serve moto's S3 (+IAM) on 127.0.0.1 and obey `down`/`down-after N`/`up`."""
    import json
    import socket
    import threading
    import time

    import boto3
    from moto import settings
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from moto.s3.models import s3_backends
    from werkzeug.serving import ThreadedWSGIServer

    class Server(ThreadedWSGIServer):
        """Tracks its open connections so that going down can cut them."""

        def __init__(self, *args, **kwargs):
            self.open = set()
            self.open_lock = threading.Lock()
            super().__init__(*args, **kwargs)

        def get_request(self):
            conn, addr = super().get_request()
            with self.open_lock:
                self.open.add(conn)
            return conn, addr

        def shutdown_request(self, request):
            with self.open_lock:
                self.open.discard(request)
            super().shutdown_request(request)

        def cut(self):
            self.shutdown()
            self.server_close()
            with self.open_lock:
                conns, self.open = list(self.open), set()
            for conn in conns:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    class Handler(MotoRequestHandler):
        def log_request(self, *args, **kwargs):  # no access log on stderr
            pass

    app = DomainDispatcherApplication(create_backend_app)
    state = {"server": None, "port": 0}
    lock = threading.Lock()

    def listen():
        server = Server("127.0.0.1", state["port"], app, handler=Handler)
        state["server"], state["port"] = server, server.server_address[1]
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stored() -> int:
        bucket = s3_backends[DEFAULT_ACCOUNT_ID]["aws"].buckets.get(BUCKET)
        return len(bucket.keys) if bucket else 0

    def go_down() -> int:
        with lock:
            if state["server"] is not None:
                state["server"].cut()
                state["server"] = None
            return stored()

    def watch(count: int):
        while stored() < count:
            time.sleep(0.002)
        print(f"down {go_down()}", flush=True)

    listen()
    endpoint = f"http://127.0.0.1:{state['port']}"
    key, secret = AWS_ENV["AWS_ACCESS_KEY_ID"], AWS_ENV["AWS_SECRET_ACCESS_KEY"]
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=key,
                 aws_secret_access_key=secret).create_bucket(Bucket=BUCKET)
    if auth:  # an IAM user allowed all of S3; then every request must be signed with its key
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=key,
                           aws_secret_access_key=secret)
        iam.create_user(UserName="tlpipe")
        iam.put_user_policy(UserName="tlpipe", PolicyName="s3", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        made = iam.create_access_key(UserName="tlpipe")["AccessKey"]
        key, secret = made["AccessKeyId"], made["SecretAccessKey"]
        settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    print(json.dumps({"endpoint": endpoint, "key": key, "secret": secret}), flush=True)

    for line in sys.stdin:
        command = line.split()
        if command[:1] == ["down"]:
            print(f"down {go_down()}", flush=True)
        elif command[:1] == ["down-after"]:
            threading.Thread(target=watch, args=(int(command[1]),), daemon=True).start()
            print("armed", flush=True)
        elif command[:1] == ["up"]:
            with lock:
                if state["server"] is None:
                    listen()
            print("up", flush=True)
    go_down()


if __name__ == "__main__":
    _serve("--auth" in sys.argv[1:])
