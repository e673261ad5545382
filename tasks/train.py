"""Train one model recipe from params.yaml on a processed dataset.

Outputs in `out_dir` (models/<key>/): `model.keras` (best val accuracy), `history.json` (every epoch,
across resumes), `train.json` (recipe and summary), `log.csv`, `tb/` (TensorBoard), `backup/` (only
while a training is unfinished: a rerun resumes from the last finished epoch). Per-epoch metrics also
go to a dvclive dir (`live_dir`, default `out_dir/"dvclive"`) for `dvc plots`.
"""
from __future__ import annotations

import csv
import importlib.util
import json
import shutil
import time
from pathlib import Path

import keras
import tensorflow as tf

from tasks.io import write_json

HAVE_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None

DEFAULTS = {
    "arch": "reference_cnn", "epochs": 10, "batch_size": 128, "lr": 1e-3, "schedule": "constant",
    "augment": False, "seed": 42, "transfer_from": None, "freeze": "none", "patience": 3,
}
AUGMENT_DEFAULTS = {"translate": 0.08, "rotate": 0.03, "zoom": 0.08}  # rotate: fraction of a full turn


def recipe_for(params: dict, model_key: str) -> dict:
    """The full recipe of `model_key`: params["models"][key] over params["train"] over DEFAULTS.

    `params` may also be a recipe dict itself (no "models" key).
    """
    if "models" in params:
        if model_key not in params["models"]:
            raise KeyError(f"no model {model_key!r} in params models: {sorted(params['models'])}")
        return {**DEFAULTS, **(params.get("train") or {}), **params["models"][model_key]}
    return {**DEFAULTS, **params}


def load_split(processed_dir: Path, split: str):
    """(tf.data.Dataset of (uint8 image, int64 label) in stored order, manifest) for one split."""
    from tasks.shards import load_manifest, read_split

    manifest = load_manifest(processed_dir)
    return read_split(processed_dir, split, batch_size=1024, manifest=manifest).unbatch(), manifest


def label_names(manifest: dict) -> list[str]:
    labels = manifest["labels"]
    return [labels[str(i)] for i in range(len(labels))]


def augmenter(config, seed: int):
    """A Keras layer stack of small random affine changes on uint8 images, or None."""
    if not config:
        return None
    cfg = {**AUGMENT_DEFAULTS, **(config if isinstance(config, dict) else {})}
    parts = [keras.layers.RandomTranslation(cfg["translate"], cfg["translate"], fill_mode="constant", seed=seed),
             keras.layers.RandomRotation(cfg["rotate"], fill_mode="constant", seed=seed + 1),
             keras.layers.RandomZoom(cfg["zoom"], fill_mode="constant", seed=seed + 2)]
    return keras.Sequential(parts)


def make_datasets(processed_dir: Path, recipe: dict):
    """Batched, cached train/validation datasets and the manifest.

    The decoded splits are cached in memory (MNIST/EMNIST are < 100 MB) and the train split is
    reshuffled each epoch with the recipe seed; augmentation runs after batching, on uint8 pixels.
    """
    seed, bs = int(recipe["seed"]), int(recipe["batch_size"])
    train, manifest = load_split(processed_dir, "train")
    val, _ = load_split(processed_dir, "validation")
    n_train, n_val = (manifest["splits"][s]["count"] for s in ("train", "validation"))
    train = train.apply(tf.data.experimental.assert_cardinality(n_train)).cache()
    train = train.shuffle(n_train, seed=seed, reshuffle_each_iteration=True).batch(bs)
    aug = augmenter(recipe.get("augment"), seed)
    if aug is not None:
        def apply(x, y):
            x = aug(tf.cast(x, tf.float32), training=True)
            return tf.cast(tf.clip_by_value(tf.round(x), 0, 255), tf.uint8), y
        train = train.map(apply, num_parallel_calls=tf.data.AUTOTUNE)
    val = val.apply(tf.data.experimental.assert_cardinality(n_val)).cache().batch(bs)
    return train.prefetch(tf.data.AUTOTUNE), val.prefetch(tf.data.AUTOTUNE), manifest


