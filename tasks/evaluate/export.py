"""TFLite export (float32, float16, dynamic-range and full-integer int8), labels sidecar, and the
Keras/TFLite parity check.

Writes into `out_dir` (models/<model>/): the folder `tflite/` holding `model_<format>.tflite` for each
format of `export.formats` (FORMATS; all four by default) and `labels.txt` (one name per line, line
i = class id i: the contract `tasks.evaluate.predict` reads), replaced whole so it holds exactly the
formats asked for; and `tflite.json`. The formats, MediaPipe Model Maker's set plus float32:
- `float32`: the Keras model as it is; takes the raw 0-255 pixel values as the Keras model does (float32,
  or uint8 where the Keras input is uint8, as the photo models' is).
- `float16`: weights stored as float16 (about half the bytes), computed in float32 on a CPU (float16
  on a GPU delegate); the float32 model's input and output.
- `dynamic`: dynamic-range quantisation: int8 weights (about a quarter of the bytes), activations
  quantised on the fly where a kernel allows; the float32 model's input and output.
- `int8`: full-integer: every weight and activation int8; takes the raw uint8 pixels (input scale 1,
  zero point 0, what MediaPipe Tasks, the Task Library and camera apps feed) and returns uint8 scores
  (scale 1/256). Selective quantisation (`int8_float_layers`, `int8_float_above`): at most that many
  layers whose int8 error on the calibration images exceeds the threshold stay float inside
  (int8_error_layers); with 0, every op is int8.
Every file carries TFLite Metadata (tasks/evaluate/tflite_metadata.py): name, description, version,
author, license, input normalisation and labels.txt as the output's TENSOR_AXIS_LABELS file. A blessed
model's files are also copied to `current_dir` (the blessed set of formats, with labels.txt and
metrics.json).
"""
from __future__ import annotations

import functools
import json
import shutil
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from tasks.core.io import atomic_dir, room_for, write_json
from tasks.core.progress import Progress, keras_callback
from tasks.records.tables import PREDICTIONS, PREDICTIONS_TFLITE
from tasks.evaluate.tflite_metadata import add_classifier_metadata

METADATA_DEFAULTS = {"author": "tlpipe", "license": "Apache-2.0", "version": ""}
FORMATS = ("float32", "float16", "dynamic", "int8")   # export.formats offers these (tasks/stages/validate.py)
TFLITE_DIR = "tflite"                                   # models/<model>/tflite/: model_<format>.tflite, labels.txt
EXPORT_DEFAULTS = {"formats": list(FORMATS), "representative_samples": 500, "representative_pool": 4,
                   "latency_runs": 200, "num_threads": 1, "batch_size": 256, "seed": 0,
                   "int8_float_layers": 3, "int8_float_above": 0.5, "int8_debug_samples": 80,
                   "metadata": dict(METADATA_DEFAULTS)}


