"""dvc.yaml: each stage depends on exactly the code it runs (walked both ways); a change to one layer
leaves the others up to date (`dvc status` on a committed fixture repo); the pipeline grows from
params.yaml alone (a folder dataset, a model recipe); `dvc repro` on tiny fixtures is a no-op the second
time and a param change reruns only what reads it."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from imports import PLUMBING, REPO, STAGE_ENTRY, code_of, covered, within
from photos import class_tree, small_prepare
from project import with_retired_recipes, write_mirror, write_params

MODEL_LINE = ("check", "weights", "features", "teach", "models", "evaluate", "export", "report")


def run(cmd, cwd, env):
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def repo_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def new_repo(tmp_path, params: dict | None = None, params_text: str | None = None):
    """A git + DVC repo holding this project's dvc.yaml and tasks/, and the given params."""
    if shutil.which("dvc", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("dvc is not installed beside this Python")
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(REPO / "dvc.yaml", repo)
    ((repo) / "reports" / "retired").mkdir(parents=True, exist_ok=True)  # the report stage's dep (dvc.yaml)
    ((repo) / "reports" / "retired" / "README.md").write_text("retired recipes' last rows\n")
    shutil.copytree(REPO / "tasks", repo / "tasks", ignore=shutil.ignore_patterns("__pycache__"))
    if params is not None:
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if params_text is not None:
        (repo / "params.yaml").write_text(params_text)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(repo),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        run(cmd, repo, env)
    return repo, env


def stages_of(repo: Path) -> list:
    dvc_repo = pytest.importorskip("dvc.repo")
    with dvc_repo.Repo(str(repo)) as r:
        return list(r.index.stages)


# ---------------------------------------------------------------- exact deps, both directions


def entries(stage, params: dict) -> list[str]:
    _, command, *rest = stage.cmd.split()
    key = rest[0] if rest else ""
    recipe = (params.get("models") or {}).get(key, {}) if command in ("train", "evaluate", "export") else {}
    init = str(recipe.get("init", ""))
    return [e.format(key=key, module=(params.get("datasets") or {}).get(key, key), trainer=recipe.get("trainer", ""),
                     init=init if init.startswith("tasks/") else "") for e in STAGE_ENTRY[command]]


def test_stages_declare_exactly_the_code_they_run():
    """A stage reruns when code it runs changes only if that code is a dep, and reruns needlessly when
    a dep is code it never runs: walk each stage's imports from its entry package and check that every
    tasks/ package (or source module) reached is declared and that every declared tasks/ dep is one
    reached (or a file inside one: a recipe's `init` module)."""
    params = repo_params()
    stages = stages_of(REPO)
    assert {s.addressing.split("@")[0] for s in stages} >= {"fetch", "prepare", "train", "evaluate", "export",
                                                            "report_page", "report"}
    for stage in stages:
        code = code_of(entries(stage, params))
        deps = [d.def_path.rstrip("/") for d in stage.deps if d.def_path.startswith("tasks/")]
        missing = sorted(m for m in code if not covered(m, deps))
        assert not missing, f"dvc.yaml {stage.addressing}: add {missing} to deps"
        extra = sorted(d for d in deps if not within(d, code))
        assert not extra, f"dvc.yaml {stage.addressing}: {extra} is not code this stage runs; remove it from deps"
        assert not [d for d in deps if d in PLUMBING], f"{stage.addressing}: plumbing is not a dep"


def test_stages_declare_the_params_they_read():
    """The train stages read their recipe only (defaults live in the trainers' code); the photo ones
    no longer declare the small CNNs' `train` section; every model stage reads its recipe in `models`."""
    for stage in stages_of(REPO):
        group, _, key = stage.addressing.partition("@")
        declared = sorted(k for p in stage.deps if hasattr(p, "params") for k in p.params)
        expected = {"train": [f"models.{key}"], "teach": [f"teach.{key}"],
                    "evaluate": [f"models.{key}.min_accuracy", "evaluate"],
                    "export": [f"models.{key}.min_accuracy", "evaluate.max_regression", "export"],
                    "report_page": [], "report": ["check", "models", "report"],
                    "fetch": ["download", f"fetch.{key}"], "prepare": [f"prepare.{key}"], "check": [f"check.{key}"],
                    "fetch_weights": ["download", f"weights.{key}"], "features": [f"features.{key}"]}[group]
        assert declared == sorted(expected), f"{stage.addressing}: params {declared}, expected {expected}"


# ---------------------------------------------------------------- what a change invalidates


def committed_repo(tmp_path):
    """This project's DAG in a fixture repo, every stage committed on placeholder outputs: `dvc status`
    then names exactly the stages whose declared deps or params a change touches."""
    params = repo_params()
    repo, env = new_repo(tmp_path, params)
    for stage in stages_of(repo):
        for out in stage.outs:
            path = repo / out.def_path
            if path.suffix:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(f"{out.def_path}\n")
            else:
                path.mkdir(parents=True, exist_ok=True)
                (path / "placeholder").write_text(f"{out.def_path}\n")
    for stage in stages_of(repo):  # a dep inside another stage's output folder (train@ on check@'s verdict)
        for dep in stage.deps:
            path = repo / dep.def_path
            if hasattr(dep, "def_path") and not path.exists() and path.parent.is_dir() and path.suffix:
                path.write_text(f"{dep.def_path}\n")
            elif hasattr(dep, "def_path") and not path.exists() and not path.suffix:  # a folder no stage makes
                path.mkdir(parents=True)                                                 # (reports/retired)
                (path / "placeholder").write_text(f"{dep.def_path}\n")
    run(["dvc", "commit", "-f", "-q"], repo, env)
    assert "up to date" in run(["dvc", "status"], repo, env)
    return repo, env


def stale_after(repo, env, files: list[str]) -> set[str]:
    for f in files:
        with open(repo / f, "a", encoding="utf-8") as fh:
            fh.write("\n# touched by tests/test_dvc.py\n")
    try:
        return set(json.loads(run(["dvc", "status", "--json"], repo, env)))
    finally:
        for f in files:
            shutil.copy(REPO / f, repo / f)


FETCH_AND_FORMATS = ["tasks/fetch/download.py", "tasks/fetch/arrays.py", "tasks/fetch/remote_zip.py",
                     "tasks/fetch/photos.py", "tasks/fetch/archives.py", "tasks/fetch/kaggle_api.py", "tasks/formats/idx.py",
                     "tasks/formats/emnist_mat.py", "tasks/formats/normalize.py", "tasks/prepare/images.py",
                     "tasks/fetch/weights.py", "tasks/fetch/mirrors.py", "tasks/prepare/splits.py"]
DIGITS = ("mnist", "emnist")


def test_a_change_to_one_layer_leaves_the_others_up_to_date(tmp_path):
    repo, env = committed_repo(tmp_path)
    keys = lambda stages, prefix: {s for s in stages if s.startswith(prefix)}  # noqa: E731

    # the downloader, any fetch or format module: the data line only
    stale = stale_after(repo, env, FETCH_AND_FORMATS)
    assert stale and not {s for s in stale if s.split("@")[0] in ("features", "train", "evaluate", "export")}, stale
    assert keys(stale, "fetch@") and keys(stale, "prepare@") and keys(stale, "fetch_weights@")
    # the small CNNs' package (its architectures): digit and letter models only, no cards stage
    stale = stale_after(repo, env, ["tasks/cnn/models.py"])
    assert stale == {f"train@{k}" for k, r in repo_params()["models"].items() if r["trainer"] == "tasks/cnn"}, stale
    assert not [s for s in stale if "cards" in s]
    # the photo package: photo models, their caches and teachers' targets only, no digits stage
    stale = stale_after(repo, env, ["tasks/photo/train.py", "tasks/photo/heads.py", "tasks/photo/augment.py"])
    assert stale == ({f"train@{k}" for k, r in repo_params()["models"].items() if r["trainer"] == "tasks/photo"}
                     | {f"features@{k}" for k in repo_params()["features"]}
                     | {f"teach@{k}" for k in repo_params()["teach"]}
                     | {f"check@{k}" for k in repo_params()["check"]}), stale  # check@ embeds with a photo base
    # ...and the checks rerun, but their verdicts do not change: no digits model is stale
    assert not [s for s in stale if s.split("@")[-1].startswith(DIGITS) and not s.startswith("check@")]
    # the digits trainer: the digits models only
    stale = stale_after(repo, env, ["tasks/cnn/train.py"])
    assert stale == {f"train@{k}" for k, r in repo_params()["models"].items() if r["trainer"] == "tasks/cnn"}
    # evaluation code: evaluate@ and export@ of every model, nothing upstream
    stale = stale_after(repo, env, ["tasks/evaluate/metrics.py"])
    assert {s.split("@")[0] for s in stale} == {"evaluate", "export"}


# ---------------------------------------------------------------- params.yaml alone grows the pipeline


def test_a_model_recipe_added_in_params_alone_gets_its_stages_and_the_report_follows(tmp_path):
    text = (REPO / "params.yaml").read_text()
    recipe = ("  mnist_tiny:  # added by the test\n    dataset: mnist\n    init: tasks/cnn/models.py\n"
              "    trainer: tasks/cnn\n    epochs: 1\n    min_accuracy: 0.5\n")
    assert "\nmodels:\n" in text
    repo, env = new_repo(tmp_path, params_text=text.replace("\nmodels:\n", "\nmodels:\n" + recipe, 1))
    stages = {s.name: s for s in stages_of(repo)}
    for group in ("train", "evaluate", "export", "report_page"):
        assert f"{group}@mnist_tiny" in stages
    train = stages["train@mnist_tiny"]
    assert {d.def_path for d in train.deps} >= {"data/processed/mnist", "tasks/cnn/models.py", "tasks/cnn"}
    page_outs = {o.def_path for o in stages["report_page@mnist_tiny"].outs}
    assert "reports/summaries/mnist_tiny.json" in page_outs
    assert "reports/summaries" in {d.def_path for d in stages["report"].deps}  # the index follows the folder
    # and nothing else changed: the same stages as before, plus the new model's
    before = {s.name for s in stages_of(REPO)}
    assert set(stages) - before == {f"{g}@mnist_tiny" for g in ("train", "evaluate", "export", "report_page")}


def test_a_distillation_recipe_is_ordered_after_its_teacher(tmp_path):
    """A student is one more recipe under `models` whose `init` is a teach@ output: its train@ runs after
    teach@, which runs after the teacher's train@ and the student's features cache."""
    text = yaml.safe_dump(with_retired_recipes(yaml.safe_load((REPO / "params.yaml").read_text())), sort_keys=False)
    student = ("\nmodels:\n  cards_student:\n    dataset: cards\n    init: data/teach/cards_cut_v2_100_to_v2_035\n"
               "    trainer: tasks/photo\n    distill_weight: 0.5\n    min_accuracy: 0.5\n")
    assert "\nmodels:\n" in text
    repo, env = new_repo(tmp_path, params_text=text.replace("\nmodels:\n", student, 1))
    stages = {s.name: s for s in stages_of(repo)}
    assert {"train@cards_student", "evaluate@cards_student", "export@cards_student"} <= set(stages)
    assert "train@cards_cut_distill_v2_035" in stages  # the retired student is still there
    assert "data/teach/cards_cut_v2_100_to_v2_035" in {d.def_path for d in stages["train@cards_student"].deps}
    teach = stages["teach@cards_cut_v2_100_to_v2_035"]
    assert {"models/cards_cut_v2_100/model.keras", "data/features/cards_v2_035_cut6"} <= {d.def_path for d in teach.deps}
    dag = run(["dvc", "dag", "--dot", "train@cards_student"], repo, env)
    assert "train@cards_cut_v2_100" in dag and "teach@cards_cut_v2_100_to_v2_035" in dag


def test_a_folder_dataset_added_in_params_alone_is_built_by_dvc_repro(tmp_path):
    photos = tmp_path / "trash photos"
    class_tree(photos, {"glass": 6, "paper": 6, "metal": 6})
    params = {**{k: v for k, v in repo_params().items() if k in MODEL_LINE},
              "mirror": "", "runtime": {"workers": 1}, "datasets": {"trash": "folder"},
              "download": {"retries": 1, "backoff_s": 0.01, "timeout_s": 10},
              "fetch": {"trash": {"source": str(photos)}}, "prepare": {"trash": small_prepare()}}
    repo, env = new_repo(tmp_path, params)
    out = run(["dvc", "repro", "prepare@trash"], repo, env)
    assert "Running stage 'fetch@trash'" in out and "Running stage 'prepare@trash'" in out
    manifest = json.loads((repo / "data/processed/trash/manifest.json").read_text())
    assert manifest["num_classes"] == 3 and sum(s["count"] for s in manifest["splits"].values()) == 18
    assert not (repo / "tasks/sources/trash.py").exists()
    assert "up to date" in run(["dvc", "status", "prepare@trash"], repo, env)


# ---------------------------------------------------------------- dvc repro on the digits fixtures


@pytest.fixture
def dvc_repo(tmp_path):
    pins = write_mirror(tmp_path / "mirror", mat=False, test_images=False)
    write_params(tmp_path / "p", pins=pins)
    params = yaml.safe_load((tmp_path / "p" / "params.yaml").read_text())
    # dvc.yaml also holds the model line: keep its params so the file parses; the test runs the data stages.
    params.update({k: v for k, v in repo_params().items() if k in MODEL_LINE})
    repo, env = new_repo(tmp_path, params)
    env["TLPIPE_MIRROR"] = str(tmp_path / "mirror")
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
