"""The bottleneck cache: a frozen base's pooled features (or feature maps) of every image, computed once.

With `cut: <a base layer>` the cache holds the activations entering that layer instead (the frozen
lower blocks, run once), and with `views: V` the train split is cached V times: view 0 as stored,
views 1..V-1 through the seeded augmentation `augment` (tasks/photo/augment.py keys), rounded back
to uint8 pixels. The photo trainer then fine-tunes only the blocks above the cut on these cached
activations (issue 20: ~4x the images/s of fine-tuning the top blocks on the images, bench/
cpu_train_bench.py); validation and test are cached once, unaugmented.

`compute_features` writes into out_dir (data/features/<key>/), atomically: `<split>.npz` (features
float32 N x D, or with `pool: false` the maps float16 N x H x W x D for a head that looks at where
things are; labels int64; ids), `base.weights.h5` (the exact base weights the cache was computed
with) and `features.json` (base, alpha, image size, weights sha256, counts). The directory is a pure
function of its inputs, byte for byte, so a rerun does not retrain the models downstream: the run's
speed goes to a separate file. A head trained on the cache (seconds per epoch) then moves onto the
base rebuilt from (base, alpha, image_size) + base.weights.h5 for fine-tuning.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np

from tasks.core.io import atomic_dir, write_json
from tasks.core.progress import Progress

FEATURES_DEFAULTS = {"base": "mobilenet_v2", "alpha": 1.0, "image_size": None, "weights": None,
                     "batch_size": 64, "pool": True, "cut": None, "views": 1, "augment": False}
INFO = "features.json"
BASE_WEIGHTS = "base.weights.h5"


@contextlib.contextmanager
def float32_policy():
    """Build at float32 whatever global policy a training set (the cache is stored exact)."""
    import keras

    old = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(old)


def compute_features(processed_dir: Path, weights_path: Path | None, out_dir: Path, cfg: dict,
                     speed_path: Path | None = None) -> dict:
    """Run base + GAP over every split of `processed_dir`; `cfg`: base, alpha, image_size (default:
    the dataset's), batch_size, pool (false: keep the maps), cut (a layer: the activations entering
    it), views + augment + seed (the train split's views). `weights_path`: a weights file or a dir
    holding one; None = random init. Returns features.json's content plus `speed` (seconds, images/s),
    also written to `speed_path`."""
    import tensorflow as tf

    from tasks.photo.backbones import build_base, features_model, sha256, weights_file
    from tasks.records.shards import load_manifest

    cfg = check_views({**FEATURES_DEFAULTS, **(cfg or {})})
    processed_dir, out_dir = Path(processed_dir), Path(out_dir)
    manifest = load_manifest(processed_dir)
    shape = manifest["image_shape"]
    size = int(cfg["image_size"] or shape[0])
    path = weights_file(weights_path)
    cut = cfg["cut"]
    with float32_policy():
        base = build_base(cfg["base"], size, cfg["alpha"], path, seed=int(cfg.get("seed") or 0))
        lower, cut_index = below_cut(base, cut) if cut else (base, None)
        model = features_model(lower, shape, size, pool=bool(cfg["pool"]) and not cut, name=cfg["base"])
    infer = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    pooled = bool(cfg["pool"]) and not cut
    info = {"base": cfg["base"], "alpha": float(cfg["alpha"]), "image_size": size, "image_shape": shape,
            "weights": path.name if path else None, "weights_sha256": sha256(path) if path else None,
            "dim": int(model.output_shape[-1]), "pooled": pooled,
            "shape": [int(d) for d in model.output_shape[1:]], "dataset": manifest.get("dataset", processed_dir.name),
            "num_classes": manifest["num_classes"], "labels": manifest["labels"], "splits": {},
            **({"cut": cut, "cut_index": cut_index} if cut else {}),
            **({"views": int(cfg["views"]), "augment": augment_config(cfg["augment"]), "seed": int(cfg.get("seed") or 0),
                "batch_size": int(cfg["batch_size"])} if int(cfg["views"]) > 1 else {})}
    speed = {"splits": {}}
    dtype = np.float32 if pooled else np.float16  # maps: 7x7x1280 per image; half the disk
    start = time.time()
    label, count = f"features {out_dir.name}", images_to_cache(manifest, info)
    with atomic_dir(out_dir) as tmp, Progress(label, count, "images") as done:  # progress only prints
        for split in manifest["splits"]:
            t = time.time()
            feats, labels, ids, views = [], [], [], []
            for x, y, sid, view in cached_images(processed_dir, split, info, manifest, int(cfg["batch_size"])):
                feats.append(infer(x).numpy().astype(dtype))
                labels.append(y.numpy())
                ids.append(sid.numpy())
                views.append(np.full(len(labels[-1]), view, np.int16))
                done.update(len(labels[-1]))
            arrays = {"features": np.concatenate(feats) if feats else np.zeros((0, *info["shape"]), dtype),
                      "labels": np.concatenate(labels).astype(np.int64) if labels else np.zeros(0, np.int64),
                      "ids": np.array([i.decode() for part in ids for i in part], dtype=str)}
            if "views" in info:
                arrays["views"] = np.concatenate(views) if views else np.zeros(0, np.int16)
            np.savez(tmp / f"{split}.npz", **arrays)
            seconds = time.time() - t
            info["splits"][split] = {"count": len(arrays["labels"])}
            speed["splits"][split] = _speed(len(arrays["labels"]), seconds)
        base.save_weights(tmp / BASE_WEIGHTS)
        write_json(tmp / INFO, info)
    speed.update(_speed(sum(s["count"] for s in info["splits"].values()), time.time() - start))
    if speed_path is not None:
        Path(speed_path).parent.mkdir(parents=True, exist_ok=True)
        write_json(Path(speed_path), speed)
    return {**info, "speed": speed}


def check_views(cfg: dict) -> dict:
    """`cfg` when its views and augment agree: more than one view needs an augmentation (else the
    views are copies), and an augmentation needs more than one view (else it is never applied)."""
    views = int(cfg["views"] or 1)
    if views < 1:
        raise ValueError(f"features views: expected 1 or more, got {cfg['views']!r}")
    if views > 1 and not cfg["augment"]:
        raise ValueError(f"features views: {views} views need `augment` (view 0 is the image as stored, the "
                         f"others augmented); without it they would be copies")
    if views == 1 and cfg["augment"]:
        raise ValueError("features augment: applies to views 1.. of the train split; set `views` >= 2")
    return {**cfg, "views": views}


def augment_config(augment) -> dict:
    from tasks.photo.augment import config

    return config(augment)


def below_cut(base, cut: str):
    """(the base up to the input of layer `cut`, that layer's index in base.layers). The cut must be a
    layer with one input (the first layer of a block, e.g. MobileNetV2's `block_13_expand`): inside a
    residual block two tensors would have to be cached."""
    import keras

    names = [layer.name for layer in base.layers]
    if cut not in names:
        near = [n for n in names if n.endswith(("_expand", "expand_conv", "Conv_1", "conv_head"))]
        raise ValueError(f"features cut {cut!r}: no layer of that name in {base.name}; the first layers of its "
                         f"blocks are {near}")
    layer = base.get_layer(cut)
    if isinstance(layer.input, (list, tuple)):
        raise ValueError(f"features cut {cut!r}: that layer takes {len(layer.input)} inputs; cut at the first layer "
                         f"of a block, where one tensor enters")
    return keras.Model(base.inputs, layer.input, name="lower"), names.index(cut)


def images_to_cache(manifest: dict, info: dict, splits=None) -> int:
    """How many images `cached_images` yields over `splits` (default: all): a views cache's train split
    V times."""
    views = int(info.get("views", 1))
    return sum(int(entry["count"]) * (views if split == "train" else 1)
               for split, entry in manifest["splits"].items() if splits is None or split in splits)


def cached_images(processed_dir: Path, split: str, info: dict, manifest: dict, batch_size: int | None = None):
    """Batches (uint8 images, labels, ids, view) in the cache's order: each split as stored, then for the
    train split of a views cache views 1..V-1, each a pass through the seeded augmentation rounded to
    uint8. teach@ replays this to give a teacher the very images a student's cache was made from."""
    import tensorflow as tf

    from tasks.records.shards import read_split

    views = int(info.get("views", 1)) if split == "train" else 1
    augment = None
    if views > 1:
        from tasks.photo.augment import augmenter

        augment = augmenter(info["augment"], int(info["seed"]))
    batch = int(info.get("batch_size") or batch_size or FEATURES_DEFAULTS["batch_size"])  # a views cache: its own
    for view in range(views):
        for x, y, sid in read_split(processed_dir, split, batch_size=batch, manifest=manifest, with_ids=True):
            if view:
                x = tf.cast(tf.round(tf.clip_by_value(augment(x, training=True), 0.0, 255.0)), tf.uint8)
            yield x, y, sid, view


def _speed(count: int, seconds: float) -> dict:
    return {"count": count, "seconds": round(seconds, 2), "images_per_s": round(count / max(seconds, 1e-9), 1)}


def base_weights(cache_dir: Path) -> Path:
    """The base weights file of a cache (what its features were computed with)."""
    path = Path(cache_dir) / BASE_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"{path}: a features cache holds its base's weights here; rerun features@ "
                                f"(caches written before base.weights.h5 held base.keras)")
    return path


def load_split(cache_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(features N x D float32, or maps N x H x W x D float16; labels int64 N) of one cached split."""
    path = Path(cache_dir) / f"{split}.npz"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no cached features for split {split!r}; run features@ first")
    with np.load(path) as f:
        return f["features"], f["labels"]


def is_cache(path: Path | None) -> bool:
    return path is not None and Path(path).is_dir() and (Path(path) / INFO).is_file()
