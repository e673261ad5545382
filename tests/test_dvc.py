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
