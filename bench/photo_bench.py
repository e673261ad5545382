"""Photo benchmark: (a) input pipelines on the same images, (b) head training from a bottleneck
cache vs end to end through the frozen base.

    python bench/photo_bench.py --folder ../shared/data/cards/train --processed data/processed/cards \\
        --weights data/weights/mobilenet_v2_035_224/mobilenet_v2_0.35_224_no_top.weights.h5 \\
        --alpha 0.35 --image-size 224 --epochs 3 [--limit 1000]

(a) images/s over full passes after one warm-up pass, batch 32, float images [S,S,3] in [0,1]: tf.data
from the TFRecord shards (tasks.records.shards.read_split) vs the seed recipes' ImageDataGenerator(rescale=1/255)
.flow_from_directory vs keras.utils.image_dataset_from_directory; ratios are vs ImageDataGenerator.
(b) base = Rescaling(1/127.5, offset=-1) + MobileNetV2(include_top=False, weights=--weights), frozen
(called with training=False); head = GlobalAveragePooling2D -> Dropout(0.2) -> Dense(K, softmax).
Cached: base.predict once over the train and validation images, then E epochs of the head on the
features. GAP has no weights and comes before the dropout, so the cache holds pooled features
[N, C] and the head trained on them is the same function as in the end-to-end model. End to end:
E epochs of model.fit through the frozen base. Same optimizer, batch, seed, epochs.

Prints a table and writes reports/bench/photo.json. Ratios compare runs made in the same process,
minutes apart, because these machines are noisy (the load average at start is recorded with them).
Each pass also records what the clock alone cannot tell apart: the CPU time this process spent per
image (all its threads; the load of other processes hardly moves it), the cores this process got
(CPU seconds over wall seconds) and the cores the whole machine left idle (/proc/stat). A slow pass
with no idle core was a busy machine, not a loader that left a core unused. Nothing here asserts on a time.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.records.shards import load_manifest, read_split  # noqa: E402

BATCH = 32
SEED = 42


# ---------------------------------------------------------------- (a) input pipelines


def idle_core_seconds() -> float | None:
    """Seconds of idle (and I/O wait) summed over the machine's cores since boot, from /proc/stat (in
    clock ticks, 10 ms: fine for passes of a second, not for tiny ones); None where there is none."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    return (int(fields[4]) + int(fields[5])) / os.sysconf("SC_CLK_TCK")


def timed_rounds(passes: dict, rounds: int) -> dict:
    """Each pipeline's `one_pass()` (returns the images it produced) once to warm up, then `rounds`
    rounds that time one pass of every pipeline in turn: a slow spell of a noisy machine hits all of
    them, not just the one measured then. Rates are the median over rounds; per pass also the CPU ms
    per image (this process, all threads), the cores this process got and the machine's idle cores."""
    for one_pass in passes.values():
        one_pass()
    timed = {name: [] for name in passes}  # (images, seconds, cpu seconds, idle core-seconds) per round
    for _ in range(rounds):
        for name, one_pass in passes.items():
            idle, cpu, start = idle_core_seconds(), time.process_time(), time.perf_counter()
            n = one_pass()
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
            idle = None if idle is None else idle_core_seconds() - idle
            timed[name].append((n, seconds, cpu, idle))
    out = {}
    for name, runs in timed.items():
        cpu_ms = [1e3 * c / n for n, _, c, _ in runs]
        out[name] = {"images": sum(n for n, *_ in runs), "seconds": round(sum(t for _, t, *_ in runs), 3),
                     "rates": [round(n / t, 1) for n, t, *_ in runs],
                     "images_per_s": round(statistics.median(n / t for n, t, *_ in runs), 1),
                     "cpu_ms_per_image": [round(x, 4) for x in cpu_ms],
                     "median_cpu_ms_per_image": round(statistics.median(cpu_ms), 4),
                     "process_cores": [round(c / t, 2) for _, t, c, _ in runs],
                     "machine_idle_cores": [None if i is None else round(max(i, 0.0) / t, 2) for _, t, _, i in runs]}
    return out


