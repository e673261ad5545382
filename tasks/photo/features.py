"""The bottleneck cache: a frozen base's pooled features (or feature maps) of every image, computed once.

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

FEATURES_DEFAULTS = {"base": "mobilenet_v2", "alpha": 1.0, "image_size": None, "weights": None,
                     "batch_size": 64, "pool": True}
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
    the dataset's), batch_size, pool (false: keep the maps). `weights_path`: a weights file or a dir
    holding one; None = random init. Returns features.json's content plus `speed` (seconds, images/s),
    also written to `speed_path`."""
    import tensorflow as tf

    from tasks.photo.backbones import build_base, features_model, sha256, weights_file
    from tasks.records.shards import load_manifest, read_split

    cfg = {**FEATURES_DEFAULTS, **(cfg or {})}
    processed_dir, out_dir = Path(processed_dir), Path(out_dir)
    manifest = load_manifest(processed_dir)
    shape = manifest["image_shape"]
    size = int(cfg["image_size"] or shape[0])
    path = weights_file(weights_path)
    with float32_policy():
        base = build_base(cfg["base"], size, cfg["alpha"], path, seed=int(cfg.get("seed", 0)))
        model = features_model(base, shape, size, pool=bool(cfg["pool"]), name=cfg["base"])
    infer = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    info = {"base": cfg["base"], "alpha": float(cfg["alpha"]), "image_size": size, "image_shape": shape,
            "weights": path.name if path else None, "weights_sha256": sha256(path) if path else None,
            "dim": int(model.output_shape[-1]), "pooled": bool(cfg["pool"]),
            "shape": [int(d) for d in model.output_shape[1:]], "dataset": manifest.get("dataset", processed_dir.name),
            "num_classes": manifest["num_classes"], "labels": manifest["labels"], "splits": {}}
    speed = {"splits": {}}
    dtype = np.float32 if cfg["pool"] else np.float16  # maps: 7x7x1280 per image; half the disk
    start = time.time()
    with atomic_dir(out_dir) as tmp:
        for split in manifest["splits"]:
            t = time.time()
            feats, labels, ids = [], [], []
            ds = read_split(processed_dir, split, batch_size=int(cfg["batch_size"]), manifest=manifest,
                            with_ids=True)
            for x, y, sid in ds:
                feats.append(infer(x).numpy().astype(dtype))
                labels.append(y.numpy())
                ids.append(sid.numpy())
            arrays = {"features": np.concatenate(feats) if feats else np.zeros((0, *info["shape"]), dtype),
                      "labels": np.concatenate(labels).astype(np.int64) if labels else np.zeros(0, np.int64),
                      "ids": np.array([i.decode() for part in ids for i in part], dtype=str)}
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
