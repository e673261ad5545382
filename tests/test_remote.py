"""The DVC remote: repro a fixture pipeline (data and a tiny model), `dvc push` to an S3 server (moto on
127.0.0.1) through the repository's own .dvc/config with a `--local` override, then a fresh clone pulls
everything: `dvc status` clean, nothing reruns, `tlpipe predict` works on the pulled model."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from project import serve_dir, write_mirror, write_params
from s3server import AWS_ENV, BUCKET, objects, s3, use_remote  # noqa: F401 (s3: a fixture)

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TARGET = "export@tiny"  # fetch, prepare, train, evaluate, export of one tiny model


def run(cmd, cwd, env, timeout=600) -> str:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def test_push_then_a_fresh_clone_pulls_everything_and_nothing_reruns(tmp_path, http_server, s3):
    endpoint, client = s3
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(REPO / "dvc.yaml", repo)
    ((repo) / "reports" / "retired").mkdir(parents=True, exist_ok=True)  # the report stage's dep (dvc.yaml)
    ((repo) / "reports" / "retired" / "README.md").write_text("retired recipes' last rows\n")
    shutil.copytree(REPO / "tasks", repo / "tasks", ignore=shutil.ignore_patterns("__pycache__"))
    pins = write_mirror(tmp_path / "mirror", mat=False, idx=False)
    write_params(repo, pins=pins, datasets=("mnist",))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    main = yaml.safe_load((REPO / "params.yaml").read_text())
    params.update({k: main[k] for k in ("weights", "features")})  # dvc.yaml's other stages must parse
    params.update({
        "models": {"tiny": {"dataset": "mnist", "init": "tasks/cnn/models.py", "trainer": "tasks/cnn",
                            "arch": "softmax", "epochs": 1, "batch_size": 16, "seed": 1, "patience": 1,
                            "min_accuracy": 0.0}},
        "check": {"mnist": {}}, "teach": {}, "report": {},
        "evaluate": {"top_k": 3, "max_regression": 1.0, "grid": 4, "most_confused": 3},
        "export": {"representative_samples": 16, "latency_runs": 1, "batch_size": 32},
    })
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", **AWS_ENV,
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    env.pop("TLPIPE_MIRROR", None)
    run(["git", "init", "-q"], repo, env)
    run([BIN / "dvc", "init", "-q"], repo, env)
    shutil.copy(REPO / ".dvc" / "config", repo / ".dvc" / "config")  # the project's default remote
    assert "s3://" in run([BIN / "dvc", "remote", "default"], repo, env) + \
        run([BIN / "dvc", "remote", "list"], repo, env)

    mirror = serve_dir(http_server, tmp_path / "mirror")
    out = run([BIN / "dvc", "repro", TARGET], repo, {**env, "TLPIPE_MIRROR": mirror})
    for stage in ("fetch@mnist", "prepare@mnist", "train@tiny", "evaluate@tiny", "export@tiny"):
        assert f"Running stage '{stage}'" in out
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-q", "-m", "fixture run"], repo, env)

    use_remote(repo, endpoint, env)
    pushed = run([BIN / "dvc", "push", TARGET, "--with-deps"], repo, env)
    stored = objects(client)
    assert stored, f"nothing in the bucket after dvc push:\n{pushed}"
    assert all(o["Key"].startswith("dvc/") for o in stored)

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", repo, clone], tmp_path, env)
    assert not (clone / "models/tiny/model.keras").exists()
    use_remote(clone, endpoint, env)
    run([BIN / "dvc", "pull", TARGET, "--with-deps"], clone, env)
    for path in ("data/processed/mnist/manifest.json", "models/tiny/model.keras",
                 "models/tiny/current/model_int8.tflite", "models/tiny/tflite/model_int8.tflite",
                 "models/tiny/tflite/labels.txt"):
        assert (clone / path).is_file(), path
        assert (clone / path).read_bytes() == (repo / path).read_bytes(), path

    status = run([BIN / "dvc", "status", TARGET, "--with-deps"], clone, env)
    assert "Data and pipelines are up to date" in status, status
    again = run([BIN / "dvc", "repro", TARGET], clone, env)  # no mirror here: a fetch would fail
    assert "Running stage" not in again, again

    digit = clone / "digit.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)).save(digit)
    predicted = run([BIN / "tlpipe", "predict", "models/tiny/current/model_int8.tflite", digit], clone, env)
    labels = (clone / "models/tiny/tflite/labels.txt").read_text().split()
    assert any(label in predicted for label in labels), predicted
