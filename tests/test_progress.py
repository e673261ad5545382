"""Progress on every long phase (tasks/core/progress.py): in a log (a pipe), a line about every
TLPIPE_PROGRESS_INTERVAL seconds and one at the end, never one per batch; on a terminal a live bar;
`-q` / TLPIPE_QUIET=1: nothing but a stage's start and end lines. Progress only prints: a fit with its
callback gives the same weights as one without."""
import io
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from photos import class_tree, small_prepare, write_params
from tasks.core import progress
from tasks.core.progress import Progress, Ticker, keras_callback

REPO = Path(__file__).resolve().parents[1]
LINE = re.compile(r"^slow phase: (\d+)/40 items \((\d+)%\), [\d.,]+ items/s, ETA \d+(s|m\d\ds)$")
END = re.compile(r"^slow phase: 40 items in \d+s, [\d.,]+ items/s$")
SLOW_PHASE = textwrap.dedent("""
    import time
    from tasks.core.progress import Progress
    with Progress("slow phase", 40, "items") as done:
        for _ in range(40):
            time.sleep(0.03)
            done.update()
""")


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture(autouse=True)
def log_mode(monkeypatch):
    monkeypatch.delenv(progress.QUIET_ENV, raising=False)
    monkeypatch.delenv(progress.INTERVAL_ENV, raising=False)


def child_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in (progress.QUIET_ENV, progress.INTERVAL_ENV)}
    return {**env, "PYTHONPATH": str(REPO), **extra}


def run_piped(code: str, **env) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=child_env(**env), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done, time.monotonic() - start


def test_a_slow_phase_in_a_pipe_prints_a_bounded_number_of_lines_and_one_at_the_end():
    interval = 0.2
    done, wall = run_piped(SLOW_PHASE, TLPIPE_PROGRESS_INTERVAL=str(interval))
    lines = done.stderr.splitlines()
    periodic = [line for line in lines if LINE.match(line)]
    assert len(periodic) >= 2, done.stderr  # 40 x 30 ms = 1.2 s at the least: lines at 0.2, 0.4, ...
    assert len(periodic) <= wall / interval, f"{len(periodic)} lines in {wall:.2f} s:\n{done.stderr}"
    assert len(periodic) < 40  # never one per item
    counts = [int(LINE.match(line).group(1)) for line in periodic]
    assert counts == sorted(counts) and len(set(counts)) == len(counts), counts
    assert END.match(lines[-1]) and sum(bool(END.match(line)) for line in lines) == 1, done.stderr
    assert lines == periodic + [lines[-1]], done.stderr  # nothing else
    assert done.stdout == ""  # progress goes to stderr


def test_quiet_prints_nothing_and_a_short_phase_prints_nothing_either():
    quiet, _ = run_piped(SLOW_PHASE, TLPIPE_PROGRESS_INTERVAL="0.2", TLPIPE_QUIET="1")
    assert quiet.stdout == quiet.stderr == ""
    short, _ = run_piped(SLOW_PHASE)  # the default interval (30 s) outlasts the phase: no line, no end line
    assert short.stderr == ""


def test_the_interval_rule_with_a_clock_one_line_per_interval_whatever_the_batch_count():
    clock, out = FakeClock(), io.StringIO()
    ticker = Ticker(every=30, clock=clock)
    with Progress("features k", 2400, "images", stream=out, how="log", ticker=ticker) as done:
        for _ in range(2400):  # 10 minutes of 0.25 s batches
            clock.now += 0.25
            done.update()
    lines = out.getvalue().splitlines()
    assert len(lines) == 20 + 1, lines  # 600 s / 30 s, and the end line
    assert lines[0] == "features k: 120/2,400 images (5%), 4.00 images/s, ETA 9m30s"
    assert lines[-1] == "features k: 2,400 images in 10m00s, 4.00 images/s"


def test_phases_share_the_interval_so_short_phases_in_a_row_are_not_silent():
    clock, out = FakeClock(), io.StringIO()
    ticker = Ticker(every=30, clock=clock)
    for name in ("a", "b", "c", "d"):  # 20 s each
        with Progress(name, 20, "folds", stream=out, how="log", ticker=ticker) as done:
            for _ in range(20):
                clock.now += 1
                done.update()
    lines = out.getvalue().splitlines()
    # a line 30 s into the run (in b), b's end line at 40 s; the next 30 s later (in d), and d's end line
    assert [line.split(":")[0] for line in lines] == ["b", "b", "d", "d"], lines
    assert lines[0] == "b: 10/20 folds (50%), 1.00 folds/s, ETA 10s"