def shards_pipeline(processed: Path, size: int, limit: int | None):
    """All splits of the processed dataset, batched, as float [S,S,3] in [0,1]."""
    import tensorflow as tf

    manifest = load_manifest(processed)
    ds = None
    for split in manifest["splits"]:
        part = read_split(processed, split, batch_size=BATCH, manifest=manifest)
        ds = part if ds is None else ds.concatenate(part)
    if limit:
        ds = ds.take(math.ceil(limit / BATCH))
    same = list(manifest["image_shape"][:2]) == [size, size]

    def to_float(images, labels):
        images = tf.cast(images, tf.float32) / 255.0
        return (images if same else tf.image.resize(images, (size, size))), labels

    return ds.map(to_float, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def drain_tf(ds) -> int:
    return sum(int(images.shape[0]) for images, _ in ds)


def image_data_generator(folder: Path, size: int, limit: int | None):
    """The seed recipes' loader; returns a function doing one pass (batches in order, as fit reads them)."""
    from keras.src.legacy.preprocessing.image import ImageDataGenerator

    it = ImageDataGenerator(rescale=1 / 255).flow_from_directory(
        str(folder), target_size=(size, size), batch_size=BATCH, class_mode="sparse", shuffle=False)
    n_batches = math.ceil(min(limit or it.n, it.n) / BATCH)

    def one_pass() -> int:
        return sum(len(it[i][0]) for i in range(n_batches))
    return one_pass


def dataset_from_directory(folder: Path, size: int, limit: int | None):
    import keras
    import tensorflow as tf

    ds = keras.utils.image_dataset_from_directory(str(folder), image_size=(size, size), batch_size=BATCH,
                                                  shuffle=False, label_mode="int")
    if limit:
        ds = ds.take(math.ceil(limit / BATCH))
    return ds.map(lambda x, y: (x / 255.0, y), num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def input_pipelines(args) -> dict:
    shards = shards_pipeline(Path(args.processed), args.image_size, args.limit)
    idg = image_data_generator(Path(args.folder), args.image_size, args.limit)
    idfd = dataset_from_directory(Path(args.folder), args.image_size, args.limit)
    result = {"batch": BATCH, "image_size": args.image_size, "passes": args.passes, "limit": args.limit,
              **timed_rounds({"shards_tf_data": lambda: drain_tf(shards), "image_data_generator": idg,
                              "image_dataset_from_directory": lambda: drain_tf(idfd)}, args.passes)}
    base = result["image_data_generator"]["images_per_s"]
    result["ratio_vs_image_data_generator"] = {
        k: round(result[k]["images_per_s"] / base, 2) for k in ("shards_tf_data", "image_dataset_from_directory")}
    shards, folder = result["shards_tf_data"], result["image_dataset_from_directory"]
    result["shards_vs_dataset_from_directory"] = {
        # round by round (passes seconds apart, yet a busy spell can still hit one and not the other)
        "rates": [round(a / b, 2) for a, b in zip(shards["rates"], folder["rates"])],
        # images per CPU second: what each loader costs, whatever the rest of the machine does
        "cpu_per_image": round(folder["median_cpu_ms_per_image"] / shards["median_cpu_ms_per_image"], 2)}
    return result


# ---------------------------------------------------------------- (b) cached vs end-to-end head training


def split_pipeline(processed: Path, split: str, size: int, limit: int | None, shuffle: bool = False):
    """(float image [S,S,3] in 0..255, label) batches of one split, the first `limit` images."""
    import tensorflow as tf

    manifest = load_manifest(processed)
    n = min(limit or math.inf, manifest["splits"][split]["count"])
    ds = read_split(processed, split, batch_size=BATCH, manifest=manifest).unbatch().take(n)
    same = list(manifest["image_shape"][:2]) == [size, size]

    def prep(image, label):
        image = tf.cast(image, tf.float32)
        return (image if same else tf.image.resize(image, (size, size))), label

    ds = ds.map(prep, num_parallel_calls=tf.data.AUTOTUNE)
    if shuffle:
        ds = ds.shuffle(512, seed=SEED, reshuffle_each_iteration=True)
    # A known length, so Keras sizes its epochs up front instead of running into the end of the data.
    ds = ds.batch(BATCH).apply(tf.data.experimental.assert_cardinality(math.ceil(n / BATCH)))
    return ds.prefetch(tf.data.AUTOTUNE)


def frozen_base(weights: str, alpha: float, size: int):
    import keras

    base = keras.applications.MobileNetV2(input_shape=(size, size, 3), alpha=alpha, include_top=False,
                                          weights=weights)
    base.trainable = False
    return base


def features_model(base, size: int):
    import keras
    from keras import layers

    inputs = keras.Input((size, size, 3))
    x = base(layers.Rescaling(1 / 127.5, offset=-1)(inputs), training=False)
    return keras.Model(inputs, layers.GlobalAveragePooling2D()(x))


def head(num_classes: int, width: int):
    import keras
    from keras import layers

    keras.utils.set_random_seed(SEED)
    inputs = keras.Input((width,))
    outputs = layers.Dense(num_classes, activation="softmax")(layers.Dropout(0.2)(inputs))
    return keras.Model(inputs, outputs)


def end_to_end_model(base, size: int, num_classes: int):
    import keras
    from keras import layers

    keras.utils.set_random_seed(SEED)
    inputs = keras.Input((size, size, 3))
    x = base(layers.Rescaling(1 / 127.5, offset=-1)(inputs), training=False)
    x = layers.Dropout(0.2)(layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, layers.Dense(num_classes, activation="softmax")(x))


def compile_(model):
    import keras

    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def val_split(manifest: dict) -> str:
    for split in ("validation", "test"):
        if split in manifest["splits"]:
            return split
    raise KeyError(f"the processed dataset has no validation or test split (splits: {sorted(manifest['splits'])})")


def head_training(args) -> dict:
    processed, size = Path(args.processed), args.image_size
    manifest = load_manifest(processed)
    k, val = manifest["num_classes"], val_split(manifest)
    val_limit = max(1, args.limit // 4) if args.limit else None
    train_ds = split_pipeline(processed, "train", size, args.limit)
    val_ds = split_pipeline(processed, val, size, val_limit)
    base = frozen_base(args.weights, args.alpha, size)

    # Cached: features once (train + validation), then the head on them.
    extractor = features_model(base, size)
    start = time.perf_counter()
    x_train, y_train = _predict(extractor, train_ds)  # the one-off cost the cache adds
    x_val, y_val = _predict(extractor, val_ds)
    cache_s = time.perf_counter() - start
    cached = compile_(head(k, x_train.shape[1]))
    start = time.perf_counter()
    h_cached = cached.fit(x_train, y_train, batch_size=BATCH, epochs=args.epochs, shuffle=True,
                          validation_data=(x_val, y_val), verbose=0)
    cached_fit_s = time.perf_counter() - start

    # End to end: the same head through the frozen base, every epoch.
    model = compile_(end_to_end_model(base, size, k))
    start = time.perf_counter()
    h_e2e = model.fit(split_pipeline(processed, "train", size, args.limit, shuffle=True), epochs=args.epochs,
                      validation_data=val_ds, shuffle=False, verbose=0)  # the pipeline shuffles
    e2e_s = time.perf_counter() - start
    return {
        "train_images": int(len(y_train)), "val_images": int(len(y_val)), "val_split": val, "classes": k,
        "epochs": args.epochs, "feature_width": int(x_train.shape[1]),
        "cache_build_s": round(cache_s, 3), "cached_fit_s": round(cached_fit_s, 3),
        "end_to_end_fit_s": round(e2e_s, 3),
        "ratio_end_to_end_vs_cached_fit": round(e2e_s / cached_fit_s, 2),
        "ratio_end_to_end_vs_cached_with_build": round(e2e_s / (cache_s + cached_fit_s), 2),
        "cached_val_accuracy": _last(h_cached, "val_accuracy"),
        "end_to_end_val_accuracy": _last(h_e2e, "val_accuracy"),
        "cached_best_val_accuracy": _best(h_cached), "end_to_end_best_val_accuracy": _best(h_e2e),
    }


def _predict(extractor, ds):
    import numpy as np

    feats, labels = [], []
    for images, y in ds:
        feats.append(extractor.predict_on_batch(images))
        labels.append(y.numpy())
    return np.concatenate(feats), np.concatenate(labels)


def _last(history, key: str) -> float:
    return round(float(history.history[key][-1]), 4)


def _best(history) -> float:
    return round(float(max(history.history["val_accuracy"])), 4)


# ---------------------------------------------------------------- main


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", required=True, help="image folder with one subfolder per class")
    ap.add_argument("--processed", required=True,
                    help="processed dataset dir (manifest.json + shards) of the same images")
    ap.add_argument("--weights", required=True, help="MobileNetV2 no-top weights file (.h5 or .weights.h5)")
    ap.add_argument("--alpha", type=float, default=0.35)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--limit", type=int, default=None, help="cap the images each measurement uses")
    ap.add_argument("--passes", type=int, default=5, help="timed rounds (one pass of each input pipeline in turn, after 1 warm-up)")
    ap.add_argument("--skip", choices=("pipelines", "training"), default=None)
    ap.add_argument("--out", default=str(ROOT / "reports" / "bench" / "photo.json"))
    return ap.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    result = {"machine": {"cores": os.cpu_count(), "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
                          "python": platform.python_version(), "platform": platform.platform()},
              "args": {k: v for k, v in vars(args).items() if k != "out"}}
    if args.skip != "pipelines":
        result["input_pipeline"] = input_pipelines(args)
    if args.skip != "training":
        result["head_training"] = head_training(args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    return result


def print_table(result: dict) -> None:
    print(f"\nload average at start: {result['machine']['load_average_at_start']} "
          f"({result['machine']['cores']} cores; ratios are only meaningful within this run)")
    if "input_pipeline" in result:
        p = result["input_pipeline"]
        print(f"\n(a) input pipeline, batch {p['batch']}, {p['image_size']}px float, images/s after a warm-up pass")
        print(f"  {'':30} {'img/s':>10}  {'ratio':6} {'passes (img/s)':>26}  cpu ms/img  cores (this process; idle)")
        for key in ("image_data_generator", "image_dataset_from_directory", "shards_tf_data"):
            ratio = p["ratio_vs_image_data_generator"].get(key, 1.0)
            r = p[key]
            idle = " ".join("-" if i is None else f"{i:.2f}" for i in r["machine_idle_cores"])
            print(f"  {key:30} {r['images_per_s']:>10,.1f}  x{ratio:<5} {' '.join(f'{x:,.0f}' for x in r['rates']):>26}"
                  f"  {r['median_cpu_ms_per_image']:9.3f}  {' '.join(f'{c:.2f}' for c in r['process_cores'])}; {idle}")
        v = p["shards_vs_dataset_from_directory"]
        print(f"  shards / image_dataset_from_directory: rates {v['rates']}, per CPU second x{v['cpu_per_image']}")
    if "head_training" in result:
        t = result["head_training"]
        print(f"\n(b) head training, {t['epochs']} epochs, {t['train_images']} train / {t['val_images']} val images")
        print(f"  cached: build {t['cache_build_s']} s + fit {t['cached_fit_s']} s   "
              f"val acc {t['cached_val_accuracy']}")
        print(f"  end to end: fit {t['end_to_end_fit_s']} s   val acc {t['end_to_end_val_accuracy']}")
        print(f"  end-to-end / cached fit x{t['ratio_end_to_end_vs_cached_fit']}, "
              f"/ (build + fit) x{t['ratio_end_to_end_vs_cached_with_build']}")


if __name__ == "__main__":
    main()
