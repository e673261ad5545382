"""End to end as users run it: a real Prefect server on 127.0.0.1, the process work pool, `prefect deploy`
from the repository's own prefect.yaml, a worker, and runs of the data deployment on a fixture project
whose downloads come from the loopback HTTP server."""
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from project import serve_dir, write_mirror, write_params
from s3server import AWS_ENV, objects, s3, use_remote  # noqa: F401 (s3: a fixture)

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
# The one-DAG flow (branch issue11-prefect, flows/dag.py) runs stages through DVC and records them in
# dvc.lock; the flow before it calls the task functions directly, so DVC does not know about its runs.
ONE_DAG = (REPO / "flows" / "dag.py").is_file()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd, cwd, env, log: Path) -> subprocess.Popen:
    """A background process in its own process group (stopped by its pid's group, see stop())."""
    out = open(log, "wb")
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    """Stop a process this test started, and the children in its group, by its pid."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    else:
        try:  # the leader is gone; its children may still be there
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def tail(path: Path, n: int = 4000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else ""


def run(cmd, cwd, env, timeout=180) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


AUTH = ("tlpipe", secrets.token_hex(16))  # the server's basic-auth user:password, as production sets it


@pytest.fixture
def prefect_server(tmp_path):
    """`prefect server start` on a free loopback port with its own PREFECT_HOME and basic authentication
    on (PREFECT_SERVER_API_AUTH_STRING; the clients get PREFECT_API_AUTH_STRING); yields (api_url, env)."""
    port = free_port()
    home = tmp_path / "prefect-home"
    home.mkdir()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
           "PREFECT_SERVER_API_AUTH_STRING": ":".join(AUTH), "PREFECT_API_AUTH_STRING": ":".join(AUTH),
           "PREFECT_SERVER_API_HOST": "127.0.0.1", "PREFECT_SERVER_API_PORT": str(port),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_UI_ENABLED": "false",
           "DO_NOT_TRACK": "1", "DVC_NO_ANALYTICS": "1", "PREFECT_LOGGING_TO_API_ENABLED": "true",
           "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "5",
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("PREFECT_PROFILES_PATH", None)
    log = tmp_path / "server.log"
    server = start([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                   tmp_path, env, log)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, f"prefect server exited:\n{tail(log)}"
            assert time.monotonic() < deadline, f"prefect server not healthy after 300 s:\n{tail(log)}"
            time.sleep(0.5)
        yield env["PREFECT_API_URL"], env
    finally:
        stop(server)


@pytest.fixture
def deployed_project(tmp_path, http_server):
    """A git + DVC checkout of the project (dvc.yaml, prefect.yaml, tasks/, flows/) on fixture params."""
    repo = tmp_path / "checkout"
    repo.mkdir()
    for name in ("dvc.yaml", "prefect.yaml"):
        shutil.copy(REPO / name, repo)
    for name in ("tasks", "flows"):
        shutil.copytree(REPO / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    pins = write_mirror(tmp_path / "mirror", mat=False, idx=False)
    base = serve_dir(http_server, tmp_path / "mirror")
    write_params(repo, mirror=base, pins=pins, datasets=("mnist",))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    model_line = yaml.safe_load((REPO / "params.yaml").read_text())  # dvc.yaml's other stages must parse
    params.update({k: model_line[k] for k in ("check", "weights", "features", "teach", "models", "evaluate",
                                              "export", "report")})
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return repo


def api(url, method, path, **kw):
    for attempt in range(10):  # a busy SQLite-backed server answers 503 for a moment; ask again
        r = httpx.request(method, url + path, timeout=30, auth=AUTH, **kw)
        if r.status_code != 503:
            break
        time.sleep(1 + attempt)
    assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text}"
    return r.json()


def wait_for(url, run_id, worker, worker_log, timeout=600) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        flow_run = api(url, "GET", f"/flow_runs/{run_id}")
        if flow_run["state"]["type"] in TERMINAL:
            return flow_run
        assert worker.poll() is None, f"worker exited:\n{tail(worker_log)}"
        assert time.monotonic() < deadline, f"flow run still {flow_run['state']['type']}:\n{tail(worker_log)}"
        time.sleep(1)


def logs_of(url, run_id) -> str:
    """Every log line of a flow run, oldest first (the API answers at most 200 rows a page)."""
    rows, page = [], 200
    while True:
        got = api(url, "POST", "/logs/filter", json={"logs": {"flow_run_id": {"any_": [run_id]}},
                                                     "sort": "TIMESTAMP_ASC", "limit": page, "offset": len(rows)})
        rows += got
        if len(got) < page:
            return "\n".join(r["message"] for r in rows)


def wait_for_log(url, run_id, *texts, timeout=60) -> str:
    """The run's logs once they contain every one of `texts` (or at the timeout): a finished run's last
    lines reach the API after its state does (its process sends logs in batches, the last as it exits)."""
    deadline = time.monotonic() + timeout
    while True:
        logs = logs_of(url, run_id)
        if all(t in logs for t in texts) or time.monotonic() > deadline:
            return logs
        time.sleep(1)


def outputs(repo: Path) -> dict:
    return {p.relative_to(repo).as_posix(): p.stat().st_mtime_ns
            for d in ("data/raw/mnist", "data/processed/mnist") for p in sorted((repo / d).rglob("*")) if p.is_file()}


def test_deploy_from_prefect_yaml_and_run_on_a_process_worker(prefect_server, deployed_project, http_server,
                                                               s3, tmp_path):
    url, env = prefect_server
    endpoint, client = s3
    repo = deployed_project
    env = {**env, **AWS_ENV, "PWD": str(repo)}  # PWD: what a shell sets after `cd checkout`
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        run(cmd, repo, env)
    shutil.copy(REPO / ".dvc" / "config", repo / ".dvc" / "config")  # the project's default remote ...
    use_remote(repo, endpoint, env)  # ... pointed at the test's bucket
    prefect = str(BIN / "prefect")
    # authentication is on: a client without the string (or with a wrong one) is refused
    assert httpx.get(f"{url}/flows/", timeout=30).status_code == 401
    assert httpx.get(f"{url}/flows/", timeout=30, auth=(AUTH[0], "wrong")).status_code == 401
    anonymous = {k: v for k, v in env.items() if k != "PREFECT_API_AUTH_STRING"}
    refused = subprocess.run([prefect, "work-pool", "ls"], cwd=repo, env=anonymous, capture_output=True,
                             text=True, timeout=120)
    assert refused.returncode != 0 and "401" in refused.stdout + refused.stderr, refused.stdout + refused.stderr
    run([prefect, "work-pool", "create", "tlpipe-process", "--type", "process"], repo, env)
    done = subprocess.run([prefect, "--no-prompt", "deploy", "--name", "tlpipe-data"], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=180)
    out = done.stdout + done.stderr
    assert "Deployment 'tlpipe-pipeline/tlpipe-data' successfully created" in out, out
    if done.returncode != 0:
        # prefect 3.8.8 with our fastapi pin (0.154): after creating the deployment, `prefect deploy`
        # asks for the pool's online workers with `"limit": null`, which this FastAPI rejects (422);
        # `tlpipe deploy` runs the same command with that one request fixed (flows/compat.py).
        assert "workers/filter" in out and "422" in out, out
    out = run([str(BIN / "tlpipe"), "deploy", "--name", "tlpipe-all"], repo, env)  # the same, exit 0
    assert "Deployment 'tlpipe-pipeline/tlpipe-all' successfully created" in out
    assert api(url, "GET", "/deployments/name/tlpipe-pipeline/tlpipe-all")["parameters"] == {"models": True}

    deployment = api(url, "GET", "/deployments/name/tlpipe-pipeline/tlpipe-data")
    assert deployment["work_pool_name"] == "tlpipe-process"
    assert deployment["entrypoint"] == "flows/deploy.py:pipeline"
    assert deployment["pull_steps"] == [{"prefect.deployments.steps.set_working_directory": {"directory": str(repo)}}]
    [schedule] = deployment["schedules"]
    assert schedule["schedule"]["cron"] == "0 3 * * *" and schedule["schedule"]["timezone"] == "Europe/Berlin"
    assert schedule["active"] is True

    worker_log = tmp_path / "worker.log"
    worker = start([prefect, "worker", "start", "--pool", "tlpipe-process", "--limit", "1"], tmp_path, env, worker_log)
    try:
        first = api(url, "POST", f"/deployments/{deployment['id']}/create_flow_run", json={})
        done = wait_for(url, first["id"], worker, worker_log)
        assert done["state"]["type"] == "COMPLETED", f"{done['state']}\n{logs_of(url, first['id'])}\n{tail(worker_log)}"
        manifest = json.loads((repo / "data/processed/mnist/manifest.json").read_text())
        assert manifest["splits"]["test"]["count"] == 30
        assert all((repo / "data/processed/mnist" / s["file"]).is_file()
                   for split in manifest["splits"].values() for s in split["shards"])
        pushed = "dvc push to storage (s3://"  # logged by the run as it pushes, after the pipeline
        assert pushed in wait_for_log(url, first["id"], pushed)
        fetched = len(http_server.requests)
        assert fetched > 0
        before = outputs(repo)

        second = api(url, "POST", f"/deployments/{deployment['id']}/create_flow_run", json={})
        done = wait_for(url, second["id"], worker, worker_log)
        assert done["state"]["type"] == "COMPLETED", f"{done['state']}\n{logs_of(url, second['id'])}"
        refetched = len(http_server.requests) - fetched
    finally:
        stop(worker)

    status = subprocess.run([str(BIN / "dvc"), "status", "fetch", "prepare"], cwd=repo, env=env,
                            capture_output=True, text=True)
    if not ONE_DAG:
        # Needs the one-DAG flow (branch issue11-prefect: stages run through DVC and recorded in
        # dvc.lock); with the flow on this branch DVC has no record of the runs and the second run
        # downloads and rewrites everything again.
        pytest.xfail("dvc status / no-op second run need the one-DAG flow of branch issue11-prefect")
    assert status.returncode == 0 and "Data and pipelines are up to date" in status.stdout, status.stdout
    assert refetched == 0, f"the second run downloaded {refetched} files again"
    keys = {o["Key"] for o in objects(client)}
    assert len(keys) >= 5, f"the run's outputs were not pushed: {sorted(keys)}"  # raw files, shards, manifest
    assert outputs(repo) == before, "the second run rewrote outputs"
