"""TFLite metadata inside every exported model (each format: float32, float16, dynamic, int8), read back by an
independent parser (the flatc code MediaPipe ships), by ai-edge-litert (same outputs as without it) and by a
real phone-API client: MediaPipe Tasks' ImageClassifier, whose top-1 must equal `tlpipe predict` on every image
(and bench/mediapipe_check.py, which says so per format)."""
import json
from pathlib import Path

import keras
import numpy as np
import pytest
from keras import layers
from PIL import Image

from tasks.evaluate import tflite_metadata as tm
from tasks.evaluate.export import FORMATS, make_interpreter, run_tflite, to_tflite, to_tflite_int8
from tasks.cnn.models import build
from tasks.photo.backbones import front
from tasks.evaluate.predict import predict
from tasks.records.shards import write_dataset

NAMES = ["red", "green", "blue"]
SIZE = 32


def photos(n, seed):
    """RGB images whose dominant channel is the class, at a random brightness, plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    images = rng.integers(0, 16, (n, SIZE, SIZE, 3), dtype=np.uint8)
    for img, y in zip(images, labels):
        img[..., y] += np.uint8(rng.integers(120, 230))
    return images, labels


@pytest.fixture(scope="module")
def photo_export(tmp_path_factory):
    """A tiny photo model (uint8 RGB in, MobileNet-style rescaling inside) through `export`."""
    from tasks.evaluate.export import export

    tmp = tmp_path_factory.mktemp("meta")
    train, valid = photos(60, 0), photos(12, 1)
    attributes = {"red": {"warm": "yes"}, "green": {"warm": "no"}, "blue": {"warm": "no"}}
    write_dataset(tmp / "data", {"train": train, "validation": valid, "test": photos(12, 2)}, NAMES,
                  extra={"label_attributes": attributes})
    keras.utils.set_random_seed(0)
    inputs, x = front((SIZE, SIZE, 3), SIZE)
    x = layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    # 2,304 weights: over the 1,024 below which the converter leaves a tensor float (dynamic, float16)
    x = layers.GlobalAveragePooling2D()(layers.Conv2D(32, 3, activation="relu")(x))
    model = keras.Model(inputs, layers.Dense(3, activation="softmax")(x))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    model.fit(train[0], train[1], batch_size=16, epochs=15, verbose=0)
    model.save(tmp / "model.keras")
    params = {"latency_runs": 3, "representative_samples": 40,
              "metadata": {"author": "Ada Lovelace", "license": "CC-BY-4.0", "version": "7.1"}}
    result = export(tmp / "model.keras", tmp / "data", tmp / "models", params,
                    info={"name": "colours", "description": "three colours"})
    files = []
    for i, img in enumerate(valid[0]):
        files.append(tmp / "images" / f"{i}.png")
        files[-1].parent.mkdir(exist_ok=True)
        Image.fromarray(img).save(files[-1])
    return {"tmp": tmp, "models": tmp / "models" / "tflite", "result": result, "valid": valid, "files": files,
            "attributes": attributes}


def parse_with_mediapipe_schema(model_bytes):
    """The metadata as MediaPipe's own flatc-generated schema code reads it (not our reader)."""
    from mediapipe.tasks.metadata import metadata_schema_py_generated as fb

    buf = tm.metadata_bytes(model_bytes)
    assert fb.ModelMetadata.ModelMetadataBufferHasIdentifier(buf, 0)
    return fb.ModelMetadataT.InitFromObj(fb.ModelMetadata.GetRootAsModelMetadata(buf, 0)), fb