def make_interpreter(model_path: Path, num_threads: int = 1):
    """A LiteRT interpreter (ai-edge-litert), or tf.lite's where LiteRT is not importable."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - LiteRT is in the venv
        import tensorflow as tf
        Interpreter = tf.lite.Interpreter
    return Interpreter(model_path=str(model_path), num_threads=num_threads)


def _float_input_model(model):
    """The same layers behind a float32 input of raw pixel values 0..255, for the int8 converter
    (a uint8 Keras input would leave an unquantisable Cast at the front). Recipes are linear chains."""
    import keras

    shape = model.input_shape[1:]
    body = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    return keras.Sequential([keras.Input(shape=shape, dtype="float32"), *body], name="float_input")


@contextmanager
def _converter(model):
    """A TFLiteConverter of a Keras model, what `from_keras_model` makes, except that a failed write of
    the SavedModel it goes through is an error: TensorFlow's own path swallows it and falls back to a
    graph freeze that fails on Keras 3 with `TypeError: 'NoneType' object is not callable`, hiding a
    full disk. The same SavedModel (the model's call with training=False, as TensorFlow writes it),
    in a temp dir removed afterwards, and the same bytes out (checked against `from_keras_model`)."""
    import keras
    import tensorflow as tf
    from tensorflow.lite.python import conversion_metadata_schema_py_generated as conversion_metadata

    if not isinstance(model, (keras.src.models.Functional, keras.src.models.Sequential)):
        yield tf.lite.TFLiteConverter.from_keras_model(model)  # a subclassed model: TensorFlow's own way
        return
    signature = tf.nest.map_structure(lambda x: tf.TensorSpec(x.shape, dtype=x.dtype, name=x.name), model.inputs)
    if isinstance(signature, list) and len(signature) > 1:
        signature = [signature]
    with tempfile.TemporaryDirectory(prefix="tlpipe-tflite-") as saved:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serve", functools.partial(model.__call__, training=False), signature)
        archive.write_out(saved)  # its endpoint printout, as from_keras_model prints it (quiet runs swallow it)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        # the conversion metadata records where the model came from: a Keras model, as before
        environment = getattr(getattr(converter, "_metadata", None), "environment", None)
        if environment is not None:
            environment.modelType = conversion_metadata.ModelType.KERAS_MODEL
        yield converter


def to_tflite_float32(model) -> bytes:
    with _converter(model) as converter:
        return converter.convert()


def to_tflite_float16(model) -> bytes:
    """float16 weights (dequantised to float32 when the interpreter loads them on a CPU), the float32
    model's input and output."""
    import tensorflow as tf

    with _converter(model) as converter:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
        return converter.convert()


def to_tflite_dynamic(model) -> bytes:
    """Dynamic-range quantisation: int8 weights (tensors of 1024 elements and more; the converter keeps
    smaller ones float), no calibration data, the float32 model's input and output."""
    import tensorflow as tf

    with _converter(model) as converter:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        return converter.convert()


def to_tflite(kind: str, model, representative: np.ndarray | None = None, label: str = "int8 calibration",
              float_layers=(), calibrated=None) -> bytes:
    """The TFLite bytes of `model` in format `kind` (one of FORMATS; int8 needs `representative`;
    `label`: what its calibration pass's progress is called; `float_layers`: int8's layers kept float;
    `calibrated`: int8_calibration's debugger, so int8 is not calibrated twice)."""
    if kind == "int8":
        return to_tflite_int8(model, representative, label, float_layers, calibrated)
    converters = {"float32": to_tflite_float32, "float16": to_tflite_float16, "dynamic": to_tflite_dynamic}
    if kind not in converters:
        raise ValueError(f"no TFLite format {kind!r}: expected one of {', '.join(FORMATS)}")
    return converters[kind](model)


def formats(cfg: dict) -> list[str]:
    """`export.formats`, checked, in FORMATS order (the order of metrics.json's `tflite`)."""
    asked = cfg.get("formats")
    asked = list(FORMATS) if asked is None else asked
    if not isinstance(asked, (list, tuple)) or not asked:
        raise ValueError(f"export.formats: expected a non-empty list of {', '.join(FORMATS)}, got {asked!r}")
    unknown = [k for k in asked if k not in FORMATS]
    if unknown:
        raise ValueError(f"export.formats: no format {unknown[0]!r}; expected some of {', '.join(FORMATS)}")
    return [k for k in FORMATS if k in asked]


def tflite_path(folder: Path, kind: str) -> Path:
    """Where format `kind` lies in an export's tflite/ folder or in current/."""
    return Path(folder) / f"model_{kind}.tflite"


def _calibration_input(representative: np.ndarray) -> np.ndarray:
    """The calibration images, one of them given a 0 and a 255 pixel (one pixel each): the input's
    range comes from the calibration data, so the input scale is then exactly 1, whatever the images'
    own range."""
    representative = np.array(representative, copy=True)
    flat = representative[0].reshape(-1, representative.shape[-1] if representative.ndim == 4 else 1)
    flat[0], flat[-1] = 0, 255
    representative[0] = flat.reshape(representative[0].shape)
    return representative


def _int8_converter_settings(converter, calibration, uint8_io: bool = True) -> None:
    import tensorflow as tf

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = calibration
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if uint8_io:
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8


def _samples(images: np.ndarray, label: str | None = None):
    """A representative-dataset generator over `images` (float32, one at a time), with progress."""
    def gen():
        if label is None:
            for x in images:
                yield [x[None].astype(np.float32)]
            return
        with Progress(label, len(images), "images") as done:
            for x in images:
                yield [x[None].astype(np.float32)]
                done.update()
    return gen


def to_tflite_int8(model, representative: np.ndarray, label: str = "int8 calibration", float_layers=(),
                   calibrated=None) -> bytes:
    """Full-integer quantisation (int8 weights and activations) calibrated on `representative`,
    with a uint8 input of the raw pixels (scale 1, zero point 0) and uint8 scores. The calibration pass
    reports its progress as `label` (tasks/core/progress.py; the samples it is fed are unchanged).

    `float_layers` (tensor names from int8_error_layers): those layers stay float32 inside, the rest
    int8 (selective quantisation). TensorFlow's public route to it, the QuantizationDebugger's
    `denylisted_nodes`, returns a model with float32 input and output; the uint8 input and output are
    then made by `modify_model_io_type`, the function TFLiteConverter itself applies for
    `inference_input_type=uint8` (not exported under tf.lite, hence the internal import).

    `calibrated`: the debugger int8_calibration returned for the same model and `representative`
    (the one int8_error_layers measured with); its calibrated model is quantised again with the
    denylist, so export calibrates once. Without it and without float layers, TFLiteConverter
    calibrates and converts in one pass."""
    import tensorflow as tf

    if calibrated is None and not float_layers:
        with _converter(_float_input_model(model)) as converter:
            _int8_converter_settings(converter, _samples(_calibration_input(representative), label))
            with warnings.catch_warnings():  # "Statistics for quantized inputs were expected": the
                warnings.simplefilter("ignore", UserWarning)  # input range comes from the calibration data
                return converter.convert()

    from tensorflow.lite.python.util import modify_model_io_type

    debugger = calibrated if calibrated is not None else int8_calibration(model, representative, label)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        debugger.options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=list(float_layers))
        mixed = debugger.get_nondebug_quantized_model()
    content = bytes(modify_model_io_type(mixed, tf.uint8, tf.uint8))
    interpreter = tf.lite.Interpreter(model_content=content)
    ends = [d["dtype"] for d in interpreter.get_input_details() + interpreter.get_output_details()]
    if any(d != np.uint8 for d in ends):
        raise ValueError(f"int8 with float layers {list(float_layers)}: input/output came out {ends}, "
                         "expected uint8 (a layer at the model's edge cannot stay float)")
    return content


