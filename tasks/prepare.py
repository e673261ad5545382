"""prepare@<key>: raw files → normalized arrays → hash splits → sharded TFRecords + manifest."""
from __future__ import annotations

import logging
import time

import numpy as np

from tasks import parallel
from tasks.config import Project, workers
from tasks.io import atomic_dir
from tasks.shards import write_dataset
from tasks.sources import Loaded, fetch_record, is_image_folder, source
from tasks.tfds_export import write_readers
from tasks.splits import SPLITS, carve, shuffle_order

log = logging.getLogger(__name__)
# prepare.<key> of an array dataset (MNIST, EMNIST): the one place the defaults live.
ARRAY_DEFAULTS = {"validation_percentage": 10, "testing_percentage": 10, "shard_mb": 128, "min_shards": 8}


def prepare(project: Project, key: str) -> dict:
    """Build data/processed/<key>/ from data/raw/<key>/; returns the manifest.

    Image-folder sources (photos in class folders) go through tasks/image_folder.py.
    """
    params = project.params()
    with parallel.scheduler(params, workers(params)):  # Dask when params/env ask for it
        return _prepare(project, key, params)


def _prepare(project: Project, key: str, params: dict) -> dict:
    module = source(key, params)
    if is_image_folder(module):
        from tasks.image_folder import prepare_images

        return prepare_images(project, key, module, params)
    p = (params.get("prepare") or {}).get(key) or {}
    s = {**ARRAY_DEFAULTS, **p}
    raw_dir = project.raw_dir(key)
    start = time.perf_counter()
    loaded = module.load(raw_dir, formats())
    splits, notes = assign_splits(loaded, float(s["validation_percentage"]), float(s["testing_percentage"]))
    fetched = fetch_record(raw_dir)
    if "validation" not in splits:
        raise ValueError(f"{raw_dir}: the validation split is empty (splits: "
                         f"{ {k: len(v[1]) for k, v in splits.items()} }; validation_percentage="
                         f"{s['validation_percentage']}): training needs one; raise "
                         f"prepare.{key}.validation_percentage")
    extra = {
        "dataset": key,
        "skipped": fetched.get("skipped", []),
        "notes": loaded.notes + notes,
        "source": {"format": fetched.get("format"),
                   "files": [{k: f.get(k) for k in ("url", "member", "sha256", "verified")}
                             for f in fetched.get("files", [])]},
        "params": p,
    }
    with atomic_dir(project.processed_dir(key)) as tmp:
        manifest = write_dataset(tmp, splits, loaded.label_names, shard_mb=float(s["shard_mb"]),
                                 min_shards=int(s["min_shards"]), workers=workers(params), extra=extra)
        write_readers(tmp, manifest, key)
    log.info("prepare %s: %s in %.1f s", key,
             {s: v["count"] for s, v in manifest["splits"].items()}, time.perf_counter() - start)
    return manifest


def formats():
    """What an array source's `load(raw_dir, formats)` reads its files with: the IDX and .mat readers
    and the label conventions (tasks/normalize.py). Handed over, not imported by the source modules,
    so that fetch@<key> does not depend on them."""
    from types import SimpleNamespace

    from tasks import emnist_mat, idx, normalize

    return SimpleNamespace(read_idx=idx.read_idx, read_emnist_mat=emnist_mat.read_emnist_mat, normalize=normalize)


def assign_splits(loaded: Loaded, validation_percentage: float, testing_percentage: float):
    """Official splits kept; validation (and test, when there is none) carved from train by hash.

    Returns ({split: (images, labels, source_ids)} in a stable shuffled order, notes).
    """
    has_test = "test" in loaded.splits
    parts: dict[str, list] = {s: [] for s in SPLITS}
    for official, (images, labels) in loaded.splits.items():
        ids = [f"{loaded.source_name}/{official}/{i:06d}" for i in range(len(labels))]
        if official == "train":
            names = carve(ids, validation_percentage, 0.0 if has_test else testing_percentage)
        else:
            names = np.full(len(ids), official, dtype=object)
        for split in SPLITS:
            idx = np.flatnonzero(names == split)
            if len(idx):
                parts[split].append((images[idx], labels[idx], [ids[i] for i in idx]))
    out = {}
    for split, chunks in parts.items():
        if chunks:
            images = np.concatenate([c[0] for c in chunks])
            labels = np.concatenate([c[1] for c in chunks])
            ids = [i for c in chunks for i in c[2]]
            order = shuffle_order(ids)
            out[split] = (images[order], labels[order], [ids[i] for i in order])
    notes = [f"validation: {validation_percentage:g}% of official train by stable hash of source id"]
    if not has_test:
        notes.append(f"test: {testing_percentage:g}% of official train by stable hash (no official test split)")
    return out, notes
