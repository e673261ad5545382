"""Faults around the runner, part 2: two runners at once. `dvc repro` and `tlpipe pipeline` started together on
one checkout: the one that comes second is refused in one line naming the first (its PID and command), the
first runs on undisturbed, and after the refused one is run again every stage is recorded once in dvc.lock
and `dvc status` is clean.

The fixture: two real `tlpipe fetch` stages (the MNIST-format files from a local mirror, under two dataset
keys), whose command, after fetching, waits while the file named by $HOLD exists: the first runner is
held inside a stage's command (the longest part of any real stage) until the second has been refused."""
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from dvcproject import REPO, dvc_env, dvc_status, init_dvc_project, sh
from project import mnist_mirror_params

BIN = Path(sys.executable).parent
STAGES = {"fetch@mnist", "fetch@digits"}
# After fetching, wait while $HOLD exists (no $HOLD: no wait), touching $HOLD.here to say it got there.
HELD = 'while [ -n "$HOLD" ] && [ -e "$HOLD" ]; do touch "$HOLD.here"; sleep 0.1; done'


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "proj"
    params = mnist_mirror_params(tmp_path, root)
    params["datasets"]["digits"] = "mnist"  # the same source module under a second key
    params["fetch"]["digits"] = dict(params["fetch"]["mnist"])
    params["prepare"]["digits"] = dict(params["prepare"]["mnist"])
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return init_dvc_project(root, keep_params=True, dvc_yaml={"stages": {"fetch": {
        "foreach": ["mnist", "digits"],
        "do": {"cmd": f"tlpipe fetch ${{item}} && {HELD}",
               "deps": ["tasks/fetch", "tasks/sources/mnist.py"], "params": ["fetch.${item}"],
               "outs": ["data/raw/${item}"]}}}})


def env(**extra) -> dict:
    e = dvc_env(PYTHONPATH=str(REPO), **extra)
    for name in ("HOLD", "TLPIPE_RUNNER_PID", "TLPIPE_TRACEBACK"):
        e.pop(name, None)
    e.update(extra)
    return e


def start(cmd, root, **extra) -> subprocess.Popen:
    return subprocess.Popen([str(c) for c in cmd], cwd=root, env=env(**extra), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def held(proc: subprocess.Popen, hold: Path, timeout: float = 120) -> None:
    """Wait until `proc` is inside a stage's command, held by `hold`."""
    deadline = time.monotonic() + timeout
    while not Path(f"{hold}.here").exists():
        assert proc.poll() is None, f"exited {proc.returncode} before the hold:\n" + "".join(proc.communicate())
        assert time.monotonic() < deadline, "never reached the hold"
        time.sleep(0.1)


def run(cmd, root, **extra) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=root, env=env(**extra), capture_output=True, text=True,
                          timeout=300)


def finish(proc: subprocess.Popen, hold: Path) -> str:
    hold.unlink()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, f"the first runner failed:\n{out}\n{err}"
    return out + err


def recorded_once(root: Path) -> None:
    """Every stage in dvc.lock exactly once, and `dvc status` clean."""
    text = (root / "dvc.lock").read_text()
    for stage in STAGES:
        assert len(re.findall(rf"^  {re.escape(stage)}:$", text, flags=re.M)) == 1, text
    assert set(yaml.safe_load(text)["stages"]) == STAGES
    assert dvc_status(root) == {}


def last_line(text: str) -> str:
    return [line for line in text.splitlines() if line.strip()][-1]


def test_a_pipeline_started_while_dvc_repro_runs_is_refused_naming_it(project, tmp_path, prefect_harness):
    from prefect.settings import PREFECT_API_URL

    hold = tmp_path / "hold"
    hold.touch()
    repro = start([BIN / "dvc", "repro"], project, HOLD=str(hold))
    held(repro, hold)

    api = {"PREFECT_API_URL": PREFECT_API_URL.value()}
    second = run([BIN / "tlpipe", "pipeline"], project, **api)
    assert second.returncode == 1, second.stdout + second.stderr
    assert "Traceback" not in second.stdout + second.stderr
    line = last_line(second.stderr)
    assert line == [ln for ln in second.stderr.splitlines() if ln.strip()][0]  # the one line on stderr
    assert line.startswith(f"tlpipe pipeline: error: {project}: `dvc repro` (PID {repro.pid}) is running "
                           "this project's stages now (DVC's lock on data/raw/"), line
    assert line.endswith("wait for it to finish, or stop it, then rerun"), line
    assert not (project / ".dvc" / "tmp" / "tlpipe-runner.lock").exists() or \
        (project / ".dvc" / "tmp" / "tlpipe-runner.lock").read_text() == ""

    finish(repro, hold)  # the first runner, undisturbed, runs both stages
    again = run([BIN / "tlpipe", "pipeline"], project, **api)
    assert again.returncode == 0, again.stdout + again.stderr
    assert '"ran": []' in again.stdout
    recorded_once(project)


def test_dvc_repro_started_while_a_pipeline_runs_is_refused_naming_it(project, tmp_path, prefect_harness):
    from prefect.settings import PREFECT_API_URL

    hold = tmp_path / "hold"
    hold.touch()
    api = {"PREFECT_API_URL": PREFECT_API_URL.value()}
    pipeline = start([BIN / "tlpipe", "pipeline", "fetch@mnist"], project, HOLD=str(hold), **api)
    held(pipeline, hold)  # inside fetch@mnist's command, holding the runner lock

    # A stage the pipeline is not running: DVC starts its command, which refuses in one line.
    other = run([BIN / "dvc", "repro", "fetch@digits"], project)
    assert other.returncode != 0 and "Traceback" not in other.stdout + other.stderr
    refusal = f"tlpipe fetch: error: {project}: `tlpipe pipeline fetch@mnist` (PID {pipeline.pid}) is running " \
              "this project's stages now (it holds .dvc/tmp/tlpipe-runner.lock); wait for it to finish, or stop " \
              "it, then rerun"
    assert refusal in other.stderr.splitlines(), other.stderr
    assert "tlpipe fetch digits: started" not in other.stdout  # refused before any work
    # The stage the pipeline is running: DVC's own read/write lock refuses, naming the pipeline's PID.
    same = run([BIN / "dvc", "repro", "fetch@mnist"], project)
    assert same.returncode != 0 and "Traceback" not in same.stdout + same.stderr
    assert f"(PID {pipeline.pid}): tlpipe pipeline: fetch@mnist" in same.stderr, same.stderr
    # A second pipeline: refused by the runner lock, in one line.
    twice = run([BIN / "tlpipe", "pipeline"], project, **api)
    assert twice.returncode == 1 and "Traceback" not in twice.stdout + twice.stderr
    assert twice.stderr.strip() == refusal.replace("tlpipe fetch: error", "tlpipe pipeline: error"), twice.stderr

    out = finish(pipeline, hold)  # the first runner, undisturbed
    assert '"ran": [\n    "fetch@mnist"' in out
    rerun = run([BIN / "dvc", "repro"], project)  # the refused one, again: only what is left
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "Running stage 'fetch@digits'" in rerun.stdout and "Running stage 'fetch@mnist'" not in rerun.stdout
    recorded_once(project)
