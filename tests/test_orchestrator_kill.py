"""The orchestrator dies (issue 22, part 1): SIGKILL, by PID, of `tlpipe pipeline` (its ephemeral Prefect
API) and of a process-pool worker running the pipeline deployment, while a train stage is mid-epoch.

Then the next run finishes; the stages that had finished are not run again (their dvc.lock entries and
output files untouched); the killed training resumes from its backup; `dvc status` is clean; the
server shows the killed flow run as Crashed (not Running forever), naming the dead PID; no process of
the killed tree is left, and no temp dir of ours (`.tmp-*`) either. What the fixes are: flows/runs.py.

The fixture is a DVC project of this repository's dvc.yaml and tasks/ with MNIST-format files and
one tiny CNN recipe (2 epochs); its copy of tasks/fit sleeps after every batch when
$TLPIPE_TEST_BATCH_SLEEP is set, so an epoch lasts seconds and "mid-epoch" is a state, not a race:
the kill comes half a second after the backup of epoch 1 appears, i.e. inside epoch 2 of 2.

The two end-to-end kills are marked slow (about 2 min each on a loaded 2-core machine: two Prefect
server starts and three TensorFlow starts each); three fast tests of the parts run by default.
"""
import json
import os
import re
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

from dvcproject import init_dvc_project
from project import mnist_mirror_params
from test_deploy import api, prefect_server, start, stop, tail  # noqa: F401 (prefect_server: a fixture)

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RECIPE = {"dataset": "mnist", "init": "tasks/cnn/models.py", "trainer": "tasks/cnn",
          "arch": "lecture_conv_pool_dense", "epochs": 2, "batch_size": 8, "seed": 1, "patience": 2,
          "min_accuracy": 0.0}
TARGET = "train@tiny"
FINISHED = ("fetch@mnist", "prepare@mnist", "check@mnist")  # done before the kill
SLOW = 0.3  # seconds of sleep after every training batch
SLOW_FIT = '''

# ---- tests/test_orchestrator_kill.py: every batch sleeps, so that a kill lands mid-epoch
import os as _os
import time as _time

_SLEEP = float(_os.environ.get("TLPIPE_TEST_BATCH_SLEEP") or 0)
if _SLEEP:
    class _Slow(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            _time.sleep(_SLEEP)

    _callbacks = CrashSafeBackup.callbacks
    CrashSafeBackup.callbacks = lambda self, inner: _callbacks(self, [*inner, _Slow()])
'''


@pytest.fixture
def project(tmp_path):
    """The fixture project (also a checkout a process worker can run: flows/ is there too)."""
    root = tmp_path / "proj"
    params = mnist_mirror_params(tmp_path, root)
    params.update({"models": {"tiny": RECIPE}, "check": {"mnist": {}}, "weights": {}, "features": {}, "teach": {},
                   "report": {}})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    init_dvc_project(root)
    fit = root / "tasks" / "fit" / "__init__.py"
    fit.write_text(fit.read_text() + SLOW_FIT)
    shutil.copytree(REPO / "flows", root / "flows", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "tmp").mkdir()
    return root


def run_env(tmp_path, base: dict | None = None, **extra) -> dict:
    """`base` (default: this environment) for the runs: the slow batches, $TMPDIR in the test's dir."""
    env = {**(base or os.environ), "DO_NOT_TRACK": "1", "DVC_NO_ANALYTICS": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "TLPIPE_TEST_BATCH_SLEEP": str(SLOW),
           "TMPDIR": str(tmp_path / "tmp"),  # what the killed processes leave there is checked
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **extra}
    for name in ("TLPIPE_MIRROR", "TLPIPE_DASK", "PREFECT_PROFILES_PATH"):
        env.pop(name, None)
    return env


# ---------------------------------------------------------------- processes, through /proc


