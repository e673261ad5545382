"""Train one model recipe from params.yaml on a processed dataset.

Outputs in `out_dir` (models/<key>/): `model.keras` (best val accuracy), `history.json` (every epoch,
across resumes), `train.json` (recipe and summary), `log.csv`, `tb/` (TensorBoard), `backup/` (only
while a training is unfinished: a rerun resumes from the last finished epoch). Per-epoch metrics also
go to a dvclive dir (`live_dir`, default `out_dir/"dvclive"`) for `dvc plots`.

Crash safety (both trainers; `tasks/photo/train.py` uses the same pieces): every file is written to a
temp name and renamed (`model.keras`, the backup's weights and metadata, `history.json`,
`train.json`); an epoch is committed to the backup only after its model, log row and curves are
written, so a kill at any moment loses at most the epoch in progress; the backup keeps the previous
epoch's state too and falls back to it when the latest is unreadable (`CrashSafeBackup`); the backup
is deleted only after the model it leaves behind has been loaded back (`finish`).
"""
from __future__ import annotations

import importlib
import logging
import time
from pathlib import Path

import keras
import tensorflow as tf
from keras import layers

from tasks.fit import (HAVE_TENSORBOARD, BestModel, CrashSafeBackup, LiveLogger, finish, fit_progress, learning_rate,
                       prepare_out_dir, progress, read_log, save_model, setup)
from tasks.core.hashing import sha256_file
from tasks.core.io import write_json
from tasks.core.seeds import Seeds
from tasks.records.shards import load_split

# The one place the small CNNs' recipe defaults live (a literal: tasks/stages/validate.py reads it without
# importing TensorFlow); a recipe in params.yaml `models` sets what differs.
log = logging.getLogger(__name__)
DEFAULTS = {
    "arch": "reference_cnn",  # a name in ARCHS of the `init` module (tasks/cnn/models.py)
    "epochs": 6, "batch_size": 128,
    "lr": 0.001,              # Adam
    "schedule": "constant",   # constant | cosine (decays to 1 % over `epochs`)
    "augment": False,         # false | true | {translate, rotate, zoom} (fractions; see AUGMENT_DEFAULTS)
    "seed": 42,
    "transfer_from": None,    # derived from `init`, never set by hand
    "freeze": "none",         # none | conv | conv_dense (transfer recipes)
    "patience": 3,            # early stopping on val accuracy
}
AUGMENT_DEFAULTS = {"translate": 0.08, "rotate": 0.03, "zoom": 0.08}  # rotate: fraction of a full turn


def recipe_for(params: dict, model_key: str) -> dict:
    """The full recipe of `model_key`: params["models"][key] over DEFAULTS, with `transfer_from`
    derived from its `init`. `params` may also be a recipe dict itself (no "models" key)."""
    if "models" in params:
        if model_key not in params["models"]:
            raise KeyError(f"no model {model_key!r} in params models: {sorted(params['models'])}")
        given = params["models"][model_key]
    else:
        given = params
    recipe = {**DEFAULTS, **given}
    if "transfer_from" not in given:
        init = Path(str(recipe.get("init") or ""))
        recipe["transfer_from"] = init.parent.name if init.parts[:1] == ("models",) else None
    return recipe


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


RANDOM_INIT = "tasks/cnn/models.py"


def architectures(init: str | None):
    """The module that builds a random-init recipe's architecture: the recipe's `init` (a .py under
    tasks/, tasks/cnn/models.py by default), imported by name, so that it is a dependency of exactly the
    recipes that start from it (a transfer recipe starts from a trained model and never runs it)."""
    path = Path(init or RANDOM_INIT)
    if path.suffix != ".py" or path.parts[:1] != ("tasks",):
        raise ValueError(f"init {str(path)!r}: a random-init recipe names its architecture module under tasks/ "
                         f"(e.g. {RANDOM_INIT}); a transfer recipe a trained models/<key>/model.keras")
    return importlib.import_module(".".join(path.with_suffix("").parts))


def build_model(recipe: dict, manifest: dict, source_model_path: Path | None):
    num_classes, shape = manifest["num_classes"], tuple(manifest["image_shape"])
    if recipe.get("transfer_from"):
        if source_model_path is None:
            raise ValueError(f"recipe transfers from {recipe['transfer_from']!r}: pass source_model_path")
        source = keras.models.load_model(source_model_path)
        return transfer(source, num_classes, recipe.get("freeze") or "none", seed=int(recipe["seed"]))
    return architectures(recipe.get("init")).build(recipe["arch"], num_classes, input_shape=shape,
                                                   seed=int(recipe["seed"]))


