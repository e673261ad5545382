"""`dvc repro` in a temp git repo on tiny fixtures: a second run is a no-op, a param change reruns
only what reads it."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from project import write_mirror, write_params

REPO = Path(__file__).resolve().parents[1]


def run(cmd, cwd, env):
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@pytest.fixture
def dvc_repo(tmp_path):
    if shutil.which("dvc", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("dvc is not installed beside this Python")
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(REPO / "dvc.yaml", repo)
    shutil.copytree(REPO / "tasks", repo / "tasks", ignore=shutil.ignore_patterns("__pycache__"))
    pins = write_mirror(tmp_path / "mirror", mat=False, test_images=False)
    write_params(repo, pins=pins)
    # dvc.yaml also holds the model line: keep its params so the file parses; the test runs the data stages.
    params = yaml.safe_load((repo / "params.yaml").read_text())
    model_line = yaml.safe_load((REPO / "params.yaml").read_text())
    params.update({k: model_line[k] for k in ("weights", "features", "train", "models", "evaluate", "export")})
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "TLPIPE_MIRROR": str(tmp_path / "mirror"), "DVC_NO_ANALYTICS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        run(cmd, repo, env)
    return repo, env


def test_second_repro_is_a_no_op_and_a_param_change_reruns_only_its_stage(dvc_repo):
    repo, env = dvc_repo
    first = run(["dvc", "repro", "prepare"], repo, env)
    for stage in ("fetch@mnist", "fetch@emnist_letters", "prepare@mnist", "prepare@emnist_letters"):
        assert f"Running stage '{stage}'" in first
    assert (repo / "data/processed/emnist_letters/manifest.json").exists()

    second = run(["dvc", "repro", "prepare"], repo, env)
    assert "Running stage" not in second
    assert "Data and pipelines are up to date" in second

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["prepare"]["mnist"]["validation_percentage"] = 30
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    third = run(["dvc", "repro", "prepare"], repo, env)
    assert "Running stage 'prepare@mnist'" in third
    assert third.count("Running stage") == 1


def test_report_stage_lists_every_model():
    """DVC cannot interpolate a list into deps, so the report stage names each model's files by hand:
    a model added to params.yaml without them would leave its page out of `dvc repro`'s tracking."""
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["report"]
    outs = {next(iter(o)) if isinstance(o, dict) else o for o in stage["outs"]}
    for key in yaml.safe_load((REPO / "params.yaml").read_text())["models"]:
        for dep in (f"reports/{key}/metrics.json", f"reports/{key}/per_class.json", f"models/{key}/train.json",
                    f"models/{key}/history.json"):
            assert dep in stage["deps"], f"dvc.yaml report: add {dep}"
        for out in (f"reports/{key}/README.md", f"reports/{key}/curves.png"):
            assert out in outs, f"dvc.yaml report: add {out} to outs"


# What each `tlpipe` subcommand runs: its entry modules (a trainer from params.yaml for `train`).
STAGE_ENTRY = {"fetch": ["tasks/fetch.py", "tasks/sources/{key}.py"],
               "prepare": ["tasks/prepare.py", "tasks/sources/{key}.py"],
               "fetch-weights": ["tasks/weights.py"], "features": ["tasks/photo/features.py"],
               "train": ["{trainer}"], "evaluate": ["tasks/evaluate.py"], "export": ["tasks/export.py"],
               "report": ["tasks/report.py"]}
# Plumbing that decides where and how files are written (paths, atomic writes, JSON), never what is
# computed: not declared, so that touching it does not retrain every model.
PLUMBING = {"tasks/__init__.py", "tasks/config.py", "tasks/io.py", "tasks/cli.py",
            "tasks/parallel.py"}  # where data work runs (processes or Dask), never what it computes


def tasks_imports(path: Path) -> set[Path]:
    """The tasks/ modules a file imports, at module level or inside functions."""
    import ast

    def module(name):
        base = REPO / Path(*name.split("."))
        return next((p for p in (base.with_suffix(".py"), base / "__init__.py") if p.exists()), None)

    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "tasks":
            found.add(module(node.module))
            found.update(module(f"{node.module}.{alias.name}") for alias in node.names)  # submodules
        elif isinstance(node, ast.Import):
            found.update(module(a.name) for a in node.names if a.name.split(".")[0] == "tasks")
    return found - {None}


def code_of(entries: list[str]) -> set[str]:
    """Every tasks/ file reached from the entry files (or folders) by imports."""
    todo = [p for e in entries for p in ((REPO / e).glob("*.py") if (REPO / e).is_dir() else [REPO / e])]
    seen = set()
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo.extend(tasks_imports(path) - seen)
    return {p.relative_to(REPO).as_posix() for p in seen}


def test_stages_declare_the_code_they_run():
    """A stage reruns when code it runs changes only if that code is a dep: walk each stage's imports
    and check that every tasks/ module reached is declared (a file, or a folder holding it)."""
    dvc_repo = pytest.importorskip("dvc.repo")
    models = yaml.safe_load((REPO / "params.yaml").read_text())["models"]
    with dvc_repo.Repo(str(REPO)) as repo:
        stages = list(repo.index.stages)
    assert stages
    for stage in stages:
        _, command, *rest = stage.cmd.split()
        key = rest[0] if rest else ""
        entries = [e.format(key=key, trainer=models.get(key, {}).get("trainer", "")) for e in STAGE_ENTRY[command]]
        deps = [d.def_path.rstrip("/") for d in stage.deps]
        missing = sorted(m for m in code_of(entries) - PLUMBING
                         if not any(m == d or m.startswith(d + "/") for d in deps))
        assert not missing, f"dvc.yaml {stage.addressing}: add {missing} to deps"
