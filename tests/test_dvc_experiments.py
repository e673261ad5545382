"""Tuning with DVC experiments on a real fixture repo: `dvc exp run -S 'models.<k>.<key>=v'` changes the
recipe in params.yaml and reruns only what reads it, and a queued sweep gives one experiment per value
that `dvc exp apply` brings back into the workspace with a clean `dvc status`.

The fixture's params.yaml is the repository's own params.yaml text, loaded and written back with
ruamel.yaml round-trip, so its layout (anchors, merge keys, comments) is the real one; only the recipes
under `models` become two tiny small-CNN recipes (`a`, `b`) on the tiny MNIST mirror, copies of the
repository's `mnist_scratch` recipe (so `init`/`trainer` follow the repository), and the sections that
need other data are emptied. A recipe that also lives in a merged copy (`all_models: {<<: [*models, ..]}`)
breaks -S: DVC writes the merged copy's old values back over the anchored node, params.yaml keeps the old
value and the stage is skipped; these tests catch that.

The DAG is built once per module (`dvc repro` of every stage, committed) and copied for each test.
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from dvcproject import REPO, dvc_env, sh
from project import write_mirror, write_params

QUEUE_TIMEOUT_S = 360  # hang guard for the queued sweep (two experiments of a few stages each)


# ---------------------------------------------------------------- the fixture repo


def _replace_mapping(node, new: dict) -> None:
    """Replace the items of a ruamel CommentedMap in place (keeping its anchor, so aliases and merge
    keys that point at it still do). ruamel.yaml 0.19 fails to propagate a deletion to a map that merges
    this one through a *list* of merges (`<<: [*a, *b]`, KeyError in update_key_value); the merging maps
    are written as their `<<:` line anyway, so their cached view is left alone while we edit."""
    referents = list(getattr(node, "_ref", []))
    if referents:
        node._ref.clear()
    try:
        for key in list(node):
            del node[key]
        node.update(new)
    finally:
        if referents:
            node._ref.extend(referents)


def _own_items(node):
    return list(node.non_merged_items()) if hasattr(node, "non_merged_items") else list(node.items())


def _small_recipe(models) -> dict:
    """The repository's from-scratch MNIST recipe (its init/trainer/arch as they are today), one epoch."""
    recipe = models.get("mnist_scratch") or next(
        r for _, r in _own_items(models)
        if r.get("dataset") == "mnist" and str(r.get("init", "")).endswith(".py"))
    return {**dict(recipe), "epochs": 1, "min_accuracy": 0.0}


def fixture_params_text(mirror: Path, pins: dict, scratch: Path) -> str:
    """The repository's params.yaml with recipes `a` and `b` only, on the tiny MNIST mirror."""
    from ruamel.yaml import YAML

    rt = YAML()  # round-trip: anchors, merge keys and comments stay as the repository has them
    data = rt.load((REPO / "params.yaml").read_text())
    models = data["models"]
    recipe = _small_recipe(models)
    _replace_mapping(models, {"a": dict(recipe), "b": dict(recipe)})
    # other recipe sections (e.g. distill: recipes with a teacher) and the photo line's inputs: emptied
    for key, value in list(data.items()):
        if key == "models" or not hasattr(value, "non_merged_items"):
            continue
        own = _own_items(value)
        if own and all(isinstance(v, dict) and "trainer" in v for _, v in own):
            _replace_mapping(value, {})
    for key in ("weights", "features", "teach"):
        if key in data:
            _replace_mapping(data[key], {})
    small = yaml.safe_load(write_params(scratch, pins=pins, datasets=("mnist",)).read_text())
    data["mirror"] = str(mirror)
    data["runtime"]["workers"] = 1
    data["datasets"] = {"mnist": data["datasets"]["mnist"]}
    data["fetch"] = {"mnist": small["fetch"]["mnist"]}
    data["prepare"] = {"mnist": small["prepare"]["mnist"]}
    data["check"] = {"mnist": {}}
    report = data.get("report") or {}
    if "transfer" in report:
        report["transfer"]["models"], report["transfer"]["dashed"] = ["a", "b"], []
    if "tables" in report:
        report["tables"] = {}
    out = io.StringIO()
    rt.dump(data, out)
    return out.getvalue()


