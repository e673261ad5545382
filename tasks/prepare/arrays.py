"""prepare, the array strategy: a source module's arrays (MNIST, EMNIST) -> hash splits -> sharded
TFRecords + manifest + the readers' files (Parquet index, TFDS metadata)."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from tasks.core.io import atomic_dir
from tasks.formats import readers
from tasks.prepare.splits import SPLITS, carve, shuffle_order
from tasks.prepare.tfds_export import write_readers
from tasks.records.shards import write_dataset
from tasks.sources import Loaded, fetch_record

log = logging.getLogger(__name__)
# prepare.<key> of an array dataset (MNIST, EMNIST): the one place the defaults live.
ARRAY_DEFAULTS = {"validation_percentage": 10, "testing_percentage": 10, "shard_mb": 128, "min_shards": 8,
                  "drop": [], "relabel": {}}  # drop/relabel: source ids (check@'s findings), applied after splitting


def prepare_arrays(key: str, module, p: dict, *, raw_dir: Path, out_dir: Path, workers: int) -> dict:
    """Build `out_dir` (data/processed/<key>/) from `raw_dir` with settings `p` (params prepare.<key>);
    returns the manifest."""
    s = {**ARRAY_DEFAULTS, **p}
    start = time.perf_counter()
    loaded = module.load(raw_dir, readers())
    splits, notes = assign_splits(loaded, float(s["validation_percentage"]), float(s["testing_percentage"]))
    edits = apply_edits(splits, s["drop"] or [], s["relabel"] or {}, loaded.label_names, key, raw_dir)
    fetched = fetch_record(raw_dir)
    for split, knob in (("validation", "validation_percentage"), ("test", "testing_percentage")):
        if split not in splits:  # training picks epochs on validation; every model is scored on test
            raise ValueError(f"{raw_dir}: the {split} split is empty (splits: "
                             f"{ {k: len(v[1]) for k, v in splits.items()} }; {knob}={s[knob]}): "
                             f"raise prepare.{key}.{knob}")
    extra = {
        "dataset": key,
        "skipped": fetched.get("skipped", []),
        "notes": loaded.notes + notes,
        **({"edits": edits} if edits["dropped"] or edits["relabelled"] else {}),
        "source": {"format": fetched.get("format"),
                   "files": [{k: f.get(k) for k in ("url", "member", "sha256", "verified")}
                             for f in fetched.get("files", [])]},
        "params": p,
    }
    with atomic_dir(out_dir) as tmp:
        manifest = write_dataset(tmp, splits, loaded.label_names, shard_mb=float(s["shard_mb"]),
                                 min_shards=int(s["min_shards"]), workers=workers, extra=extra)
        write_readers(tmp, manifest, key)
    log.info("prepare %s: %s in %.1f s", key,
             {s: v["count"] for s, v in manifest["splits"].items()}, time.perf_counter() - start)
    return manifest


def apply_edits(splits: dict, drop: list, relabel: dict, names: list[str], key: str, raw_dir: Path) -> dict:
    """params prepare.<key>.drop / .relabel ({source id: label name}) applied to `splits` in place; the
    record for the manifest's `edits`. An unknown id or label name is an error naming the key."""
    where = {sid: (split, k) for split, (_, _, ids) in splits.items() for k, sid in enumerate(ids)}
    for name, ids in (("drop", drop), ("relabel", list(relabel))):
        missing = [i for i in ids if i not in where]
        if missing:
            raise ValueError(f"prepare.{key}.{name}: no example {missing[0]!r} in {raw_dir} (source ids look like "
                             f"{next(iter(where), '?')!r}, as in reports/data/{key}/findings.parquet)")
    bad = sorted({str(v) for v in relabel.values() if str(v) not in names})
    if bad:
        raise ValueError(f"prepare.{key}.relabel: {bad[0]!r} is no label of {key} ({', '.join(names)})")
    relabelled = []
    for sid, new in relabel.items():
        split, k = where[sid]
        old = int(splits[split][1][k])
        if names[old] != str(new):
            splits[split][1][k] = names.index(str(new))
            relabelled.append({"source_id": sid, "from": names[old], "to": str(new)})
    gone = set(drop)
    for split, (images, labels, ids) in list(splits.items()):
        keep = np.array([i not in gone for i in ids], dtype=bool)
        if not keep.all():
            splits[split] = (images[keep], labels[keep], [i for i, k in zip(ids, keep) if k])
    return {"dropped": sorted(gone), "relabelled": relabelled}


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