@pytest.mark.parametrize("kind", FORMATS)
def test_metadata_fields_read_by_the_schemas_own_code(photo_export, kind):
    data = (photo_export["models"] / f"model_{kind}.tflite").read_bytes()
    meta, fb = parse_with_mediapipe_schema(data)
    assert meta.name.decode() == f"colours ({kind})" and meta.description.decode() == "three colours"
    assert (meta.version.decode(), meta.author.decode(), meta.license.decode()) == ("7.1", "Ada Lovelace", "CC-BY-4.0")
    assert meta.minParserVersion.decode() == "1.0.0"
    (sub,) = meta.subgraphMetadata
    (inp,), (out,) = sub.inputTensorMetadata, sub.outputTensorMetadata
    assert inp.content.contentPropertiesType == fb.ContentProperties.ImageProperties
    assert inp.content.contentProperties.colorSpace == fb.ColorSpaceType.RGB
    assert (inp.content.contentProperties.defaultSize.width, inp.content.contentProperties.defaultSize.height) == (SIZE, SIZE)
    (unit,) = inp.processUnits  # raw 0-255 pixels: identity normalisation
    assert unit.optionsType == fb.ProcessUnitOptions.NormalizationOptions
    assert list(unit.options.mean) == [0.0] * 3 and list(unit.options.std) == [1.0] * 3
    assert list(inp.stats.max) == [255.0] * 3 and list(inp.stats.min) == [0.0] * 3
    (labels,) = out.associatedFiles
    assert labels.name.decode() == "labels.txt" and labels.type == fb.AssociatedFileType.TENSOR_AXIS_LABELS
    assert out.content.contentPropertiesType == fb.ContentProperties.FeatureProperties
    (attrs,) = meta.associatedFiles
    assert attrs.name.decode() == "label_attributes.json" and attrs.type == fb.AssociatedFileType.DESCRIPTIONS
    packed = tm.associated_files(data)
    assert packed["labels.txt"].decode().splitlines() == NAMES
    assert json.loads(packed["label_attributes.json"]) == photo_export["attributes"]
    assert tm.labels_from_model(photo_export["models"] / f"model_{kind}.tflite") == NAMES
    ours = tm.read_metadata(data)
    assert ours["name"] == meta.name.decode() and ours["subgraphs"][0]["outputs"][0]["associated_files"][0]["type"] == 2


def test_int8_takes_uint8_pixels_and_sizes_are_reported(photo_export):
    interp = make_interpreter(photo_export["models"] / "model_int8.tflite")
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    assert inp["dtype"] == np.uint8 and inp["quantization"] == pytest.approx((1.0, 0))
    assert out["dtype"] == np.uint8
    result = photo_export["result"]
    for kind in FORMATS:
        size = (photo_export["models"] / f"model_{kind}.tflite").stat().st_size
        assert result[kind]["bytes"] == size > result[kind]["bytes_without_metadata"]
    assert result["int8"]["agreement"] >= 0.9


def test_metadata_changes_no_output_and_repopulating_replaces_it(tmp_path):
    """ai-edge-litert gives bit-identical scores with and without the metadata; a second populate
    replaces the first (one TFLITE_METADATA entry, one zip)."""
    images, labels = photos(24, 3)
    inputs, x = front((SIZE, SIZE, 3), SIZE)
    model = keras.Model(inputs, layers.Dense(3, activation="softmax")(layers.GlobalAveragePooling2D()(
        layers.Conv2D(4, 3)(x))))
    for kind, raw in ((kind, to_tflite(kind, model, images)) for kind in FORMATS):
        plain, meta = tmp_path / f"plain_{kind}.tflite", tmp_path / f"meta_{kind}.tflite"
        plain.write_bytes(raw)
        meta.write_bytes(raw)
        sizes = tm.add_classifier_metadata(meta, {"name": "m", "version": "1"}, NAMES)
        assert sizes["bytes_without"] == len(raw) and sizes["bytes_with"] == meta.stat().st_size
        np.testing.assert_array_equal(run_tflite(plain, images), run_tflite(meta, images))
        tm.add_classifier_metadata(meta, {"name": "again", "version": "2"}, list("xyz"))
        data = meta.read_bytes()
        assert tm.read_metadata(data)["name"] == "again" and tm.labels_from_model(meta) == list("xyz")
        from ai_edge_litert import schema_py_generated as schema

        root = schema.Model.GetRootAs(data, 0)
        names = [root.Metadata(i).Name().decode() for i in range(root.MetadataLength())]
        assert names.count(tm.METADATA_NAME) == 1 and data.count(b"PK\x05\x06") == 1
        np.testing.assert_array_equal(run_tflite(plain, images), run_tflite(meta, images))
    with pytest.raises(ValueError, match="3 outputs but there are 2 labels"):
        tm.add_classifier_metadata(meta, {"name": "m"}, ["a", "b"])


def mediapipe_classifier(path):
    from mediapipe.tasks.python import BaseOptions
    from mediapipe.tasks.python.vision import ImageClassifier, ImageClassifierOptions

    return ImageClassifier.create_from_options(ImageClassifierOptions(
        base_options=BaseOptions(model_asset_path=str(path)), max_results=3))


