"""Faults around the runner, part 3: the DVC remote fails. A fixture pipeline with several cached files
(16 shards in a directory and a model file, from one `dvc repro`) is pushed to moto's S3 running in its
own process (tests/s3server.py `S3Process`) through the project's own .dvc/config:

- the store goes away in the middle of `dvc push` (stops listening, every open connection cut) and comes
  back on the same port with what it had stored: the push fails saying so, the store holds only whole
  objects, and a second `dvc push` completes it (a fresh clone pulls everything, `dvc status` clean);
- one byte of one stored object flipped: `dvc pull` fails naming the output, and no corrupt copy reaches
  the workspace or the clone's cache (the remote's `verify = true` in .dvc/config);
- a wrong access key, a wrong secret, no credentials, a wrong bucket: what `dvc push`/`dvc pull` say, and
  `tlpipe check-remote`'s one line saying which, never with the secret in it.
"""
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from s3server import BUCKET, S3Process

pytest.importorskip("moto.server")

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SHARDS, SIZE = 16, 200_000
MAKE = f"""import os, random
rng = random.Random(0)
os.makedirs("shards", exist_ok=True)
for i in range({SHARDS}):
    with open(f"shards/part-{{i:03d}}.bin", "wb") as f:
        f.write(rng.randbytes({SIZE}))
with open("model.bin", "wb") as f:
    f.write(rng.randbytes({SIZE}))
"""
NO_FILE = Path(tempfile.gettempdir()) / "tlpipe-test-no-such-aws-file"
DVC_YAML = "stages:\n  make:\n    cmd: python make.py\n    deps: [make.py]\n    outs: [shards, model.bin]\n"


