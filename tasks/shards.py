"""Sharded TFRecords: parallel, atomic, deterministic writing, and the tf.data reader.

Each shard is written whole by one worker to a temp name and renamed, so no partial shard is ever
visible. Which example goes to which shard depends only on the data, never on the worker count.
"""
from __future__ import annotations

import hashlib
import io
import math
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from tasks.io import write_json
from tasks.normalize import label_map

MANIFEST = "manifest.json"
LABELS = "labels.json"


@dataclass
class ShardJob:
    """One shard to write: its examples as arrays, encoded by the worker."""

    path: Path
    images: np.ndarray        # n×H×W or n×H×W×C uint8
    labels: np.ndarray        # n int64
    label_names: list[str]
    source_ids: list[str]


def encode_png(image: np.ndarray) -> bytes:
    """Lossless PNG bytes of a uint8 H×W or H×W×C image (deterministic)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image.squeeze(-1) if image.ndim == 3 and image.shape[-1] == 1 else image).save(
        buf, format="PNG", compress_level=6)
    return buf.getvalue()


def example_bytes(encoded: bytes, shape: tuple, label: int, label_name: str, source_id: str,
                  fmt: bytes = b"png") -> bytes:
    import tensorflow as tf

    def b(v):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

    def i(v):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v)]))

    height, width, channels = shape
    features = tf.train.Features(feature={
        "image/encoded": b(encoded), "image/format": b(fmt), "image/height": i(height),
        "image/width": i(width), "image/channels": i(channels), "label": i(label),
        "label/name": b(label_name.encode()), "source_id": b(source_id.encode()),
    })
    # deterministic=True sorts the feature map, so the same data gives byte-identical shards.
    return tf.train.Example(features=features).SerializeToString(deterministic=True)


def write_shard(job: ShardJob) -> dict:
    """Write one shard (temp name, then rename); returns its manifest entry."""
    import tensorflow as tf

    tmp = job.path.with_name(f".{job.path.name}.tmp-{os.getpid()}")
    with tf.io.TFRecordWriter(str(tmp)) as writer:
        for image, label, sid in zip(job.images, job.labels, job.source_ids):
            shape = image.shape if image.ndim == 3 else (*image.shape, 1)
            writer.write(example_bytes(encode_png(image), shape, label, job.label_names[label], sid))
    os.replace(tmp, job.path)
    return {"file": job.path.name, "count": len(job.labels), "sha256": _sha256(job.path),
            "bytes": job.path.stat().st_size}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def num_shards(images: np.ndarray, shard_mb: float, min_shards: int) -> int:
    """Shards for a split: ~shard_mb each (estimated from a fixed sample), at least min_shards."""
    if len(images) == 0:
        return 0
    sample = images[:256]
    per_image = sum(len(encode_png(im)) for im in sample) / len(sample) + 120  # + Example overhead
    by_size = math.ceil(len(images) * per_image / (shard_mb * 2**20))
    return max(1, min(len(images), max(by_size, min_shards)))


def plan_shards(out_dir: Path, split: str, images, labels, source_ids, label_names,
                shard_mb: float, min_shards: int) -> list[ShardJob]:
    """Cut a split (already in its final, shuffled order) into contiguous shard jobs."""
    n = num_shards(images, shard_mb, min_shards)
    bounds = np.linspace(0, len(labels), n + 1).astype(int)
    return [ShardJob(out_dir / f"{split}-{k:05d}-of-{n:05d}.tfrecord", images[lo:hi], labels[lo:hi],
                     label_names, source_ids[lo:hi])
            for k, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:]))]


def run_jobs(jobs: list[ShardJob], workers: int) -> list[dict]:
    """Write shards, in parallel processes when workers > 1 (spawned: no inherited TF state)."""
    if workers <= 1 or len(jobs) <= 1:
        return [write_shard(j) for j in jobs]
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=get_context("spawn")) as pool:
        return list(pool.map(write_shard, jobs))


def write_dataset(out_dir: Path, splits: dict, label_names: list[str], *, shard_mb: float = 128,
                  min_shards: int = 1, workers: int = 1, extra: dict | None = None) -> dict:
    """Write every split's shards, labels.json and manifest.json into `out_dir`.

    `splits` maps a split name to (images, labels) or (images, labels, source_ids), already in
    the order they should be stored.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs, ordered = [], {}
    for split, arrays in splits.items():
        images, labels = arrays[0], np.asarray(arrays[1], dtype=np.int64)
        ids = list(arrays[2]) if len(arrays) > 2 else [f"{split}/{i:07d}" for i in range(len(labels))]
        ordered[split] = (images, labels)
        jobs += plan_shards(out_dir, split, images, labels, ids, label_names, shard_mb, min_shards)
    entries = run_jobs(jobs, workers)
    first = next(iter(ordered.values()))[0]
    manifest = {
        "num_classes": len(label_names),
        "image_shape": list(first.shape[1:]) + ([1] if first.ndim == 3 else []),
        "encoding": "png",
        "labels": label_map(label_names),
        "splits": {split: _split_entry(labels, label_names, [e for e in entries if e["file"].startswith(split + "-")])
                   for split, (_, labels) in ordered.items()},
        "skipped": [],
        "notes": [],
        **(extra or {}),
    }
    write_json(out_dir / LABELS, label_map(label_names))
    write_json(out_dir / MANIFEST, manifest)
    return manifest


def _split_entry(labels: np.ndarray, label_names: list[str], shards: list[dict]) -> dict:
    counts = Counter(int(x) for x in labels)
    return {"count": int(len(labels)),
            "per_class": {str(c): counts.get(c, 0) for c in range(len(label_names))},
            "shards": shards}


def load_manifest(processed_dir: Path) -> dict:
    import json

    path = Path(processed_dir) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{path}: no manifest; run `tlpipe prepare` (or `dvc repro`) for this dataset first")
    return json.loads(path.read_text())


def _feature_spec():
    import tensorflow as tf

    return {"image/encoded": tf.io.FixedLenFeature([], tf.string),
            "label": tf.io.FixedLenFeature([], tf.int64),
            "source_id": tf.io.FixedLenFeature([], tf.string)}


def read_split(processed_dir: Path, split: str, *, shuffle: bool = False, seed: int = 0,
               manifest: dict | None = None, with_ids: bool = False):
    """tf.data pipeline over a split's shards: `(image uint8 [H,W,C], label int64)`.

    Shards are read with a parallel interleave; order is deterministic unless `shuffle`.
    `with_ids` adds each example's stable source id as a third element.
    """
    import tensorflow as tf

    manifest = manifest or load_manifest(processed_dir)
    if split not in manifest["splits"]:
        raise KeyError(f"{processed_dir}: no split {split!r}; splits are {sorted(manifest['splits'])}")
    files = [str(Path(processed_dir) / s["file"]) for s in manifest["splits"][split]["shards"]]
    shape = manifest["image_shape"]
    spec = _feature_spec()

    def parse(record):
        ex = tf.io.parse_single_example(record, spec)
        image = tf.io.decode_image(ex["image/encoded"], channels=shape[-1], expand_animations=False)
        image = tf.ensure_shape(image, shape)
        return (image, ex["label"], ex["source_id"]) if with_ids else (image, ex["label"])

    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=max(1, min(len(files), 8)),
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=not shuffle)
    return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not shuffle)
