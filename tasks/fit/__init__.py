"""fit: what both trainers share (tasks/cnn for the small CNNs, tasks/photo for the MobileNets): the
run directory (resume or start afresh), crash-safe backups and model saves, seeding and device setup,
the learning-rate schedule, and the per-epoch logs (log.csv, dvclive layout). A package of its own, so
that neither trainer is a dependency of the other's stages.
"""
from __future__ import annotations

import csv
import importlib.util
import json
import logging
import shutil
import sys
from pathlib import Path

import keras
import tensorflow as tf

from tasks.core import progress as core_progress
from tasks.core.hashing import sha256_file
from tasks.core.io import atomic_path, room_for, write_json

log = logging.getLogger(__name__)

HAVE_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None


def progress() -> int:
    """Keras `fit` verbosity: a live progress bar on a terminal (a fine-tune epoch of minutes is not
    silent), one line per epoch in a log or a pipe (DVC, Prefect, CI), where `fit_progress` adds a line
    about every 30 s within an epoch; none with `tlpipe -q`. Verbosity only prints: the fit is the same."""
    if core_progress.quiet():
        return 0
    return 1 if sys.stdout.isatty() else 2


def fit_progress(label: str):
    """The callback that reports a fit's batches within each epoch in a log (tasks/core/progress.py);
    last in a fit's callbacks. It only prints."""
    return core_progress.keras_callback(label)


def setup(seed: int, gpus: list):
    """Seeded, deterministic ops; mixed precision and MirroredStrategy when GPUs are present."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    if gpus:
        keras.mixed_precision.set_global_policy("mixed_float16")
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def learning_rate(recipe: dict, steps_per_epoch: int):
    """`recipe["lr"]`, constant or cosine-decayed to 1 % over `epochs` x `steps_per_epoch` steps. A phase
    of no steps (e.g. `fine_tune_epochs: 0`: head only) has nothing to decay: its rate is the constant."""
    lr, schedule = float(recipe["lr"]), recipe.get("schedule") or "constant"
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"unknown schedule {schedule!r}; use constant or cosine")
    if schedule == "constant" or int(recipe["epochs"]) * int(steps_per_epoch) <= 0:
        return lr
    return keras.optimizers.schedules.CosineDecay(lr, decay_steps=steps_per_epoch * int(recipe["epochs"]), alpha=0.01)


class LiveLogger(keras.callbacks.Callback):
    """Per-epoch metrics in dvclive's layout (`plots/metrics/{train,eval}/<name>.tsv`, `metrics.json`).

    Written directly rather than through `dvclive.Live`, which needs a git repo with commits and
    scans the DVC repo on every start; `dvc plots show` reads these files the same way.
    Appends on a resumed run, so the curves span the whole training.
    """

    def __init__(self, live_dir: Path):
        super().__init__()
        self.dir = Path(live_dir)

    def on_epoch_end(self, epoch, logs=None):
        latest = {"step": epoch}
        for name, value in (logs or {}).items():
            if name == "learning_rate":
                continue
            split = "eval" if name.startswith("val_") else "train"
            short = name.removeprefix("val_")
            path = self.dir / "plots" / "metrics" / split / f"{short}.tsv"
            path.parent.mkdir(parents=True, exist_ok=True)
            new = not path.exists()
            with room_for(path), open(path, "a", encoding="utf-8") as f:
                f.write(f"step\t{short}\n" * new + f"{epoch}\t{float(value)}\n")
            latest.setdefault(split, {})[short] = float(value)
        write_json(self.dir / "metrics.json", latest)


def read_log(path: Path) -> list[dict]:
    """The CSV log's rows (one per epoch); a row for an epoch seen before replaces it (a redone epoch)."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()} for row in csv.DictReader(f)
                if row.get("epoch") not in (None, "") and None not in row.values()]
    return list({r["epoch"]: r for r in rows}.values())


# ---------------------------------------------------------------- crash-safe writes and resume

BACKUP_META = "training_metadata.json"
BACKUP_PREV = BACKUP_META + ".bkp"


def save_model(model, path: Path) -> None:
    """`model.save(path)` through a temp name and a rename: `path` is the old model or the whole new one."""
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)


def save_weights(model, path: Path) -> None:
    """`model.save_weights(path)` (a `.weights.h5`) through a temp name and a rename."""
    with atomic_path(path, suffix=".weights.h5") as tmp:
        model.save_weights(tmp)