def env_for(root: Path) -> dict:
    # tlpipe imports tasks/ from the fixture (the venv's editable install points at the main checkout)
    return dvc_env(PYTHONPATH=str(root), TF_CPP_MIN_LOG_LEVEL="2")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A git + DVC repo of this project's dvc.yaml, tasks/ and .gitignore, the fixture params, every
    stage reproduced and everything committed."""
    if shutil.which("dvc", path=dvc_env()["PATH"]) is None:
        pytest.skip("dvc is not installed beside this Python")
    base = tmp_path_factory.mktemp("exp")
    pins = write_mirror(base / "mirror", mat=False, idx=False)
    root = base / "repo"
    root.mkdir()
    (root / "params.yaml").write_text(fixture_params_text(base / "mirror", pins, base / "p"))
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    ((root) / "reports" / "retired").mkdir(parents=True, exist_ok=True)  # the report stage's dep (dvc.yaml)
    ((root) / "reports" / "retired" / "README.md").write_text("retired recipes' last rows\n")
    shutil.copy(REPO / ".gitignore", root / ".gitignore")
    shutil.copytree(REPO / "tasks", root / "tasks", ignore=shutil.ignore_patterns("__pycache__"))
    env = env_for(root)
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "t@example.com"],
                ["git", "config", "user.name", "t"], ["dvc", "init", "-q"]):
        sh(cmd, root, env)
    out = sh(["dvc", "repro"], root, env)
    assert "Running stage 'train@a'" in out and "Running stage 'train@b'" in out
    sh(["git", "add", "-A"], root, env)
    sh(["git", "commit", "-q", "-m", "fixture: every stage reproduced"], root, env)
    assert json.loads(sh(["dvc", "status", "--json"], root, env).strip().splitlines()[-1]) == {}
    return root


@pytest.fixture
def repo(built, tmp_path):
    """A private copy of the built repo (git history, DVC cache and all)."""
    root = tmp_path / "repo"
    shutil.copytree(built, root, symlinks=True)
    return root


# ---------------------------------------------------------------- helpers


def lock_stages(root: Path) -> dict:
    return yaml.safe_load((root / "dvc.lock").read_text())["stages"]


def workspace_params(root: Path) -> dict:
    return yaml.safe_load((root / "params.yaml").read_text())


def status(root: Path) -> dict:
    out = sh(["dvc", "status", "--json"], root, env_for(root))
    return json.loads(out.strip().splitlines()[-1] or "{}")


def experiments(root: Path) -> dict:
    """{name: data} of every experiment in `dvc exp show --json` (DVC 3: a list of commits, each with
    `experiments: [{name, executor, revs: [{rev, name, data: {params, metrics, ...}}]}]`)."""
    shown = json.loads(sh(["dvc", "exp", "show", "--json"], root, env_for(root)))
    found = {}
    for commit in shown:
        for exp in commit.get("experiments") or []:
            for rev in exp.get("revs") or []:
                if rev.get("data"):
                    found[exp.get("name") or rev.get("name")] = rev["data"]
    return found


def exp_epochs(data: dict) -> tuple:
    """(models.a.epochs in its params.yaml, the epochs in its metrics reports/a/scores.json)."""
    params = data["params"]["params.yaml"]["data"]
    scores = data["metrics"]["reports/a/scores.json"]["data"]
    return params["models"]["a"]["epochs"], scores["epochs"]


def queue_rows(root: Path) -> dict:
    """{name: status} of `dvc queue status` (rows: task id, name, created, status)."""
    out = sh(["dvc", "queue", "status"], root, env_for(root))
    rows = {}
    for line in out.splitlines():
        cols = line.split()
        if len(cols) >= 3 and re.fullmatch(r"[0-9a-f]{7}", cols[0]):
            rows[cols[1]] = cols[-1]
    return rows


def queue_pids(root: Path) -> list[int]:
    """Processes the queue spawned (the worker and its experiment runs), from DVC's own pid records."""
    pids = []
    for info in (root / ".dvc/tmp/exps").glob("*/**/*.json"):
        try:
            pid = json.loads(info.read_text()).get("pid")
        except (ValueError, OSError, AttributeError):
            continue
        if isinstance(pid, int):
            pids.append(pid)
    return pids


