"""int8 fidelity against the calibration set size, on a trained model.

    python bench/int8_bench.py models/cards_ours_v2_100 data/processed/cards [--samples 100 500 2000]

For each calibration size (train images drawn as export@ draws them: a seeded permutation of the first
`representative_pool` x samples) the Keras model is converted with full-integer quantisation and a uint8
input and uint8 scores (tasks.evaluate.export.to_tflite_int8, what export@ ships) and run over the evaluation
split; reported: accuracy, top-1 agreement with Keras, how many of the disagreements are ties (the int8
softmax has a step of 1/256, so two classes within it tie and argmax takes the lower id; a float32 score
output only dequantizes that softmax: on mnist_scratch it gave the same ties and predictions), convert s. Prints a table and writes
reports/bench/int8_<model>.json. Nothing here asserts on a time.
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
    ap.add_argument("--out")
    args = ap.parse_args()
    import keras

    from tasks.evaluate.metrics import evaluation_split, load_arrays
    from tasks.evaluate.export import run_tflite, to_tflite_int8
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
    print(f"{'samples':>8} {'accuracy':>9} {'agreement':>10} {'disagree':>9} {'of them ties':>13} {'convert s':>10}")
    # the first pool x samples train images, read once for the largest size (each draw is export@'s for its size)
    train_x, _, _ = load_arrays(processed, "train", limit=args.pool * max(args.samples))
    for n in args.samples:
        pool = train_x[:args.pool * n]
        rep = pool[np.random.default_rng(args.seed).permutation(len(pool))[:n]]
        start = time.perf_counter()
        blob = to_tflite_int8(model, rep)
        seconds = time.perf_counter() - start
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "m.tflite"
            path.write_bytes(blob)
            scores = run_tflite(path, images, 64, 1)
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


if __name__ == "__main__":
    main()