def load_model(path: Path):
    """Load a `.keras` model; an absent, empty or unreadable file is an error that names it and says
    what to do (Keras itself says "File not found" for a 0-byte file)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such model file; train it first (`tlpipe train` or `dvc repro`)")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the model file is empty (0 bytes: a run was killed while writing it?); "
                         f"retrain it")
    try:
        return keras.models.load_model(path)
    except Exception as e:  # noqa: BLE001 - zip, h5 and deserialisation errors alike
        raise ValueError(f"{path}: not a readable Keras model ({type(e).__name__}: {e}); retrain it") from e




def has_backup(backup: Path) -> bool:
    """Whether `backup` holds a training state (its latest or its previous one) to resume from."""
    return (Path(backup) / BACKUP_META).exists() or (Path(backup) / BACKUP_PREV).exists()


def trim_logs(log_csv: Path, live_dir: Path, start: int) -> None:
    """Drop the log rows (CSV log, dvclive curves) of epochs >= `start`, which a resumed run redoes;
    each file is rewritten through a temp name."""
    if log_csv.exists():
        lines = log_csv.read_text().splitlines(keepends=True)
        header = lines[:1]
        keep = [ln for ln in lines[1:] if ln.split(",", 1)[0].strip().isdigit() and int(ln.split(",", 1)[0]) < start]
        _rewrite(log_csv, "".join(header + keep) if keep else "")
    metrics = Path(live_dir) / "plots" / "metrics"
    if metrics.is_dir():
        for tsv in sorted(metrics.rglob("*.tsv")):
            lines = tsv.read_text().splitlines(keepends=True)
            keep = [ln for ln in lines[1:] if ln.split("\t", 1)[0].isdigit() and int(ln.split("\t", 1)[0]) < start]
            _rewrite(tsv, "".join(lines[:1] + keep) if keep else "")


def _rewrite(path: Path, text: str) -> None:
    if text == path.read_text():
        return
    if not text:
        path.unlink()
        return
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _variables(model) -> list:
    return list(model.variables) + list(model.optimizer.variables if model.optimizer is not None else [])


class CrashSafeBackup:
    """BackupAndRestore's job (resume a killed training at its last finished epoch), crash-safe.

    `callbacks(inner)` returns `[restore, *inner, commit]`:
    - `commit` (last, so after the model checkpoint, the CSV log and the curves) saves the epoch's
      weights (with the optimizer's state) as `epoch-NNNN.weights.h5` through a temp name, then its
      metadata (`training_metadata.json`: epoch, file, sha256, phase tag), keeping the previous
      epoch's metadata (`.bkp`) and weights, so a kill at any instant leaves a whole state to go back to.
    - `restore` (first) loads the latest state whose weights are present, match their sha256 and load;
      an unreadable one is discarded with a warning that names it, and the previous one is used. It
      then drops the log rows of the epochs that will be redone, and resets `checkpoint.best` to them.
    - `commit` also replays the kept log rows into EarlyStopping, so patience counts across the kill.
    A state of another `tag` (a photo recipe's other phase) is not loaded. Nothing is deleted at the
    end of training: `finish()` deletes the backup once the trained model has been read back.
    """

    def __init__(self, backup_dir: Path, *, log_csv: Path, live_dir: Path, initial_epoch: int = 0,
                 tag: str = "train", checkpoint=None):
        self.dir, self.log_csv, self.live_dir = Path(backup_dir), Path(log_csv), Path(live_dir)
        self.initial_epoch, self.tag, self.checkpoint = int(initial_epoch), tag, checkpoint
        self.restored_epoch: int | None = None
        self.discarded: list[str] = []
        self.start = self.initial_epoch
        owner = self

        class Restore(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                owner.restore(self.model)

        class Commit(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                owner.replay(self.inner)

            def on_epoch_end(self, epoch, logs=None):
                owner.save(self.model, epoch + 1)

        self.restorer, self.committer = Restore(), Commit()

    def callbacks(self, inner: list) -> list:
        self.committer.inner = list(inner)
        return [self.restorer, *inner, self.committer]

    # -- restore
    def _states(self):
        for name in (BACKUP_META, BACKUP_PREV):
            path = self.dir / name
            if not path.exists():
                continue
            try:
                meta = json.loads(path.read_text())
                epoch = int(meta["epoch"])
            except (ValueError, KeyError, TypeError) as e:
                self.discarded.append(f"{path} (unreadable: {e})")
                continue
            yield path, meta, epoch

    def restore(self, model) -> int:
        """Load the newest good state into `model`; returns the epoch training starts at."""
        self.discarded, self.restored_epoch = [], None
        for tmp in self.dir.glob(".*.tmp-*") if self.dir.is_dir() else ():
            tmp.unlink(missing_ok=True)  # a save that a kill interrupted
        snapshot = None
        for path, meta, epoch in self._states():
            weights = self.dir / meta.get("weights", "latest.weights.h5")
            if meta.get("tag", self.tag) != self.tag:
                continue  # another phase's state (a photo recipe's head, before fine-tuning): not ours
            if not weights.exists():
                self.discarded.append(f"{weights} (missing; named by {path.name})")
                continue
            if meta.get("sha256") and sha256_file(weights) != meta["sha256"]:
                self.discarded.append(f"{weights} (truncated or changed: sha256 differs from {path.name})")
                continue
            if model.optimizer is not None and not model.optimizer.built:
                model.optimizer.build(model.trainable_variables)
            if snapshot is None:
                snapshot = [v.numpy() for v in _variables(model)]
            try:
                model.load_weights(weights)
            except Exception as e:  # noqa: BLE001 - h5py OSError, shape ValueError, ...
                self._put_back(model, snapshot)
                self.discarded.append(f"{weights} (unreadable: {type(e).__name__}: {e})")
                continue
            self.restored_epoch = epoch
            break
        self.start = self.restored_epoch if self.restored_epoch is not None else self.initial_epoch
        if self.discarded:
            then = (f"resuming after epoch {self.restored_epoch} from the state kept before it"
                    if self.restored_epoch is not None else f"training from epoch {self.start} again")
            log.warning("%s: discarded %s; %s", self.dir, "; ".join(self.discarded), then)
        model._initial_epoch = self.start  # Keras' own resume hook (never reset by fit: set it every time)
        trim_logs(self.log_csv, self.live_dir, self.start)
        if self.checkpoint is not None:
            self.checkpoint.best = max((r["val_accuracy"] for r in read_log(self.log_csv)
                                        if "val_accuracy" in r), default=None)
        return self.start

    @staticmethod
    def _put_back(model, snapshot) -> None:
        for v, value in zip(_variables(model), snapshot):
            v.assign(value)

    def replay(self, inner: list) -> None:
        """Give EarlyStopping the kept epochs of this fit (its on_train_begin has just reset it)."""
        rows = [r for r in read_log(self.log_csv) if self.initial_epoch <= r["epoch"] < self.start]
        for cb in inner:
            if isinstance(cb, keras.callbacks.EarlyStopping) and rows:
                if cb.monitor_op is None:
                    cb._set_monitor_op()
                for r in rows:
                    current = r.get(cb.monitor)
                    if current is None:
                        continue
                    cb.wait += 1
                    if cb._is_improvement(current, cb.best):
                        cb.best, cb.best_epoch, cb.wait = current, r["epoch"], 0

    # -- save
    def save(self, model, epochs_done: int) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{epochs_done:04d}.weights.h5"
        save_weights(model, self.dir / name)
        meta = {"epoch": epochs_done, "batch": 0, "weights": name, "sha256": sha256_file(self.dir / name),
                "tag": self.tag}
        current = self.dir / BACKUP_META
        if current.exists():
            try:
                previous = json.loads(current.read_text())
            except ValueError:
                previous = None
            if previous and previous.get("weights") != name and previous.get("tag", self.tag) == self.tag:
                write_json(self.dir / BACKUP_PREV, previous)
            else:
                (self.dir / BACKUP_PREV).unlink(missing_ok=True)
        write_json(current, meta)
        keep = {name, *(m.get("weights") for _, m, _ in self._states())}
        for p in self.dir.glob("*.weights.h5"):
            if p.name not in keep:
                p.unlink(missing_ok=True)


def finish(out_dir: Path, backup: Path) -> None:
    """End a training: read the model back, and only then delete the backup.

    An unreadable `model.keras` at this point (left by an older, non-atomic writer, or damaged on
    disk) is refused with the remedy; the backup is kept, so nothing is lost.
    """
    path = Path(out_dir) / "model.keras"
    try:
        load_model(path)
    except (OSError, ValueError) as e:
        raise RuntimeError(f"{e}. The training itself finished (its last state is kept in {backup}); "
                           f"delete {backup} and rerun to train afresh") from e
    shutil.rmtree(backup, ignore_errors=True)


class BestModel(keras.callbacks.Callback):
    """Save the model (temp name + rename) whenever val accuracy beats the best so far."""

    def __init__(self, path: Path, best: float | None = None, monitor: str = "val_accuracy"):
        super().__init__()
        self.path, self.best, self.monitor = Path(path), best, monitor

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or (self.best is not None and value <= self.best):
            return
        self.best = float(value)
        save_model(self.model, self.path)


def prepare_out_dir(out_dir: Path, live_dir: Path, recipe: dict) -> bool:
    """True if `out_dir` holds an unfinished training of this same recipe (to resume); otherwise
    clear a finished or stale run's backup and logs so the run starts afresh."""
    backup, stamp = out_dir / "backup", out_dir / "backup.recipe.json"
    try:
        same = stamp.exists() and json.loads(stamp.read_text()) == json.loads(json.dumps(recipe))
    except ValueError:
        same = False
    resuming = has_backup(backup) and same
    for d in (out_dir, live_dir):
        for p in d.glob(".*.tmp-*") if d.is_dir() else ():  # a write that a kill interrupted
            p.unlink(missing_ok=True)
    if not resuming:
        for p in (backup, out_dir / "log.csv", out_dir / "tb", out_dir / "history.json", live_dir):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(stamp, recipe)
    return resuming


