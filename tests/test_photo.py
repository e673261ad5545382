"""MobileNet photo trainer: local weights only, the features cache, both training modes, frozen
layers stay frozen, determinism. Tiny MobileNetV2 (alpha 0.35) on 32x32 synthetic photos."""
import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

from tasks.photo import augment, backbones, features
from tasks.photo.train import train as photo_train
from tasks.photo.train import photo_recipe
from tasks.records.shards import write_dataset
from test_train import python_rng_churn

SIZE, CLASSES = 32, 3
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "weights"


def photos(n, seed):
    """RGB images whose dominant colour channel is the class, at a random brightness, plus a little noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % CLASSES
    images = rng.integers(0, 16, (n, SIZE, SIZE, 3), dtype=np.uint8)
    for img, y in zip(images, labels):
        img[..., y] += np.uint8(rng.integers(120, 230))
    return images, labels


def write_photo_splits(processed: Path) -> None:
    """The tiny photo dataset both these tests and tests/test_progress.py train on: 24/12/12 coloured squares."""
    write_dataset(processed, {s: photos(n, k) for k, (s, n) in enumerate([("train", 24), ("validation", 12), ("test", 12)])},
                  ["red", "green", "blue"])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("photo")
    write_photo_splits(root / "processed")
    (root / "weights").mkdir()
    tiny = keras.applications.MobileNetV2(input_shape=(SIZE, SIZE, 3), alpha=0.35, include_top=False, weights=None)
    for layer in tiny.layers:  # "pretrained" BN statistics: one pass at momentum 0 (random-init BN
        if isinstance(layer, keras.layers.BatchNormalization):  # stats make the features ~1e-12)
            layer.momentum = 0.0
    tiny(photos(240, 99)[0].astype("float32") / 127.5 - 1, training=True)
    tiny.save_weights(root / "weights" / "tiny.weights.h5")
    cfg = {"base": "mobilenet_v2", "alpha": 0.35, "batch_size": 8}
    info = features.compute_features(root / "processed", root / "weights", root / "cache", cfg,
                                     speed_path=root / "speed" / "cache.json")
    return {"root": root, "processed": root / "processed", "weights": root / "weights", "cache": root / "cache",
            "tiny": tiny, "info": info}


def recipe(**kw):
    return {"base": "mobilenet_v2", "alpha": 0.35, "batch_size": 8, "seed": 3, "head_epochs": 1,
            "fine_tune_epochs": 1, "fine_tune_from": 100, "patience": 10, **kw}


def test_bases_load_local_weights_only(data, tmp_path):
    base = backbones.build_base("mobilenet_v2", SIZE, 0.35, data["weights"])  # the dir: its single .h5
    for a, b in zip(base.get_weights(), data["tiny"].get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(FileNotFoundError, match="nope.weights.h5.*never downloaded"):
        backbones.build_base("mobilenet_v2", SIZE, 0.35, tmp_path / "nope.weights.h5")
    (tmp_path / "two").mkdir()
    for name in ("a.h5", "b.weights.h5"):
        (tmp_path / "two" / name).write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="exactly one"):
        backbones.weights_file(tmp_path / "two")
    with pytest.raises(ValueError, match="does not fit"):
        backbones.build_base("mobilenet_v2", SIZE, 1.0, data["weights"])
    with pytest.raises(ValueError, match="unknown base"):
        backbones.build_base("resnet", SIZE)


def test_random_init_is_fixed_by_the_seed():
    with python_rng_churn():
        a, b, c = (backbones.build_base("mobilenet_v3_small", SIZE, 0.75, None, seed=s) for s in (1, 1, 2))
    kernels = [n for n, w in zip((v.path for v in a.weights), a.get_weights()) if "kernel" in n]
    assert any("depthwise" in n for n in kernels)
    for x, y in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.get_layer("conv").get_weights()[0], c.get_layer("conv").get_weights()[0])


def test_augmentation_has_no_flip_unless_asked():
    names = [layer.name for layer in augment.augmenter(True, 0).layers]
    assert "aug_flip" not in names and {"aug_crop", "aug_shift", "aug_scale", "aug_brightness"} <= set(names)
    assert "aug_flip" in [layer.name for layer in augment.augmenter({"flip": True}, 0).layers]
    assert augment.augmenter(False, 0) is None
    x = np.random.default_rng(0).integers(0, 256, (4, SIZE, SIZE, 3)).astype("float32")
    y = np.asarray(augment.augmenter({"brightness": 0.5}, 0)(x, training=True))
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 255 and not np.array_equal(x, y)
    np.testing.assert_array_equal(np.asarray(augment.augmenter(True, 0)(x, training=False)), x)


def test_turn180_turns_half_the_images_and_never_mirrors():
    assert "aug_turn180" not in {layer.name for layer in augment.augmenter(True, 0).layers}  # opt-in
    turn = augment.augmenter({"crop": 0, "scale": 0, "brightness": 0, "turn180": True}, 3)
    x = np.random.default_rng(0).integers(0, 256, (64, 5, 7, 3)).astype("float32")
    y = np.asarray(turn(x, training=True))
    same = [np.array_equal(a, b) for a, b in zip(y, x)]
    turned = [np.array_equal(a, b[::-1, ::-1]) for a, b in zip(y, x)]
    assert all(s != t for s, t in zip(same, turned))  # each image exactly as stored or exactly turned
    assert 16 <= sum(turned) <= 48  # about half, from a seeded draw
    again = np.asarray(augment.augmenter({"crop": 0, "scale": 0, "brightness": 0, "turn180": True}, 3)(x, training=True))
    np.testing.assert_array_equal(again, y)  # seeded: the same draw from the same seed
    np.testing.assert_array_equal(np.asarray(turn(x, training=False)), x)
    layer = turn.get_layer("aug_turn180")
    assert type(layer).from_config(layer.get_config()).seed == layer.seed


def test_rotation_and_contrast_are_opt_in_and_stay_in_range():
    assert not {"aug_rotate", "aug_contrast"} & {layer.name for layer in augment.augmenter(True, 0).layers}
    both = augment.augmenter({"crop": 0, "scale": 0, "brightness": 0, "rotate": 0.05, "contrast": 0.3}, 0)
    assert [layer.name for layer in both.layers] == ["aug_float", "aug_rotate", "aug_contrast"]
    x = np.random.default_rng(1).integers(0, 256, (4, SIZE, SIZE, 3)).astype("float32")
    y = np.asarray(both(x, training=True))
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 255 and not np.array_equal(x, y)
    np.testing.assert_array_equal(np.asarray(both(x, training=False)), x)


def test_features_cache(data, monkeypatch):
    cache, info = data["cache"], dict(data["info"])
    speed = info.pop("speed")
    assert sorted(p.name for p in cache.iterdir()) == ["base.weights.h5", "features.json", "test.npz", "train.npz",
                                                        "validation.npz"]
    assert json.loads((cache / "features.json").read_text()) == info
    assert json.loads((data["root"] / "speed" / "cache.json").read_text()) == speed
    assert speed["count"] == 48 and speed["images_per_s"] > 0 and set(speed["splits"]) == set(info["splits"])
    assert info["weights_sha256"] == backbones.sha256(data["weights"] / "tiny.weights.h5")
    assert {s: v["count"] for s, v in info["splits"].items()} == {"train": 24, "validation": 12, "test": 12}
    x, y = features.load_split(cache, "validation")
    assert x.shape == (12, info["dim"]) and x.dtype == np.float32 and y.dtype == np.int64
    images, labels = photos(12, 1)
    np.testing.assert_array_equal(y, labels)
    base = backbones.build_base("mobilenet_v2", SIZE, 0.35, features.base_weights(cache))
    model = backbones.features_model(base, [SIZE, SIZE, 3], SIZE)
    assert model.input.dtype == "uint8"
    np.testing.assert_allclose(model.predict(images, verbose=0), x, rtol=1e-4, atol=1e-4)
    with np.load(cache / "validation.npz") as f:
        assert list(f["ids"][:2]) == ["validation/0000000", "validation/0000001"]

    def fail(*a, **k):  # a run that dies half way leaves the old cache as it was, and no temp dirs
        raise OSError("disk full")

    before = {p.name: p.read_bytes() for p in cache.iterdir() if p.is_file()}
    monkeypatch.setattr(features.np, "savez", fail)
    with pytest.raises(OSError):
        features.compute_features(data["processed"], data["weights"], cache, {"alpha": 0.35})
    assert {p.name: p.read_bytes() for p in cache.iterdir() if p.is_file()} == before
    assert [p.name for p in cache.parent.iterdir() if p.name.startswith(".cache")] == []


def test_features_cache_is_byte_reproducible(data, tmp_path):
    """A rerun writes the same bytes (DVC then sees no change and retrains nothing downstream), even
    after this process has built other models (Keras names layers from a per-process counter)."""
    backbones.build_base("mobilenet_v2", SIZE, 0.35, None)
    again = features.compute_features(data["processed"], data["weights"], tmp_path / "again",
                                      {"base": "mobilenet_v2", "alpha": 0.35, "batch_size": 8})
    assert {k: v for k, v in again.items() if k != "speed"} == {k: v for k, v in data["info"].items() if k != "speed"}
    files = sorted(p.name for p in data["cache"].iterdir())
    assert files == sorted(p.name for p in (tmp_path / "again").iterdir())
    for name in files:
        assert (tmp_path / "again" / name).read_bytes() == (data["cache"] / name).read_bytes(), name


def test_trainer_names_a_cache_without_base_weights(data, tmp_path):
    old = tmp_path / "old_cache"
    old.mkdir()
    for p in data["cache"].iterdir():
        if p.name != features.BASE_WEIGHTS:
            (old / p.name).write_bytes(p.read_bytes())
    with pytest.raises(FileNotFoundError, match="old_cache/base.weights.h5.*rerun features@"):
        photo_train("m", {"models": {"m": recipe(head="ours")}}, data["processed"], tmp_path / "m", old)


class Keeper(keras.callbacks.Callback):
    """Keeps the model each phase fitted, as it was when that phase ended."""

    def __init__(self):
        super().__init__()
        self.fitted = []

    def on_train_end(self, logs=None):
        self.fitted.append(self.model)


def test_cache_head_then_fine_tune_keeps_frozen_layers_and_is_deterministic(data, tmp_path):
    out, keeper = tmp_path / "m", Keeper()
    r = recipe(head="ours", head_epochs=3, head_lr=0.003, fine_tune_epochs=1, fine_tune_lr=1e-3, fine_tune_from=130)
    with python_rng_churn():  # as under Prefect: other threads draw from Python's RNG
        summary = photo_train("m", {"models": {"m": r}}, data["processed"], out, data["cache"],
                              extra_callbacks=[keeper])
        again = photo_train("m", {"models": {"m": r}}, data["processed"], tmp_path / "again", data["cache"])
    assert summary["used_cache"] and summary["mode"] == "cache" and summary["recipe"]["train_bn"] is False
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(len(history)))
    assert {h["phase"] for h in history} == {"head", "fine_tune"} and history[-1]["phase"] == "fine_tune"
    assert not (out / "backup").exists() and not (out / "backup.head.weights.h5").exists()

    model = keras.models.load_model(out / "model.keras")
    assert model.input.dtype == "uint8" and model.input_shape == (None, SIZE, SIZE, 3)
    assert model.output_shape == (None, CLASSES)
    assert [layer.name for layer in model.layers][-3:] == ["pool", "head_dropout", "head"]

    head_model, train_model = keeper.fitted
    assert head_model.input_shape == (None, data["info"]["dim"])
    source = backbones.build_base("mobilenet_v2", SIZE, 0.35, features.base_weights(data["cache"]))
    tuned = next(layer for layer in train_model.layers[-1].layers if layer.name == "base")
    changed = []
    for i, (before, after) in enumerate(zip(source.layers, tuned.layers)):
        same = all(np.array_equal(a, b) for a, b in zip(before.get_weights(), after.get_weights()))
        if isinstance(before, keras.layers.BatchNormalization) or i < 130:
            assert same, f"layer {i} {before.name} changed"
        elif before.weights:
            changed.append(not same)
    assert changed and all(changed)
    assert summary["trainable_params"] < summary["params"]

    assert json.loads((tmp_path / "again" / "history.json").read_text()) == history
    assert again["best_val_accuracy"] == summary["best_val_accuracy"]
    for a, b in zip(model.get_weights(), keras.models.load_model(tmp_path / "again" / "model.keras").get_weights()):
        np.testing.assert_array_equal(a, b)


def test_head_on_cache_moves_onto_the_full_model(data, tmp_path):
    """Phase 1 only: model.keras (uint8 images) predicts what the cached-feature head predicted (a cosine
    schedule for the fine-tune phase it skips is fine: a phase of no steps has nothing to decay)."""
    keeper = Keeper()
    summary = photo_train("m", {"models": {"m": recipe(head_epochs=3, fine_tune_epochs=0, fine_tune_schedule="cosine")}},
                          data["processed"], tmp_path / "m", data["cache"], extra_callbacks=[keeper])
    assert summary["epochs_per_phase"] == {"head": 3, "fine_tune": 0}
    assert summary["trainable_params"] == data["info"]["dim"] * CLASSES + CLASSES
    (head_model,) = keeper.fitted  # restored to its best epoch, the one model.keras was saved at
    x, _ = features.load_split(data["cache"], "validation")
    images, _ = photos(12, 1)
    full = keras.models.load_model(tmp_path / "m" / "model.keras")
    np.testing.assert_allclose(full.predict(images, verbose=0), head_model.predict(x, verbose=0), atol=1e-5)
    assert summary["best_val_accuracy"] == max(h["val_accuracy"] for h in
                                               json.loads((tmp_path / "m" / "history.json").read_text()))


def test_spatial_head_trains_on_a_cache_of_feature_maps(data, tmp_path):
    """`pool: false` caches the maps (float16); the spatial head trains on them and moves onto the
    full model, which then predicts from uint8 images what the head predicted from the cache."""
    info = features.compute_features(data["processed"], data["weights"], tmp_path / "maps",
                                     {"base": "mobilenet_v2", "alpha": 0.35, "batch_size": 8, "pool": False})
    assert info["pooled"] is False and info["shape"] == [1, 1, info["dim"]]
    x, _ = features.load_split(tmp_path / "maps", "validation")
    assert x.shape == (12, 1, 1, info["dim"]) and x.dtype == np.float16
    pooled, _ = features.load_split(data["cache"], "validation")
    np.testing.assert_allclose(x.reshape(12, -1).astype(np.float32), pooled, rtol=2e-3, atol=2e-3)
    keeper = Keeper()
    summary = photo_train("m", {"models": {"m": recipe(head="spatial", dropout=0.1, head_epochs=3,
                                                       fine_tune_epochs=0)}},
                          data["processed"], tmp_path / "m", tmp_path / "maps", extra_callbacks=[keeper])
    assert summary["trainable_params"] == (info["dim"] * 64 + 64) + (64 * CLASSES + CLASSES)
    (head_model,) = keeper.fitted
    full = keras.models.load_model(tmp_path / "m" / "model.keras")
    assert [layer.name for layer in full.layers][-4:] == ["head_conv", "flatten", "head_dropout", "head"]
    np.testing.assert_allclose(full.predict(photos(12, 1)[0], verbose=0),
                               head_model.predict(x.astype(np.float32), verbose=0), atol=2e-3)


def test_on_the_fly_random_init_trains_everything(data, tmp_path):
    """The cards study's shape: random init (a .py init), everything trainable from the start
    (BN too: random-init BN frozen would zero the features), augmentation on."""
    r = recipe(base="mobilenet", alpha=0.25, head="study_cards", freeze_base=False, head_epochs=1,
               fine_tune_epochs=0, steps_per_epoch=2)
    summary = photo_train("m", {"models": {"m": r}}, data["processed"], tmp_path / "m",
                          Path("tasks/photo/backbones.py"))
    assert summary["mode"] == "on_the_fly" and not summary["used_cache"] and summary["weights_sha256"] is None
    assert summary["recipe"]["train_bn"] is True and summary["trainable_params"] > 0.9 * summary["params"]
    history = json.loads((tmp_path / "m" / "history.json").read_text())
    assert [h["phase"] for h in history] == ["head"]
    model = keras.models.load_model(tmp_path / "m" / "model.keras")
    assert model.get_layer("head_dense").units == 128 and model.output_shape == (None, CLASSES)
    assert model.input.dtype == "uint8"


def test_compact_cnn_from_scratch_is_seeded_and_trains_every_layer(data, tmp_path):
    """Issue 29's lever: base `compact_cnn` (tasks/photo/compact.py) from random init, every kernel re-drawn
    from the seed, trained end to end in the fine-tune phase alone (no head phase), and saved uint8 in."""
    with python_rng_churn():
        a, b, c = (backbones.build_base("compact_cnn", SIZE, 0.5, None, seed=s) for s in (1, 1, 2))
    for x, y in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(x, y)
    for name in ("stem_conv", "stage1_1_dw", "stage4_2_pw"):
        assert not np.array_equal(a.get_layer(name).get_weights()[0], c.get_layer(name).get_weights()[0]), name
    assert a.output_shape == (None, 1, 1, 192)  # 1/32 of the side; the last stage's 384 channels x alpha
    r = recipe(base="compact_cnn", alpha=0.5, head_epochs=0, fine_tune_epochs=2, fine_tune_from=0, train_bn=True,
               fine_tune_lr=0.01, fine_tune_schedule="cosine", steps_per_epoch=3, init="tasks/photo/compact.py")
    summary = photo_train("m", {"models": {"m": r}}, data["processed"], tmp_path / "m",
                          Path("tasks/photo/compact.py"))
    assert summary["weights_sha256"] is None and summary["epochs_per_phase"] == {"head": 0, "fine_tune": 2}
    assert summary["recipe"]["train_bn"] is True and summary["trainable_params"] > 0.95 * summary["params"]
    assert [h["phase"] for h in json.loads((tmp_path / "m" / "history.json").read_text())] == ["fine_tune"] * 2
    model = keras.models.load_model(tmp_path / "m" / "model.keras")
    assert model.input.dtype == "uint8" and model.output_shape == (None, CLASSES)


def test_study_banknotes_head_on_a_weights_file(data):
    from tasks.photo.train import build, resolve

    manifest = json.loads((data["processed"] / "manifest.json").read_text())
    r, _ = resolve(photo_recipe(recipe(head="study_banknotes", train_bn=False), "m"), manifest, data["weights"])
    model, base, train_model = build(r, manifest, backbones.weights_file(data["weights"]))
    assert [layer.name for layer in model.layers][-5:] == ["base", "head_conv", "head_dropout", "pool", "head"]
    assert model.output_shape == (None, CLASSES) and train_model.layers[1].name == "augment"
    for a, b in zip(base.get_weights(), data["tiny"].get_weights()):
        np.testing.assert_array_equal(a, b)


def test_recipe_defaults_and_cache_head_mismatch(data, tmp_path):
    params = {"models": {"m": {"trainer": "tasks/photo", "head": "study_cards", "patience": 5}}}
    r = photo_recipe(params, "m")  # the recipe over tasks/photo/train.py DEFAULTS, nothing else
    assert (r["batch_size"], r["patience"], r["augment"]["flip"], r["label_smoothing"]) == (32, 5, False, 0.0)
    with pytest.raises(KeyError):
        photo_recipe(params, "nope")
    with pytest.raises(ValueError, match="trains the heads \\['ours', 'spatial'\\] only"):
        photo_train("m", params, data["processed"], tmp_path / "m", data["cache"])
    params["models"]["m"]["head"] = "spatial"
    with pytest.raises(ValueError, match="needs the feature maps.*pool: false"):
        photo_train("m", params, data["processed"], tmp_path / "m", data["cache"])


@pytest.mark.realdata
@pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/data/weights")
@pytest.mark.parametrize("name,alpha,path", [
    ("mobilenet", 0.25, "keras-applications/mobilenet/mobilenet_2_5_224_tf_no_top.h5"),
    ("mobilenet_v2", 0.35, "reexported/mobilenet_v2_0.35_224_no_top.weights.h5"),
    ("mobilenet_v2", 1.0, "reexported/mobilenet_v2_1.0_224_no_top.approx.weights.h5"),
])
def test_real_weight_files_load(name, alpha, path):
    base = backbones.build_base(name, 224, alpha, SHARED / path)
    random = backbones.build_base(name, 224, alpha, None)
    assert not np.array_equal(base.get_weights()[0], random.get_weights()[0])


@pytest.mark.slow
def test_a_run_killed_while_fine_tuning_resumes_after_the_head_phase(data, tmp_path):
    class Kill(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 4:
                raise KeyboardInterrupt("killed")

    class Epochs(keras.callbacks.Callback):
        seen = []

        def on_epoch_begin(self, epoch, logs=None):
            self.seen.append(epoch)

    params = {"models": {"m": recipe(head_epochs=3, fine_tune_epochs=2)}}
    with pytest.raises(KeyboardInterrupt):
        photo_train("m", params, data["processed"], tmp_path / "m", data["cache"], extra_callbacks=[Kill()])
    assert (tmp_path / "m" / "backup.head.json").exists()
    summary = photo_train("m", params, data["processed"], tmp_path / "m", data["cache"], extra_callbacks=[Epochs()])
    assert summary["resumed"] and Epochs.seen == [4]  # no head epoch again, fine-tune epoch 1 not again
    history = json.loads((tmp_path / "m" / "history.json").read_text())
    assert [(h["epoch"], h["phase"]) for h in history] == [(0, "head"), (1, "head"), (2, "head"),
                                                           (3, "fine_tune"), (4, "fine_tune")]
    assert not (tmp_path / "m" / "backup.head.json").exists()


def test_fine_tune_cosine_schedule_decays_to_one_percent(data, tmp_path):
    keeper = Keeper()
    r = recipe(head_epochs=1, fine_tune_epochs=2, fine_tune_lr=1e-3, fine_tune_schedule="cosine", fine_tune_from=140)
    photo_train("m", {"models": {"m": r}}, data["processed"], tmp_path / "m", data["cache"],
                extra_callbacks=[keeper])
    optimizer = keeper.fitted[-1].optimizer
    assert int(optimizer.iterations) == 2 * 3  # 24 train images in batches of 8, two epochs
    assert float(optimizer.learning_rate) == pytest.approx(1e-5, rel=1e-3)
    with pytest.raises(ValueError, match="unknown schedule"):
        photo_train("m", {"models": {"m": {**r, "fine_tune_schedule": "linear"}}}, data["processed"],
                    tmp_path / "bad", data["cache"])
    assert not (tmp_path / "bad" / "log.csv").exists()  # it failed before the head phase trained


def test_distillation_trains_on_the_teachers_softened_predictions(data, tmp_path):
    """teach@ writes a trained teacher's temperature-softened predictions over a features cache; a student
    whose `init` is that folder mixes them with the one-hot labels in both phases, starting from the
    cache. A missing teacher, or a cache changed since, is a clear error."""
    from tasks.photo import teach

    photo_train("teacher", {"models": {"teacher": recipe(head_epochs=2, fine_tune_epochs=0)}},
                data["processed"], tmp_path / "teacher", data["cache"])
    teacher_file = tmp_path / "teacher" / "model.keras"
    project = tmp_path / "project"  # data/features/<f> and data/teach/<t> as the stages lay them out
    shutil.copytree(data["cache"], project / "data" / "features" / "c")
    names = {"teacher": "models/teacher/model.keras", "features": "data/features/c"}
    record = teach.teach(teacher_file, data["processed"], project / "data" / "features" / "c",
                         project / "data" / "teach" / "t", {"temperature": 2.0}, names=names)
    soft, info, cache = teach.load_targets(project / "data" / "teach" / "t")
    assert soft.shape == (24, CLASSES) and np.allclose(soft.sum(axis=1), 1.0, atol=1e-5)
    assert cache == (project / "data" / "features" / "c").resolve() and info == record
    probs = keras.models.load_model(teacher_file).predict(photos(24, 0)[0], verbose=0)
    sharpened = np.sort(probs ** 0.5 / (probs ** 0.5).sum(axis=1, keepdims=True), axis=0)
    np.testing.assert_allclose(np.sort(soft, axis=0), sharpened, atol=1e-5)  # same rows, stored order aside
    assert info["teacher"] == "models/teacher/model.keras" and info["temperature"] == 2.0

    import tensorflow as tf
    r = recipe(head_epochs=1, fine_tune_epochs=1, fine_tune_from=130, distill_weight=0.6)
    full = {**photo_train_module().DEFAULTS, **r}
    labels = features.load_split(data["cache"], "train")[1]
    ds = tf.data.Dataset.from_tensor_slices((np.zeros((24, 1)), labels))
    targets = np.stack([t for _, t in photo_train_module()._with_soft_targets(ds, soft, full, CLASSES)
                        .as_numpy_iterator()])
    np.testing.assert_allclose(targets, 0.4 * np.eye(CLASSES)[labels] + 0.6 * soft, atol=1e-6)

    summary = photo_train("student", {"models": {"student": r}}, data["processed"], tmp_path / "student",
                          project / "data" / "teach" / "t")
    assert summary["distillation"]["weight"] == 0.6 and summary["epochs_per_phase"] == {"head": 1, "fine_tune": 1}
    assert summary["distillation"]["features"] == "data/features/c"
    assert 0.0 <= summary["distillation"]["teacher_train_accuracy"] <= 1.0
    with pytest.raises(FileNotFoundError, match="train the teacher model first"):
        teach.teach(tmp_path / "nope" / "model.keras", data["processed"], project / "data" / "features" / "c",
                    project / "data" / "teach" / "t2", {}, names=names)
    (project / "data" / "features" / "c" / "features.json").write_text("{}")  # the cache was rebuilt since
    with pytest.raises(ValueError, match="rerun teach@t"):
        teach.load_targets(project / "data" / "teach" / "t")


def photo_train_module():
    import importlib
    return importlib.import_module("tasks.photo.train")


def test_a_truncated_fine_tune_backup_falls_back_and_the_model_is_checked_before_the_backup_goes(data, tmp_path,
                                                                                               caplog):
    class Kill(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 3:
                raise KeyboardInterrupt("killed")

    class Epochs(keras.callbacks.Callback):
        seen = []

        def on_epoch_begin(self, epoch, logs=None):
            self.seen.append(epoch)

    out = tmp_path / "m"
    params = {"models": {"m": recipe(head_epochs=1, fine_tune_epochs=3)}}
    with pytest.raises(KeyboardInterrupt):
        photo_train("m", params, data["processed"], out, data["cache"], extra_callbacks=[Kill()])
    meta = json.loads((out / "backup" / "training_metadata.json").read_text())
    assert (meta["epoch"], meta.get("tag", "fine_tune")) == (3, "fine_tune")
    latest = out / "backup" / meta.get("weights", "latest.weights.h5")
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])
    summary = photo_train("m", params, data["processed"], out, data["cache"], extra_callbacks=[Epochs()])
    assert Epochs.seen == [2, 3]  # fine-tune epoch 2 again, from the state kept after epoch 1; no head epoch
    assert f"discarded {latest}" in caplog.text
    history = json.loads((out / "history.json").read_text())
    assert [(h["epoch"], h["phase"]) for h in history] == [(0, "head"), (1, "fine_tune"), (2, "fine_tune"),
                                                           (3, "fine_tune")]
    assert summary["epochs_per_phase"] == {"head": 1, "fine_tune": 3} and not (out / "backup").exists()
    keras.models.load_model(out / "model.keras")


def test_bn_momentum_sets_how_fast_training_bn_statistics_follow():
    from tasks.photo.train import build, set_bn_momentum

    manifest = {"image_shape": [SIZE, SIZE, 3], "num_classes": CLASSES}
    x = np.random.default_rng(0).integers(0, 256, (8, SIZE, SIZE, 3)).astype(np.uint8)
    moved = {}
    for momentum in (None, 0.9):
        keras.utils.set_random_seed(0)
        model, base, _ = build(photo_recipe({"base": "mobilenet_v2", "alpha": 0.35, "image_size": SIZE, "augment": False,
                                             "bn_momentum": momentum}, "m"), manifest, None)
        set_bn_momentum(base, momentum)
        bn = [layer for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)]
        assert {layer.momentum for layer in bn} == {0.999 if momentum is None else 0.9}  # None: Keras' own
        backbones.set_trainable(base, 0, train_bn=True)
        before = bn[0].moving_mean.numpy().copy()
        model.compile("sgd", "sparse_categorical_crossentropy")
        model.fit(x, np.zeros(8), batch_size=8, epochs=1, verbose=0)
        moved[momentum] = float(np.abs(bn[0].moving_mean.numpy() - before).max())
    assert moved[0.9] == pytest.approx(100 * moved[None], rel=0.05)  # (1 - 0.9) / (1 - 0.999)