FREEZE_CHOICES = ("none", "conv", "conv_dense")


def _is_conv_part(layer) -> bool:
    """Layers of the convolutional feature extractor (conv and their batch norms)."""
    return layer.name.startswith("conv")


def _is_first_dense_part(layer) -> bool:
    return layer.name.startswith("dense1")


def _reseeded(seeds: Seeds):
    """clone_model's clone_function: dropout layers get fixed seeds (a source model saved without
    them would otherwise draw fresh ones from the shared Python RNG)."""
    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, layers.Dropout):
            config["seed"] = seeds.next_seed()
        return layer.__class__.from_config(config)
    return clone


def transfer(source_model: keras.Model, num_classes: int, freeze: str = "conv", seed: int = 0) -> keras.Model:
    """A copy of `source_model` with a fresh last layer of `num_classes` outputs.

    All layers except the head are copied (same architecture, same weights); then
    freeze="none" trains everything (fine-tuning), "conv" freezes the conv layers (variant b),
    "conv_dense" freezes the conv layers and the first dense layer (variant c).
    Frozen BatchNorm layers run in inference mode (Keras 3 semantics of trainable=False).
    """
    if freeze not in FREEZE_CHOICES:
        raise ValueError(f"freeze must be one of {FREEZE_CHOICES}, got {freeze!r}")
    seeds = Seeds(seed)
    model = keras.models.clone_model(source_model, clone_function=_reseeded(seeds))
    model.set_weights(source_model.get_weights())
    features = model.get_layer("head").input  # what the old head saw
    outputs = seeds.dense(num_classes, activation="softmax", name="head", dtype="float32")(features)
    new = keras.Model(model.inputs, outputs, name=f"{source_model.name}_transfer")
    for layer in new.layers:
        frozen = (freeze in ("conv", "conv_dense") and _is_conv_part(layer)) or (
            freeze == "conv_dense" and _is_first_dense_part(layer))
        layer.trainable = not frozen
    return new


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
    strategy = setup(int(recipe["seed"]), gpus)
    train_ds, val_ds, manifest = make_datasets(data_dir, recipe)
    steps = -(-manifest["splits"]["train"]["count"] // int(recipe["batch_size"]))
    with strategy.scope():
        model = build_model(recipe, manifest, source_model_path)
        model.compile(optimizer=keras.optimizers.Adam(learning_rate(recipe, steps)),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])

    checkpoint = BestModel(out_dir / "model.keras")  # its best is set from the kept log rows on restore
    callbacks = [
        checkpoint,
        keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=int(recipe["patience"])),
        keras.callbacks.CSVLogger(str(log_csv), append=True),
        LiveLogger(live_dir),
        *(extra_callbacks or []),
    ]
    if HAVE_TENSORBOARD:  # tf.summary needs the tensorboard package; the venv may lack it
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(out_dir / "tb")))
    safe = CrashSafeBackup(backup, log_csv=log_csv, live_dir=live_dir, checkpoint=checkpoint)
    start = time.time()
    model.fit(train_ds, validation_data=val_ds, epochs=int(recipe["epochs"]),
              callbacks=[*safe.callbacks(callbacks), fit_progress(f"train {model_key}")],
              shuffle=False, verbose=progress())  # shuffled by tf.data
    if not (out_dir / "model.keras").exists():  # no epoch improved on nothing: cannot happen unless 0 epochs
        save_model(model, out_dir / "model.keras")
    finish(out_dir, backup)
    history = read_log(log_csv)
    write_json(out_dir / "history.json", history)
    summary = {
        "model": model_key, "recipe": recipe, "dataset": manifest.get("dataset", recipe.get("dataset")),
        "epochs_run": len(history), "resumed": resuming, "fit_seconds": round(time.time() - start, 1),
        "best_val_accuracy": max((r["val_accuracy"] for r in history), default=None),
        "params": int(model.count_params()),
        "trainable_params": int(sum(int(w.numpy().size) for w in model.trainable_weights)),
        "init_sha256": sha256_file(source_model_path) if recipe.get("transfer_from") and source_model_path else None,
        "gpus": len(gpus), "tensorboard": HAVE_TENSORBOARD,
    }
    write_json(out_dir / "train.json", summary)
    return summary
