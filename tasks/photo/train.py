"""Train a MobileNet photo recipe: a head on a frozen base, then (optionally) fine-tuning.

Two modes, chosen by `init_path`:
- cache: a features dir (features.json): phase 1 fits the head (`ours`, or `spatial` on a cache of
  feature maps) on the cached features (seconds); phase 2 puts it on the cache's base
  (base.weights.h5) and fine-tunes end to end on the images. A cut cache (features `cut`, `views`)
  holds the activations entering a base layer for a few augmented views of each image: phase 1 fits
  the head on the top's pooled output, phase 2 fine-tunes the top (from `fine_tune_from`, at or above
  the cut) on the cached activations, never running the frozen lower blocks; an epoch is one pass
  over every view.
- on the fly: a weights file / dir holding one, or a .py file (random init): the full model is built
  here; phase 1 trains the head with the base frozen (or everything, `freeze_base: false`), phase 2
  unfreezes the base from `fine_tune_from` on.
BN layers stay frozen (inference mode) throughout unless `train_bn: true`. Outputs as tasks/cnn/train.py:
model.keras (best val accuracy over both phases; uint8 image in, softmax out), history.json (epochs
numbered across phases, each with its `phase`), train.json, log.csv, dvclive/, tb/.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tasks.fit import (HAVE_TENSORBOARD, CrashSafeBackup, LiveLogger, finish, fit_progress, learning_rate,
                       prepare_out_dir, progress, read_log, save_model, save_weights, setup)
from tasks.core.io import write_json
from tasks.core.progress import Progress
from tasks.photo import augment as aug
from tasks.photo import backbones, features, heads, teach
from tasks.core.seeds import Seeds
from tasks.records.shards import load_split

DEFAULTS = {
    "base": None, "alpha": None, "image_size": None,  # from the cache, else mobilenet_v2, 1.0, dataset size
    "head": "ours", "dropout": None,                   # None: the head's own default
    "batch_size": 32, "seed": 42,
    "head_epochs": 5, "head_lr": 1e-3, "freeze_base": True,
    "fine_tune_epochs": 0, "fine_tune_lr": 1e-4, "fine_tune_from": 100,
    "fine_tune_schedule": "constant",                  # constant | cosine (to 1 % over fine_tune_epochs)
    "train_bn": None,  # None: BN trains only for a random-init base (frozen random BN zeroes the features)
    "bn_momentum": None,  # training BN: its moving statistics' momentum; None keeps the base's own (MobileNetV2: 0.999)
    "steps_per_epoch": None,                           # None: one pass over the train split
    "augment": dict(aug.AUGMENT_DEFAULTS), "patience": 3, "label_smoothing": 0.0, "cache_images": True,
    # distillation: an `init` that is a teacher's targets (data/teach/<t>, made by teach@ from a trained
    # teacher and a features cache) makes the train targets (1 - distill_weight) * one-hot +
    # distill_weight * the teacher's softened predictions; `teacher` is set from that record
    "teacher": None, "distill_weight": 0.5,
}
ON_THE_FLY_DEFAULTS = {"base": "mobilenet_v2", "alpha": 1.0}
HEAD_STATE, HEAD_WEIGHTS = "backup.head.json", "backup.head.weights.h5"


def photo_recipe(params: dict, model_key: str) -> dict:
    """The recipe of `model_key` (params["models"][key]) over DEFAULTS, the one place the photo
    recipes' defaults live. `params` may also be a recipe dict itself (no "models" key)."""
    if "models" not in params:
        return {**DEFAULTS, **params}
    if model_key not in params["models"]:
        raise KeyError(f"no model {model_key!r} in params models: {sorted(params['models'])}")
    return {**DEFAULTS, **params["models"][model_key]}


