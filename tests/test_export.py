"""TFLite export: every format of export.formats (float32, float16, dynamic, int8) in models/<key>/tflite/,
int8 really is int8, float16 and dynamic really are what they say, parity really compares, labels sidecar,
the blessed set of formats in current/, predict."""
import json

import keras
import numpy as np
import pytest
from PIL import Image

from tasks.evaluate.export import FORMATS, export, formats, make_interpreter, parity, promote, run_tflite, tflite_path
from tasks.cnn.models import build
from tasks.evaluate.predict import predict
from tasks.records.shards import write_dataset

NAMES = ["a", "b", "c", "d"]


def synthetic(n, seed):
    """28x28 uint8 images whose bright 7x7 block position encodes the label, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    images = rng.integers(0, 60, (n, 28, 28), dtype=np.uint8)
    for img, y in zip(images, labels):
        img[4:11, 2 + 6 * y:9 + 6 * y] = 255
    return images, labels


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    train, test = synthetic(96, 0), synthetic(48, 1)
    write_dataset(tmp / "data", {"train": train, "test": test}, NAMES)
    keras.utils.set_random_seed(0)
    model = build("reference_cnn", 4)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(train[0][..., None], train[1], batch_size=16, epochs=2, verbose=0)
    model.save(tmp / "model.keras")
    (tmp / "reports").mkdir()
    (tmp / "reports" / "evaluation.json").write_text(json.dumps({"accuracy": 0.9, "blessed": True}))
    result = export(tmp / "model.keras", tmp / "data", tmp / "models", {"latency_runs": 5, "int8_float_layers": 0},
                    metrics_path=tmp / "reports" / "evaluation.json", metrics_out=tmp / "reports" / "metrics.json",
                    current_dir=tmp / "current")
    keras_pred = model.predict(test[0][..., None], verbose=0).argmax(axis=1)
    return tmp, result, test, keras_pred


def tflite(tmp, kind):
    return tflite_path(tmp / "models" / "tflite", kind)


def test_int8_model_really_is_int8(exported):
    tmp, result, _, _ = exported
    interp = make_interpreter(tflite(tmp, "int8"))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    assert inp["dtype"] == np.uint8 and out["dtype"] == np.uint8  # what MediaPipe and apps feed
    assert inp["quantization"] == pytest.approx((1.0, 0))  # the raw pixel bytes, as they are
    kinds = {t["dtype"] for t in interp.get_tensor_details()}  # full-integer: int8 inside
    assert np.float32 not in kinds and np.int8 in kinds       # no float tensor left anywhere
    assert result["int8"]["bytes"] < 0.35 * result["float32"]["bytes"]


def test_float16_and_dynamic_are_what_they_say(exported):
    """float16: float16 weights, float32 maths and the float32 model's input and output; dynamic: int8
    weights, float32 input and output; each about half and a quarter of float32's bytes."""
    tmp, result, _, _ = exported
    reference = make_interpreter(tflite(tmp, "float32"))
    reference.allocate_tensors()
    for kind, weights, share in (("float16", np.float16, 0.6), ("dynamic", np.int8, 0.35)):
        interp = make_interpreter(tflite(tmp, kind))
        interp.allocate_tensors()
        inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
        assert (inp["dtype"], out["dtype"]) == (reference.get_input_details()[0]["dtype"], np.float32), kind
        kinds = {t["dtype"] for t in interp.get_tensor_details()}
        assert weights in kinds and np.float32 in kinds, (kind, kinds)
        assert (np.int8 in kinds) == (kind == "dynamic") and (np.float16 in kinds) == (kind == "float16")
        assert result[kind]["bytes"] < share * result["float32"]["bytes"], kind
        assert result[kind]["agreement"] >= 0.9, kind


