"""The model registry: dvc.yaml's `artifacts` name each blessed product model's TFLite, the copy export@ blessed
(models/<key>/current/), and agree with params.yaml, the stages' outputs and reports/<key>/metrics.json; and
`dvc artifacts get <git URL> <name>` fetches it on a second machine from a clone's DVC remote (a local git
server and a local remote directory here), the latest version or the one a git tag names."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NUMBERS = ("accuracy", "_accuracy", "_bytes")   # meta keys that quote metrics.json


def registry() -> dict:
    """name -> Artifact, as DVC itself reads dvc.yaml (its schema checked, templates resolved). Not through
    `repo.artifacts.read()`: that imports gto, whose import reconfigures logging and so closes the stream of
    every handler already installed, here absl's (TensorFlow, imported by the other test files' collection),
    which is pytest's capture of stderr."""
    from dvc.annotations import Artifact
    from dvc.dvcfile import ProjectFile
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        return {name: Artifact(**value) for name, value in ProjectFile(repo, str(REPO / "dvc.yaml")).artifacts.items()}


def check_names(names: list[str]) -> None:
    """DVC's check of artifact names (GTO's: what `dvc artifacts get` and the version tags accept), in a
    subprocess for the reason above."""
    code = "import sys; from dvc.repo.artifacts import check_name_format; [check_name_format(n) for n in sys.argv[1:]]"
    done = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr.strip().splitlines()[-1:]


def declared_outs() -> dict[str, str]:
    """Every stage output of dvc.yaml (path -> the stage's name), templates resolved on params.yaml."""
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        return {out.def_path: stage.addressing for stage in repo.index.stages for out in stage.outs}


def expected_meta(metrics: dict, fmt: str) -> dict:
    """What meta may quote of a metrics.json, floats to 4 places: accuracy, split, <format>_accuracy, _bytes."""
    out = {"accuracy": round(metrics["accuracy"], 4), "split": metrics.get("split")}
    for kind, v in (metrics.get("tflite") or {}).items():
        out.update({f"{kind}_accuracy": round(v["accuracy"], 4), f"{kind}_bytes": v["bytes"]})
    return out


def test_every_registered_model_is_a_blessed_recipes_declared_tflite():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    artifacts, outs = registry(), declared_outs()
    assert artifacts, "dvc.yaml declares no artifacts"
    check_names(list(artifacts))
    for name, art in artifacts.items():
        where = f"dvc.yaml artifacts.{name}"
        assert name in params["models"], f"{where}: not a recipe of params.yaml models"
        assert art.type == "model" and art.desc and art.labels, where
        fmt = art.meta.get("format")
        assert fmt in params["export"]["formats"], f"{where}: meta.format {fmt!r} is not in export.formats"
        assert art.path == f"models/{name}/current/model_{fmt}.tflite", f"{where}: path {art.path}"
        owner = [p for p in outs if art.path == p or art.path.startswith(p + "/")]
        assert owner == [f"models/{name}/current"] and outs[owner[0]] == f"export@{name}", (where, owner)
        assert art.meta.get("dataset") == params["models"][name]["dataset"], where

        metrics_path = REPO / "reports" / name / "metrics.json"
        quoted = {k: v for k, v in art.meta.items() if k == "split" or k.endswith(NUMBERS)}
        if not metrics_path.exists():  # not exported yet: nothing to quote, so nothing quoted
            assert not quoted, f"{where}: meta {quoted} quotes a {metrics_path} that does not exist"
            continue
        metrics = json.loads(metrics_path.read_text())
        assert metrics.get("blessed") is True, f"{where}: {metrics_path} says the model is not blessed"
        assert {"accuracy", f"{fmt}_accuracy", f"{fmt}_bytes"} <= set(quoted), f"{where}: meta lacks numbers"
        truth = expected_meta(metrics, fmt)
        wrong = {k: (v, truth.get(k)) for k, v in quoted.items() if v != truth.get(k)}
        assert not wrong, f"{where}: meta (value, {metrics_path}'s) disagree: {wrong}"


def test_the_registry_check_catches_a_wrong_number(monkeypatch):
    """The check above fails on a meta number that is not metrics.json's (so it is not a test that cannot fail)."""
    artifacts = registry()
    name = next(n for n in artifacts if (REPO / "reports" / n / "metrics.json").exists())
    art = artifacts[name]
    art.meta = {**art.meta, "accuracy": round(art.meta["accuracy"] - 0.01, 4)}
    monkeypatch.setattr(sys.modules[__name__], "registry", lambda: artifacts)
    with pytest.raises(AssertionError, match=f"artifacts.{name}: meta .* disagree: .*'accuracy'"):
        test_every_registered_model_is_a_blessed_recipes_declared_tflite()


# ---------------------------------------------------------------- `dvc artifacts get` from another machine

def run(cmd, cwd, env) -> str:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def test_dvc_artifacts_get_fetches_a_registered_tflite_from_the_remote(tmp_path):
    """A project with this repository's registry entry for one model and its export@ output (current/, tiny
    bytes), two versions tagged and pushed to a local DVC remote and a bare git server; the working copy then
    deleted. From another directory, `dvc artifacts get <server> <name>` gets the latest version's bytes and
    `--rev v1.0.0` the first's."""
    if shutil.which("dvc", path=str(BIN)) is None:
        pytest.skip("dvc is not installed beside this Python")
    from dvc.repo import Repo

    name = "mnist_ours"
    entry = yaml.safe_load((REPO / "dvc.yaml").read_text())["artifacts"][name]
    current = str(Path(entry["path"]).parent)  # models/mnist_ours/current: export@'s persisted output
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    work, remote, server, phone = (tmp_path / d for d in ("work", "remote", "server.git", "phone"))
    work.mkdir()
    phone.mkdir()
    (work / "dvc.yaml").write_text(yaml.safe_dump({
        "stages": {"export": {"cmd": "tlpipe export mnist_ours", "outs": [{current: {"persist": True}}]}},
        "artifacts": {name: entry}}, sort_keys=False))
    run(["git", "init", "-q", "-b", "main"], work, env)
    versions = {}
    with Repo.init(str(work)) as project:  # the first machine's side in this process (the CLI's calls)
        with project.config.edit() as config:  # .dvc/config, committed: the clone's remote
            config["remote"]["store"] = {"url": str(remote)}
            config["core"]["remote"] = "store"
        for version, payload in (("v1.0.0", b"TFL3 first model"), ("v1.1.0", b"TFL3 second model, retrained")):
            (work / current).mkdir(parents=True, exist_ok=True)
            (work / entry["path"]).write_bytes(payload)
            (work / current / "labels.txt").write_text("0\n1\n")
            project.commit(None, force=True)
            run(["git", "add", "-A"], work, env)
            run(["git", "commit", "-q", "-m", f"bless {version}"], work, env)
            run(["git", "tag", "-a", f"{name}@{version}", "-m", f"register {name} {version}"], work, env)
            assert project.push() > 0
            versions[version] = payload
    run(["git", "clone", "-q", "--bare", work, server], tmp_path, env)
    shutil.rmtree(work)  # nothing left but the git server and the DVC remote

    run([BIN / "dvc", "artifacts", "get", server, name], phone, env)
    assert (phone / "model_int8.tflite").read_bytes() == versions["v1.1.0"]  # the greatest version
    run([BIN / "dvc", "artifacts", "get", server, name, "--rev", "v1.0.0", "-o", "first.tflite"], phone, env)
    assert (phone / "first.tflite").read_bytes() == versions["v1.0.0"]