def resolve(recipe: dict, manifest: dict, init_path: Path | None) -> tuple[dict, dict | None]:
    """(recipe with base, alpha, image_size filled in; the cache's features.json or None)."""
    recipe = dict(recipe)
    info = None
    if features.is_cache(init_path):
        info = json.loads((Path(init_path) / features.INFO).read_text())
        for k in ("base", "alpha", "image_size"):
            if recipe[k] is not None and recipe[k] != info[k]:
                raise ValueError(f"{init_path}: features were computed with {k}={info[k]!r}, recipe says {recipe[k]!r}")
            recipe[k] = info[k]
        if recipe["head"] not in heads.CACHE_HEADS:
            raise ValueError(f"head {recipe['head']!r} has layers inside the cached part of the model; a features "
                             f"cache trains the heads {sorted(heads.CACHE_HEADS)} only")
        if recipe["head"] == "spatial" and info["pooled"]:
            raise ValueError(f"{init_path}: head 'spatial' needs the feature maps; this cache holds pooled features "
                             f"(set `pool: false` on its features entry)")
        if info["labels"] != manifest["labels"] or list(info["image_shape"]) != list(manifest["image_shape"]):
            raise ValueError(f"{init_path}: features were computed on another dataset (labels or image shape differ)")
    else:
        for k, v in ON_THE_FLY_DEFAULTS.items():
            recipe[k] = v if recipe[k] is None else recipe[k]
        recipe["image_size"] = int(recipe["image_size"] or manifest["image_shape"][0])
    return recipe, info


def init_weights(init_path: Path | None) -> Path | None:
    """The weights file of an on-the-fly run, or None (random init) for no init or a .py file."""
    if init_path is None or Path(init_path).suffix == ".py":
        return None
    return backbones.weights_file(init_path)


def build(recipe: dict, manifest: dict, weights: Path | None):
    """(inference model uint8 -> softmax, its base, training model = augmentation + inference model)."""
    seed = int(recipe["seed"])
    base = backbones.build_base(recipe["base"], recipe["image_size"], recipe["alpha"], weights, seed=seed)
    shape = manifest["image_shape"]
    inputs, x = backbones.front(shape, recipe["image_size"], base=recipe["base"])
    outputs = heads.head(recipe["head"], base(x, training=False if _bn_frozen(recipe) else None),
                         manifest["num_classes"], Seeds(seed + 1), recipe["dropout"])
    model = keras.Model(inputs, outputs, name=f"{recipe['base']}_{recipe['head']}")
    augment = aug.augmenter(recipe["augment"], seed + 7)
    if augment is None:
        return model, base, model
    t_in = keras.Input(shape=tuple(shape), dtype="uint8", name="image")
    return model, base, keras.Model(t_in, model(augment(t_in)), name="train_model")


def set_bn_momentum(base: keras.Model, momentum: float | None) -> None:
    """The momentum of every BN layer's moving mean and variance (None: as the base was built). Keras'
    MobileNetV2 uses 0.999: trained on a new domain at batch 32, its inference statistics still lag the
    weights after 600 steps (issue 29: validation stuck at 40 % while train accuracy rose to 71 %); at 0.9
    they follow within ~50 steps."""
    if momentum is None:
        return
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = float(momentum)


def _bn_frozen(recipe: dict) -> bool:
    return not recipe["train_bn"]


def head_on_features(shape, num_classes: int, recipe: dict) -> keras.Model:
    """The recipe's head alone, on cached features of `shape` (same layer names as in the full model)."""
    inputs = keras.Input(shape=tuple(shape), name="features")
    return keras.Model(inputs, heads.head(recipe["head"], inputs, num_classes, Seeds(int(recipe["seed"]) + 1),
                                          recipe["dropout"]), name="head_on_features")


def copy_head(src: keras.Model, dst: keras.Model) -> None:
    for layer in src.layers:
        if layer.weights and layer.name.startswith("head"):
            dst.get_layer(layer.name).set_weights(layer.get_weights())


def on_cut(base: keras.Model, info: dict, num_classes: int, recipe: dict) -> tuple[keras.Model, keras.Model]:
    """(the base's top: from the cut cache's layer to the last feature map, sharing the base's layers;
    that top + the recipe's head, fed cached activations). Training it trains the full model's base."""
    top = keras.Model(base.get_layer(info["cut"]).input, base.output, name="top")
    inputs = keras.Input(shape=tuple(info["shape"]), name="activations")
    x = top(inputs, training=False if _bn_frozen(recipe) else None)
    outputs = heads.head(recipe["head"], x, num_classes, Seeds(int(recipe["seed"]) + 1), recipe["dropout"])
    return top, keras.Model(inputs, outputs, name="on_cut")