def test_selective_int8_keeps_the_worst_layers_float_behind_the_same_uint8_input(exported, tmp_path):
    """int8_float_layers: the layers with the largest int8 error (QuantizationDebugger, calibration
    images) stay float inside; the input and output stay the raw uint8 pixels and uint8 scores. The
    threshold really filters, the count really caps, and 0 runs nothing."""
    from tasks.evaluate.export import int8_error_layers, to_tflite_int8

    tmp, _, (images, labels), keras_pred = exported
    model = keras.models.load_model(tmp / "model.keras")
    rep = synthetic(32, 3)[0][..., None]
    assert int8_error_layers(model, rep, {"int8_float_layers": 0}) == []
    every = int8_error_layers(model, rep, {"int8_float_layers": 99, "int8_float_above": 1e-9,
                                           "int8_debug_samples": 8})
    assert len(every) >= 3 and all(set(r) == {"tensor", "op", "rmse_steps"} for r in every)
    steps = [r["rmse_steps"] for r in every]
    assert steps == sorted(steps, reverse=True) and steps[0] > 0
    assert int8_error_layers(model, rep, {"int8_float_layers": 1, "int8_float_above": 1e-9,
                                          "int8_debug_samples": 8}) == every[:1]
    assert int8_error_layers(model, rep, {"int8_float_layers": 99, "int8_float_above": steps[0] + 1}) == []

    plain = to_tflite_int8(model, rep)
    mixed = to_tflite_int8(model, rep, float_layers=[every[0]["tensor"]])
    for content, floats in ((plain, False), (mixed, True)):
        path = tmp_path / f"{floats}.tflite"
        path.write_bytes(content)
        interp = make_interpreter(path)
        interp.allocate_tensors()
        inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
        assert (inp["dtype"], out["dtype"]) == (np.uint8, np.uint8) and inp["quantization"] == pytest.approx((1.0, 0))
        kinds = {t["dtype"] for t in interp.get_tensor_details()}
        assert (np.float32 in kinds) == floats and np.int8 in kinds
        p = parity(path, images[..., None], labels, keras_pred, {"batch_size": 16, "num_threads": 1, "latency_runs": 2})
        assert p["agreement"] >= 0.9


def test_export_formats_are_checked_before_any_work():
    assert formats({}) == list(FORMATS) == ["float32", "float16", "dynamic", "int8"]
    assert formats({"formats": ["int8", "float16"]}) == ["float16", "int8"]  # metrics.json's order: FORMATS'
    for bad, says in (([], "non-empty list"), (["fp16"], "no format 'fp16'"), ("int8", "non-empty list")):
        with pytest.raises(ValueError, match=f"export.formats: .*{says}"):
            formats({"formats": bad})


def test_parity_and_metrics_merge(exported):
    tmp, result, (images, labels), keras_pred = exported
    assert result["float32"]["agreement"] == 1.0
    assert result["int8"]["agreement"] >= 0.9
    assert result["float32"]["accuracy"] == pytest.approx(np.mean(keras_pred == labels))
    assert result["float32"]["latency_ms"] > 0
    metrics = json.loads((tmp / "reports" / "metrics.json").read_text())
    assert metrics["accuracy"] == 0.9 and list(metrics["tflite"]) == list(FORMATS) == result["formats"]
    for kind in FORMATS:  # every format's parity, on the same split (int8 also names its float layers)
        assert set(metrics["tflite"][kind]) == {"accuracy", "agreement", "bytes", "bytes_without_metadata",
                                                "latency_ms", *(["float_layers"] if kind == "int8" else [])}
        assert metrics["tflite"][kind]["bytes"] == tflite(tmp, kind).stat().st_size
    assert metrics["tflite"]["int8"]["float_layers"] == []  # int8_float_layers 0: all int8
    assert 0 < metrics["tflite"]["int8"]["bytes"] - metrics["tflite"]["int8"]["bytes_without_metadata"] < 4096
    assert "tflite" not in json.loads((tmp / "reports" / "evaluation.json").read_text())
    assert result["current"] and sorted(p.name for p in (tmp / "current").iterdir()) == sorted(
        ["labels.txt", "metrics.json", *(f"model_{k}.tflite" for k in FORMATS)])  # the blessed set
    for kind in FORMATS:
        assert tflite_path(tmp / "current", kind).read_bytes() == tflite(tmp, kind).read_bytes()
    assert json.loads((tmp / "current" / "metrics.json").read_text())["tflite"] == metrics["tflite"]
    assert (tmp / "models" / "tflite" / "labels.txt").read_text().splitlines() == NAMES
    assert sorted(p.name for p in (tmp / "models").iterdir()) == ["tflite", "tflite.json"]  # no temp left


def test_parity_really_compares(exported):
    tmp, _, (images, labels), keras_pred = exported
    keras.utils.set_random_seed(7)
    other = build("reference_cnn", 4, seed=7).predict(images[..., None], verbose=0).argmax(axis=1)
    assert not np.array_equal(other, keras_pred)
    p = parity(tflite(tmp, "float32"), images[..., None], labels, other,
               {"batch_size": 16, "num_threads": 1, "latency_runs": 3})
    assert p["agreement"] == pytest.approx(np.mean(other == keras_pred)) and p["agreement"] < 1


