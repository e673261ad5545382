"""What a training step of the cards recipes costs on this CPU, one lever at a time, side by side in one run
(issue 29's levers that are about CPU minutes):

    python bench/cards_step_bench.py [--steps 6] [--only 0,1]

Each configuration runs in its own process (TensorFlow's thread pools are process-wide) on random 224x224
uint8 images and one-hot labels, with the project's own code: the phone recipe's training model
(`tasks.photo.train.build`: augmentation + MobileNetV2 0.35 at the recipe's size, every layer and BN training,
`enable_op_determinism` as `tasks.fit.setup` sets it), the same without augmentation or at another size, and
a compact CNN from scratch at 128 px (the issue's "cheapest route" candidate: base `compact_cnn`,
tasks/photo/compact.py, random init, with the recipe's head and augmentation). One warm-up fit, then images/s
over `steps` steps of 32, and the process's CPU seconds per wall second (2.0 = both cores busy). Ratios are against the
first row of the same run. Prints a table, writes reports/bench/cards_step.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "reports" / "bench" / "cards_step.json"
AUGMENT = {"crop": 0.1, "scale": 0.1, "brightness": 0.2, "rotate": 0.03, "contrast": 0.2, "flip": False, "turn180": True}
CONFIGS = [  # name, settings
    ("phone recipe: augment + MobileNetV2 0.35 at 160 px", dict(size=160, augment=True)),
    ("no augmentation", dict(size=160, augment=False)),
    ("at 224 px", dict(size=224, augment=True)),
    ("at 128 px", dict(size=128, augment=True)),
    ("compact CNN from scratch at 128 px", dict(size=128, augment=True, base="compact_cnn", alpha=1.0)),
]


def run_one(cfg: dict, steps: int) -> dict:
    import resource

    import keras
    import numpy as np
    import tensorflow as tf

    from tasks.photo import backbones
    from tasks.photo.train import build, compile_for, photo_recipe, set_bn_momentum

    keras.utils.set_random_seed(0)
    tf.config.experimental.enable_op_determinism()
    recipe = photo_recipe({"base": cfg.get("base", "mobilenet_v2"), "alpha": cfg.get("alpha", 0.35),
                           "image_size": cfg["size"], "head": "ours", "dropout": 0.2,
                           "augment": AUGMENT if cfg["augment"] else False, "train_bn": True,
                           "bn_momentum": 0.9, "label_smoothing": 0.1}, "bench")
    manifest = {"image_shape": [224, 224, 3], "num_classes": 53}
    weights = ROOT / "data" / "weights" / "mobilenet_v2_035_224"
    if "base" in cfg or not weights.exists():  # the compact CNN, or no weights fetched yet: random init
        weights = None
    model, base, train_model = build(recipe, manifest, weights)
    set_bn_momentum(base, 0.9)
    backbones.set_trainable(base, 0, True)
    compile_for(train_model, 1e-4, recipe)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (32 * steps, 224, 224, 3), dtype=np.uint8)
    y = keras.utils.to_categorical(rng.integers(0, 53, 32 * steps), 53)
    train_model.fit(x[:64], y[:64], batch_size=32, verbose=0)
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.time()
    train_model.fit(x, y, batch_size=32, verbose=0)
    wall, r1 = time.time() - t0, resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return {"images_per_s": round(len(x) / wall, 1), "cpu_per_wall": round(cpu / wall, 2),
            "params": int(model.count_params())}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--only", default="", help="comma-separated row numbers")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        print(json.dumps(run_one(CONFIGS[int(args.child)][1], args.steps)))
        return {}
    rows = [int(i) for i in args.only.split(",")] if args.only else range(len(CONFIGS))
    results = []
    for i in rows:
        name, cfg = CONFIGS[i]
        out = subprocess.run([sys.executable, __file__, "--child", str(i), "--steps", str(args.steps)],
                             capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        if out.returncode:
            raise SystemExit(f"{name}: failed: {out.stderr.strip().splitlines()[-1]}")
        results.append({"name": name, **cfg, **json.loads(out.stdout.strip().splitlines()[-1])})
    base = results[0]["images_per_s"]
    print(f"{'configuration':<52} {'img/s':>7} {'ratio':>6} {'cpu/wall':>8} {'params':>10}")
    for r in results:
        r["ratio"] = round(r["images_per_s"] / base, 2)
        print(f"{r['name']:<52} {r['images_per_s']:>7} {r['ratio']:>6} {r['cpu_per_wall']:>8} {r['params']:>10,}")
    record = {"rows": results, "steps": args.steps, "batch": 32, "load_average": list(os.getloadavg()),
              "machine": {"cpus": os.cpu_count(), "processor": platform.machine()},
              "command": "python bench/cards_step_bench.py" + (f" --only {args.only}" if args.only else ""),
              "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(record, indent=2) + "\n")
    return record


if __name__ == "__main__":
    main()