def cli_top1(model, files, capsys) -> list[str]:
    """The top label per image as `tlpipe predict MODEL IMAGE...` prints it."""
    from tasks.cli import main

    capsys.readouterr()
    assert main(["predict", str(model), *map(str, files)]) == 0
    lines = capsys.readouterr().out.splitlines()
    return [lines[lines.index(str(f)) + 1].rsplit(None, 1)[0].strip() for f in files]


@pytest.mark.parametrize("kind", FORMATS)
def test_mediapipe_image_classifier_agrees_with_tlpipe_predict(photo_export, kind, capsys):
    import mediapipe as mp

    path = photo_export["models"] / f"model_{kind}.tflite"
    weights = {"float32": np.float32, "float16": np.float16, "dynamic": np.int8, "int8": np.int8}[kind]
    assert weights in {t["dtype"] for t in make_interpreter(path).get_tensor_details()}  # really that format
    clf = mediapipe_classifier(path)
    ours = predict(path, photo_export["files"], top_k=3)
    assert len(ours) == len(photo_export["files"]) > 0
    assert cli_top1(path, photo_export["files"], capsys) == [r["top"][0]["label"] for r in ours]
    for file, mine in zip(photo_export["files"], ours):
        pixels = np.asarray(Image.open(file).convert("RGB"))
        (head,) = clf.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=pixels)).classifications
        top = head.categories[0]
        assert len(head.categories) == 3  # every category named from the model's own metadata
        assert all(c.category_name == NAMES[c.index] for c in head.categories)
        assert top.category_name == mine["top"][0]["label"]
        assert top.score == pytest.approx(mine["top"][0]["score"], abs=1e-5)
    clf.close()


def test_mediapipe_rejects_single_channel_models(tmp_path):
    """What MediaPipe does with a 28x28x1 digits model: its ImageClassifier takes RGB only."""
    images = np.random.default_rng(0).integers(0, 255, (8, 28, 28, 1), dtype=np.uint8)
    model = build("reference_cnn", 4)
    path = tmp_path / "digits.tflite"
    path.write_bytes(to_tflite_int8(model, images))
    tm.add_classifier_metadata(path, {"name": "digits"}, list("abcd"))
    assert tm.read_metadata(path.read_bytes())["subgraphs"][0]["inputs"][0]["content_type"] == tm.CONTENT_IMAGE
    with pytest.raises(ValueError, match="Only RGB color space"):
        mediapipe_classifier(path)
    assert predict(path, [_png(tmp_path, images[0])])[0]["top"][0]["label"] in "abcd"  # ours does take it


def _png(tmp_path, image):
    Image.fromarray(image[..., 0]).save(tmp_path / "digit.png")
    return tmp_path / "digit.png"


def test_the_mediapipe_bench_reads_every_format_of_an_export(photo_export, tmp_path, monkeypatch):
    """bench/mediapipe_check.py on the export folder and on current/-style copies: MediaPipe's ImageClassifier
    loads each format and its top-1 is `tlpipe predict`'s on every test image."""
    import shutil
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import mediapipe_check

    monkeypatch.chdir(tmp_path)
    model_dir = photo_export["models"].parent  # models/<key>/ (here: models/), its tflite/ inside
    out = mediapipe_check.main(str(model_dir), str(photo_export["tmp"] / "data"))
    assert out["split"] == "test" and out["count"] == 12 and out["folder"] == str(photo_export["models"])
    for kind in FORMATS:
        assert out[kind]["top1_agreement"] == 1.0, kind
        assert out[kind]["mediapipe_accuracy"] == out[kind]["tlpipe_predict_accuracy"], kind
    assert json.loads((tmp_path / "reports" / "bench" / f"mediapipe_{out['model']}.json").read_text()) == out
    blessed = tmp_path / "key" / "current"  # a folder of some formats (current/ holds the blessed set)
    blessed.mkdir(parents=True)
    for name in ("model_dynamic.tflite", "labels.txt"):
        shutil.copy(photo_export["models"] / name, blessed / name)
    again = mediapipe_check.main(str(blessed), str(photo_export["tmp"] / "data"))
    assert again["model"] == "key" and again["dynamic"] == out["dynamic"] and "float32" not in again
    with pytest.raises(FileNotFoundError, match="no model_<format>.tflite"):
        mediapipe_check.main(str(tmp_path / "key"), str(photo_export["tmp"] / "data"))