def base_env() -> dict:
    """No AWS setting of this machine's user leaks in (profiles, tokens, the instance metadata service)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return {**env, "DVC_NO_ANALYTICS": "1", "DO_NOT_TRACK": "1", "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            "AWS_CONFIG_FILE": str(NO_FILE), "AWS_SHARED_CREDENTIALS_FILE": str(NO_FILE),
            "AWS_EC2_METADATA_DISABLED": "true", "AWS_DEFAULT_REGION": "us-east-1",
            "PYTHONPATH": str(REPO),  # `tlpipe` from this worktree
            "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}


def run(cmd, cwd, env, ok=True, timeout=180) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if ok:
        assert done.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A committed DVC project, already reproduced: its cache holds 16 shards, their .dir and model.bin."""
    repo = tmp_path_factory.mktemp("template") / "repo"
    repo.mkdir()
    env = base_env()
    (repo / "make.py").write_text(MAKE)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    run(["git", "init", "-q"], repo, env)
    run([BIN / "dvc", "init", "-q"], repo, env)
    shutil.copy(REPO / ".dvc" / "config", repo / ".dvc" / "config")  # the project's remote `storage`
    run([BIN / "dvc", "repro", "-q"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-q", "-m", "fixture run"], repo, env)
    return repo


@pytest.fixture
def repo(template, tmp_path) -> Path:
    copy = tmp_path / "repo"
    shutil.copytree(template, copy, symlinks=True)
    return copy


@pytest.fixture
def server():
    started = []

    def start(auth=False) -> S3Process:
        started.append(S3Process(auth=auth).start())
        return started[-1]

    yield start
    for s in started:
        s.stop()


def use_remote(repo: Path, endpoint: str, bucket: str = BUCKET) -> None:
    """`dvc remote modify --local storage url s3://BUCKET/dvc` and `... endpointurl ENDPOINT`, written
    directly (as DVC writes them) to save two DVC start-ups per checkout."""
    (repo / ".dvc" / "config.local").write_text(
        f"['remote \"storage\"']\n    url = s3://{bucket}/dvc\n    endpointurl = {endpoint}\n")


def cached(repo: Path) -> dict[str, bytes]:
    """{hash: bytes} of every object in the project's cache (what a complete remote holds)."""
    root = repo / ".dvc" / "cache" / "files" / "md5"
    return {p.parent.name + p.name: p.read_bytes() for p in root.rglob("*") if p.is_file()}


def stored(client) -> dict[str, bytes]:
    """{hash: bytes} of every object in the bucket under dvc/files/md5/."""
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    return {"".join(k.split("/")[-2:]): client.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in keys}


def key_of(oid: str) -> str:
    return f"dvc/files/md5/{oid[:2]}/{oid[2:]}"


def lock_outs(repo: Path) -> dict[str, str]:
    return {o["path"]: o["md5"] for o in yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["make"]["outs"]}


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def fresh_clone(repo: Path, tmp_path: Path, endpoint: str, env: dict, name="clone") -> Path:
    clone = tmp_path / name
    run(["git", "clone", "-q", repo, clone], tmp_path, env)
    use_remote(clone, endpoint)
    return clone


def assert_pulled_whole(clone: Path, repo: Path, env: dict) -> None:
    for path in ["model.bin", *(f"shards/part-{i:03d}.bin" for i in range(SHARDS))]:
        assert (clone / path).read_bytes() == (repo / path).read_bytes(), path
    status = run([BIN / "dvc", "status"], clone, env).stdout
    assert "Data and pipelines are up to date" in status, status


def test_push_cut_off_midway_fails_clearly_and_a_second_push_completes_the_remote(repo, server, tmp_path):
    s3 = server()
    env = {**base_env(), **s3.env()}
    use_remote(repo, s3.endpoint)
    want = cached(repo)
    assert len(want) == SHARDS + 2  # the shards, their .dir, model.bin

    s3.down_after(5)  # once 5 objects are stored: stop listening and cut every open connection
    push = run([BIN / "dvc", "push"], repo, env, ok=False)  # retries each object for ~20 s, then fails
    out = push.stdout + push.stderr
    try:
        had = s3.wait_down()
    except TimeoutError:
        pytest.fail(f"the push ended before the store went down:\n{out}")
    assert push.returncode != 0, out
    assert f'Could not connect to the endpoint URL: "{s3.endpoint}/' in out, out
    failed = re.findall(r"ERROR: failed to push data to the cloud - (\d+) files? failed to upload", out)
    assert failed, out

    s3.up()  # back on the same port, with what it had stored
    client = s3.client()
    left = stored(client)
    assert 5 <= had <= len(left) < len(want), (had, len(left), out)  # really in the middle
    missing = len(want) - len(left)
    # each object the push did not store is counted as failed (and an upload whose body had arrived
    # when the connection was cut may be stored, yet counted as failed: the answer never came back)
    assert missing <= int(failed[0]) <= len(want), (missing, failed, had)
    for oid, data in left.items():  # only whole objects: an upload cut mid-body was not stored
        assert data == want[oid] and md5(data) == oid.removesuffix(".dir"), oid
    dir_oid = lock_outs(repo)["shards"].removesuffix(".dir")
    if dir_oid + ".dir" in left:  # DVC uploads a directory's listing only after all its files
        assert all(e["md5"] in left for e in json.loads(left[dir_oid + ".dir"])), "a .dir without its files"

    again = run([BIN / "dvc", "push"], repo, env)
    assert f"{missing} files pushed" in again.stdout, again.stdout
    assert stored(client) == want

    clone = fresh_clone(repo, tmp_path, s3.endpoint, env)
    run([BIN / "dvc", "pull"], clone, env)
    assert_pulled_whole(clone, repo, env)


def test_a_corrupted_object_is_refused_by_pull_and_never_reaches_the_workspace(repo, server, tmp_path):
    s3 = server()
    env = {**base_env(), **s3.env()}
    assert "verify = true" in (REPO / ".dvc" / "config").read_text()  # what makes DVC check downloads
    use_remote(repo, s3.endpoint)
    run([BIN / "dvc", "push"], repo, env)
    client = s3.client()
    outs = lock_outs(repo)
    listing = json.loads(client.get_object(Bucket=BUCKET, Key=key_of(outs["shards"]))["Body"].read())
    bad = {"model.bin": outs["model.bin"], "shards/part-003.bin": listing[3]["md5"]}
    for oid in bad.values():  # flip one byte of the stored object
        body = bytearray(client.get_object(Bucket=BUCKET, Key=key_of(oid))["Body"].read())
        body[1000] ^= 0x01
        client.put_object(Bucket=BUCKET, Key=key_of(oid), Body=bytes(body))

    clone = fresh_clone(repo, tmp_path, s3.endpoint, env)
    pull = run([BIN / "dvc", "pull"], clone, env, ok=False)
    out = pull.stdout + pull.stderr
    assert pull.returncode != 0, out
    assert "ERROR: failed to pull data from the cloud - Checkout failed for following targets:" in out, out
    assert "model.bin" in pull.stderr and "shards" in pull.stderr, out  # the outputs it could not check out
    # No corrupt copy anywhere: what is in the workspace or the clone's cache matches dvc.lock
    assert not (clone / "model.bin").exists()
    shards = {e["relpath"]: e["md5"] for e in listing}
    for path in (clone / "shards").glob("*") if (clone / "shards").exists() else []:
        assert md5(path.read_bytes()) == shards[path.name], path
    for oid, data in cached(clone).items():
        assert md5(data) == oid.removesuffix(".dir"), f"a corrupt object in the clone's cache: {oid}"
    assert not set(bad.values()) & set(cached(clone))
    status = run([BIN / "dvc", "status"], clone, env).stdout
    assert "not in cache" in status and "model.bin" in status, status

    verbose = run([BIN / "dvc", "pull", "-v"], clone, env, ok=False)  # names the objects
    for oid in bad.values():
        assert f"corrupted cache file '{clone / '.dvc/cache/files/md5' / oid[:2] / oid[2:]}'" in verbose.stderr \
            + verbose.stdout, oid

    # The remedy: remove the bad objects from the store, and the listing (.dir) of the directory that holds
    # one (DVC takes a stored .dir to mean all its files are stored), then push again from a good cache
    for oid in [*bad.values(), outs["shards"]]:
        client.delete_object(Bucket=BUCKET, Key=key_of(oid))
    assert "3 files pushed" in run([BIN / "dvc", "push"], repo, env).stdout
    run([BIN / "dvc", "pull"], clone, env)
    assert_pulled_whole(clone, repo, env)


def test_a_wrong_credential_or_bucket_is_said_in_one_line_without_the_secret(repo, server, tmp_path):
    s3 = server(auth=True)  # moto with IAM checks: only its user's key and secret are accepted
    good = {**base_env(), **s3.env()}
    use_remote(repo, s3.endpoint)
    wrong_secret = "Wr0ngSecretKeyWr0ngSecretKeyWr0ngSecret0"

    def check(env, cwd=repo) -> str:
        done = run([BIN / "tlpipe", "check-remote"], cwd, env, ok=False)
        assert wrong_secret not in done.stdout + done.stderr and s3.secret not in done.stdout + done.stderr
        assert done.returncode == 1 and not done.stdout, done.stdout + done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("tlpipe check-remote: error: remote 'storage' "), done.stderr
        return lines[0]

    ok = run([BIN / "tlpipe", "check-remote"], repo, good)
    assert ok.stdout.strip() == (f"remote 'storage' (s3://{BUCKET}/dvc at {s3.endpoint}): reachable, "
                                 "the credentials are accepted"), ok.stdout + ok.stderr

    # A wrong secret: DVC says 403 Forbidden (its first request is a HEAD: no error code), not which part
    bad = {**good, "AWS_SECRET_ACCESS_KEY": wrong_secret}
    push = run([BIN / "dvc", "push"], repo, bad, ok=False)
    assert push.returncode != 0 and "Forbidden" in push.stderr and "403" in push.stderr, push.stderr
    assert wrong_secret not in push.stdout + push.stderr and s3.secret not in push.stdout + push.stderr
    assert "the secret key does not match the access key id" in check(bad)

    # An access key id the store does not know
    bad = {**good, "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE", "AWS_SECRET_ACCESS_KEY": wrong_secret}
    clone = fresh_clone(repo, tmp_path, s3.endpoint, good)
    pull = run([BIN / "dvc", "pull"], clone, bad, ok=False)
    assert pull.returncode != 0 and "Forbidden" in pull.stderr, pull.stderr
    assert wrong_secret not in pull.stdout + pull.stderr and s3.secret not in pull.stdout + pull.stderr
    assert not (clone / "model.bin").exists()
    assert "the store does not know the access key id" in check(bad, clone)

    # No credentials at all
    none = {k: v for k, v in good.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    assert "no AWS credentials found" in check(none, clone)

    # A bucket that does not exist: DVC lists the remote here (a directory output) and says so, as an
    # "unexpected error"; a pull of single files only would say "Missing cache files" instead
    use_remote(clone, s3.endpoint, bucket="no-such-bucket")
    pull = run([BIN / "dvc", "pull"], clone, good, ok=False)
    assert pull.returncode != 0 and "The specified bucket does not exist" in pull.stderr, pull.stderr
    line = check(good, clone)
    assert "the bucket 'no-such-bucket' does not exist" in line and s3.endpoint in line, line