def test_a_bad_interval_is_one_clear_error(monkeypatch):
    for bad in ("soon", "-1", "nan", "inf"):
        monkeypatch.setenv(progress.INTERVAL_ENV, bad)
        with pytest.raises(ValueError, match=rf"TLPIPE_PROGRESS_INTERVAL='{bad}': expected the seconds between"):
            Progress("x", 3, stream=io.StringIO(), how="log", ticker=Ticker())


def test_on_a_terminal_a_live_tqdm_bar_and_with_quiet_nothing(monkeypatch):
    tty = FakeTTY()
    assert progress.mode(tty) == "bar" and progress.mode(io.StringIO()) == "log"
    with Progress("features k", 50, "images", stream=tty) as done:
        for _ in range(50):
            done.update()
    text = tty.getvalue()
    assert "\r" in text and "features k" in text and "50/50" in text and "images/s" in text
    assert text.count("\n") <= 1 and "ETA" not in text  # redrawn in place, not log lines

    monkeypatch.setenv(progress.QUIET_ENV, "1")
    quiet = FakeTTY()
    with Progress("features k", 50, "images", stream=quiet) as done:
        for _ in range(50):
            done.update()
    assert progress.mode(quiet) == "off" and quiet.getvalue() == ""


def test_progress_reaches_the_real_stderr_while_the_converter_printout_is_swallowed():
    code = textwrap.dedent("""
        import os, sys, time
        from tasks.core.progress import Progress
        from tasks.stages.console import swallowed
        with swallowed((1, 2)):  # what export_quiet does around the TFLite conversion and the parity pass
            print("converter noise", flush=True)
            print("more noise", file=sys.stderr, flush=True)
            os.write(2, b"native noise\\n")
            with Progress("slow phase", 40, "items") as done:
                for _ in range(40):
                    time.sleep(0.03)
                    done.update()
    """)
    done, _ = run_piped(code, TLPIPE_PROGRESS_INTERVAL="0.2")
    assert "noise" not in done.stdout + done.stderr
    assert sum(bool(LINE.match(line)) for line in done.stderr.splitlines()) >= 2, done.stderr
    assert END.match(done.stderr.splitlines()[-1]), done.stderr


# ---------------------------------------------------------------- Keras: batches within an epoch


def tiny_fit(callbacks, verbose=0):
    import keras

    keras.utils.set_random_seed(3)
    x = np.random.default_rng(0).normal(size=(160, 8)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, activation="relu"),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x[:120], y[:120], validation_data=(x[120:], y[120:]), batch_size=8, epochs=2, shuffle=True,
              callbacks=callbacks, verbose=verbose)
    return model.get_weights(), model.predict(x, batch_size=32, verbose=0, callbacks=callbacks[-1:])


def test_a_fit_reports_its_batches_within_each_epoch_and_changes_no_weight(monkeypatch):
    monkeypatch.setenv(progress.INTERVAL_ENV, "0")  # every batch due: the count of lines shows which batches
    out = io.StringIO()
    weights, predictions = tiny_fit([keras_callback("train tiny", stream=out, ticker=Ticker())])
    plain_weights, plain_predictions = tiny_fit([])
    assert all(np.array_equal(a, b) for a, b in zip(weights, plain_weights))
    assert np.array_equal(predictions, plain_predictions)
    lines = out.getvalue().splitlines()
    for epoch in (1, 2):
        train = [line for line in lines if line.startswith(f"train tiny epoch {epoch}/2: ")]
        assert len(train) == 15, lines  # 120 / 8 batches
        assert train[-1].startswith(f"train tiny epoch {epoch}/2: 15/15 batches (100%)")
        assert any(line.startswith(f"train tiny epoch {epoch}/2 validation: ") for line in lines)
    assert any(re.match(r"train tiny: \d+/5 batches", line) for line in lines)  # the predict: 160 / 32
    assert not any(" in " in line and "epoch" in line for line in lines)  # Keras prints the epoch's line


