"""Faults around the runner, part 5: the disk fills up. `tlpipe export` and `tlpipe train` of a tiny trained
CNN are rerun in processes under a file-size limit smaller than the model (RLIMIT_FSIZE, with SIGXFSZ
ignored, so the write that crosses it fails with EFBIG "File too large", as one on a full disk fails with
ENOSPC): each ends with one line naming the file and saying the disk is full or the limit is reached, no
traceback, exit 1, and the previous model.keras, its TFLite files and current/ are byte for byte as they
were, with no temp file left beside them."""
import contextlib
import errno
import hashlib
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from faults import leftovers
from project import write_mirror, write_params
from tasks.core.io import NoRoom, no_room, room_for

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
KEY = "tiny"
LIMIT = 300_000  # bytes: Python and TensorFlow start (they write no file that big); the model is ~2 MB
RECIPE = {"dataset": "mnist", "init": "tasks/cnn/models.py", "trainer": "tasks/cnn",
          "arch": "lecture_conv_pool_dense", "epochs": 1, "batch_size": 16, "seed": 1, "patience": 1,
          "min_accuracy": 0.0}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fingerprint(root: Path) -> dict:
    """sha256 of the model, and of every file of tflite/ (each format's .tflite, labels.txt) and current/."""
    models = root / "models" / KEY
    prints = {"model.keras": sha256(models / "model.keras")}
    for folder in ("tflite", "current"):
        prints.update({f"{folder}/{p.name}": sha256(p) for p in sorted((models / folder).iterdir())})
    return prints


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A tiny project whose model is trained, evaluated and exported (blessed: current/ holds it)."""
    from tasks.cli import main
    from tasks.stages.data import fetch_stage, prepare_stage
    from tasks.stages.models import evaluate_stage, train_stage
    from tasks.stages.project import Project

    tmp = tmp_path_factory.mktemp("diskfull")
    pins = write_mirror(tmp / "mirror", mat=False, idx=False)
    root = tmp / "proj"
    write_params(root, mirror=str(tmp / "mirror"), pins=pins, datasets=("mnist",))
    params = yaml.safe_load((root / "params.yaml").read_text())
    params.update({"models": {KEY: RECIPE}, "check": {"mnist": {}},
                   "evaluate": {"top_k": 3, "max_regression": 1.0, "grid": 4, "most_confused": 3},
                   "export": {"representative_samples": 16, "latency_runs": 1, "batch_size": 32}})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    project = Project(root)
    fetch_stage(project, "mnist")
    prepare_stage(project, "mnist")
    train_stage(project, KEY)
    evaluate_stage(project, KEY)
    with contextlib.chdir(root):
        assert main(["export", KEY]) == 0
    assert (root / "models" / KEY / "model.keras").stat().st_size > 4 * LIMIT
    assert (root / "models" / KEY / "tflite" / "model_int8.tflite").stat().st_size < LIMIT < \
        (root / "models" / KEY / "tflite" / "model_float32.tflite").stat().st_size
    assert len(fingerprint(root)) == 1 + 5 + 6  # model.keras; 4 formats + labels.txt; the same + metrics.json
    return root


def file_size_limit(limit: int):
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the writer
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


@pytest.mark.parametrize("command, written", [("export", "tflite/model_float32.tflite"), ("train", "model.keras")])
def test_a_write_past_the_file_size_limit_is_one_line_and_keeps_the_previous_model(project, command, written):
    before = fingerprint(project)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("TLPIPE_TRACEBACK", None)
    done = subprocess.run([str(BIN / "tlpipe"), command, KEY], cwd=project, env=env, capture_output=True,
                          text=True, timeout=300, preexec_fn=file_size_limit(LIMIT))
    assert done.returncode == 1, f"exit {done.returncode}:\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    path = project / "models" / KEY / written
    assert lines[-1].startswith(f"tlpipe {command}: error: {path}: could not write it")
    assert "File too large (EFBIG)" in lines[-1]
    assert "the disk is full or the file-size limit (`ulimit -f`) is reached" in lines[-1]

    assert fingerprint(project) == before  # model.keras, the TFLite files, current/: as they were
    for folder in (project / "models", project / "models" / KEY, project / "models" / KEY / "tflite",
                   project / "models" / KEY / "current"):
        assert leftovers(folder) == [], folder


def test_a_full_disk_and_the_file_size_limit_are_one_class_of_error(tmp_path):
    """ENOSPC, EFBIG and EDQUOT, raised plain or worded by TensorFlow or h5py: NoRoom naming the file."""
    import tensorflow as tf

    target = tmp_path / "model.keras"
    for raised in (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), OSError(errno.EFBIG, os.strerror(errno.EFBIG)),
                   OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)),
                   tf.errors.OutOfRangeError(None, None, "/tmp/x/variables.data-00000-of-00001; File too large"),
                   OSError("Can't synchronously write data (file write failed: filename = '/tmp/w.h5', errno = 28, "
                           "error message = 'No space left on device')")):
        with pytest.raises(NoRoom) as caught:
            with room_for(target):
                raise raised
        assert str(caught.value).startswith(f"{target}: could not write it")
        assert caught.value.code in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
    assert no_room(OSError(errno.EACCES, "Permission denied")) is None
    assert no_room(ValueError("bad value")) is None
    with pytest.raises(PermissionError), room_for(target):
        raise PermissionError(errno.EACCES, "Permission denied")
    wrapped = RuntimeError("saving failed")
    wrapped.__cause__ = OSError(errno.ENOSPC, "No space left on device", "/data/x")
    assert "writing /data/x" in str(no_room(wrapped)) and "No space left on device (ENOSPC)" in str(no_room(wrapped))
