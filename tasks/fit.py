"""What both trainers share (tasks/train.py for the small CNNs, tasks/photo for the MobileNets): the
run directory (resume or start afresh), seeding and device setup, the learning-rate schedule, and the
per-epoch logs (log.csv, dvclive layout). A module of its own, so that neither trainer is a dependency
of the other's stages.
"""
from __future__ import annotations

import csv
import importlib.util
import json
import shutil
from pathlib import Path

import keras
import tensorflow as tf

from tasks.io import write_json

HAVE_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None


def setup(seed: int, gpus: list):
    """Seeded, deterministic ops; mixed precision and MirroredStrategy when GPUs are present."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    if gpus:
        keras.mixed_precision.set_global_policy("mixed_float16")
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def learning_rate(recipe: dict, steps_per_epoch: int):
    lr, schedule = float(recipe["lr"]), recipe.get("schedule") or "constant"
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(lr, decay_steps=steps_per_epoch * int(recipe["epochs"]),
                                                      alpha=0.01)
    raise ValueError(f"unknown schedule {schedule!r}; use constant or cosine")


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
            with open(path, "a", encoding="utf-8") as f:
                f.write(f"step\t{short}\n" * new + f"{epoch}\t{float(value)}\n")
            latest.setdefault(split, {})[short] = float(value)
        write_json(self.dir / "metrics.json", latest)


def read_log(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()} for row in csv.DictReader(f)]


def prepare_out_dir(out_dir: Path, live_dir: Path, recipe: dict) -> bool:
    """True if `out_dir` holds an unfinished training of this same recipe (to resume); otherwise
    clear a finished or stale run's backup and logs so the run starts afresh."""
    backup, stamp = out_dir / "backup", out_dir / "backup.recipe.json"
    resuming = (backup / "training_metadata.json").exists() and stamp.exists() and \
        json.loads(stamp.read_text()) == json.loads(json.dumps(recipe))
    if not resuming:
        for p in (backup, out_dir / "log.csv", out_dir / "tb", out_dir / "history.json", live_dir):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(stamp, recipe)
    return resuming