def learning_rate(recipe: dict, steps_per_epoch: int):
    lr, schedule = float(recipe["lr"]), recipe.get("schedule") or "constant"
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(lr, decay_steps=steps_per_epoch * int(recipe["epochs"]),
                                                      alpha=0.01)
    raise ValueError(f"unknown schedule {schedule!r}; use constant or cosine")


def build_model(recipe: dict, manifest: dict, source_model_path: Path | None):
    from tasks import models

    num_classes, shape = manifest["num_classes"], tuple(manifest["image_shape"])
    if recipe.get("transfer_from"):
        if source_model_path is None:
            raise ValueError(f"recipe transfers from {recipe['transfer_from']!r}: pass source_model_path")
        source = keras.models.load_model(source_model_path)
        return models.transfer(source, num_classes, recipe.get("freeze") or "none", seed=int(recipe["seed"]))
    return models.build(recipe["arch"], num_classes, input_shape=shape, seed=int(recipe["seed"]))


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


def _setup(seed: int, gpus: list):

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    if gpus:
        keras.mixed_precision.set_global_policy("mixed_float16")
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def train(model_key: str, params: dict, data_dir: Path, out_dir: Path, source_model_path: Path | None = None,
          *, live_dir: Path | None = None, extra_callbacks: list | None = None) -> dict:
    """Train recipe `model_key` on the processed dataset in `data_dir`; outputs in `out_dir`.

    A rerun after an interrupted training resumes from the last finished epoch (BackupAndRestore);
    a rerun after a finished one starts afresh. Returns the summary also written to train.json.
    """
    recipe = recipe_for(params, model_key)
    out_dir, data_dir = Path(out_dir), Path(data_dir)
    live_dir = Path(live_dir) if live_dir else out_dir / "dvclive"
    resuming = prepare_out_dir(out_dir, live_dir, recipe)
    backup, log_csv = out_dir / "backup", out_dir / "log.csv"

    gpus = tf.config.list_physical_devices("GPU")
    strategy = _setup(int(recipe["seed"]), gpus)
    train_ds, val_ds, manifest = make_datasets(data_dir, recipe)
    steps = -(-manifest["splits"]["train"]["count"] // int(recipe["batch_size"]))
    with strategy.scope():
        model = build_model(recipe, manifest, source_model_path)
        model.compile(optimizer=keras.optimizers.Adam(learning_rate(recipe, steps)),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])

    done = read_log(log_csv)
    best = max((r["val_accuracy"] for r in done), default=None)
    callbacks = [
        keras.callbacks.BackupAndRestore(backup_dir=str(backup)),
        keras.callbacks.ModelCheckpoint(str(out_dir / "model.keras"), monitor="val_accuracy", mode="max",
                                        save_best_only=True, initial_value_threshold=best),
        keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=int(recipe["patience"])),
        keras.callbacks.CSVLogger(str(log_csv), append=True),
        LiveLogger(live_dir),
        *(extra_callbacks or []),
    ]
    if HAVE_TENSORBOARD:  # tf.summary needs the tensorboard package; the venv may lack it
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(out_dir / "tb")))
    start = time.time()
    model.fit(train_ds, validation_data=val_ds, epochs=int(recipe["epochs"]), callbacks=callbacks,
              shuffle=False, verbose=2)  # shuffled by tf.data
    history = read_log(log_csv)
    write_json(out_dir / "history.json", history)
    summary = {
        "model": model_key, "recipe": recipe, "dataset": manifest.get("dataset", recipe.get("dataset")),
        "epochs_run": len(history), "resumed": resuming, "fit_seconds": round(time.time() - start, 1),
        "best_val_accuracy": max((r["val_accuracy"] for r in history), default=None),
        "params": int(model.count_params()),
        "trainable_params": int(sum(int(w.numpy().size) for w in model.trainable_weights)),
        "gpus": len(gpus), "tensorboard": HAVE_TENSORBOARD,
    }
    write_json(out_dir / "train.json", summary)
    return summary
