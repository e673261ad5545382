"""`tlpipe status` on a fixture DAG: a tiny git + DVC project run once by `dvc repro`; then a change to a
code file, a param or a command is listed as exactly that, a missing output is no difference, a recipe
that never ran is listed as such, and a clean project lists nothing."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dvcproject import dvc_env, sh

DVC_YAML = {"stages": {
    "fetch": {"foreach": "${datasets}",
              "do": {"cmd": "python -c \"open('raw_${key}.txt', 'w').write('${item}')\"",
                     "deps": ["tasks/fetch", "tasks/core"], "params": ["fetch.${key}"], "outs": ["raw_${key}.txt"]}},
    "train": {"foreach": "${models}",
              "do": {"cmd": "python -c \"open('model_${key}.txt', 'w').write('m')\"",
                     "deps": ["raw_${item.dataset}.txt", "tasks/cnn", "tasks/cnn/models.py", "tasks/core"],
                     "params": ["models.${key}"], "outs": ["model_${key}.txt"]}},
    "report": {"cmd": "python -c \"open('index.txt', 'w').write('i')\"", "deps": ["tasks/report"],
               "params": ["report"], "outs": [{"index.txt": {"cache": False}}]}}}
PARAMS = {"datasets": {"mnist": "mnist"}, "fetch": {"mnist": {"retries": 2}},
          "models": {"m1": {"dataset": "mnist", "epochs": 2, "augment": {"rotate": 0.1, "zoom": 0.1}},
                     "m2": {"dataset": "mnist", "epochs": 3}},
          "report": {"title": "t"}}


@pytest.fixture
def dag(tmp_path):
    if shutil.which("dvc", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("dvc is not installed beside this Python")
    root = tmp_path / "proj"
    for package in ("fetch", "core", "cnn", "report"):
        (root / "tasks" / package).mkdir(parents=True)
        (root / "tasks" / package / "__init__.py").write_text(f"# {package}\n")
    (root / "tasks/cnn/models.py").write_text("ARCH = 1\n")
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS, sort_keys=False))
    (root / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "repro", "-q"]):
        sh(cmd, root)
    return root


def listing(root) -> dict:
    from tasks.stages.status import status

    return {row["stage"]: {k: v for k, v in row.items() if k not in ("stage", "group", "kind", "key")}
            for row in status(root)["stale"]}


def edit_params(root, change):
    params = yaml.safe_load((root / "params.yaml").read_text())
    change(params)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_a_clean_project_lists_nothing_and_a_missing_output_is_no_difference(dag):
    assert listing(dag) == {}
    (dag / "model_m1.txt").unlink()   # as on a fresh clone: outputs not here, and not in the cache either
    shutil.rmtree(dag / ".dvc" / "cache", ignore_errors=True)
    assert listing(dag) == {}


def test_a_code_change_names_the_package_and_every_stage_that_ran_it(dag):
    (dag / "tasks/cnn/__init__.py").write_text("# cnn, changed\n")
    assert listing(dag) == {"train@m1": {"code": ["tasks/cnn"]}, "train@m2": {"code": ["tasks/cnn"]}}
    (dag / "tasks/cnn/__init__.py").write_text("# cnn\n")
    (dag / "tasks/cnn/models.py").write_text("ARCH = 2\n")   # a file inside a package dep: both are named
    assert listing(dag)["train@m1"] == {"code": ["tasks/cnn", "tasks/cnn/models.py"]}
    (dag / "tasks/cnn/models.py").write_text("ARCH = 1\n")
    (dag / "tasks/core/new.py").write_text("X = 1\n")   # a shared package: every stage that ran it
    assert listing(dag) == {s: {"code": ["tasks/core"]} for s in ("fetch@mnist", "train@m1", "train@m2")}


def test_a_param_change_names_the_key_down_to_the_leaf(dag):
    edit_params(dag, lambda p: p["models"]["m1"]["augment"].update(rotate=0.2))
    assert listing(dag) == {"train@m1": {"params": ["models.m1.augment.rotate"]}}
    edit_params(dag, lambda p: p["models"]["m1"]["augment"].pop("zoom"))
    assert listing(dag) == {"train@m1": {"params": ["models.m1.augment.rotate",
                                                    "models.m1.augment.zoom (removed)"]}}
    edit_params(dag, lambda p: p["report"].update(caption="c"))
    assert listing(dag)["report"] == {"params": ["report.caption (added)"]}


def test_a_command_change_and_a_new_recipe_are_listed(dag):
    spec = yaml.safe_load((dag / "dvc.yaml").read_text())
    spec["stages"]["report"]["cmd"] = "python -c \"open('index.txt', 'w').write('j')\""
    (dag / "dvc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    edit_params(dag, lambda p: p["models"].update(m3={"dataset": "mnist", "epochs": 1}))
    rows = listing(dag)
    assert set(rows) == {"report", "train@m3"}
    assert rows["report"]["command"] == {"recorded": "python -c \"open('index.txt', 'w').write('i')\"",
                                         "now": spec["stages"]["report"]["cmd"]}
    assert rows["train@m3"] == {"never_run": True}


def test_the_cli_groups_by_model_prints_json_and_exits_0(dag):
    def tlpipe(*args):
        done = subprocess.run([sys.executable, "-m", "tasks.cli", "status", *args], cwd=dag, capture_output=True,
                              text=True, env=dvc_env(PYTHONPATH=str(Path(__file__).resolve().parents[1])),
                              timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    lock = (dag / "dvc.lock").read_bytes()
    assert "all 4 stages match the tree" in tlpipe()
    (dag / "tasks/cnn/models.py").write_text("ARCH = 3\n")
    edit_params(dag, lambda p: p["models"]["m2"].update(epochs=4))
    text = tlpipe()
    assert text.splitlines()[1:] == [
        "model m1:", "  train@m1: code tasks/cnn, tasks/cnn/models.py",
        "model m2:", "  train@m2: code tasks/cnn, tasks/cnn/models.py; params models.m2.epochs"]
    data = json.loads(tlpipe("--json"))
    assert data["stages"] == 4
    assert [(r["stage"], r["kind"], r["key"], r.get("params")) for r in data["stale"]] == [
        ("train@m1", "model", "m1", None), ("train@m2", "model", "m2", ["models.m2.epochs"])]
    assert (dag / "dvc.lock").read_bytes() == lock   # it records nothing


def test_it_works_while_dvc_holds_the_repo_lock(dag):
    """A running `dvc repro` holds .dvc/tmp/lock; status takes no lock, so it answers all the same."""
    from dvc.lock import make_lock

    (dag / "tasks/report/__init__.py").write_text("# report, changed\n")
    lock = make_lock(str(dag / ".dvc" / "tmp" / "lock"), tmp_dir=str(dag / ".dvc" / "tmp"))
    lock.lock()
    try:
        assert listing(dag) == {"report": {"code": ["tasks/report"]}}
    finally:
        lock.unlock()


def test_ci_prints_the_listing_after_the_tests_and_never_fails_on_it():
    from dvcproject import REPO

    lines = [ln.strip() for ln in (REPO / ".ci/run").read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert "trap '.venv/bin/tlpipe status || true' EXIT" in lines   # after the tests, whatever they return
    assert lines.index("trap '.venv/bin/tlpipe status || true' EXIT") < lines.index(".venv/bin/python -m pytest")
