"""Crash safety of the data stages and clear errors (issue 15): kills at exact moments (os._exit in a
subprocess, see tests/faults.py), one writer per output, no leaks after a kill, the user's umask,
file names that are not UTF-8, and one-line messages instead of tracebacks."""
import json
import os
import stat
import time

import numpy as np
import pytest
from PIL import Image

from faults import leftovers, run_killed, tree_bytes
from photos import class_tree, small_prepare
from photos import write_params as write_photo_params
from project import write_mirror, write_params
from tasks.core import io as tio
from tasks.cli import main
from tasks.stages.project import Project
from tasks.stages.data import fetch_stage as fetch
from tasks.stages.data import prepare_stage as prepare


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    for name in ("TLPIPE_MIRROR", "TLPIPE_WORKERS", "TLPIPE_TRACEBACK"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def mnist_project(tmp_path):
    """A project whose mirror is a local folder of MNIST fixtures."""
    def make(name):
        pins = write_mirror(tmp_path / "mirror", mat=False, idx=False) if not (tmp_path / "mirror").exists() else \
            json.loads((tmp_path / "pins.json").read_text())
        (tmp_path / "pins.json").write_text(json.dumps(pins))
        write_params(tmp_path / name, mirror=str(tmp_path / "mirror"), pins=pins, datasets=("mnist",))
        return Project(tmp_path / name)
    return make


# ---------------------------------------------------------------- atomic_dir: lock, leftovers, umask

HOLD = """
    import sys, time
    from pathlib import Path
    from tasks.core.io import atomic_dir
    final, ready, go = (Path(a) for a in sys.argv[1:])
    with atomic_dir(final) as tmp:
        (tmp / "from-holder").write_text("x")
        ready.write_text(str(tmp))
        while not go.exists():
            time.sleep(0.05)
"""


def test_a_second_writer_of_one_output_is_refused_naming_the_holder(tmp_path):
    import subprocess
    import sys
    import textwrap

    from faults import ROOT

    final, ready, go = tmp_path / "out" / "mnist", tmp_path / "ready", tmp_path / "go"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(HOLD), str(final), str(ready), str(go)],
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert holder.poll() is None and time.monotonic() < deadline, "the holder did not start"
            time.sleep(0.05)
        with pytest.raises(tio.OutputLocked, match=rf"mnist: process {holder.pid} is writing it now"):
            with tio.atomic_dir(final):
                pytest.fail("entered a locked output")
        assert os.path.isdir(ready.read_text())  # the live writer's temp dir was left alone
        go.write_text("")
        assert holder.wait(60) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
    assert (final / "from-holder").exists() and leftovers(final.parent) == []
    with tio.atomic_dir(final) as tmp:  # free again
        (tmp / "second").write_text("y")
    assert sorted(p.name for p in final.iterdir()) == ["second"]


def test_what_a_killed_writer_left_is_removed_by_the_next_run_of_that_output_only(tmp_path):
    final = tmp_path / "raw" / "mnist"
    with tio.atomic_dir(final) as tmp:
        (tmp / "old").write_text("old")
    run_killed(f"""
        from pathlib import Path
        from faults import _die
        from tasks.core.io import atomic_dir
        with atomic_dir(Path({str(final)!r})) as tmp:
            (tmp / "train.gz.part").write_bytes(b"half a download")
            _die()
    """)
    other = tmp_path / "raw" / ".emnist_letters.tmp-123-abc"
    other.mkdir()
    left = leftovers(final.parent)
    assert any(n.startswith(".mnist.tmp-") for n in left) and ".mnist.lock" in left  # the leak a kill leaves
    assert (final / "old").read_text() == "old"                                      # the old output intact
    with tio.atomic_dir(final) as tmp:
        (tmp / "new").write_text("new")
    assert leftovers(final.parent) == [other.name]  # ours cleaned; another output's left alone
    assert sorted(p.name for p in final.iterdir()) == ["new"]


def test_a_swap_never_leaves_the_output_absent(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "f").write_text("a"), (b / "f").write_text("b")
    if not tio.exchange(a, b):
        pytest.skip("no renameat2 RENAME_EXCHANGE here (the fallback is two renames)")
    assert (a / "f").read_text() == "b" and (b / "f").read_text() == "a"


