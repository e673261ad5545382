"""What a user sees: `dvc repro` of a tiny params-only pipeline (fetch, prepare, train, evaluate, export,
report page) prints the stage lines and the epoch lines, not TensorFlow's start-up log (cudart_stub,
cuInit at level E on a machine without a GPU, absl) nor the TFLite converter's SavedModel printout
(TensorSpec lines); `-v` brings them back."""
import re
import subprocess
import sys
from pathlib import Path

import yaml

from dvcproject import dvc_env, init_dvc_project
from project import serve_dir, write_mirror, write_params

BIN = Path(sys.executable).parent
MAX_LINES = 60  # measured: 50 lines for the 6 stages and 2 epochs, DVC's own lines included
NOISE = ("TensorSpec", "cuInit", "cudart_stub", "absl::InitializeLog", "cpu_feature_guard", "oneDNN")


def sh(cmd, cwd, env) -> str:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{done.stdout}"
    return done.stdout


def test_a_tiny_run_prints_its_stages_and_epochs_and_no_library_noise(tmp_path, http_server):
    repo = tmp_path / "repo"
    repo.mkdir()
    pins = write_mirror(tmp_path / "mirror", mat=False, idx=False)
    write_params(repo, pins=pins, datasets=("mnist",))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params.update({
        "check": {"mnist": {}}, "weights": {}, "features": {}, "teach": {}, "report": {},
        "models": {"tiny": {"dataset": "mnist", "init": "tasks/cnn/models.py", "trainer": "tasks/cnn",
                            "arch": "softmax", "epochs": 2, "batch_size": 16, "seed": 1, "patience": 2,
                            "min_accuracy": 0.0}},
        "evaluate": {"top_k": 3, "max_regression": 1.0, "grid": 4, "most_confused": 3},
        "export": {"representative_samples": 16, "latency_runs": 1, "batch_size": 32},
    })
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    init_dvc_project(repo, keep_params=True)  # this repository's dvc.yaml and tasks/, git + dvc init
    env = {k: v for k, v in dvc_env().items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TLPIPE_VERBOSE", "TLPIPE_QUIET")}
    env.update({"PYTHONPATH": str(repo), "TLPIPE_MIRROR": serve_dir(http_server, tmp_path / "mirror")})

    out = sh([BIN / "dvc", "repro", "report_page@tiny"], repo, env)
    lines = out.splitlines()
    noise = [line for line in lines if any(n in line for n in NOISE)]
    assert not noise, "library noise in a quiet run:\n" + "\n".join(noise[:10])
    for stage in ("fetch mnist", "prepare mnist", "train tiny", "evaluate tiny", "export tiny", "report tiny"):
        assert f"tlpipe {stage}: started" in out, stage
        assert re.search(rf"tlpipe {stage}: done in \d+\.\d s: ", out), stage
    assert len(re.findall(r"val_accuracy: ", out)) == 2  # one line per epoch in a log
    assert len(lines) < MAX_LINES, f"{len(lines)} lines:\n{out}"

    loud = sh([BIN / "tlpipe", "-v", "export", "tiny"], repo, env)
    assert "TensorSpec" in loud and "tlpipe export tiny: done in" in loud
