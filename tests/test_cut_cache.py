"""Cut caches (issue 20): the activations entering a base layer for a few augmented views of each train
image, and the photo trainer fine-tuning only the blocks above the cut on them."""
from __future__ import annotations

import json
import shutil

import keras
import numpy as np
import pytest

from tasks.photo import backbones, features
from tasks.photo.train import train as photo_train
from test_photo import CLASSES, SIZE, data, photos, recipe  # noqa: F401 - `data` is the shared fixture

CUT = "block_13_expand"
VIEWS = {"base": "mobilenet_v2", "alpha": 0.35, "batch_size": 8, "cut": CUT, "views": 3, "seed": 5,
         "augment": {"crop": 0.2, "scale": 0.1, "brightness": 0.3, "rotate": 0.05, "flip": False}}


@pytest.fixture(scope="module")
def cut_cache(data):  # noqa: F811
    out = data["root"] / "cut"
    info = features.compute_features(data["processed"], data["weights"], out, VIEWS)
    return out, info


def lower_model(cache):
    base = backbones.build_base("mobilenet_v2", SIZE, 0.35, features.base_weights(cache))
    lower, index = features.below_cut(base, CUT)
    return backbones.features_model(lower, [SIZE, SIZE, 3], SIZE, pool=False), index


def test_a_cut_cache_holds_the_activations_at_the_cut_for_each_view(data, cut_cache):  # noqa: F811
    cache, info = cut_cache
    assert info["cut"] == CUT and info["views"] == 3 and not info["pooled"]
    assert {s: v["count"] for s, v in info["splits"].items()} == {"train": 72, "validation": 12, "test": 12}
    model, index = lower_model(cache)
    assert info["cut_index"] == index and info["shape"] == list(model.output_shape[1:])
    with np.load(cache / "train.npz") as f:
        x, y, ids, views = f["features"], f["labels"], f["ids"], f["views"]
    assert x.dtype == np.float16 and x.shape == (72, *info["shape"])
    assert list(views) == [0] * 24 + [1] * 24 + [2] * 24
    assert list(ids[:24]) == list(ids[24:48]) == list(ids[48:]) and list(y[:24]) == list(y[48:])
    images, labels = photos(24, 0)
    np.testing.assert_array_equal(y[:24], labels)
    np.testing.assert_allclose(x[:24], model.predict(images, verbose=0), rtol=2e-3, atol=2e-3)  # view 0: as stored
    assert not np.allclose(x[24:48], x[:24], atol=1e-2) and not np.allclose(x[48:], x[24:48], atol=1e-2)
    replay = [b[0].numpy() for b in features.cached_images(data["processed"], "train", info,
                                                            json.loads((data["processed"] / "manifest.json")
                                                                       .read_text()))]
    np.testing.assert_allclose(x[24:48], model.predict(np.concatenate(replay)[24:48], verbose=0), rtol=2e-3,
                               atol=2e-3)  # the augmented views replay exactly (teach@ relies on it)
    vx, _ = features.load_split(cache, "validation")
    np.testing.assert_allclose(vx, model.predict(photos(12, 1)[0], verbose=0), rtol=2e-3, atol=2e-3)


def test_a_cut_cache_is_byte_reproducible(data, cut_cache, tmp_path):  # noqa: F811
    again = tmp_path / "again"
    features.compute_features(data["processed"], data["weights"], again, VIEWS)
    for name in ("train.npz", "validation.npz", "features.json", "base.weights.h5"):
        assert (again / name).read_bytes() == (cut_cache[0] / name).read_bytes(), name


@pytest.mark.parametrize("change,message", [
    ({"cut": "block_99_expand"}, "no layer of that name.*block_13_expand"),
    ({"cut": "block_12_add"}, "takes 2 inputs"),
    ({"augment": False}, "3 views need `augment`"),
    ({"views": 1}, "set `views` >= 2"),
])
def test_bad_cuts_and_views_are_named(data, tmp_path, change, message):  # noqa: F811
    with pytest.raises(ValueError, match=message):
        features.compute_features(data["processed"], data["weights"], tmp_path / "x", {**VIEWS, **change})
    assert not (tmp_path / "x").exists()