def test_a_fit_is_silent_when_quiet_or_when_keras_draws_its_own_bar(monkeypatch):
    monkeypatch.setenv(progress.INTERVAL_ENV, "0")
    tty = FakeTTY()
    tiny_fit([keras_callback("train tiny", stream=tty, ticker=Ticker())], verbose=1)  # Keras' bar, on stdout
    assert "train tiny epoch" not in tty.getvalue()
    monkeypatch.setenv(progress.QUIET_ENV, "1")
    out = io.StringIO()
    tiny_fit([keras_callback("train tiny", stream=out, ticker=Ticker())])
    assert out.getvalue() == ""

    from tasks.fit import progress as keras_verbosity

    assert keras_verbosity() == 0  # -q: no epoch lines either


def test_the_int8_calibration_reports_its_samples_and_converts_to_the_same_bytes(monkeypatch):
    import keras

    from tasks.evaluate.export import to_tflite_int8

    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((6, 6, 1), dtype="uint8"), keras.layers.Rescaling(1 / 255),
                              keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax")])
    samples = np.random.default_rng(0).integers(0, 256, size=(12, 6, 6, 1), dtype=np.uint8)
    monkeypatch.setenv(progress.INTERVAL_ENV, "0")
    out = io.StringIO()
    keras.backend.clear_session(free_memory=False)  # the converter's input is named by a counter: the same name
    with progress.writing_to(out):
        reported = to_tflite_int8(model, samples, "export tiny int8 calibration")
    lines = out.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines[:12]] == [f"export tiny int8 calibration: {k}/12 images"
                                                            for k in range(1, 13)], lines
    assert lines[-1].startswith("export tiny int8 calibration: 12 images in ")
    monkeypatch.setenv(progress.QUIET_ENV, "1")
    keras.backend.clear_session(free_memory=False)
    assert to_tflite_int8(model, samples) == reported  # calibrated on the very same samples


# ---------------------------------------------------------------- the phases of features, teach, train, check, export

SIZE, CLASSES = 32, 3
PHOTO_CACHE = {"base": "mobilenet_v2", "alpha": 0.35, "batch_size": 8}


def reported(fn, *args, **kw) -> tuple[object, list[str]]:
    """fn's result and the progress lines it printed in a log, every update due (interval 0)."""
    out = io.StringIO()
    os.environ[progress.INTERVAL_ENV] = "0"
    try:
        with progress.writing_to(out):
            result = fn(*args, **kw)
    finally:
        del os.environ[progress.INTERVAL_ENV]
    return result, out.getvalue().splitlines()


def silently(fn, *args, **kw):
    os.environ[progress.QUIET_ENV] = "1"
    try:
        return fn(*args, **kw)
    finally:
        del os.environ[progress.QUIET_ENV]


@pytest.fixture(scope="module")
def photo_data(tmp_path_factory):
    import keras

    from tasks.photo import features
    from test_photo import write_photo_splits

    root = tmp_path_factory.mktemp("photo")
    write_photo_splits(root / "processed")
    silently(features.compute_features, root / "processed", None, root / "cache", PHOTO_CACHE)
    keras.utils.set_random_seed(0)
    teacher = keras.Sequential([keras.Input((SIZE, SIZE, 3), dtype="uint8"), keras.layers.Rescaling(1 / 255),
                                keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(CLASSES, activation="softmax")])
    teacher.save(root / "teacher.keras")
    return root


def test_features_and_teach_report_their_images_and_write_the_same_bytes(photo_data, tmp_path):
    from tasks.photo import features
    from tasks.photo.teach import teach

    _, lines = reported(features.compute_features, photo_data / "processed", None, tmp_path / "cache", PHOTO_CACHE)
    assert [line.split(" (")[0] for line in lines[:-1]] == [f"features cache: {k}/48 images"
                                                            for k in (8, 16, 24, 32, 36, 44, 48)], lines
    assert lines[-1].startswith("features cache: 48 images in "), lines
    assert contents(tmp_path / "cache") == contents(photo_data / "cache")  # computed quietly

    args = (photo_data / "teacher.keras", photo_data / "processed", photo_data / "cache")
    names = {"teacher": "teacher.keras", "features": "data/features/cache"}
    _, lines = reported(teach, *args, tmp_path / "loud", {}, names=names)
    assert [line.split(" (")[0] for line in lines[:-1]] == ["teach loud: 24/24 images"], lines  # one batch of 64
    assert lines[-1].startswith("teach loud: 24 images in ")
    silently(teach, *args, tmp_path / "quiet", {}, names=names)
    assert contents(tmp_path / "loud") == contents(tmp_path / "quiet")