def pooled_top(top: keras.Model, x: np.ndarray, batch_size: int = 64, label: str = "top") -> np.ndarray:
    """The top's globally pooled output (float32 N x D) for cached activations `x` (the head phase of a
    cut cache trains on these: the top runs once per view, not once per epoch); its progress is
    reported as `label` (tasks/core/progress.py)."""
    pool = keras.Sequential([top, keras.layers.GlobalAveragePooling2D()])
    run = tf.function(lambda b: pool(tf.cast(b, tf.float32), training=False), reduce_retracing=True)
    with Progress(label, len(x), "images") as done:
        parts = [run(x[i:i + batch_size]).numpy()
                 for i in done.iterate(range(0, len(x), batch_size), size=lambda i: min(batch_size, len(x) - i))]
    return np.concatenate(parts) if parts else np.zeros((0, int(top.output_shape[-1])), np.float32)


def check_cut(recipe: dict, info: dict, cache: Path) -> None:
    """A cut cache fine-tunes above its cut only, and trains the `ours` head (its phase 1 runs on the
    top's pooled output)."""
    if recipe["head"] != "ours":
        raise ValueError(f"{cache}: a cut cache (cut {info['cut']}) trains the head 'ours' only, not "
                         f"{recipe['head']!r}")
    if int(recipe["fine_tune_epochs"]) > 0 and int(recipe["fine_tune_from"]) < int(info["cut_index"]):
        raise ValueError(f"{cache}: fine_tune_from {recipe['fine_tune_from']} is below the cut {info['cut']} "
                         f"(base layer {info['cut_index']}): the layers under it are baked into the cached "
                         f"activations; set fine_tune_from >= {info['cut_index']}")


def image_datasets(data_dir: Path, recipe: dict, manifest: dict, one_hot: int | None, soft=None):
    """Batched train (seeded reshuffle each epoch; repeated when steps_per_epoch is set) and validation.
    `soft`: the teacher's targets for the train split in stored order (distillation), or None."""
    seed, bs = int(recipe["seed"]), int(recipe["batch_size"])
    n_train, n_val = (manifest["splits"][s]["count"] for s in ("train", "validation"))
    train, _ = load_split(data_dir, "train")
    val, _ = load_split(data_dir, "validation")
    if soft is not None:
        train = _with_soft_targets(train, soft, recipe, manifest["num_classes"])
    train = train.apply(tf.data.experimental.assert_cardinality(n_train))
    val = val.apply(tf.data.experimental.assert_cardinality(n_val))
    if recipe["cache_images"]:
        train, val = train.cache(), val.cache()
    train = train.shuffle(n_train, seed=seed, reshuffle_each_iteration=True)
    if recipe["steps_per_epoch"]:
        train = train.repeat()
    return _finish(train.batch(bs), None if soft is not None else one_hot), _finish(val.batch(bs), one_hot)


def feature_datasets(cache: Path, recipe: dict, one_hot: int | None, soft=None):
    return array_datasets(features.load_split(cache, "train"), features.load_split(cache, "validation"), recipe,
                          one_hot, soft)


def array_datasets(train_xy, val_xy, recipe: dict, one_hot: int | None, soft=None):
    """Batched (train reshuffled each epoch, validation) of in-memory (features, labels) pairs."""
    seed, bs = int(recipe["seed"]), int(recipe["batch_size"])
    x, y = train_xy
    train = tf.data.Dataset.from_tensor_slices((x, y))
    if soft is not None:
        train = _with_soft_targets(train, soft, recipe, soft.shape[1])
    train = train.shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
    val = tf.data.Dataset.from_tensor_slices(val_xy)
    as_float32 = lambda f, label: (tf.cast(f, tf.float32), label)  # noqa: E731 - maps are stored float16
    return (_finish(train.batch(bs).map(as_float32), None if soft is not None else one_hot),
            _finish(val.batch(bs).map(as_float32), one_hot))


