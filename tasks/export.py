"""TFLite export (float32 and full-integer int8), labels sidecar, and the Keras/TFLite parity check.

Writes into `out_dir` (models/<model>/): `model_float32.tflite`, `model_int8.tflite`, `labels.txt`
(one name per line, line i = class id i: the contract `tasks.predict` reads), `tflite.json`.
The float32 model takes raw uint8 pixels; the int8 model takes int8 pixels (pixel - 128: input scale 1,
zero point -128) and returns int8 scores. A blessed model is also copied to `current_dir`.
"""
from __future__ import annotations

import json
import shutil
import time
import warnings
from pathlib import Path

import numpy as np

from tasks.io import write_json

EXPORT_DEFAULTS = {"representative_samples": 500, "representative_pool": 4, "latency_runs": 200,
                   "num_threads": 1, "batch_size": 256, "seed": 0}


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
    return keras.Sequential([keras.Input(shape=shape, dtype="float32"), *body])


def to_tflite_float32(model) -> bytes:
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def to_tflite_int8(model, representative: np.ndarray) -> bytes:
    """Full-integer int8 (weights, activations, input and output), calibrated on `representative`."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(_float_input_model(model))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x[None].astype(np.float32)] for x in representative)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    with warnings.catch_warnings():  # "Statistics for quantized inputs were expected": the
        warnings.simplefilter("ignore", UserWarning)  # input range comes from the calibration data
        return converter.convert()


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


def run_tflite(model_path: Path, images: np.ndarray, batch_size: int = 256, num_threads: int = 1) -> np.ndarray:
    """Scores (dequantised) of a TFLite model on raw uint8 images, in batches."""
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


def parity(tflite_path: Path, images: np.ndarray, labels: np.ndarray, keras_pred: np.ndarray, cfg: dict) -> dict:
    """Accuracy of the TFLite model, its top-1 agreement with Keras, size and latency."""
    pred = run_tflite(tflite_path, images, int(cfg["batch_size"]), int(cfg["num_threads"])).argmax(axis=1)
    return {"accuracy": float(np.mean(pred == labels)), "agreement": float(np.mean(pred == keras_pred)),
            "bytes": Path(tflite_path).stat().st_size,
            "latency_ms": round(latency_ms(tflite_path, images[0], int(cfg["latency_runs"]),
                                           int(cfg["num_threads"])), 4)}


def export(model_path: Path, processed_dir: Path, out_dir: Path, params: dict, *,
           metrics_path: Path | None = None, metrics_out: Path | None = None,
           current_dir: Path | None = None) -> dict:
    """Convert, check parity on the whole evaluation split (test, else validation), write evaluate's metrics (`metrics_path`) plus
    `tflite` to `metrics_out` (default: back into `metrics_path`; a separate file keeps each DVC output
    owned by one stage), and copy the exported files and metrics to `current_dir` if blessed."""
    import keras

    from tasks.evaluate import evaluation_split, load_arrays
    from tasks.shards import load_manifest

    cfg = {**EXPORT_DEFAULTS, **(params or {})}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = keras.models.load_model(model_path)
    n_rep = int(cfg["representative_samples"])
    # splits are stored in hash-shuffled order: a seeded draw from the first few x is a fair sample
    # (a small multiple keeps memory bounded for 224x224 photos)
    train_x, _, names = load_arrays(processed_dir, "train", limit=int(cfg["representative_pool"]) * n_rep)
    pick = np.random.default_rng(int(cfg["seed"])).permutation(len(train_x))[:n_rep]
    files = {"float32": out_dir / "model_float32.tflite", "int8": out_dir / "model_int8.tflite"}
    files["float32"].write_bytes(to_tflite_float32(model))
    files["int8"].write_bytes(to_tflite_int8(model, train_x[pick]))
    (out_dir / "labels.txt").write_text("".join(f"{n}\n" for n in names), encoding="utf-8")
    del train_x

    split = evaluation_split(load_manifest(processed_dir))
    images, labels, _ = load_arrays(processed_dir, split)
    keras_pred = model.predict(images, batch_size=512, verbose=0).argmax(axis=1)
    result = {kind: parity(path, images, labels, keras_pred, cfg) for kind, path in files.items()}
    result["keras_accuracy"] = float(np.mean(keras_pred == labels))
    result["int8_size_ratio"] = result["int8"]["bytes"] / result["float32"]["bytes"]
    result["num_threads"], result["split"] = int(cfg["num_threads"]), split
    write_json(out_dir / "tflite.json", result)

    if metrics_path and Path(metrics_path).exists():
        metrics_out = Path(metrics_out or metrics_path)
        metrics = json.loads(Path(metrics_path).read_text())
        metrics["tflite"] = {k: result[k] for k in ("float32", "int8")}
        write_json(metrics_out, metrics)
        result["current"] = promote([*files.values(), out_dir / "labels.txt"], metrics_out, current_dir)
    else:
        result["current"] = False
    return result


def bless_evaluation(evaluation_path: Path, metrics_path: Path, gate: dict, baseline_path: Path | None) -> dict:
    """The one verdict: evaluate@'s numbers (evaluation.json, which carries none) plus `blessed` and
    `blessing` (min_accuracy, and no regression beyond max_regression from the last blessed model's
    metrics at `baseline_path`) -> metrics.json, the only file with a `blessed` field."""
    from tasks.evaluate import bless

    evaluation = json.loads(Path(evaluation_path).read_text())
    verdict = bless(evaluation, gate, baseline_path if baseline_path and Path(baseline_path).exists() else None)
    metrics = {**{k: v for k, v in evaluation.items() if k not in ("blessed", "blessing")},
               "blessed": verdict["blessed"], "blessing": verdict}
    write_json(Path(metrics_path), metrics)
    return metrics


def promote(files: list, metrics_path: Path | None, current_dir: Path | None) -> bool:
    """Copy `files` and the metrics file to `current_dir` if the metrics say blessed; else leave
    the current model as it is. The copied metrics.json is the next evaluation's blessed baseline."""
    if not (current_dir and metrics_path and Path(metrics_path).exists()):
        return False
    if not json.loads(Path(metrics_path).read_text()).get("blessed"):
        return False
    current_dir = Path(current_dir)
    current_dir.mkdir(parents=True, exist_ok=True)
    for path in [*map(Path, files), Path(metrics_path)]:
        shutil.copy2(path, current_dir / path.name)
    return True
