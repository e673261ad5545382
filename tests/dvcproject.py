"""A fixture DVC project: this repository's dvc.yaml and tasks/ in a fresh git + DVC repo, with the
small params of tests/project.py (the data line) and the repository's own model-line params."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
# The fixtures' EMNIST has 4 images per letter: too few for out-of-sample label judgements to mean anything.
FIXTURE_CHECK = {"max_label_issues": 0.5}
MODEL_LINE = ("check", "weights", "features", "teach", "models", "evaluate", "export", "report")


def dvc_env(**extra) -> dict:
    """The environment for `dvc`/`tlpipe` subprocesses: this venv's bin first, no analytics."""
    return {**os.environ, "DVC_NO_ANALYTICS": "1", "DO_NOT_TRACK": "1",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}", **extra}


def sh(cmd, cwd, env=None, check=True) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env or dvc_env(), capture_output=True, text=True, timeout=600)
    if check:
        assert done.returncode == 0, f"{cmd} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def init_dvc_project(root: Path, *, keep_params: bool = False, dvc_yaml: dict | None = None) -> Path:
    """Copy dvc.yaml (or write `dvc_yaml`) and tasks/ into `root` (which holds a params.yaml from
    project.write_params), add the model-line params the dvc.yaml needs to parse unless
    `keep_params`, and `git init` + `dvc init` it."""
    if dvc_yaml is None:
        shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
        ((root) / "reports" / "retired").mkdir(parents=True, exist_ok=True)  # the report stage's dep (dvc.yaml)
        ((root) / "reports" / "retired" / "README.md").write_text("retired recipes' last rows\n")
    else:
        (root / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml, sort_keys=False))
    shutil.copytree(REPO / "tasks", root / "tasks", ignore=shutil.ignore_patterns("__pycache__"))
    if not keep_params:
        params = yaml.safe_load((root / "params.yaml").read_text())
        model_line = yaml.safe_load((REPO / "params.yaml").read_text())
        params.update({k: model_line[k] for k in MODEL_LINE if k not in params})
        params["check"] = {**params["check"], **{k: dict(FIXTURE_CHECK) for k in params.get("datasets") or {}}}
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        sh(cmd, root)
    return root


def dvc_status(root: Path, *targets: str) -> dict:
    """`dvc status --json` of `targets` (all stages when none), as the CLI reports it."""
    import json

    out = sh(["dvc", "status", "--json", *targets], root)
    return json.loads(out.strip().splitlines()[-1] or "{}")
