"""Fine-tuning throughput on this CPU, one lever at a time, side by side in one run (issue 20 part 2):
XLA (`jit_compile=True`), intra/inter-op thread counts, batch size, fine-tuning only the top blocks,
and training the top blocks on cached activations of the frozen lower blocks (what a cache of a few
augmented views would give: only the top runs per step).

    python bench/cpu_train_bench.py [--base efficientnet_lite0] [--steps 4] [--cut block11] [--only 0,7]
        [--alpha 0.35 --frozen-bn]   # MobileNetV2 as the cards recipes train it

Each configuration runs in its own process (thread counts are process-wide): random 224x224 uint8
images, the project's own base (tasks/photo/backbones, BN trainable as the Lite0 recipes have it),
GAP + Dense(53), Adam; one warm-up fit, then images/s over `steps` steps. Ratios are against the first
row of the same run. The FLOP bound: the model's training FLOPs per image (2 x MACs forward for every
layer, 2 x more for backward through trainable layers and those above a trainable one) against the
GFLOP/s a float32 matmul reaches on this machine in the same run (TF, all cores). Prints a table,
writes reports/bench/cpu_train_<base>.json.
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
sys.path.insert(0, str(ROOT))
CONFIGS = [  # name, {batch, jit, intra, inter, from (a layer name or 0), cached}
    ("baseline: whole base, batch 32", dict(batch=32)),
    ("XLA jit_compile", dict(batch=32, jit=True)),
    ("threads intra 2 / inter 1", dict(batch=32, intra=2, inter=1)),
    ("threads intra 1 / inter 2", dict(batch=32, intra=1, inter=2)),
    ("batch 16", dict(batch=16)),
    ("batch 64", dict(batch=64)),
    ("top blocks only (from the cut)", dict(batch=32, frm="cut")),
    ("top blocks on cached activations", dict(batch=32, frm="cut", cached=True)),
    ("cached activations + XLA", dict(batch=32, frm="cut", cached=True, jit=True)),
    ("cached activations, threads 2 / 1", dict(batch=32, frm="cut", cached=True, intra=2, inter=1)),
    ("cached activations, batch 16", dict(batch=16, frm="cut", cached=True)),
    ("cached activations, batch 64", dict(batch=64, frm="cut", cached=True)),
]
CUTS = {"efficientnet_lite0": "block11_expand_conv", "mobilenet_v2": "block_13_expand"}


def build(base_name: str, cfg: dict, cut: str, alpha: float = 1.0, train_bn: bool = True):
    import keras

    from tasks.photo import backbones

    base = backbones.build_base(base_name, 224, alpha, None, seed=0)
    start = 0 if cfg.get("frm") != "cut" else [layer.name for layer in base.layers].index(cut)
    backbones.set_trainable(base, start, train_bn=train_bn)
    if cfg.get("cached"):  # the top of the base alone, fed the activations at the cut
        top = keras.Model(base.get_layer(cut).input, base.output, name="top")
        inputs = keras.Input(top.input.shape[1:], name="activations")
        x = top(inputs)
    else:
        inputs, x = backbones.front((224, 224, 3), 224, base=base_name)
        x = base(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(53, activation="softmax", name="head")(x)), base


def flops_per_image(model) -> tuple[float, float]:
    """(training FLOPs, forward FLOPs) per image: MACs of conv/depthwise/dense layers x 2; backward
    doubles it again for a layer that trains or has a trainable layer before it (gradients flow)."""
    import keras

    layers, fwd, train = [], 0.0, 0.0

    def walk(m):
        for layer in m.layers:
            if isinstance(layer, keras.Model):
                walk(layer)
            else:
                layers.append(layer)

    walk(model)
    seen_trainable = False
    for layer in layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)):
            out = layer.output.shape
            if isinstance(layer, keras.layers.Dense):
                macs = layer.kernel.shape[0] * layer.kernel.shape[1]
            else:
                k = layer.kernel.shape
                per_out = k[0] * k[1] * (1 if isinstance(layer, keras.layers.DepthwiseConv2D) else k[2])
                macs = out[1] * out[2] * out[3] * per_out
            seen_trainable = seen_trainable or bool(layer.trainable_weights)
            fwd += 2 * macs
            train += 2 * macs * (3 if seen_trainable else 1)
    return train, fwd


def one(base_name: str, cfg: dict, steps: int, cut: str, alpha: float = 1.0, train_bn: bool = True) -> dict:
    import numpy as np
    import tensorflow as tf

    if cfg.get("intra"):
        tf.config.threading.set_intra_op_parallelism_threads(cfg["intra"])
        tf.config.threading.set_inter_op_parallelism_threads(cfg["inter"])
    import keras

    keras.utils.set_random_seed(0)
    model, _ = build(base_name, cfg, cut, alpha, train_bn)
    model.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy", jit_compile=bool(cfg.get("jit")))
    batch = cfg["batch"]
    shape = model.input.shape[1:]
    rng = np.random.default_rng(0)
    n = batch * steps
    x = (rng.random((n, *shape), dtype=np.float32) if cfg.get("cached")
         else rng.integers(0, 256, (n, *shape), dtype=np.uint8))
    y = np.arange(n) % 53
    t = time.perf_counter()
    model.fit(x[:batch * 2], y[:batch * 2], batch_size=batch, epochs=1, verbose=0)  # trace/compile
    warm = time.perf_counter() - t
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
    ips = n / (time.perf_counter() - start)
    train_flops, fwd_flops = flops_per_image(model)
    return {"images_per_s": round(ips, 2), "warmup_s": round(warm, 1), "train_gflop_per_image": round(train_flops / 1e9, 3),
            "forward_gflop_per_image": round(fwd_flops / 1e9, 3)}


def matmul_gflops(seconds: float = 3.0) -> float:
    """float32 matmul GFLOP/s with TF on all cores: the attainable arithmetic bound of this CPU."""
    import tensorflow as tf

    a = tf.random.uniform((2048, 2048))
    b = tf.random.uniform((2048, 2048))
    mm = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    mm()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        mm().numpy()
        n += 1
    return 2 * 2048 ** 3 * n / (time.perf_counter() - start) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", default="efficientnet_lite0")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--cut", default=None, help="first layer of the top blocks (default per base)")
    ap.add_argument("--alpha", type=float, default=1.0, help="width multiplier (MobileNets)")
    ap.add_argument("--frozen-bn", action="store_true", help="batch norm frozen, as the MobileNetV2 recipes have it")
    ap.add_argument("--only", default=None, help="comma-separated row numbers, in this order (0 twice: drift)")
    ap.add_argument("--out", default=None, help="JSON name under reports/bench/ (default cpu_train_<base>.json)")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    cut = args.cut or CUTS[args.base]
    if args.one:
        print("RESULT " + json.dumps(one(args.base, json.loads(args.one), args.steps, cut, args.alpha,
                                         not args.frozen_bn)))
        return
    if args.one is None and os.environ.get("TF_CPP_MIN_LOG_LEVEL") is None:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    load = os.getloadavg()
    peak = float(subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, %r); "
                                 "from bench.cpu_train_bench import matmul_gflops; print(matmul_gflops())" % str(ROOT)],
                                capture_output=True, text=True, check=True).stdout.split()[-1])
    rows = []
    picked = [CONFIGS[int(i)] for i in args.only.split(",")] if args.only else CONFIGS
    print(f"{args.base} alpha {args.alpha} (BN {'frozen' if args.frozen_bn else 'training'}): matmul bound {peak:.1f} GFLOP/s on {os.cpu_count()} cores (load {load[0]:.2f})")
    print(f"{'configuration':38s} {'img/s':>7s} {'ratio':>6s} {'GFLOP/img':>9s} {'of bound':>8s} {'warm-up s':>9s}")
    for name, cfg in picked:
        done = subprocess.run([sys.executable, __file__, "--base", args.base, "--steps", str(args.steps), "--cut", cut,
                               "--alpha", str(args.alpha), *(["--frozen-bn"] if args.frozen_bn else []),
                               "--one", json.dumps(cfg)], capture_output=True, text=True)
        line = [l for l in done.stdout.splitlines() if l.startswith("RESULT ")]
        if done.returncode or not line:
            print(f"{name:38s} failed: {done.stderr.strip().splitlines()[-1:]}")
            rows.append({"name": name, **cfg, "error": (done.stderr.strip().splitlines() or ["?"])[-1]})
            continue
        r = {"name": name, **cfg, **json.loads(line[0][7:])}
        r["ratio"] = round(r["images_per_s"] / rows[0]["images_per_s"], 2) if rows and "images_per_s" in rows[0] else 1.0
        r["fraction_of_bound"] = round(r["images_per_s"] * r["train_gflop_per_image"] / peak, 3)
        rows.append(r)
        print(f"{name:38s} {r['images_per_s']:7.1f} {r['ratio']:6.2f} {r['train_gflop_per_image']:9.3f} "
              f"{r['fraction_of_bound']:8.2f} {r['warmup_s']:9.1f}")
    out = ROOT / "reports" / "bench" / (args.out or f"cpu_train_{args.base}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"base": args.base, "alpha": args.alpha, "train_bn": not args.frozen_bn, "cut": cut,
                               "steps": args.steps, "cores": os.cpu_count(),
                               "load_average_at_start": load, "matmul_gflops": round(peak, 1), "rows": rows},
                              indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