def descendants(pid: int) -> set[int]:
    """`pid` and every process below it now."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        if p not in found:
            found.add(p)
            todo.extend(children.get(p, []))
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    """A process that exists and is not a zombie (dead, waiting to be reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def gone_within(pids, seconds: float) -> list[str]:
    """Wait up to `seconds` for `pids` to end; the command lines of those still alive."""
    deadline = time.monotonic() + seconds
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return [f"{p}: {cmdline(p)}" for p in pids if alive(p)]


# ---------------------------------------------------------------- the project's state


def wait_mid_epoch(root: Path, running, log: Path, timeout: float = 600) -> None:
    """Until the backup holds epoch 1 (of 2), plus half a second: epoch 2 is in progress."""
    meta = root / "models" / "tiny" / "backup" / "training_metadata.json"
    deadline = time.monotonic() + timeout
    while True:
        try:
            if json.loads(meta.read_text())["epoch"] >= 1:
                break
        except (OSError, ValueError, KeyError):
            pass
        assert running(), f"the run ended before its training was mid-epoch:\n{tail(log)}"
        assert time.monotonic() < deadline, f"no backup of epoch 1 after {timeout} s:\n{tail(log)}"
        time.sleep(0.1)
    time.sleep(0.5)
    assert json.loads(meta.read_text())["epoch"] == 1 and not (root / "models" / "tiny" / "train.json").exists()


def finished_state(root: Path) -> tuple[dict, dict]:
    """The dvc.lock entries of the stages that had finished, and the mtimes of their output files."""
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    mtimes = {p.relative_to(root).as_posix(): p.stat().st_mtime_ns
              for d in ("data/raw/mnist", "data/processed/mnist") for p in sorted((root / d).rglob("*"))}
    return {name: lock[name] for name in FINISHED}, mtimes


def temp_leftovers(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if ".tmp-" in p.name)


def assert_resumed_and_clean(root: Path, before: tuple[dict, dict], env: dict) -> None:
    after = finished_state(root)
    assert after[0] == before[0], "the stages that had finished were recorded again"
    assert after[1] == before[1], "the stages that had finished rewrote their outputs"
    summary = json.loads((root / "models" / "tiny" / "train.json").read_text())
    assert summary["resumed"] is True and summary["epochs_run"] == 2, summary
    history = json.loads((root / "models" / "tiny" / "history.json").read_text())
    assert [row["epoch"] for row in history] == [0, 1]
    assert not (root / "models" / "tiny" / "backup").exists()  # deleted once the model was read back
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    assert lock["schema"] == "2.0" and TARGET in lock["stages"]
    status = subprocess.run([str(BIN / "dvc"), "status", TARGET, "--with-deps"], cwd=root, env=env,
                            capture_output=True, text=True, timeout=300)
    assert status.returncode == 0 and "Data and pipelines are up to date" in status.stdout, \
        status.stdout + status.stderr
    rwlock = root / ".dvc" / "tmp" / "rwlock"
    if rwlock.exists():  # DVC's read/write locks: none left, the killed run's included
        held = json.loads(rwlock.read_text())
        assert not held.get("read") and not held.get("write"), held
    assert temp_leftovers(root) == []


def result_of(output: str) -> dict:
    """The JSON `tlpipe pipeline` prints last."""
    return json.JSONDecoder().raw_decode(output[output.rindex("\n{\n") + 1:])[0]


# ---------------------------------------------------------------- the parts, fast (default suite)

PARENT = """
import subprocess, sys, threading, time
from flows.runs import dies_with_parent

def start():  # from a thread that waits for its child, as flows/dag.py runs a stage's command
    sleep = [sys.executable, "-c", "import time; time.sleep(120)"]
    child = subprocess.Popen(sleep, preexec_fn=dies_with_parent())
    plain = subprocess.Popen(sleep)
    open(sys.argv[1], "w").write(f"{child.pid} {plain.pid}")
    child.wait()

threading.Thread(target=start).start()
time.sleep(120)
"""


def test_a_child_started_with_dies_with_parent_ends_with_its_killed_parent(tmp_path):
    pids = tmp_path / "pids"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(pids)], cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 60
        while not pids.exists() or not pids.read_text():
            assert parent.poll() is None and time.monotonic() < deadline, "the parent did not start its children"
            time.sleep(0.05)
        child, plain = map(int, pids.read_text().split())
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        assert gone_within([child], 10) == []
        assert alive(plain)  # what a plain Popen does: the child runs on, an orphan
    finally:
        for pid in (parent.pid, *map(int, (pids.read_text().split() if pids.exists() else []))):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_dead_processes_are_dropped_from_dvcs_read_write_locks(tmp_path):
    from dvc.repo import Repo

    from flows import runs

    Repo.init(str(tmp_path), no_scm=True).close()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    me = {"pid": os.getpid(), "cmd": "tlpipe pipeline: train@tiny"}
    dead = {"pid": gone.pid, "cmd": "tlpipe pipeline: train@old"}
    lock = tmp_path / ".dvc" / "tmp" / "rwlock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps({"read": {"/p/data": [dead, me], "/p/tasks": [dead]},
                                "write": {"/p/models/old": dead, "/p/models/tiny": me}}))
    assert runs.prune_rwlock(tmp_path) == [gone.pid]
    assert json.loads(lock.read_text()) == {"read": {"/p/data": [me]}, "write": {"/p/models/tiny": me}}