def alive_in(pid: int, root: Path) -> bool:
    """Whether `pid` is still a dvc process of this fixture repo (never touch anyone else's)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return False
    return "dvc" in cmdline and (cwd == str(root) or cwd.startswith(f"{root}{os.sep}"))


def start_queue(root: Path) -> None:
    """`dvc queue start`. Its worker is a detached process that inherits the caller's stdout/stderr and
    exits only after ~10 s of an empty queue: with captured pipes, as `sh` runs it, the call would block
    until then; to a file it returns at once and the caller polls the queue itself."""
    with open(root.parent / "queue-start.log", "wb") as log:
        done = subprocess.run(["dvc", "queue", "start"], cwd=root, env=env_for(root), stdin=subprocess.DEVNULL,
                              stdout=log, stderr=subprocess.STDOUT, timeout=120)
    assert done.returncode == 0, (root.parent / "queue-start.log").read_text()


def exp_refs(root: Path) -> set[str]:
    """Names of the finished experiments: DVC keeps each as a git ref refs/exps/<baseline>/<name>."""
    out = sh(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], root, env_for(root))
    return {ref.rsplit("/", 1)[-1] for ref in out.split()}


def wait_for_queue(root: Path, names: list[str]) -> dict:
    """Poll until every queued experiment in `names` is Success or Failed (`dvc queue status`), at most
    QUEUE_TIMEOUT_S. `dvc queue status` costs seconds of CPU, which the running experiment needs: it is
    asked only once each experiment has its git ref or no queue process is left."""
    deadline = time.monotonic() + QUEUE_TIMEOUT_S
    rows: dict = {}
    while True:
        if set(names) <= exp_refs(root) or not any(alive_in(p, root) for p in queue_pids(root)):
            rows = queue_rows(root)
            if all(rows.get(n) in ("Success", "Failed") for n in names):
                return rows
        assert time.monotonic() < deadline, f"queue not drained in {QUEUE_TIMEOUT_S} s: {rows or queue_rows(root)}"
        time.sleep(2)


def stop_queue(root: Path) -> None:
    sh(["dvc", "queue", "stop", "--kill"], root, env_for(root), check=False)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(alive_in(p, root) for p in queue_pids(root)):
        time.sleep(1)
    for pid in queue_pids(root):
        if alive_in(pid, root):
            os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------- tests


def test_exp_run_set_param_reruns_only_that_recipes_stage(repo):
    env = env_for(repo)
    before = lock_stages(repo)
    assert before["train@a"]["params"]["params.yaml"]["models.a"]["epochs"] == 1

    out = sh(["dvc", "exp", "run", "-S", "models.a.epochs=2", "train@a"], repo, env)

    # the override is in params.yaml (-S writes it; the run is applied to the workspace)...
    epochs = workspace_params(repo)["models"]["a"]["epochs"]
    assert epochs == 2, (f"`dvc exp run -S models.a.epochs=2 train@a` left models.a.epochs = {epochs} in "
                         f"params.yaml (the recipe written back from another copy of it?):\n{out}")
    # ...and train@a ran on it, alone
    assert "Running stage 'train@a'" in out, out
    assert out.count("Running stage") == 1, out
    history = json.loads((repo / "models/a/history.json").read_text())
    assert [e["epoch"] for e in history] == [0, 1]
    assert json.loads((repo / "models/a/train.json").read_text())["epochs_run"] == 2

    after = lock_stages(repo)
    assert after["train@a"]["params"]["params.yaml"]["models.a"]["epochs"] == 2
    assert after["train@a"]["outs"] != before["train@a"]["outs"]
    unchanged = {k for k in before if k != "train@a" and after[k] == before[k]}
    assert unchanged == set(before) - {"train@a"}, f"changed besides train@a: {set(before) - unchanged}"
    assert "train@b" in unchanged and "prepare@mnist" in unchanged

    # the experiment records the same params in `dvc exp show --json` (its metrics come from
    # report_page@a, which this targeted run leaves for later)
    name = re.search(r"Ran experiment\(s\): (\S+)", out).group(1)
    assert experiments(repo)[name]["params"]["params.yaml"]["data"]["models"]["a"]["epochs"] == 2
    # and the workspace differs from the commit only in what train@a and -S wrote
    changed = set(sh(["git", "diff", "--name-only", "HEAD"], repo, env).split())
    assert changed == {"params.yaml", "dvc.lock", "models/a/history.json", "models/a/train.json"}, changed


def test_queued_sweep_gives_one_experiment_per_value_and_apply_restores_one(repo):
    env = env_for(repo)
    # no target: each experiment reruns whatever the change reaches (train@a and everything downstream of
    # it), so the applied one leaves the whole DAG up to date. epochs=1 is the committed value (nothing
    # reruns), epochs=2 trains.
    out = sh(["dvc", "exp", "run", "--queue", "-S", "models.a.epochs=1,2"], repo, env)
    names = re.findall(r"Queued experiment '([^']+)'", out)
    assert len(names) == 2, out
    try:
        start_queue(repo)
        rows = wait_for_queue(repo, names)
        failed = [n for n in names if rows[n] != "Success"]
        assert not failed, "\n".join(sh(["dvc", "queue", "logs", n], repo, env, check=False) for n in failed)
    finally:
        stop_queue(repo)
    assert not [p for p in queue_pids(repo) if alive_in(p, repo)]

    found = experiments(repo)
    pairs = {n: exp_epochs(found[n]) for n in names}
    assert sorted(pairs.values()) == [(1, 1), (2, 2)], (
        f"the sweep models.a.epochs=1,2 gave experiments with (params epochs, epochs_run) {pairs}: "
        f"a -S value did not reach params.yaml")
    metrics = [found[n]["metrics"]["reports/a/scores.json"]["data"] for n in names]
    assert metrics[0] != metrics[1] and set(metrics[0]) == {"accuracy", "int8_accuracy", "int8_agreement",
                                                             "float32_kb", "int8_kb", "int8_latency_ms",
                                                             *(f"{kind}_{column}" for kind in ("float16", "dynamic")
                                                               for column in ("accuracy", "agreement", "kb",
                                                                              "latency_ms")),
                                                             "train_s", "epochs", "blessed"}
    # the queued runs happened elsewhere: the workspace is still the commit
    assert workspace_params(repo)["models"]["a"]["epochs"] == 1

    two = next(n for n, p in pairs.items() if p == (2, 2))
    sh(["dvc", "exp", "apply", two], repo, env)
    assert workspace_params(repo)["models"]["a"]["epochs"] == 2
    assert json.loads((repo / "models/a/train.json").read_text())["epochs_run"] == 2
    assert len(json.loads((repo / "models/a/history.json").read_text())) == 2
    assert lock_stages(repo)["train@a"]["params"]["params.yaml"]["models.a"]["epochs"] == 2
    assert status(repo) == {}
