"""Training: outputs, resume really resumes, transfer keeps frozen weights, determinism."""
import contextlib
import json
import random
import threading
import time

import keras
import numpy as np
import pytest

from tasks.records.shards import write_dataset
from tasks.cnn.train import prepare_out_dir, recipe_for, train


def synthetic(n, num_classes, seed=0):
    """28x28 uint8 images whose bright 7x7 block position encodes the label, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n)
    images = rng.integers(0, 60, (n, 28, 28), dtype=np.uint8)
    for img, y in zip(images, labels):
        r, c = divmod(int(y), 4)
        img[2 + 6 * r:9 + 6 * r, 2 + 6 * c:9 + 6 * c] = 255
    return images, labels


def processed(path, num_classes=4, n=64, seed=0):
    names = [chr(ord("a") + i) for i in range(num_classes)]
    write_dataset(path, {s: synthetic(n, num_classes, seed + k) for k, s in
                         enumerate(["train", "validation", "test"])}, names)
    return path


RECIPE = {"arch": "reference_cnn", "epochs": 2, "batch_size": 16, "lr": 1e-3, "seed": 1, "patience": 10}


class Interrupt(keras.callbacks.Callback):
    def __init__(self, at_epoch):
        super().__init__()
        self.at_epoch, self.saved = at_epoch, None

    def on_epoch_end(self, epoch, logs=None):
        self.saved = [w.copy() for w in self.model.get_weights()]

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at_epoch:
            raise KeyboardInterrupt("killed")


class Recorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs, self.start_weights = [], None

    def on_epoch_begin(self, epoch, logs=None):
        if self.start_weights is None:
            self.start_weights = [w.copy() for w in self.model.get_weights()]
        self.epochs.append(epoch)


def test_recipe_merges_defaults():
    params = {"models": {"m": {"arch": "bn_cnn", "epochs": 2, "init": "tasks/cnn/models.py"},
                         "t": {"init": "models/m/model.keras", "freeze": "conv"}}}
    r = recipe_for(params, "m")
    assert (r["arch"], r["epochs"], r["batch_size"], r["freeze"], r["transfer_from"]) == ("bn_cnn", 2, 128, "none", None)
    assert recipe_for(params, "t")["transfer_from"] == "m"
    with pytest.raises(KeyError):
        recipe_for(params, "nope")


def test_train_outputs_and_resume(tmp_path):
    data = processed(tmp_path / "data")
    out = tmp_path / "models" / "m"
    stop = Interrupt(at_epoch=1)
    with pytest.raises(KeyboardInterrupt):
        train("m", RECIPE, data, out, extra_callbacks=[stop])
    assert (out / "backup" / "training_metadata.json").exists()
    assert len((out / "log.csv").read_text().splitlines()) == 2  # header + epoch 0

    rec = Recorder()
    summary = train("m", RECIPE, data, out, extra_callbacks=[rec])
    assert summary["resumed"] is True
    assert rec.epochs == [1]                         # continued at epoch 2 (index 1), not from scratch
    for a, b in zip(rec.start_weights, stop.saved):  # with the weights the killed run had reached
        np.testing.assert_array_equal(a, b)
    assert not (out / "backup").exists()
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1]
    assert (out / "model.keras").exists()
    assert summary["tensorboard"] == (out / "tb").is_dir()  # TensorBoard logs where it is installed
    live = (out / "dvclive" / "plots" / "metrics" / "eval" / "accuracy.tsv").read_text().splitlines()
    assert len(live) == 1 + 2                         # header + 2 epochs across both runs
    assert summary["best_val_accuracy"] > 0.5         # the pattern is easy to learn

    again = train("m", {**RECIPE, "epochs": 1}, data, out)  # finished run: a rerun starts afresh
    assert again["resumed"] is False and again["epochs_run"] == 1


def test_transfer_keeps_frozen_weights_and_is_deterministic(tmp_path):
    src_data, dst_data = processed(tmp_path / "src", 4), processed(tmp_path / "dst", 3, seed=5)
    train("src", {**RECIPE, "epochs": 1, "arch": "bn_cnn", "augment": True, "schedule": "cosine"},
          src_data, tmp_path / "src_model")
    source = keras.models.load_model(tmp_path / "src_model" / "model.keras")
    recipe = {**RECIPE, "epochs": 1, "transfer_from": "src", "freeze": "conv"}
    s1 = train("t", recipe, dst_data, tmp_path / "t1", source_model_path=tmp_path / "src_model" / "model.keras")
    model = keras.models.load_model(tmp_path / "t1" / "model.keras")
    assert model.output_shape == (None, 3)
    for name in ("conv1", "conv1_bn", "conv2", "conv2_bn", "conv3"):
        for a, b in zip(model.get_layer(name).get_weights(), source.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    assert not np.array_equal(model.get_layer("dense1").get_weights()[0], source.get_layer("dense1").get_weights()[0])
    assert s1["trainable_params"] < s1["params"]
    s2 = train("t", recipe, dst_data, tmp_path / "t2", source_model_path=tmp_path / "src_model" / "model.keras")
    h1, h2 = (json.loads((tmp_path / d / "history.json").read_text()) for d in ("t1", "t2"))
    assert h1 == h2 and s1["best_val_accuracy"] == s2["best_val_accuracy"]


@contextlib.contextmanager
def python_rng_churn():
    """A background thread drawing from the process-wide Python RNG (as Prefect's services do)."""
    stop = threading.Event()

    def churn():
        while not stop.is_set():
            random.random()
            time.sleep(0.0005)

    thread = threading.Thread(target=churn, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def test_training_is_deterministic_while_other_threads_use_python_random(tmp_path):
    data = processed(tmp_path / "data", 4)
    recipe = {**RECIPE, "epochs": 1}
    with python_rng_churn():
        runs = [train("m", recipe, data, tmp_path / f"m{i}") for i in range(2)]
    weights = [keras.models.load_model(tmp_path / f"m{i}" / "model.keras").get_weights() for i in range(2)]
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)
    assert runs[0]["best_val_accuracy"] == runs[1]["best_val_accuracy"]


def test_a_changed_recipe_does_not_resume_a_stale_backup(tmp_path):
    out, live = tmp_path / "m", tmp_path / "m" / "dvclive"
    assert prepare_out_dir(out, live, RECIPE) is False
    (out / "backup").mkdir()
    (out / "backup" / "training_metadata.json").write_text('{"epoch": 1, "batch": 0}')
    (out / "log.csv").write_text("epoch,accuracy\n0,0.5\n")
    assert prepare_out_dir(out, live, RECIPE) is True and (out / "log.csv").exists()
    assert prepare_out_dir(out, live, {**RECIPE, "lr": 0.5}) is False
    assert not (out / "backup").exists() and not (out / "log.csv").exists()


# ---------------------------------------------------------------- crash safety (issue 15)

def _weights(path):
    return keras.models.load_model(path).get_weights()


def test_a_kill_while_model_keras_is_written_loses_nothing_and_reruns_identically(tmp_path):
    from faults import leftovers, run_killed

    data = processed(tmp_path / "data")
    recipe = {**RECIPE, "epochs": 1}
    clean = train("m", recipe, data, tmp_path / "clean")
    out = tmp_path / "killed"
    run_killed(f"""
        import keras
        from faults import _die
        from test_train import train
        save = keras.Model.save

        def half_then_die(self, path, *a, **k):  # the process dies with the model file half written
            open(path, "wb").write(b"PK\\x03\\x04")
            _die()

        keras.Model.save = half_then_die
        train("m", {recipe!r}, {str(data)!r}, {str(out)!r})
    """)
    assert not (out / "model.keras").exists()  # only a temp file holds the half-written bytes
    summary = train("m", recipe, data, out)
    assert summary["epochs_run"] == 1 and not (out / "backup").exists()
    assert [p for p in leftovers(out)] == []
    assert (out / "history.json").read_bytes() == (tmp_path / "clean" / "history.json").read_bytes()
    for a, b in zip(_weights(out / "model.keras"), _weights(tmp_path / "clean" / "model.keras")):
        np.testing.assert_array_equal(a, b)
    assert summary["best_val_accuracy"] == clean["best_val_accuracy"]


def test_a_kill_between_the_log_row_and_the_backup_redoes_that_epoch_once(tmp_path, monkeypatch):
    import tasks.cnn.train as t

    data = processed(tmp_path / "data")
    out = tmp_path / "m"
    log_epoch = t.LiveLogger.on_epoch_end

    def killed_at_epoch_1(self, epoch, logs=None):  # after the CSV row, before the curves and the commit
        if epoch == 1:
            raise KeyboardInterrupt("killed")
        log_epoch(self, epoch, logs)

    monkeypatch.setattr(t.LiveLogger, "on_epoch_end", killed_at_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        train("m", RECIPE, data, out)
    assert len((out / "log.csv").read_text().splitlines()) == 3  # the row of epoch 1 is written
    monkeypatch.setattr(t.LiveLogger, "on_epoch_end", log_epoch)
    rec = Recorder()
    summary = train("m", RECIPE, data, out, extra_callbacks=[rec])
    assert rec.epochs == [1] and summary["resumed"]  # epoch 1 was not committed: done again, once
    assert [h["epoch"] for h in json.loads((out / "history.json").read_text())] == [0, 1]
    assert len((out / "log.csv").read_text().splitlines()) == 3
    live = (out / "dvclive" / "plots" / "metrics" / "eval" / "accuracy.tsv").read_text().splitlines()
    assert [ln.split("\t")[0] for ln in live] == ["step", "0", "1"]  # the curves have every epoch, once


def test_a_truncated_backup_falls_back_to_the_previous_epoch_naming_what_it_discarded(tmp_path, caplog):
    data = processed(tmp_path / "data")
    out = tmp_path / "m"
    recipe = {**RECIPE, "epochs": 3}
    with pytest.raises(KeyboardInterrupt):
        train("m", recipe, data, out, extra_callbacks=[Interrupt(at_epoch=2)])
    meta = json.loads((out / "backup" / "training_metadata.json").read_text())
    latest = out / "backup" / meta.get("weights", "latest.weights.h5")
    assert meta["epoch"] == 2
    latest.write_bytes(latest.read_bytes()[:1000])  # killed while the backup was rewritten

    rec = Recorder()
    summary = train("m", recipe, data, out, extra_callbacks=[rec])
    assert rec.epochs == [1, 2]  # epoch 1 again, from the state kept after epoch 0
    assert f"discarded {latest} (truncated or changed" in caplog.text and "resuming after epoch 1" in caplog.text
    assert summary["epochs_run"] == 3 and not (out / "backup").exists()
    assert [h["epoch"] for h in json.loads((out / "history.json").read_text())] == [0, 1, 2]


def test_a_backup_with_no_readable_state_trains_from_the_start(tmp_path, caplog):
    data = processed(tmp_path / "data")
    out = tmp_path / "m"
    with pytest.raises(KeyboardInterrupt):
        train("m", RECIPE, data, out, extra_callbacks=[Interrupt(at_epoch=1)])
    for p in (out / "backup").iterdir():
        p.write_bytes(b"\x00" * 10)  # the weights and the metadata: nothing left to trust
    rec = Recorder()
    summary = train("m", RECIPE, data, out, extra_callbacks=[rec])
    assert rec.epochs == [0, 1] and "training from epoch 0 again" in caplog.text
    assert [h["epoch"] for h in json.loads((out / "history.json").read_text())] == [0, 1]
    assert summary["epochs_run"] == 2


def test_a_finished_training_whose_model_is_unreadable_is_refused_and_keeps_its_backup(tmp_path):
    import tasks.cnn.train as t

    data = processed(tmp_path / "data")
    out = tmp_path / "m"
    recipe = {**RECIPE, "epochs": 1}

    class Killed(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            raise KeyboardInterrupt("killed after the last epoch")

    with pytest.raises(KeyboardInterrupt):
        train("m", recipe, data, out, extra_callbacks=[Killed()])
    (out / "model.keras").write_bytes(b"")  # e.g. written in place by an older version, then killed
    with pytest.raises(RuntimeError, match=r"model.keras: the model file is empty.*delete .*backup and rerun"):
        train("m", recipe, data, out)
    from tasks.fit import has_backup

    assert has_backup(out / "backup")  # the weights are not thrown away
    assert not (out / "history.json").exists()


def test_learning_rate_schedules():
    from tasks.fit import learning_rate

    cosine = learning_rate({"lr": 0.01, "schedule": "cosine", "epochs": 2}, 5)
    assert float(cosine(0)) == pytest.approx(0.01) and float(cosine(10)) == pytest.approx(0.0001)
    assert learning_rate({"lr": 0.01, "schedule": "constant", "epochs": 2}, 5) == 0.01
    # a phase of no epochs (head only: `fine_tune_epochs: 0`) or no steps has nothing to decay
    assert learning_rate({"lr": 0.01, "schedule": "cosine", "epochs": 0}, 5) == 0.01
    with pytest.raises(ValueError, match="unknown schedule 'step'"):
        learning_rate({"lr": 0.01, "schedule": "step", "epochs": 0}, 5)