def test_the_top_fine_tunes_on_the_cut_cache_and_the_full_model_predicts_the_same(data, cut_cache, tmp_path):  # noqa: F811
    cache, info = cut_cache
    r = recipe(head="ours", head_epochs=2, head_lr=0.01, fine_tune_epochs=2, fine_tune_lr=1e-3,
               fine_tune_from=info["cut_index"])
    summary = photo_train("m", {"models": {"m": r}}, data["processed"], tmp_path / "m", cache)
    assert summary["mode"] == "cut" and summary["cut"] == CUT and summary["views"] == 3
    assert summary["train_examples"] == 72 and summary["epochs_per_phase"] == {"head": 2, "fine_tune": 2}
    history = json.loads((tmp_path / "m" / "history.json").read_text())
    full = keras.models.load_model(tmp_path / "m" / "model.keras")
    assert full.input.dtype == "uint8" and full.output_shape == (None, CLASSES)

    # what model.keras predicts on the validation images is what the top + head saw on the cached activations
    source = backbones.build_base("mobilenet_v2", SIZE, 0.35, features.base_weights(cache))
    tuned = full.get_layer("base")
    changed = []
    for i, (before, after) in enumerate(zip(source.layers, tuned.layers)):
        same = all(np.array_equal(a, b) for a, b in zip(before.get_weights(), after.get_weights()))
        if isinstance(before, keras.layers.BatchNormalization) or i < info["cut_index"]:
            assert same, f"layer {i} {before.name} changed"
        elif before.weights:
            changed.append(not same)
    assert changed and all(changed)
    images, labels = photos(12, 1)
    accuracy = float((full.predict(images, verbose=0).argmax(1) == labels).mean())
    best = max(h["val_accuracy"] for h in history)
    assert abs(accuracy - best) <= 1 / 12 + 1e-9  # float16 activations: at most one image may flip

    with pytest.raises(ValueError, match="below the cut"):
        photo_train("m", {"models": {"m": {**r, "fine_tune_from": 10}}}, data["processed"], tmp_path / "b", cache)
    with pytest.raises(ValueError, match="trains the head 'ours' only"):
        photo_train("m", {"models": {"m": {**r, "head": "spatial"}}}, data["processed"], tmp_path / "c", cache)


def test_teach_judges_each_view_of_a_cut_cache(data, cut_cache, tmp_path):  # noqa: F811
    from tasks.photo import teach

    photo_train("teacher", {"models": {"teacher": recipe(head_epochs=2, fine_tune_epochs=0)}},
                data["processed"], tmp_path / "teacher", data["cache"])
    project = tmp_path / "project"
    shutil.copytree(cut_cache[0], project / "data" / "features" / "v")
    names = {"teacher": "models/teacher/model.keras", "features": "data/features/v"}
    record = teach.teach(tmp_path / "teacher" / "model.keras", data["processed"], project / "data" / "features" / "v",
                         project / "data" / "teach" / "t", {"temperature": 1.0}, names=names)
    soft, _, _ = teach.load_targets(project / "data" / "teach" / "t")
    assert record["examples"] == 72 and soft.shape == (72, CLASSES)
    manifest = json.loads((data["processed"] / "manifest.json").read_text())
    views = np.concatenate([b[0].numpy() for b in features.cached_images(data["processed"], "train", cut_cache[1],
                                                                          manifest)])
    teacher = keras.models.load_model(tmp_path / "teacher" / "model.keras")
    np.testing.assert_allclose(soft, teacher.predict(views, verbose=0), atol=1e-5)
    assert not np.allclose(soft[24:48], soft[:24], atol=1e-4)  # the teacher saw the augmented views

    student = recipe(head_epochs=1, fine_tune_epochs=1, fine_tune_from=cut_cache[1]["cut_index"])
    summary = photo_train("s", {"models": {"s": student}}, data["processed"], tmp_path / "s",
                          project / "data" / "teach" / "t")
    assert summary["mode"] == "cut" and summary["distillation"]["features"] == "data/features/v"