@pytest.mark.parametrize("mask", [0o022, 0o002])
def test_outputs_follow_the_users_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        assert tio.umask() == mask
        with tio.atomic_dir(tmp_path / "out") as tmp:
            (tmp / "sub").mkdir()
        with tio.atomic_file(tmp_path / "file.bin") as f:
            f.write(b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o777 & ~mask
    assert stat.S_IMODE((tmp_path / "file.bin").stat().st_mode) == 0o666 & ~mask


# ---------------------------------------------------------------- kills during fetch and prepare


def test_a_download_killed_mid_file_is_cleaned_and_refetched_byte_identical(mnist_project):
    clean = mnist_project("clean")
    fetch(clean, "mnist")
    killed = mnist_project("killed")
    run_killed("""
        from faults import kill_at
        kill_at("tasks.fetch.download:Sink.write", call=2, when="after")
        from tasks.stages.project import find_project
        from tasks.stages.data import fetch_stage as fetch
        fetch(find_project(), "mnist")
    """, cwd=killed.root)
    raw = killed.root / "data" / "raw"
    parts = [p for p in raw.rglob("*.part")]
    assert parts and not (raw / "mnist").exists()  # the leak: a temp dir with a .part file in it
    fetch(killed, "mnist")
    assert leftovers(raw) == []
    assert tree_bytes(raw / "mnist") == tree_bytes(clean.root / "data" / "raw" / "mnist")


@pytest.mark.parametrize("kill_point", [
    "tasks.sources.mnist:load",          # parsing, before anything is written
    "tasks.records.shards:write_records",        # the first shard
    "tasks.records.shards:write_json",           # labels.json, after every shard
    "tasks.core.io:exchange",                 # the swap (here: a rerun over an older output)
])
def test_prepare_killed_at_each_phase_reruns_to_byte_identical_outputs(mnist_project, kill_point):
    clean = mnist_project("clean")
    fetch(clean, "mnist")
    prepare(clean, "mnist")
    killed = mnist_project("killed")
    fetch(killed, "mnist")
    if kill_point == "tasks.core.io:exchange":
        prepare(killed, "mnist")  # an older output to swap out
    run_killed(f"""
        from faults import kill_at
        kill_at({kill_point!r}, call=1)
        from tasks.stages.project import find_project
        from tasks.stages.data import prepare_stage as prepare
        prepare(find_project(), "mnist")
    """, cwd=killed.root)
    processed = killed.root / "data" / "processed"
    if kill_point != "tasks.sources.mnist:load":
        assert any(".mnist.tmp-" in n for n in leftovers(processed))
    prepare(killed, "mnist")
    assert leftovers(processed) == []
    assert tree_bytes(processed / "mnist") == tree_bytes(clean.root / "data" / "processed" / "mnist")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (dead, not yet reaped) counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_worker_processes_die_with_a_killed_prepare(tmp_path):
    src = tmp_path / "photos"
    class_tree(src, {"red": 40, "green": 40})
    root = tmp_path / "proj"
    write_photo_params(root, {"shapes": {"source": str(src)}}, {"shapes": small_prepare()},
                       workers=2)
    fetch(Project(root), "shapes")
    pids = tmp_path / "pids.json"
    run_killed(f"""
        import json, multiprocessing
        from multiprocessing import resource_tracker
        import tasks.prepare.photos as f
        from faults import _die
        results = f._results

        def dying(*a, **k):  # the parent dies while its pool is up and busy converting
            for n, r in enumerate(results(*a, **k)):
                if n == 40:
                    children = [p.pid for p in multiprocessing.active_children()]
                    tracker = resource_tracker._resource_tracker._pid
                    open({str(pids)!r}, "w").write(json.dumps(children + ([tracker] if tracker else [])))
                    _die()
                yield r

        f._results = dying
        from tasks.stages.project import find_project
        from tasks.stages.data import prepare_stage as prepare
        prepare(find_project(), "shapes")
    """, cwd=root)
    spawned = json.loads(pids.read_text())
    assert len(spawned) >= 2
    deadline = time.monotonic() + 60  # a generous bound, not a timing claim: they exit within ~0.2 s
    while any(_alive(p) for p in spawned) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [p for p in spawned if _alive(p)] == []
    prepare(Project(root), "shapes")  # and the rerun cleans up after it
    assert leftovers(root / "data" / "processed") == []


# ---------------------------------------------------------------- photo inputs that used to stop a dataset


def test_a_file_name_that_is_not_utf8_is_skipped_not_fatal(tmp_path):
    src = tmp_path / "photos"
    class_tree(src, {"red": 8, "green": 8})  # enough for a non-empty test split
    bad = os.path.join(os.fsencode(src / "red"), b"caf\xe9.jpg")
    with open(bad, "wb") as f:
        f.write((src / "red" / "000.jpg").read_bytes()[:-1] + b"\xd9")
    os.makedirs(os.path.join(os.fsencode(src), b"gr\xfcn"))
    with open(os.path.join(os.fsencode(src), b"gr\xfcn", b"0.jpg"), "wb") as f:
        f.write((src / "red" / "001.jpg").read_bytes())
    root = tmp_path / "proj"
    write_photo_params(root, {"shapes": {"source": str(src)}}, {"shapes": small_prepare()})
    fetch(Project(root), "shapes")
    manifest = prepare(Project(root), "shapes")
    skipped = {s["file"]: s["reason"] for s in manifest["skipped"]}
    assert "not valid UTF-8" in skipped["red/caf\\xe9.jpg"] and "not valid UTF-8" in skipped["gr\\xfcn/0.jpg"]
    assert manifest["num_classes"] == 2 and sum(v["count"] for v in manifest["splits"].values()) == 16
    json.dumps(manifest, ensure_ascii=False).encode("utf-8")  # writable as UTF-8 JSON


def test_prepare_refuses_a_dataset_whose_validation_split_is_empty(tmp_path, mnist_project, capsys, monkeypatch):
    src = tmp_path / "photos"
    class_tree(src, {"red": 3, "green": 3})
    root = tmp_path / "proj"
    write_photo_params(root, {"shapes": {"source": str(src)}},
                       {"shapes": small_prepare(validation_percentage=0)})
    fetch(Project(root), "shapes")
    with pytest.raises(ValueError, match="validation split is empty.*validation_percentage"):
        prepare(Project(root), "shapes")
    assert not (root / "data" / "processed" / "shapes").exists()
    project = mnist_project("novalid")
    write_params(project.root, mirror=str(project.root.parent / "mirror"), validation_percentage=0,
                 pins=json.loads((project.root.parent / "pins.json").read_text()), datasets=("mnist",))
    fetch(project, "mnist")
    monkeypatch.chdir(project.root)
    assert main(["prepare", "mnist"]) == 1
    err = capsys.readouterr().err
    assert "validation split is empty" in err and "Traceback" not in err


def test_disk_full_while_writing_a_shard_is_one_line_naming_the_shard(mnist_project, monkeypatch, capsys):
    import tensorflow as tf

    project = mnist_project("full")
    fetch(project, "mnist")

    class FullDisk:
        def __init__(self, path):
            self.path = path

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def write(self, record):
            raise tf.errors.ResourceExhaustedError(None, None, f"{self.path}; No space left on device")

    monkeypatch.setattr(tf.io, "TFRecordWriter", FullDisk)
    monkeypatch.chdir(project.root)
    assert main(["prepare", "mnist"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "train-00000-of-00002.tfrecord: could not write the shard (ResourceExhaustedError" in err
    assert "free disk space" in err
    assert leftovers(project.root / "data" / "processed") == []


# ---------------------------------------------------------------- tlpipe predict and the CLI


@pytest.fixture(scope="module")
def tflite(tmp_path_factory):
    """A tiny float32 TFLite classifier of 8x8 greyscale images (3 classes) with its labels.txt."""
    import keras

    from tasks.evaluate.export import to_tflite_float32

    d = tmp_path_factory.mktemp("tflite")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1), dtype="uint8"), keras.layers.Rescaling(1 / 255),
                              keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax")])
    (d / "model.tflite").write_bytes(to_tflite_float32(model))
    (d / "labels.txt").write_text("a\nb\nc\n")
    Image.fromarray(np.full((8, 8), 200, np.uint8)).save(d / "good.png")
    Image.fromarray(np.full((1, 1), 200, np.uint8)).save(d / "tiny.png")
    return d


def test_predict_prints_the_good_images_then_fails_for_the_missing_one(tflite, capsys, caplog):
    rc = main(["predict", str(tflite / "model.tflite"), str(tflite / "good.png"), str(tflite / "nope.png"),
               str(tflite / "tiny.png"), "--top-k", "2"])
    out, err = capsys.readouterr()
    assert rc == 1
    assert out.splitlines()[0] == str(tflite / "good.png") and len(out.splitlines()) == 3 + 2 + 3
    assert "nope.png" in out and "no such file" in out
    assert err.strip() == f"tlpipe predict: error: 1 of 3 images could not be classified: {tflite / 'nope.png'}: " \
                          "no such file"
    assert any("tiny.png is 1x1 pixels, far smaller than the model's 8x8 input" in r.message for r in caplog.records)


def test_predict_names_the_file_that_is_wrong(tflite, tmp_path, capsys):
    def run(*args):
        rc = main(["predict", *map(str, args)])
        return rc, capsys.readouterr().err.strip()

    rc, err = run(tmp_path / "missing.tflite", tflite / "good.png")
    assert rc == 1 and "missing.tflite: no such model file" in err and "labels.txt" not in err
    (tmp_path / "junk.tflite").write_bytes(b"not a flatbuffer at all" * 10)
    (tmp_path / "labels.txt").write_text("a\n")
    rc, err = run(tmp_path / "junk.tflite", tflite / "good.png")
    assert rc == 1 and "junk.tflite: not a valid TFLite model" in err
    short = tmp_path / "short"
    short.mkdir()
    (short / "model.tflite").write_bytes((tflite / "model.tflite").read_bytes())
    (short / "labels.txt").write_text("a\nb\n")
    rc, err = run(short / "model.tflite", tflite / "good.png")
    assert rc == 1 and "labels.txt: 2 labels for the 3 outputs" in err and "Traceback" not in err
    for k in ("0", "-1"):
        with pytest.raises(SystemExit) as e:
            main(["predict", str(tflite / "model.tflite"), str(tflite / "good.png"), "--top-k", k])
        assert e.value.code == 2
        assert "--top-k: must be a positive integer" in capsys.readouterr().err


def test_traceback_flag_or_env_shows_the_stack(tflite, tmp_path, monkeypatch, capsys):
    args = ["predict", str(tmp_path / "missing.tflite"), str(tflite / "good.png")]
    assert main(args) == 1 and "Traceback" not in capsys.readouterr().err
    with pytest.raises(FileNotFoundError):
        main(["--traceback", *args])
    with pytest.raises(FileNotFoundError):
        main([*args, "--traceback"])
    monkeypatch.setenv("TLPIPE_TRACEBACK", "1")
    with pytest.raises(FileNotFoundError):
        main(args)


def test_an_unexpected_error_is_one_line_that_says_how_to_see_the_stack(monkeypatch, capsys):
    import tasks.cli as cli

    def boom(args):
        return [][1]

    monkeypatch.setattr(cli, "_report", boom)
    assert main(["report"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("tlpipe report: error: IndexError: list index out of range") and "--traceback" in err


def test_an_empty_or_damaged_model_file_is_named_as_such(tmp_path):
    from tasks.stages.models import require_model
    from tasks.fit import load_model

    path = tmp_path / "model.keras"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"model.keras: the model file is empty \(0 bytes\); retrain it"):
        require_model(path, "m")
    with pytest.raises(ValueError, match=r"model.keras: the model file is empty"):
        load_model(path)
    path.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="not a .keras zip"):
        require_model(path, "m")
    with pytest.raises(FileNotFoundError, match="no trained model; run `tlpipe train m`"):
        require_model(tmp_path / "none.keras", "m")
