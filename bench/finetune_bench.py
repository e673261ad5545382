"""Fine-tuning step throughput of MobileNetV2 on this machine: which layers to unfreeze, float32 vs
mixed_bfloat16, op determinism on or off. Used to size the cards recipes' fine-tune phases.

    python bench/finetune_bench.py [--steps 6]

Each configuration runs in its own process (the precision policy and determinism are process-wide):
random 224x224 images, batch 32, base + GAP + Dense(53), Adam, BN frozen as in tasks/photo; one
warm-up fit, then images/s over `steps` steps. Ratios are vs the first configuration of the same
alpha, measured minutes apart in this run. Prints a table, writes reports/bench/finetune.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [  # (alpha, fine_tune_from, policy, deterministic)
    (0.35, 0, "float32", True), (0.35, 100, "float32", True), (0.35, 0, "float32", False),
    (0.35, 0, "mixed_bfloat16", True), (1.0, 0, "float32", True), (1.0, 54, "float32", True),
]


def one(alpha: float, from_layer: int, policy: str, deterministic: bool, steps: int) -> float:
    import keras
    import numpy as np
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy(policy)
    base = keras.applications.MobileNetV2(input_shape=(224, 224, 3), alpha=alpha, include_top=False, weights=None)
    for i, layer in enumerate(base.layers):
        layer.trainable = i >= from_layer and not isinstance(layer, keras.layers.BatchNormalization)
    inputs = keras.Input((224, 224, 3))
    x = keras.layers.GlobalAveragePooling2D()(base(inputs))
    model = keras.Model(inputs, keras.layers.Dense(53, activation="softmax", dtype="float32")(x))
    model.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).random((32 * steps, 224, 224, 3), dtype=np.float32)
    y = np.arange(len(x)) % 53
    model.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0)
    start = time.perf_counter()
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    return len(x) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--one", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        a, f, p, d = args.one
        print(json.dumps(one(float(a), int(f), p, d == "1", args.steps)))
        return
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    rows, load = [], os.getloadavg()
    for alpha, from_layer, policy, det in CONFIGS:
        out = subprocess.run([sys.executable, __file__, "--steps", str(args.steps), "--one", str(alpha),
                              str(from_layer), policy, "1" if det else "0"], env=env, capture_output=True,
                             text=True, check=True).stdout.strip().splitlines()[-1]
        rows.append({"alpha": alpha, "fine_tune_from": from_layer, "policy": policy, "deterministic": det,
                     "images_per_s": round(float(out), 1)})
    print(f"load average at start: {[round(v, 2) for v in load]} ({os.cpu_count()} cores)")
    for r in rows:
        ref = next(q for q in rows if q["alpha"] == r["alpha"])["images_per_s"]
        r["ratio"] = round(r["images_per_s"] / ref, 2)
        print(f"  alpha {r['alpha']:<4} from {r['fine_tune_from']:>3}  {r['policy']:<14} "
              f"det={str(r['deterministic']):<5} {r['images_per_s']:>7.1f} img/s  x{r['ratio']}")
    path = ROOT / "reports" / "bench" / "finetune.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"load_average_at_start": load, "cores": os.cpu_count(), "batch": 32,
                                "image_size": 224, "steps": args.steps, "rows": rows}, indent=2) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