# ---------------------------------------------------------------- distillation


def _with_soft_targets(ds, soft: np.ndarray, recipe: dict, num_classes: int):
    """(x, label) -> (x, (1 - w) * one-hot(label) + w * soft) for a dataset in the teacher's order."""
    w = float(recipe["distill_weight"])
    pairs = tf.data.Dataset.zip((ds, tf.data.Dataset.from_tensor_slices(soft)))
    return pairs.map(lambda xy, s: (xy[0], (1.0 - w) * tf.one_hot(xy[1], num_classes) + w * s))


def _finish(ds, one_hot: int | None):
    if one_hot:
        ds = ds.map(lambda x, y: (x, tf.one_hot(y, one_hot)))
    return ds.prefetch(tf.data.AUTOTUNE)


def compile_for(model: keras.Model, lr, recipe: dict) -> None:
    """Adam at `lr` (a float or a schedule); categorical loss with label smoothing when set."""
    smoothing = float(recipe["label_smoothing"] or 0)
    if smoothing or recipe.get("teacher"):
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=smoothing)
        metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
    else:
        loss, metrics = keras.losses.SparseCategoricalCrossentropy(), ["accuracy"]
    lr = lr if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule) else float(lr)
    model.compile(optimizer=keras.optimizers.Adam(lr), loss=loss, metrics=metrics)


class BestCheckpoint(keras.callbacks.Callback):
    """Save `model` (the inference model, not the one being fitted) whenever val accuracy beats the
    best so far, across phases; `before_save` first brings it up to date (the cached-head phase)."""

    def __init__(self, path: Path, model: keras.Model, best: float | None, before_save=None):
        super().__init__()
        self.path, self.target, self.best, self.before_save = Path(path), model, best, before_save

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get("val_accuracy")
        if value is None or (self.best is not None and value <= self.best):
            return
        self.best = float(value)
        if self.before_save:
            self.before_save()
        tmp = self.path.with_name(f".{self.path.stem}.tmp-{os.getpid()}.keras")
        self.target.save(tmp)
        os.replace(tmp, self.path)


def prepare(out_dir: Path, live_dir: Path, recipe: dict) -> tuple[bool, dict | None]:
    """(resuming, the finished head phase's state or None). A finished head phase of this same recipe
    is kept (phase 2 resumes after it); otherwise as tasks.cnn.train.prepare_out_dir."""
    stamp, state = out_dir / "backup.recipe.json", out_dir / HEAD_STATE
    same = stamp.exists() and json.loads(stamp.read_text()) == json.loads(json.dumps(recipe))
    if same and state.exists() and (out_dir / HEAD_WEIGHTS).exists():
        return True, json.loads(state.read_text())
    for p in (state, out_dir / HEAD_WEIGHTS):
        p.unlink(missing_ok=True)
    return prepare_out_dir(out_dir, live_dir, recipe), None


def fit_phase(phase: str, model, train_ds, val_ds, *, epochs: int, initial_epoch: int, steps, out_dir: Path,
              live_dir: Path, checkpoint: BestCheckpoint, patience: int, extra: list) -> float:
    callbacks = [
        checkpoint,
        keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=patience,
                                      restore_best_weights=True),
        keras.callbacks.CSVLogger(str(out_dir / "log.csv"), append=True),
        LiveLogger(live_dir),
        *extra,
    ]
    if HAVE_TENSORBOARD:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(out_dir / "tb" / phase)))
    safe = CrashSafeBackup(out_dir / "backup", log_csv=out_dir / "log.csv", live_dir=live_dir,
                           initial_epoch=initial_epoch, tag=phase, checkpoint=checkpoint)
    reporting = fit_progress(f"train {out_dir.name} {phase}")  # only prints: last, after every other callback
    start = time.time()
    model.fit(train_ds, validation_data=val_ds, epochs=initial_epoch + epochs, initial_epoch=initial_epoch,
              steps_per_epoch=steps, callbacks=[*safe.callbacks(callbacks), reporting], shuffle=False,
              verbose=progress())
    return round(time.time() - start, 1)


