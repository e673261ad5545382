"""Arrow tables (Parquet) for analysis: the example index of a prepared dataset and the
per-example predictions of a model. DVC metrics and plots stay JSON/CSV (DVC cannot read Parquet).

- `data/processed/<key>/index.parquet` (prepare): one row per stored example: source_id, split,
  label, label_name, shard (file name), record (its position in the shard), bytes and sha256 of the
  encoded image, height, width.
- `reports/<model>/predictions.parquet` (evaluate): source_id, split, label, label_name,
  keras_pred, keras_score (its probability), topk_labels and topk_scores (best first).
- `reports/<model>/predictions_tflite.parquet` (export): the same rows plus float32_pred,
  float32_score, int8_pred and int8_score: float-vs-int8 disagreements are one filter away
  (`pq.read_table(p).filter(pc.field("float32_pred") != pc.field("int8_pred"))`).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from tasks.core.io import atomic_file

INDEX = "index.parquet"
PREDICTIONS = "predictions.parquet"
PREDICTIONS_TFLITE = "predictions_tflite.parquet"


def write_table(path: Path, table) -> Path:
    """Write an Arrow table as Parquet, atomically (temp + rename)."""
    import pyarrow.parquet as pq

    with atomic_file(path) as f:
        pq.write_table(table, f, compression="zstd")
    return Path(path)


def read_table(path: Path):
    import pyarrow.parquet as pq

    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: no such table")
    return pq.read_table(path)


def example_index(processed_dir: Path, manifest: dict):
    """The index of every record in the dataset's shards, read back from the shards themselves."""
    import pyarrow as pa
    import tensorflow as tf

    spec = {"image/encoded": tf.io.FixedLenFeature([], tf.string),
            "image/height": tf.io.FixedLenFeature([], tf.int64),
            "image/width": tf.io.FixedLenFeature([], tf.int64),
            "label": tf.io.FixedLenFeature([], tf.int64),
            "source_id": tf.io.FixedLenFeature([], tf.string)}
    names = {int(k): v for k, v in manifest["labels"].items()}
    cols = {k: [] for k in ("source_id", "split", "label", "label_name", "shard", "record", "bytes",
                            "sha256", "height", "width")}
    for split, entry in manifest["splits"].items():
        for shard in entry["shards"]:
            record = 0
            for batch in tf.data.TFRecordDataset(str(Path(processed_dir) / shard["file"])).batch(4096):
                ex = {k: v.numpy() for k, v in tf.io.parse_example(batch, spec).items()}
                n = len(ex["label"])
                cols["source_id"] += [s.decode() for s in ex["source_id"]]
                cols["split"] += [split] * n
                cols["label"] += ex["label"].tolist()
                cols["label_name"] += [names[int(y)] for y in ex["label"]]
                cols["shard"] += [shard["file"]] * n
                cols["record"] += list(range(record, record + n))
                cols["bytes"] += [len(b) for b in ex["image/encoded"]]
                cols["sha256"] += [hashlib.sha256(b).hexdigest() for b in ex["image/encoded"]]
                cols["height"] += ex["image/height"].tolist()
                cols["width"] += ex["image/width"].tolist()
                record += n
    types = {"label": pa.int64(), "record": pa.int64(), "bytes": pa.int64(), "height": pa.int32(), "width": pa.int32()}
    return pa.table({k: pa.array(v, type=types.get(k, pa.string())) for k, v in cols.items()})


def write_index(processed_dir: Path, manifest: dict) -> Path:
    return write_table(Path(processed_dir) / INDEX, example_index(processed_dir, manifest))


def predictions_table(source_ids, split: str, labels, names: list[str], probs: np.ndarray, k: int):
    """One row per example: the label, Keras' top-1 and its top-k (label names and scores)."""
    import pyarrow as pa

    probs = np.asarray(probs, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    k = min(int(k), probs.shape[1])
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    names_arr = np.asarray(names, dtype=object)
    return pa.table({
        "source_id": pa.array([s.decode() if isinstance(s, bytes) else str(s) for s in source_ids], pa.string()),
        "split": pa.array([split] * len(labels), pa.string()),
        "label": pa.array(labels, pa.int64()),
        "label_name": pa.array(names_arr[labels].tolist(), pa.string()),
        "keras_pred": pa.array(top[:, 0], pa.int64()),
        "keras_score": pa.array(np.take_along_axis(probs, top[:, :1], 1)[:, 0], pa.float32()),
        "topk_labels": pa.array(names_arr[top].tolist(), pa.list_(pa.string())),
        "topk_scores": pa.array(list(np.take_along_axis(probs, top, 1)), pa.list_(pa.float32())),
    })


def with_tflite(table, scores: dict):
    """`table` plus <kind>_pred and <kind>_score columns for each kind's scores (N x classes)."""
    import pyarrow as pa

    for kind, s in scores.items():
        s = np.asarray(s, dtype=np.float32)
        if len(s) != table.num_rows:
            raise ValueError(f"{kind}: {len(s)} score rows for a table of {table.num_rows}")
        pred = s.argmax(axis=1)
        table = table.append_column(f"{kind}_pred", pa.array(pred, pa.int64()))
        table = table.append_column(f"{kind}_score", pa.array(s[np.arange(len(s)), pred], pa.float32()))
    return table


def confused_pairs(table, names: list[str], n: int = 10, pred: str = "keras_pred") -> list[dict]:
    """The n most frequent (actual, predicted) pairs with actual != predicted in a predictions
    table, most frequent first (ties: the cell later in the confusion matrix first)."""
    import pyarrow.compute as pc

    wrong = table.filter(pc.not_equal(table["label"], table[pred]))
    counts: dict[tuple, int] = {}
    for a, p in zip(wrong["label"].to_pylist(), wrong[pred].to_pylist()):
        counts[(a, p)] = counts.get((a, p), 0) + 1
    order = sorted(counts.items(), key=lambda kv: (-kv[1], tuple(-x for x in kv[0])))[:n]
    return [{"actual": names[a], "predicted": names[p], "count": c} for (a, p), c in order]


def misclassified_rows(table, limit: int, pred: str = "keras_pred") -> np.ndarray:
    """Row numbers of the first `limit` misclassified examples of a predictions table."""
    wrong = np.flatnonzero(table["label"].to_numpy() != table[pred].to_numpy())
    return wrong[:limit]