def test_a_photo_training_reports_the_batches_of_each_phase_and_trains_the_same_model(photo_data, tmp_path):
    import keras

    from tasks.photo.train import train

    recipe = {"base": "mobilenet_v2", "alpha": 0.35, "batch_size": 8, "seed": 3, "head_epochs": 1,
              "fine_tune_epochs": 1, "fine_tune_from": 130, "patience": 10}
    params = {"models": {"m": recipe}}
    _, lines = reported(train, "m", params, photo_data / "processed", tmp_path / "loud" / "m", photo_data / "cache")
    assert [line.split(" (")[0] for line in lines if "validation" not in line] == [
        *(f"train m head epoch 1/1: {k}/3 batches" for k in (1, 2, 3)),
        *(f"train m fine_tune epoch 2/2: {k}/3 batches" for k in (1, 2, 3))], lines
    assert any(line.startswith("train m fine_tune epoch 2/2 validation: 2 batches") for line in lines), lines
    silently(train, "m", params, photo_data / "processed", tmp_path / "quiet" / "m", photo_data / "cache")
    loud, quiet = (keras.models.load_model(tmp_path / run / "m" / "model.keras") for run in ("loud", "quiet"))
    assert all(np.array_equal(a, b) for a, b in zip(loud.get_weights(), quiet.get_weights()))
    assert len(loud.get_weights()) == len(quiet.get_weights()) > 0
    drop_time = lambda rows: [{k: v for k, v in r.items() if k != "time"} for r in rows]  # noqa: E731
    assert drop_time(json.loads((tmp_path / "loud" / "m" / "history.json").read_text())) == \
        drop_time(json.loads((tmp_path / "quiet" / "m" / "history.json").read_text()))


def test_the_top_over_a_cut_cache_reports_its_images_and_computes_the_same():
    import keras

    from tasks.photo.train import pooled_top

    keras.utils.set_random_seed(2)
    top = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Conv2D(5, 3, padding="same")])
    x = np.random.default_rng(0).normal(size=(10, 4, 4, 3)).astype(np.float16)
    pooled, lines = reported(pooled_top, top, x, 4, label="train k top")
    assert [line.split(" (")[0] for line in lines[:-1]] == [f"train k top: {k}/10 images" for k in (4, 8, 10)], lines
    assert np.array_equal(pooled, silently(pooled_top, top, x, 4))


def test_check_reports_its_label_folds():
    from tasks.check.labels import cross_val_probs

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 6)), np.arange(60) % 3
    probs, lines = reported(cross_val_probs, x, y, 3, 5, 0, label="check k labels")
    assert [line.split(" (")[0] for line in lines[:-1]] == [f"check k labels: {k}/5 folds" for k in range(1, 6)]
    assert np.array_equal(probs, silently(cross_val_probs, x, y, 3, 5, 0))


def test_check_scan_reports_its_images(tmp_path):
    from tasks.check.run import CHECK_DEFAULTS, scan
    from tasks.records.shards import load_manifest, write_dataset

    rng = np.random.default_rng(1)
    write_dataset(tmp_path, {split: (rng.integers(0, 255, (n, 8, 8), dtype=np.uint8), np.arange(n) % 2)
                             for split, n in (("train", 20), ("validation", 6), ("test", 6))}, ["a", "b"])
    s = {**CHECK_DEFAULTS, "batch_size": 8}
    data, lines = reported(scan, tmp_path, load_manifest(tmp_path), s, False, label="check k")
    assert [line.split(" (")[0] for line in lines[:-1]] == [f"check k: {k}/32 images" for k in (8, 16, 20, 26, 32)]
    assert lines[-1].startswith("check k: 32 images in ")
    assert np.array_equal(data["pixels"], silently(scan, tmp_path, load_manifest(tmp_path), s, False)["pixels"])