def train(model_key: str, params: dict, data_dir: Path, out_dir: Path, init_path: Path | None = None,
          *, live_dir: Path | None = None, extra_callbacks: list | None = None) -> dict:
    """Train photo recipe `model_key` on the processed dataset `data_dir` into `out_dir`; `init_path`:
    a features cache dir, a teacher's targets dir (distillation: its features cache is the start), a
    weights file or dir, or a .py file / None (random init)."""
    from tasks.records.shards import load_manifest

    out_dir, data_dir = Path(out_dir), Path(data_dir)
    init_path = Path(init_path) if init_path else None
    manifest = load_manifest(data_dir)
    recipe = photo_recipe(params, model_key)
    soft = distill = None
    if teach.is_targets(init_path):  # distillation: the teacher's targets, over a features cache
        soft, distill, init_path = teach.load_targets(init_path)
        recipe = {**recipe, "teacher": distill["teacher"]}
        distill = {**distill, "weight": float(recipe["distill_weight"])}
    recipe, info = resolve(recipe, manifest, init_path)
    cache = init_path if info else None
    weights = features.base_weights(cache) if cache else init_weights(init_path)
    if recipe["train_bn"] is None:
        recipe["train_bn"] = cache is None and weights is None
    live_dir = Path(live_dir) if live_dir else out_dir / "dvclive"
    resuming, head_state = prepare(out_dir, live_dir, recipe)
    gpus = tf.config.list_physical_devices("GPU")
    strategy = setup(int(recipe["seed"]), gpus)
    k = manifest["num_classes"]
    one_hot = k if float(recipe["label_smoothing"] or 0) or recipe["teacher"] else None
    steps = int(recipe["steps_per_epoch"]) if recipe["steps_per_epoch"] else None
    cut = bool(info and info.get("cut"))
    if cut:
        check_cut(recipe, info, cache)
    n_train = info["splits"]["train"]["count"] if cut else manifest["splits"]["train"]["count"]
    # built here, before any training, so a bad `fine_tune_schedule` fails before the head phase runs
    fine_tune_lr = learning_rate({"lr": recipe["fine_tune_lr"], "schedule": recipe["fine_tune_schedule"],
                                  "epochs": recipe["fine_tune_epochs"]},
                                 steps or -(-n_train // int(recipe["batch_size"])))
    with strategy.scope():
        model, base, train_model = build(recipe, manifest, weights)
        set_bn_momentum(base, recipe["bn_momentum"])
        top, train_model = on_cut(base, info, k, recipe) if cut else (None, train_model)
        head_model = head_on_features([base.output_shape[-1]] if cut else info["shape"], k, recipe) if cache else None
    best = max((r["val_accuracy"] for r in read_log(out_dir / "log.csv")), default=None)
    checkpoint = BestCheckpoint(out_dir / "model.keras", model, best)
    common = dict(out_dir=out_dir, live_dir=live_dir, checkpoint=checkpoint, patience=int(recipe["patience"]),
                  extra=list(extra_callbacks or []))
    seconds = {"head": 0.0, "fine_tune": 0.0}

    # phase 1: the head (base frozen), on cached features or on the images
    if head_state is None:
        if cache:
            checkpoint.before_save = lambda: copy_head(head_model, model)
            with strategy.scope():
                compile_for(head_model, recipe["head_lr"], recipe)
            if cut:  # the head learns the top's pooled output of every cached view
                (x, y), val = (features.load_split(cache, s) for s in ("train", "validation"))
                label = f"train {out_dir.name} top over the cut cache"
                train_ds, val_ds = array_datasets((pooled_top(top, x, label=f"{label} (train)"), y),
                                                  (pooled_top(top, val[0], label=f"{label} (validation)"), val[1]),
                                                  recipe, one_hot, soft)
                del x
            else:
                train_ds, val_ds = feature_datasets(cache, recipe, one_hot, soft)
            fitted, phase_steps = head_model, None
        else:
            backbones.set_trainable(base, None if recipe["freeze_base"] else 0, recipe["train_bn"])
            with strategy.scope():
                compile_for(train_model, recipe["head_lr"], recipe)
            train_ds, val_ds = image_datasets(data_dir, recipe, manifest, one_hot, soft)
            fitted, phase_steps = train_model, steps
        if int(recipe["head_epochs"]) > 0:
            seconds["head"] = fit_phase("head", fitted, train_ds, val_ds, epochs=int(recipe["head_epochs"]),
                                        initial_epoch=0, steps=phase_steps, **common)
        if cache:
            copy_head(head_model, model)
        checkpoint.before_save = None
        head_state = {"epochs_run": len(read_log(out_dir / "log.csv")), "fit_seconds": seconds["head"]}
        save_weights(model, out_dir / HEAD_WEIGHTS)
        write_json(out_dir / HEAD_STATE, head_state)
    else:
        model.load_weights(out_dir / HEAD_WEIGHTS)
        seconds["head"] = head_state["fit_seconds"]
    if cut:  # the full model's head, now trained, onto the top that phase 2 fits
        copy_head(model, train_model)

    # phase 2: fine-tune the base from `fine_tune_from` on, end to end on (augmented) images, or above
    # the cut on a cut cache's activations of the augmented views
    if int(recipe["fine_tune_epochs"]) > 0:
        backbones.set_trainable(base, int(recipe["fine_tune_from"]), recipe["train_bn"])
        with strategy.scope():
            compile_for(train_model, fine_tune_lr, recipe)
        if cut:  # the top + head on the cached activations; the best epoch's head goes into the full model
            train_ds, val_ds = feature_datasets(cache, recipe, one_hot, soft)
            checkpoint.before_save = lambda: copy_head(train_model, model)
        else:
            train_ds, val_ds = image_datasets(data_dir, recipe, manifest, one_hot, soft)
        seconds["fine_tune"] = fit_phase("fine_tune", train_model, train_ds, val_ds,
                                         epochs=int(recipe["fine_tune_epochs"]),
                                         initial_epoch=head_state["epochs_run"], steps=steps, **common)
    fitted = train_model if int(recipe["fine_tune_epochs"]) > 0 or not cache else head_model
    if not (out_dir / "model.keras").exists():  # no epoch ran at all: the model as it is
        save_model(model, out_dir / "model.keras")
    finish(out_dir, out_dir / "backup")
    for p in (out_dir / "backup", out_dir / HEAD_STATE, out_dir / HEAD_WEIGHTS):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)

    history = [{**r, "phase": "head" if r["epoch"] < head_state["epochs_run"] else "fine_tune"}
               for r in read_log(out_dir / "log.csv")]
    write_json(out_dir / "history.json", history)
    summary = {
        "model": model_key, "recipe": recipe, "dataset": manifest.get("dataset", recipe.get("dataset")),
        "mode": ("cut" if cut else "cache") if cache else "on_the_fly", "used_cache": bool(cache),
        **({"cut": info["cut"], "views": int(info.get("views", 1)),
            "train_examples": int(info["splits"]["train"]["count"])} if cut else {}),
        "init": recipe.get("init") or (str(init_path) if init_path else None),  # as params spell it
        "weights_sha256": info["weights_sha256"] if info else (backbones.sha256(weights) if weights else None),
        "epochs_run": len(history), "resumed": resuming,
        "epochs_per_phase": {p: sum(r["phase"] == p for r in history) for p in ("head", "fine_tune")},
        "fit_seconds": round(seconds["head"] + seconds["fine_tune"], 1), "fit_seconds_per_phase": seconds,
        "best_val_accuracy": max((r["val_accuracy"] for r in history), default=None),
        "params": int(model.count_params()),
        "trainable_params": int(sum(int(np.prod(w.shape)) for w in fitted.trainable_weights)),
        "gpus": len(gpus), "tensorboard": HAVE_TENSORBOARD,
        **({"distillation": distill} if distill else {}),
    }
    write_json(out_dir / "train.json", summary)
    return summary