def test_only_a_blessed_model_is_made_current(tmp_path):
    model = tmp_path / "model_int8.tflite"
    model.write_bytes(b"new")
    (tmp_path / "current").mkdir()
    (tmp_path / "current" / "model_int8.tflite").write_bytes(b"old")
    (tmp_path / "metrics.json").write_text(json.dumps({"accuracy": 0.1, "blessed": False}))
    assert promote([model], tmp_path / "metrics.json", tmp_path / "current") is False
    assert (tmp_path / "current" / "model_int8.tflite").read_bytes() == b"old"
    (tmp_path / "metrics.json").write_text(json.dumps({"accuracy": 0.9, "blessed": True}))
    assert promote([model], tmp_path / "metrics.json", tmp_path / "current") is True
    assert (tmp_path / "current" / "model_int8.tflite").read_bytes() == b"new"
    assert json.loads((tmp_path / "current" / "metrics.json").read_text())["blessed"] is True


def test_predict_reads_labels_and_converts_images(exported, tmp_path):
    tmp, _, (images, _), _ = exported
    paths = []
    for i in range(3):  # RGB and twice the size: predict must greyscale and resize
        big = Image.fromarray(images[i]).resize((56, 56), Image.Resampling.NEAREST).convert("RGB")
        big.save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    for kind in FORMATS:
        model = tflite(tmp, kind)
        out = predict(model, paths, top_k=3)
        direct = run_tflite(model, images[:3, ..., None]).argmax(axis=1)
        assert [r["top"][0]["label"] for r in out] == [NAMES[i] for i in direct]
        for r in out:
            scores = [t["score"] for t in r["top"]]
            assert len(scores) == 3 and scores == sorted(scores, reverse=True)


def test_predict_reads_labels_from_the_model_without_a_sidecar(exported, tmp_path):
    tmp, _, (images, _), _ = exported
    Image.fromarray(images[0]).save(tmp_path / "0.png")
    lone = tmp_path / "model_int8.tflite"  # no labels.txt beside it: the metadata's labels are used
    lone.write_bytes(tflite(tmp, "int8").read_bytes())
    assert predict(lone, [tmp_path / "0.png"])[0]["top"][0]["label"] in NAMES
    (tmp_path / "labels.txt").write_text("w\nx\ny\nz\n")  # a sidecar wins over the metadata
    assert predict(lone, [tmp_path / "0.png"])[0]["top"][0]["label"] in list("wxyz")


def test_a_format_dropped_from_export_formats_leaves_tflite_and_current(exported, tmp_path):
    """export.formats [dynamic] over a folder that held all four: tflite/ and the blessed current/ then hold
    the dynamic model and labels.txt only (what DVC records as the folder outputs), metrics.json its parity."""
    import shutil

    tmp, _, (images, labels), _ = exported
    shutil.copytree(tmp / "models", tmp_path / "models")
    shutil.copytree(tmp / "current", tmp_path / "current")
    (tmp_path / "reports").mkdir()
    shutil.copy(tmp / "reports" / "evaluation.json", tmp_path / "reports" / "evaluation.json")
    result = export(tmp / "model.keras", tmp / "data", tmp_path / "models", {"formats": ["dynamic"], "latency_runs": 2},
                    metrics_path=tmp_path / "reports" / "evaluation.json",
                    metrics_out=tmp_path / "reports" / "metrics.json", current_dir=tmp_path / "current")
    assert result["formats"] == ["dynamic"] and "float32" not in result and "int8_size_ratio" not in result
    assert sorted(p.name for p in (tmp_path / "models" / "tflite").iterdir()) == ["labels.txt", "model_dynamic.tflite"]
    assert sorted(p.name for p in (tmp_path / "current").iterdir()) == ["labels.txt", "metrics.json",
                                                                        "model_dynamic.tflite"]
    metrics = json.loads((tmp_path / "reports" / "metrics.json").read_text())
    assert list(metrics["tflite"]) == ["dynamic"]
    assert metrics["tflite"]["dynamic"]["accuracy"] == pytest.approx(
        np.mean(run_tflite(tmp_path / "models" / "tflite" / "model_dynamic.tflite", images[..., None]).argmax(1)
                == labels))