def int8_calibration(model, representative: np.ndarray, label: str = "int8 calibration", debug_samples: int = 1,
                     debug_label: str | None = None):
    """TFLite's QuantizationDebugger over `model` calibrated on `representative` (one pass, progress
    as `label`), its debug set the first `debug_samples` calibration images (their pass reported as
    `debug_label`, default `label: debug`). Float input and output here: the debugger ignores a
    denylist otherwise; to_tflite_int8 makes them uint8."""
    import tensorflow as tf

    representative = _calibration_input(representative)
    debug = representative[: max(1, int(debug_samples))]
    with _converter(_float_input_model(model)) as converter:
        _int8_converter_settings(converter, _samples(representative, label), uint8_io=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return tf.lite.experimental.QuantizationDebugger(
                converter=converter, debug_dataset=_samples(debug, debug_label or f"{label}: debug"))


def int8_error_layers(model, representative: np.ndarray, cfg: dict, label: str = "int8 error per layer",
                      calibrated=None) -> list[dict]:
    """The layers that int8 hurts most, to keep float (at most `int8_float_layers`, each over
    `int8_float_above`): TensorFlow's QuantizationDebugger runs the int8 model on the first
    `int8_debug_samples` calibration images (train split, never the test split) and measures each
    quantised tensor's error against its float value, in quantisation steps (RMSE / scale; rounding
    alone gives 1/sqrt(12) = 0.29). The softmax is never a candidate: its uint8 scores are the output
    the format promises. Returns [{tensor, op, rmse_steps}], worst first; [] when `int8_float_layers` is
    0 (nothing is run). `calibrated`: int8_calibration's debugger for this model (made here if None)."""
    import csv
    import io

    limit = int(cfg.get("int8_float_layers") or 0)
    if limit <= 0:
        return []
    above = float(cfg.get("int8_float_above", EXPORT_DEFAULTS["int8_float_above"]))
    debugger = calibrated if calibrated is not None else int8_calibration(
        model, representative, f"{label}: calibration",
        cfg.get("int8_debug_samples", EXPORT_DEFAULTS["int8_debug_samples"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        debugger.run()
    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)
    dump.seek(0)
    rows = []
    for row in csv.DictReader(dump):
        scale = float(row.get("scale") or 0)
        if scale > 0 and row["op_name"] != "SOFTMAX":
            rows.append({"tensor": row["tensor_name"], "op": row["op_name"],
                         "rmse_steps": round(float(row["mean_squared_error"]) ** 0.5 / scale, 4)})
    rows.sort(key=lambda r: -r["rmse_steps"])
    return [r for r in rows if r["rmse_steps"] > above][:limit]


def quantize_input(images: np.ndarray, detail: dict) -> np.ndarray:
    """Raw pixels -> what the interpreter's input tensor takes (float, uint8 or quantised int8)."""
    dtype = detail["dtype"]
    scale, zero = detail["quantization"]
    if np.issubdtype(dtype, np.floating):
        return images.astype(dtype)
    if scale:  # quantised input: q = round(x / scale) + zero_point
        info = np.iinfo(dtype)
        q = np.round(images.astype(np.float32) / scale + zero)
        return np.clip(q, info.min, info.max).astype(dtype)
    return images.astype(dtype)


def dequantize_output(raw: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero = detail["quantization"]
    if np.issubdtype(raw.dtype, np.integer) and scale:
        return (raw.astype(np.float32) - zero) * scale
    return raw.astype(np.float32)


def run_tflite(model_path: Path, images: np.ndarray, batch_size: int = 256, num_threads: int = 1,
               done: Progress | None = None) -> np.ndarray:
    """Scores (dequantised) of a TFLite model on raw uint8 images, in batches (each counted in `done`)."""
    interp = make_interpreter(model_path, num_threads)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    scores, current = [], None
    for lo in range(0, len(images), batch_size):
        batch = images[lo:lo + batch_size]
        if current != len(batch):
            interp.resize_tensor_input(inp["index"], [len(batch), *inp["shape"][1:]])
            interp.allocate_tensors()
            current = len(batch)
        interp.set_tensor(inp["index"], quantize_input(batch, inp))
        interp.invoke()
        scores.append(dequantize_output(interp.get_tensor(out["index"]), out))
        if done is not None:
            done.update(len(batch))
    return np.concatenate(scores)


def latency_ms(model_path: Path, image: np.ndarray, runs: int = 200, num_threads: int = 1) -> float:
    """Median single-image invoke time in milliseconds (after 10 warm-up runs)."""
    interp = make_interpreter(model_path, num_threads)
    inp = interp.get_input_details()[0]
    interp.resize_tensor_input(inp["index"], [1, *inp["shape"][1:]])
    interp.allocate_tensors()
    interp.set_tensor(inp["index"], quantize_input(image[None], inp))
    times = []
    for i in range(runs + 10):
        t = time.perf_counter()
        interp.invoke()
        if i >= 10:
            times.append(time.perf_counter() - t)
    return float(np.median(times) * 1000)


def parity(tflite_path: Path, images: np.ndarray, labels: np.ndarray, keras_pred: np.ndarray, cfg: dict,
           scores: np.ndarray | None = None) -> dict:
    """Accuracy of the TFLite model, its top-1 agreement with Keras, size and latency (`scores`: the
    model's scores on `images` when already computed)."""
    if scores is None:
        scores = run_tflite(tflite_path, images, int(cfg["batch_size"]), int(cfg["num_threads"]))
    pred = scores.argmax(axis=1)
    return {"accuracy": float(np.mean(pred == labels)), "agreement": float(np.mean(pred == keras_pred)),
            "bytes": Path(tflite_path).stat().st_size,
            "latency_ms": round(latency_ms(tflite_path, images[0], int(cfg["latency_runs"]),
                                           int(cfg["num_threads"])), 4)}


def export(model_path: Path, processed_dir: Path, out_dir: Path, params: dict, *,
           metrics_path: Path | None = None, metrics_out: Path | None = None,
           current_dir: Path | None = None, info: dict | None = None) -> dict:
    """Convert, check parity on the whole test split, write evaluate's metrics (`metrics_path`) plus
    `tflite` to `metrics_out` (default: back into `metrics_path`; a separate file keeps each DVC output
    owned by one stage), and copy the exported files and metrics to `current_dir` if blessed.

    `info`: the model's `name` and `description` for the TFLite metadata (default: the model file's
    folder name); author, license and version come from `params["metadata"]` (version "" = the first
    12 hex digits of the Keras model file's sha256)."""
    import keras

    from tasks.evaluate.metrics import evaluation_split, load_arrays
    from tasks.records.shards import load_manifest

    cfg = {**EXPORT_DEFAULTS, **(params or {})}
    kinds = formats(cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    folder = out_dir / TFLITE_DIR
    model = keras.models.load_model(model_path)
    n_rep = int(cfg["representative_samples"])
    # splits are stored in hash-shuffled order: a seeded draw from the first few x is a fair sample
    # (a small multiple keeps memory bounded for 224x224 photos); only int8 is calibrated
    pool = int(cfg["representative_pool"]) * n_rep if "int8" in kinds else 1
    train_x, _, names = load_arrays(processed_dir, "train", limit=pool)
    representative = train_x[np.random.default_rng(int(cfg["seed"])).permutation(len(train_x))[:n_rep]]
    files = {kind: tflite_path(folder, kind) for kind in kinds}
    float_layers = []  # int8's layers kept float: measured just before int8 is converted
    manifest = load_manifest(processed_dir)
    meta = model_info(model_path, cfg, info)
    # The folder is written whole in a temp dir and swapped in only once every file is: a failed export
    # (a full disk, the file-size limit) leaves the previous TFLite files as they were, and a format
    # dropped from export.formats leaves the folder.
    sizes = {}
    with atomic_dir(folder) as tmp:
        for kind, path in files.items():
            with room_for(path):  # also the converter's SavedModel in the temp dir
                calibrated = None
                if kind == "int8" and int(cfg["int8_float_layers"] or 0) > 0:  # one calibration for both
                    calibrated = int8_calibration(model, representative, f"export {out_dir.name} int8 calibration",
                                                  cfg["int8_debug_samples"], f"export {out_dir.name} int8 error per layer")
                    float_layers = int8_error_layers(model, representative, cfg, calibrated=calibrated)
                (tmp / path.name).write_bytes(to_tflite(kind, model, representative if kind == "int8" else None,
                                                        f"export {out_dir.name} int8 calibration",
                                                        [r["tensor"] for r in float_layers], calibrated))
                del calibrated
            sizes[kind] = add_classifier_metadata(tmp / path.name, {**meta, "name": f"{meta['name']} ({kind})"},
                                                  names, label_attributes=manifest.get("label_attributes") or None,
                                                  output=path)
        with room_for(folder / "labels.txt"):
            (tmp / "labels.txt").write_text("".join(f"{n}\n" for n in names), encoding="utf-8")
    del train_x, representative

    split = evaluation_split(manifest, Path(processed_dir) / "manifest.json")
    images, labels, _, ids = load_arrays(processed_dir, split, with_ids=True)
    keras_pred = model.predict(images, batch_size=512, verbose=0,
                               callbacks=[keras_callback(f"export {out_dir.name} parity keras")]).argmax(axis=1)
    with Progress(f"export {out_dir.name} parity {'/'.join(files)}", len(images) * len(files), "images") as done:
        scores = {kind: run_tflite(path, images, int(cfg["batch_size"]), int(cfg["num_threads"]), done)
                  for kind, path in files.items()}
    result = {kind: parity(path, images, labels, keras_pred, cfg, scores[kind]) for kind, path in files.items()}
    for kind in files:
        result[kind]["bytes_without_metadata"] = sizes[kind]["bytes_without"]
    if "int8" in result:
        result["int8"]["float_layers"] = float_layers
    result["formats"] = kinds
    result["keras_accuracy"] = float(np.mean(keras_pred == labels))
    if "int8" in result and "float32" in result:
        result["int8_size_ratio"] = result["int8"]["bytes"] / result["float32"]["bytes"]
    result["num_threads"], result["split"] = int(cfg["num_threads"]), split
    write_json(out_dir / "tflite.json", result)

    if metrics_path and Path(metrics_path).exists():
        metrics_out = Path(metrics_out or metrics_path)
        metrics = json.loads(Path(metrics_path).read_text())
        metrics["tflite"] = {k: result[k] for k in kinds}
        write_json(metrics_out, metrics)
        result["predictions"] = str(tflite_predictions(Path(metrics_path).parent / PREDICTIONS,
                                                       metrics_out.parent / PREDICTIONS_TFLITE, ids, scores))
        result["current"] = promote([*files.values(), folder / "labels.txt"], metrics_out, current_dir)
    else:
        result["current"] = False
    return result


def tflite_predictions(keras_table: Path, out: Path, ids: list[str], scores: dict) -> Path | None:
    """evaluate's predictions table plus each TFLite model's top-1 and its score, row by row."""
    from tasks.records.tables import read_table, with_tflite, write_table

    if not Path(keras_table).exists():
        return None
    table = read_table(keras_table)
    if table["source_id"].to_pylist() != list(ids):
        raise ValueError(f"{keras_table}: its rows are not the evaluation split's examples in order; "
                         "rerun `tlpipe evaluate` for this model")
    return write_table(out, with_tflite(table, scores))


def model_info(model_path: Path, cfg: dict, info: dict | None = None) -> dict:
    """name, description, version, author, license of the TFLite metadata."""
    import hashlib

    meta = {**METADATA_DEFAULTS, **(cfg.get("metadata") or {})}
    if not meta.get("version"):
        meta["version"] = hashlib.sha256(Path(model_path).read_bytes()).hexdigest()[:12]
    name = (info or {}).get("name") or Path(model_path).parent.name
    description = (info or {}).get("description") or f"{name}: image classifier made by tlpipe"
    return {**meta, "name": name, "description": description, "version": str(meta["version"])}


def bless_evaluation(evaluation_path: Path, metrics_path: Path, gate: dict, baseline_path: Path | None) -> dict:
    """The one verdict: evaluate@'s numbers (evaluation.json, which carries none) plus `blessed` and
    `blessing` (min_accuracy, and no regression beyond max_regression from the last blessed model's
    metrics at `baseline_path`) -> metrics.json, the only file with a `blessed` field."""
    from tasks.evaluate.metrics import bless

    evaluation = json.loads(Path(evaluation_path).read_text())
    verdict = bless(evaluation, gate, baseline_path if baseline_path and Path(baseline_path).exists() else None)
    metrics = {**{k: v for k, v in evaluation.items() if k not in ("blessed", "blessing")},
               "blessed": verdict["blessed"], "blessing": verdict}
    write_json(Path(metrics_path), metrics)
    return metrics


def promote(files: list, metrics_path: Path | None, current_dir: Path | None) -> bool:
    """Copy `files` and the metrics file to `current_dir` if the metrics say blessed; else leave
    the current model as it is. The copied metrics.json is the next evaluation's blessed baseline.
    The folder is replaced whole (tasks.core.io.atomic_dir): the old set or the new one, never a mix."""
    if not (current_dir and metrics_path and Path(metrics_path).exists()):
        return False
    if not json.loads(Path(metrics_path).read_text()).get("blessed"):
        return False
    current_dir = Path(current_dir)
    with atomic_dir(current_dir) as tmp:  # the whole new set, or the old one if a copy fails
        for path in [*map(Path, files), Path(metrics_path)]:
            with room_for(current_dir / path.name):
                shutil.copy2(path, tmp / path.name)
    return True
