"""teach@<key>: a trained teacher's softened predictions on a features cache's train split, for
distillation. The output folder (data/teach/<key>/) is a student recipe's `init`: it names the
features cache the student starts from and holds the targets it learns, so the student's train@
depends on the teacher through it (DVC cannot interpolate a `teacher` key that only some recipes have).

Params `teach.<key>` = {dataset, features: <features key>, teacher: models/<k>/model.keras,
temperature}. The targets are p ** (1/T), renormalised (= softmax(logits / T)), computed once on the
train images in the cache's order: the clean images as stored (the student sees them augmented), or
for a cache of views (features `views`) each view, replayed through the cache's own seeded
augmentation, so the teacher judges the very images the student's activations came from. `teach.json` records the
features cache's content hash, so a rebuilt cache changes this output and retrains the student.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from tasks.core.hashing import sha256_file
from tasks.core.io import atomic_dir, write_json
from tasks.core.progress import Progress

log = logging.getLogger(__name__)
INFO, TARGETS = "teach.json", "targets.npy"
TEACH_DEFAULTS = {"temperature": 2.0}


def is_targets(path: Path | None) -> bool:
    return path is not None and Path(path).is_dir() and (Path(path) / INFO).is_file()


def cache_hash(cache: Path) -> str:
    """One sha256 over every file of a features cache (names and contents, in name order)."""
    import hashlib

    h = hashlib.sha256()
    for p in sorted(q for q in Path(cache).rglob("*") if q.is_file()):
        h.update(f"{p.relative_to(cache).as_posix()}\0{sha256_file(p)}\n".encode())
    return h.hexdigest()


def teach(teacher_path: Path, data_dir: Path, cache: Path, out_dir: Path, cfg: dict, *, names: dict) -> dict:
    """Write `out_dir`/targets.npy (float32, train split x classes) and teach.json; returns the record.
    `names`: how the record spells the teacher and the cache (as in params, never a machine's path)."""
    import keras

    from tasks.photo import features
    from tasks.records.shards import load_manifest

    teacher_path, cache = Path(teacher_path), Path(cache)
    if not teacher_path.is_file():
        raise FileNotFoundError(f"teacher {teacher_path} does not exist: train the teacher model first "
                                f"(`tlpipe train {teacher_path.parent.name}`)")
    if not features.is_cache(cache):
        raise FileNotFoundError(f"{cache}: no features cache; run `tlpipe features {cache.name}` first")
    manifest = load_manifest(data_dir)
    teacher = keras.models.load_model(teacher_path, compile=False)
    k = manifest["num_classes"]
    if tuple(teacher.input_shape[1:]) != tuple(manifest["image_shape"]) or teacher.output_shape[-1] != k:
        raise ValueError(f"teacher {teacher_path}: takes {teacher.input_shape[1:]} and predicts "
                         f"{teacher.output_shape[-1]} classes; this dataset has {manifest['image_shape']} images "
                         f"and {k} classes")
    info = json.loads((cache / features.INFO).read_text())
    start = time.time()
    probs, labels = [], []
    done = Progress(f"teach {Path(out_dir).name}", features.images_to_cache(manifest, info, ("train",)), "images")
    with done:  # only prints
        for x, y, _, _ in features.cached_images(data_dir, "train", info, manifest):  # the cache's batches: its views
            probs.append(teacher(x, training=False).numpy().astype(np.float64))
            labels.append(y.numpy())
            done.update(len(labels[-1]))
    probs, labels = np.concatenate(probs), np.concatenate(labels)
    if not np.array_equal(features.load_split(cache, "train")[1], labels):
        raise ValueError(f"{cache}: the cached train split is not in the shards' order; rerun features@")
    t = float({**TEACH_DEFAULTS, **cfg}["temperature"])
    soft = np.power(np.clip(probs, 1e-12, 1.0), 1.0 / t)
    soft /= soft.sum(axis=1, keepdims=True)
    record = {"teacher": names["teacher"], "features": names["features"], "features_sha256": cache_hash(cache),
              "temperature": t, "examples": int(len(labels)), "classes": int(k),
              "teacher_train_accuracy": round(float((probs.argmax(1) == labels).mean()), 6)}
    with atomic_dir(out_dir) as tmp:
        np.save(tmp / TARGETS, soft.astype(np.float32))
        write_json(tmp / INFO, record)
    log.info("teach %s: %d targets from %s in %.1f s", Path(out_dir).name, len(labels), names["teacher"],
             time.time() - start)
    return record


def load_targets(path: Path) -> tuple[np.ndarray, dict, Path]:
    """(targets, the record, the features cache they were made on) of a teach@ output folder. The
    cache is the record's project-relative path (data/teach/<t> sits two levels below the project) and
    must still be the one taught on."""
    path = Path(path)
    record = json.loads((path / INFO).read_text())
    cache = path.resolve().parents[2] / record["features"]
    if not cache.is_dir() or cache_hash(cache) != record["features_sha256"]:
        raise ValueError(f"{path}: made on the features cache {record['features']}, which is missing or has "
                         f"changed since; rerun teach@{path.name}")
    return np.load(path / TARGETS), record, cache