def test_export_reports_its_calibration_and_parity_passes_and_writes_the_same_files(photo_data, tmp_path):
    import keras

    from tasks.evaluate.export import export

    cfg = {"formats": ["float32", "int8"], "representative_samples": 6, "latency_runs": 2, "batch_size": 5}
    keras.backend.clear_session(free_memory=False)  # the converter's input is named by a counter: the same name
    result, lines = reported(export, photo_data / "teacher.keras", photo_data / "processed", tmp_path / "loud", cfg)
    calibration = [line.split(" (")[0] for line in lines if line.startswith("export loud int8 calibration")]
    assert calibration[:-1] == [f"export loud int8 calibration: {k}/6 images" for k in range(1, 7)], lines
    measured = [line.split(" (")[0] for line in lines if line.startswith("export loud int8 error per layer")]
    assert measured[:-1] == [f"export loud int8 error per layer: {k}/6 images" for k in range(1, 7)], lines
    assert sum(line.startswith("export loud int8 calibration: 6 images in ") for line in lines) == 1, lines  # once
    assert any(line.startswith("export loud parity keras: 1/1 batches") for line in lines), lines
    parity = [line.split(" (")[0] for line in lines if line.startswith("export loud parity float32/int8")]
    assert parity[:-1] == [f"export loud parity float32/int8: {k}/24 images" for k in (5, 10, 12, 17, 22, 24)], lines
    assert parity[-1].startswith("export loud parity float32/int8: 24 images in ")
    keras.backend.clear_session(free_memory=False)
    quiet = silently(export, photo_data / "teacher.keras", photo_data / "processed", tmp_path / "quiet", cfg)
    assert contents(tmp_path / "loud" / "tflite") == contents(tmp_path / "quiet" / "tflite")
    assert {k: result[k]["accuracy"] for k in ("float32", "int8")} == {k: quiet[k]["accuracy"] for k in ("float32", "int8")}


# ---------------------------------------------------------------- the CLI: prepare on a folder, -q


@pytest.fixture
def pets(tmp_path, monkeypatch):
    monkeypatch.delenv("TLPIPE_MIRROR", raising=False)
    monkeypatch.delenv("TLPIPE_WORKERS", raising=False)
    class_tree(tmp_path / "my photos", {"cat": 8, "dog": 8, "owl": 8})
    root = tmp_path / "proj"
    write_params(root, {"pets": {"source": "../my photos"}}, {"pets": small_prepare()})
    from tasks.stages.data import fetch_stage
    from tasks.stages.project import Project

    fetch_stage(Project(root), "pets")
    return root


def tlpipe(root: Path, *args, **env) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in child_env(**env).items() if k not in ("TLPIPE_VERBOSE", "TLPIPE_MIRROR")}
    return subprocess.run([sys.executable, "-m", "tasks.cli", *args], cwd=root, env=environment,
                          capture_output=True, text=True, timeout=300)


def contents(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_prepare_reports_its_photos_in_a_log_and_minus_q_keeps_the_start_and_end_lines_only(pets):
    loud = tlpipe(pets, "prepare", "pets", TLPIPE_PROGRESS_INTERVAL="0")
    assert loud.returncode == 0, loud.stderr
    written = contents(pets / "data" / "processed" / "pets")
    photos = [line for line in loud.stderr.splitlines() if re.match(r"prepare pets: \d+/24 photos \(\d+%\)", line)]
    shards = [line for line in loud.stderr.splitlines() if re.match(r"prepare pets shards: \d+/24 images", line)]
    assert photos and shards, loud.stderr
    assert "prepare pets: 24 photos in " in loud.stderr and "prepare pets shards: 24 images in " in loud.stderr

    quiet = tlpipe(pets, "-q", "prepare", "pets", TLPIPE_PROGRESS_INTERVAL="0")
    assert quiet.returncode == 0, quiet.stderr
    lines = (quiet.stdout + quiet.stderr).splitlines()
    assert len(lines) == 2 and lines[0] == "tlpipe prepare pets: started", lines
    assert lines[1].startswith("tlpipe prepare pets: done in "), lines
    assert contents(pets / "data" / "processed" / "pets") == written  # the same bytes, reported or not
    assert tlpipe(pets, "prepare", "pets", "-q", TLPIPE_PROGRESS_INTERVAL="0").stderr == ""  # after the command too

    both = tlpipe(pets, "-q", "-v", "prepare", "pets")
    assert both.returncode == 2 and "-q (less) and -v (more): give one of them" in both.stderr
    bad = tlpipe(pets, "prepare", "pets", TLPIPE_PROGRESS_INTERVAL="soon")
    assert bad.returncode == 1 and bad.stderr.strip().splitlines() == [
        "tlpipe prepare: error: TLPIPE_PROGRESS_INTERVAL='soon': expected the seconds between progress lines "
        "in a log, a number >= 0 (default 30)"], bad.stderr
