"""int8 fidelity against the calibration set size, on a trained model.

    python bench/int8_bench.py models/cards_ours_v2_100 data/processed/cards [--samples 100 500 2000]

For each calibration size (train images drawn as export@ draws them: a seeded permutation of the first
`representative_pool` x samples) the Keras model is converted with full-integer quantisation and a uint8
input and uint8 scores (tasks.evaluate.export.to_tflite_int8, what export@ ships) and run over the evaluation
split; reported: accuracy, top-1 agreement with Keras, how many of the disagreements are ties (the int8
softmax has a step of 1/256, so two classes within it tie and argmax takes the lower id; a float32 score
output only dequantizes that softmax: on mnist_scratch it gave the same ties and predictions), convert s. Prints a table and writes
reports/bench/int8_<model>.json. Nothing here asserts on a time.

    python bench/int8_bench.py models/cards_phone_v2_035 data/processed/cards --samples 500 \
        --float-layers 0:0.5 3:0.5 4:0.4 6:0.4 8:0.35

`--float-layers N:ABOVE ...`: selective quantisation instead (export's `int8_float_layers`: N and
`int8_float_above`: ABOVE), at the first --samples size: one calibration and one QuantizationDebugger pass
(export's `int8_debug_samples`, --debug-samples) for all settings, then for each the layers export would keep
float (tasks.evaluate.export.int8_error_layers' rule) and the int8 file's accuracy, agreement and bytes.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.core.io import write_json  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("processed")
    ap.add_argument("--samples", type=int, nargs="+", default=[100, 500, 2000])
    ap.add_argument("--pool", type=int, default=4, help="params.yaml export.representative_pool")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--float-layers", nargs="+", metavar="N:ABOVE", help="selective quantisation settings")
    ap.add_argument("--debug-samples", type=int, default=80, help="params.yaml export.int8_debug_samples")
    ap.add_argument("--out")
    args = ap.parse_args()
    import keras

    from tasks.evaluate.metrics import evaluation_split, load_arrays
    from tasks.evaluate.export import to_tflite_int8
    from tasks.records.shards import load_manifest

    model_dir, processed = Path(args.model_dir), Path(args.processed)
    model = keras.models.load_model(model_dir / "model.keras")
    split = evaluation_split(load_manifest(processed))
    images, labels, _ = load_arrays(processed, split)
    keras_pred = model.predict(images, batch_size=64, verbose=0).argmax(axis=1)
    report = {"model": model_dir.name, "split": split, "count": int(len(labels)),
              "keras_accuracy": float(np.mean(keras_pred == labels)), "load_1min": round(os.getloadavg()[0], 2),
              "pool": args.pool, "seed": args.seed, "runs": []}
    print(f"{model_dir.name}: Keras {report['keras_accuracy']:.4f} on {split} ({len(labels)})")
    # the first pool x samples train images, read once for the largest size (each draw is export@'s for its size)
    train_x, _, _ = load_arrays(processed, "train", limit=args.pool * max(args.samples))
    if args.float_layers:
        report["float_layer_runs"] = float_layer_runs(model, train_x, images, labels, keras_pred, args)
        args.samples = []  # the calibration-size table below is the other mode
    else:
        print(f"{'samples':>8} {'accuracy':>9} {'agreement':>10} {'disagree':>9} {'of them ties':>13} {'convert s':>10}")
    for n in args.samples:
        rep = draw(train_x, n, args)
        start = time.perf_counter()
        blob = to_tflite_int8(model, rep)
        seconds = time.perf_counter() - start
        scores = tflite_scores(blob, images)
        pred = scores.argmax(axis=1)
        top = np.sort(scores, axis=1)[:, -2:]
        differ = pred != keras_pred
        row = {"samples": n, "accuracy": float(np.mean(pred == labels)), "agreement": float(np.mean(~differ)),
               "disagreements": int(differ.sum()), "disagreements_tied": int(np.sum(differ & (top[:, 0] == top[:, 1]))),
               "convert_s": round(seconds, 1)}
        report["runs"].append(row)
        print(f"{n:>8} {row['accuracy']:>9.4f} {row['agreement']:>10.4f} {row['disagreements']:>9} "
              f"{row['disagreements_tied']:>13} {row['convert_s']:>10}", flush=True)
    out = Path(args.out or ROOT / "reports" / "bench" / f"int8_{model_dir.name}.json")
    write_json(out, report)
    print(f"wrote {out}")


def draw(train_x: np.ndarray, n: int, args) -> np.ndarray:
    """export@'s calibration draw for `n` samples: a seeded permutation of the first pool x n train images."""
    pool = train_x[:args.pool * n]
    return pool[np.random.default_rng(args.seed).permutation(len(pool))[:n]]


def tflite_scores(blob: bytes, images: np.ndarray) -> np.ndarray:
    """The converted model's scores over `images` (one thread, as export@'s parity check)."""
    from tasks.evaluate.export import run_tflite

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.tflite"
        path.write_bytes(blob)
        return run_tflite(path, images, 64, 1)


def float_layer_runs(model, train_x, images, labels, keras_pred, args) -> list[dict]:
    """export@'s int8 with each `N:ABOVE` of --float-layers, from one calibration (see the docstring)."""
    from tasks.evaluate.export import int8_calibration, int8_error_layers, to_tflite_int8

    n = args.samples[0]
    rep = draw(train_x, n, args)
    calibrated = int8_calibration(model, rep, "int8 calibration", args.debug_samples)
    layers = int8_error_layers(model, rep, {"int8_float_layers": 10**6, "int8_float_above": 0.0},
                               calibrated=calibrated)  # every layer, worst first
    print(f"{'float layers':>13} {'above':>6} {'kept':>5} {'accuracy':>9} {'agreement':>10} {'bytes':>9}")
    rows = []
    for setting in args.float_layers:
        limit, above = setting.split(":")
        keep = [r for r in layers if r["rmse_steps"] > float(above)][:int(limit)]
        blob = to_tflite_int8(model, rep, "int8", [r["tensor"] for r in keep], calibrated)
        pred = tflite_scores(blob, images).argmax(axis=1)
        row = {"int8_float_layers": int(limit), "int8_float_above": float(above), "samples": n,
               "float_layers": [{"op": r["op"], "rmse_steps": r["rmse_steps"]} for r in keep],
               "accuracy": float(np.mean(pred == labels)), "agreement": float(np.mean(pred == keras_pred)),
               "bytes_without_metadata": len(blob)}
        rows.append(row)
        print(f"{limit:>13} {above:>6} {len(keep):>5} {row['accuracy']:>9.4f} {row['agreement']:>10.4f} "
              f"{row['bytes_without_metadata']:>9}", flush=True)
    return rows


if __name__ == "__main__":
    main()