def test_a_run_marks_crashed_the_running_runs_whose_process_is_gone(prefect_harness):
    import psutil
    from prefect import flow, task
    from prefect.client.orchestration import get_client
    from prefect.states import Completed, Running

    from flows import runs

    @flow(name="tlpipe-pipeline")
    def pipeline():
        runs.claim()
        return runs.reap()

    @task(name="train")
    def train():
        pass

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    host, me = socket.gethostname(), psutil.Process()
    labels = {"dead": {runs.HOST: host, runs.PID: gone.pid, runs.STARTED: me.create_time()},
              "reused": {runs.HOST: host, runs.PID: me.pid, runs.STARTED: me.create_time() - 3600},
              "alive": {runs.HOST: host, runs.PID: me.pid, runs.STARTED: me.create_time()},
              "elsewhere": {runs.HOST: host + "-other", runs.PID: gone.pid, runs.STARTED: 0.0},
              "unlabelled": {}}
    with get_client(sync_client=True) as client:
        made = {}
        for name, extra in labels.items():
            run = client.create_flow_run(pipeline, name=f"killed-{name}-{gone.pid}", state=Running())
            client.update_flow_run_labels(run.id, extra)
            made[name] = run
        stage = client.create_task_run(train, made["dead"].id, "0", name="train@tiny", state=Running())

        state = pipeline(return_state=True)
        reaped = set(state.result())  # (the session's API may hold other tests' runs)
        assert {made["dead"].name, made["reused"].name} <= reaped
        assert not reaped & {made[n].name for n in ("alive", "elsewhere", "unlabelled")}
        states = {name: client.read_flow_run(run.id).state for name, run in made.items()}
        assert {n: s.type.value for n, s in states.items()} == {
            "dead": "CRASHED", "reused": "CRASHED", "alive": "RUNNING", "elsewhere": "RUNNING", "unlabelled": "RUNNING"}
        assert f"its process {gone.pid} on {host} is gone" in states["dead"].message
        assert client.read_task_run(stage.id).state.type.value == "CRASHED"
        mine = client.read_flow_run(state.state_details.flow_run_id)
        assert mine.labels[runs.PID] == os.getpid() and mine.labels[runs.HOST] == host
        for name in ("alive", "elsewhere", "unlabelled"):  # tidy: nothing Running left in the session's API
            client.set_flow_run_state(made[name].id, Completed(), force=True)


# ---------------------------------------------------------------- 1. `tlpipe pipeline`, ephemeral API


@pytest.mark.slow  # ~2 min each on the loaded 2-core machine (Prefect servers, 3 TensorFlow starts)
def test_a_killed_tlpipe_pipeline_leaves_no_process_and_the_next_run_resumes_and_marks_it_crashed(
        project, tmp_path):
    root = project
    env = run_env(tmp_path, PREFECT_HOME=str(tmp_path / "prefect-home"),
                  PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180")  # a loaded machine starts it slowly
    env.pop("PREFECT_API_URL", None)
    first_log = tmp_path / "first.log"
    first = start([str(BIN / "tlpipe"), "pipeline", TARGET], root, env, first_log)
    try:
        wait_mid_epoch(root, lambda: first.poll() is None, first_log)
        tree = descendants(first.pid)
        commands = " | ".join(cmdline(p) for p in tree)
        assert "tasks.cli train tiny" in commands and "uvicorn" in commands, commands  # the stage, the API
        before = finished_state(root)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(30)
        left = gone_within(tree - {first.pid}, 15)
        assert left == [], f"still running after the kill of {first.pid}: {left}"
    finally:
        stop(first)  # whatever is left of its group, should the test fail
    killed = re.search(r"Beginning flow run '([^']+)'", first_log.read_text()).group(1)

    second_log = tmp_path / "second.log"
    second = start([str(BIN / "tlpipe"), "pipeline", TARGET], root, env, second_log)
    try:
        # the killed run, read through the API of the next run's server (it lives as long as that run)
        deadline, state = time.monotonic() + 600, None
        while second.poll() is None and time.monotonic() < deadline:
            found = re.search(r"Starting temporary server on (http://\S+)", second_log.read_text())
            if found:
                try:
                    [run] = httpx.post(f"{found.group(1)}/api/flow_runs/filter", timeout=10, json={
                        "flow_runs": {"name": {"any_": [killed]}}, "limit": 1, "sort": "ID_DESC"}).json()
                    state = run["state"]
                    if state["type"] == "CRASHED":
                        tasks = httpx.post(f"{found.group(1)}/api/task_runs/filter", timeout=10, json={
                            "task_runs": {"flow_run_id": {"any_": [run["id"]]}}, "limit": 10,
                            "sort": "ID_DESC"}).json()
                        break
                except (httpx.HTTPError, ValueError):
                    pass
            time.sleep(0.2)
        assert second.wait(600) == 0, tail(second_log)
    finally:
        stop(second)
    assert state is not None and state["type"] == "CRASHED", f"{state}\n{tail(second_log)}"
    assert f"its process {first.pid} " in state["message"], state["message"]
    assert {t["name"]: t["state"]["type"] for t in tasks} == {
        "fetch@mnist": "COMPLETED", "prepare@mnist": "COMPLETED", "check@mnist": "COMPLETED", TARGET: "CRASHED"}

    output = second_log.read_text()
    result = result_of(output)
    assert result["ran"] == [TARGET] and sorted(result["skipped"]) == sorted(FINISHED), result
    assert "Epoch 2/2" in output and "Epoch 1/2" not in output  # resumed after epoch 1
    assert_resumed_and_clean(root, before, env)
    # left in $TMPDIR: only TensorFlow's autograph files of the killed training (removed at a normal exit)
    assert all(n.startswith("__autograph_generated_file") for n in os.listdir(tmp_path / "tmp")), \
        os.listdir(tmp_path / "tmp")


# ---------------------------------------------------------------- 2. a process worker


@pytest.mark.slow  # ~2 min each on the loaded 2-core machine (Prefect servers, 3 TensorFlow starts)
def test_a_killed_worker_takes_its_flow_run_along_and_the_next_worker_resumes(project, prefect_server, tmp_path):
    root = project
    url, server_env = prefect_server
    env = run_env(tmp_path, server_env)  # the server's URL and credentials, its workers' polling
    api(url, "POST", "/work_pools/", json={"name": "tlpipe-process", "type": "process"})
    flow = api(url, "POST", "/flows/", json={"name": "tlpipe-pipeline"})
    deployment = api(url, "POST", "/deployments/", json={  # what prefect.yaml's process deployments say
        "name": "tlpipe-model", "flow_id": flow["id"], "work_pool_name": "tlpipe-process",
        "entrypoint": "flows/deploy.py:pipeline", "parameters": {"targets": [TARGET]},
        "pull_steps": [{"prefect.deployments.steps.set_working_directory": {"directory": str(root)}}]})

    def worker(name):
        log = tmp_path / f"{name}.log"
        return start([str(BIN / "prefect"), "worker", "start", "--pool", "tlpipe-process", "--limit", "1",
                      "--name", name], tmp_path, env, log), log

    def state(run_id):
        return api(url, "GET", f"/flow_runs/{run_id}")["state"]

    first, first_log = worker("first")
    try:
        killed = api(url, "POST", f"/deployments/{deployment['id']}/create_flow_run", json={})
        wait_mid_epoch(root, lambda: first.poll() is None and state(killed["id"])["type"] in ("SCHEDULED", "PENDING",
                                                                                            "RUNNING"), first_log)
        tree = descendants(first.pid)
        commands = " | ".join(cmdline(p) for p in tree)
        assert "prefect.engine" in commands and "tasks.cli train tiny" in commands, commands
        before = finished_state(root)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(30)
        # the flow-run process (a session of its own) notices within a second, marks its run Crashed
        # and exits; the stage's command dies with it
        left = gone_within(tree - {first.pid}, 30)
        assert left == [], f"still running after the worker {first.pid} was killed: {left}"
    finally:
        stop(first)
    crashed = state(killed["id"])
    assert crashed["type"] == "CRASHED", crashed
    assert f"process {first.pid} " in crashed["message"], crashed["message"]
    tasks = api(url, "POST", "/task_runs/filter", json={"task_runs": {"flow_run_id": {"any_": [killed["id"]]}},
                                                       "limit": 10, "sort": "ID_DESC"})
    assert {t["name"]: t["state"]["type"] for t in tasks} == {
        "fetch@mnist": "COMPLETED", "prepare@mnist": "COMPLETED", "check@mnist": "COMPLETED", TARGET: "CRASHED"}

    second, second_log = worker("second")
    try:
        run = api(url, "POST", f"/deployments/{deployment['id']}/create_flow_run", json={})
        deadline = time.monotonic() + 600
        while state(run["id"])["type"] not in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            assert second.poll() is None, tail(second_log)
            assert time.monotonic() < deadline, tail(second_log)
            time.sleep(1)
        assert state(run["id"])["type"] == "COMPLETED", tail(second_log)
        tree = descendants(second.pid)
    finally:
        stop(second)
    assert gone_within(tree, 30) == []
    assert state(killed["id"])["type"] == "CRASHED"  # and it stays so
    assert_resumed_and_clean(root, before, env)
    # $TMPDIR: what the killed worker's run left there (Prefect's own: the run's empty working dir,
    # its workspace-attempt record, the runner's storage dir; TensorFlow's autograph files), nothing else
    left = sorted(os.listdir(tmp_path / "tmp"))
    assert all(re.fullmatch(r"tmp\w+prefect|prefect-workspace-attempt-\w+|runner_storage|"
                            r"__autograph_generated_file\w+\.py", n) for n in left), left
