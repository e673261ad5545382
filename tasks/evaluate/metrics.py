"""Evaluate a trained model on the test split, and the blessing gate.

Writes into `out_dir` (reports/<model>/): `metrics.json` (DVC metrics: accuracy, top-k, macro P/R/F1,
blessed), `per_class.json`, `confusion.json` (rows `{actual, predicted}` for DVC's confusion plot),
`confusion_matrix.csv`, `confusion_matrix.png`, `misclassified.png`, and `predictions.parquet`
(every example's source_id, label, Keras prediction and top-k scores; see tasks/records/tables.py), from
which the most confused pairs and the misclassified grid are drawn.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tasks.core.io import write_json
from tasks.core.progress import keras_callback

EVAL_DEFAULTS = {"top_k": 3, "min_accuracy": 0.0, "max_regression": 0.005, "batch_size": 512,
                 "grid": 25, "most_confused": 10, "tta": {}}
TTA_VIEWS = ("turn180",)  # test-time views a dataset may allow (`evaluate.tta: {dataset: [view, ...]}`)


def tta_view(images: np.ndarray, view: str) -> np.ndarray:
    """`images` (N x H x W x C) as test-time view `view`: turn180 = rows and columns reversed (a half turn)."""
    if view == "turn180":
        return images[:, ::-1, ::-1, :]
    raise ValueError(f"evaluate tta: unknown view {view!r}; choose from {list(TTA_VIEWS)}")


def tta_scores(predict, images: np.ndarray, y_true: np.ndarray, probs: np.ndarray, views) -> dict:
    """Test-time augmentation, reported beside (never instead of) the plain accuracy: the mean of the
    softmax over the image as stored and each of `views`; also each view's accuracy alone.
    `predict`: images -> probabilities (a Keras model's predict, or a TFLite runner)."""
    views = list(views)
    each = {v: predict(tta_view(images, v)) for v in views}
    mean = (probs + sum(each.values())) / (1 + len(views))
    return {"views": ["as stored", *views], "accuracy": float(np.mean(mean.argmax(1) == y_true)),
            "per_view_accuracy": {v: float(np.mean(p.argmax(1) == y_true)) for v, p in each.items()}}


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """cm[actual, predicted] counts."""
    idx = np.asarray(y_true, np.int64) * num_classes + np.asarray(y_pred, np.int64)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_metrics(cm: np.ndarray, names: list[str]) -> dict:
    """Precision, recall, F1 and support of each class (0 where undefined)."""
    tp = np.diag(cm).astype(float)
    predicted, actual = cm.sum(axis=0), cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {n: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for n, p, r, f, s in zip(names, precision, recall, f1, actual)}


def most_confused(cm: np.ndarray, names: list[str], n: int = 10) -> list[dict]:
    """The n largest off-diagonal cells: which class is most often taken for which."""
    off = cm.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(off, axis=None, kind="stable")[::-1][:n]
    pairs = [np.unravel_index(i, cm.shape) for i in order]
    return [{"actual": names[a], "predicted": names[p], "count": int(off[a, p])} for a, p in pairs if off[a, p] > 0]


def top_k_accuracy(probs: np.ndarray, y_true: np.ndarray, k: int) -> float:
    k = min(k, probs.shape[1])
    top = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    return float(np.mean(np.any(top == y_true[:, None], axis=1)))


def gate_params(evaluate_params: dict, model_key: str) -> dict:
    """The `evaluate` section with per-model thresholds resolved: a dict-valued threshold
    (`{default: .., <model_key>: ..}`) becomes the number for `model_key`."""
    out = dict(evaluate_params or {})
    for name in ("min_accuracy", "max_regression"):
        if isinstance(out.get(name), dict):
            out[name] = out[name].get(model_key, out[name].get("default", EVAL_DEFAULTS[name]))
    return out


def bless(metrics: dict, params: dict, baseline_path: Path | None) -> dict:
    """The gate: accuracy >= min_accuracy, and not below the last blessed model's by more than
    max_regression (when a blessed baseline metrics file exists)."""
    acc, floor = metrics["accuracy"], float(params.get("min_accuracy", 0.0))
    if acc < floor:
        return {"blessed": False, "reason": f"accuracy {acc:.4f} < min_accuracy {floor:.4f}"}
    if baseline_path and Path(baseline_path).exists():
        base = json.loads(Path(baseline_path).read_text())["accuracy"]
        allowed = float(params.get("max_regression", 0.0))
        if acc < base - allowed:
            return {"blessed": False, "baseline_accuracy": base,
                    "reason": f"accuracy {acc:.4f} regressed from blessed {base:.4f} by more than {allowed}"}
        return {"blessed": True, "baseline_accuracy": base,
                "reason": f"accuracy {acc:.4f} >= {floor} and within {allowed} of blessed {base:.4f}"}
    return {"blessed": True, "reason": f"accuracy {acc:.4f} >= min_accuracy {floor}; no blessed baseline yet"}


def plot_confusion(cm: np.ndarray, names: list[str], path: Path, title: str = "") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(names)
    fig, ax = plt.subplots(figsize=(max(5, 0.35 * n + 2), max(4, 0.35 * n + 1.5)))
    shown = np.log1p(cm)  # log scale so the off-diagonal cells are visible next to the diagonal
    ax.imshow(shown, cmap="Blues")
    ax.set_xticks(range(n), names, fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title or "confusion matrix (log colour scale)")
    if n <= 12:
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                    color="white" if shown[i, j] > shown.max() / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_examples(images, true, pred, names, path: Path, title: str = "misclassified") -> None:
    """A grid of images captioned with the true and the predicted label, one per line, wrapped to
    the cell's width (long class names like "queen of hearts" no longer run into the neighbours)."""
    import textwrap

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(images))
    cols = min(5, n)
    rows = -(-n // cols)
    width = 24  # characters per caption line at fontsize 8 in a 2.2-inch cell

    def caption(t, p):
        lines = textwrap.wrap(f"true: {names[t]}", width) + textwrap.wrap(f"pred: {names[p]}", width)
        return "\n".join(lines)

    captions = [caption(t, p) for t, p in zip(true, pred)]
    lines = max([c.count("\n") + 1 for c in captions] or [2])
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, (1.9 + 0.15 * lines) * rows + 0.4),
                             squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, t, p, text in zip(axes.flat, images, true, pred, captions):
        ax.imshow(np.squeeze(img), cmap="gray", vmin=0, vmax=255)
        ax.set_title(text, fontsize=8, color="red" if t != p else "black", loc="center", wrap=False)
    fig.suptitle(title if len(images) else f"{title}: none", fontsize=10)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def evaluation_split(manifest: dict, where: str | Path = "manifest.json") -> str:
    """The split models are scored on: always test, which nothing picks a checkpoint or stops on. A
    dataset prepared without one is an error naming the fix, never a silent fall-back to validation."""
    splits = manifest.get("splits") or {}
    if not splits.get("test", {}).get("count"):
        key = manifest.get("dataset", "<key>")
        raise ValueError(f"{where}: dataset {key!r} has no test split, and models are scored on test only "
                         f"(validation picks their checkpoints); rerun prepare@{key} with "
                         f"prepare.{key}.testing_percentage > 0 or add a test/ folder to the data")
    return "test"


def split_origin(manifest: dict, split: str) -> str:
    """How `split` was made, in words: the photo manifest's `split_origin`, else (array datasets) the
    manifest note that starts with the split's name, else the source's own split."""
    origin = (manifest.get("split_origin") or {}).get(split)
    if origin:
        return origin
    note = next((n for n in manifest.get("notes") or [] if n.startswith(f"{split}: ")), None)
    return note[len(split) + 2:] if note else f"the source's own {split} split"


def attribute_accuracy(y_true, y_pred, names: list[str], attributes: dict) -> dict:
    """For each label attribute (e.g. a banknote's denomination): the share of examples whose
    predicted class has the true class's value of it, overall and per value.

    `attributes` maps class name -> {attribute: value} (the manifest's `label_attributes`).
    """
    result = {}
    for attr in sorted({a for v in attributes.values() for a in v}):
        value = np.array([str(attributes.get(n, {}).get(attr)) for n in names])
        true_v, pred_v = value[np.asarray(y_true)], value[np.asarray(y_pred)]
        hit = true_v == pred_v
        result[attr] = {"accuracy": float(np.mean(hit)) if len(hit) else 0.0,
                        "per_value": {v: {"accuracy": float(np.mean(hit[true_v == v])), "count": int(np.sum(true_v == v))}
                                      for v in sorted(set(true_v))}}
    return result


def load_arrays(processed_dir: Path, split: str = "test", limit: int | None = None, with_ids: bool = False):
    """(images uint8 N×H×W×C, labels int64 N, label names) of a split (its first `limit` examples);
    with `with_ids`, the source ids (list of str) come fourth."""
    from tasks.records.shards import load_manifest, read_split
    from tasks.core.labels import label_names

    manifest = load_manifest(processed_dir)
    ds = read_split(processed_dir, split, batch_size=1024, manifest=manifest, with_ids=True)
    if limit:
        ds = ds.unbatch().take(limit).batch(1024)
    xs, ys, ids = [], [], []
    for x, y, i in ds.as_numpy_iterator():
        xs.append(x)
        ys.append(y)
        ids += [s.decode() for s in i]
    out = (np.concatenate(xs), np.concatenate(ys).astype(np.int64), label_names(manifest))
    return (*out, ids) if with_ids else out


def evaluate(model_path: Path, processed_dir: Path, out_dir: Path, params: dict,
             *, baseline_path: Path | None = None, metrics_file: str = "metrics.json", verdict: bool = True) -> dict:
    """Evaluate `model_path` on the test split of `processed_dir` (`split` and `split_origin` in the
    metrics say which and how it was made; a dataset without one is an error); write reports into `out_dir`.

    `params` is the `evaluate` section of params.yaml (top_k, min_accuracy, max_regression, ...), with
    the model's own threshold already resolved (see `tasks.stages.models.gate`).
    `baseline_path`: metrics.json of the last blessed model, if any (else `params["baseline"]`).
    `metrics_file`: name of the metrics file in `out_dir` (e.g. "evaluation.json" when the export
    stage writes the final metrics.json from it). `verdict`: add the gate's `blessed` and `blessing`
    (False in the DVC pipeline: export@ gives the one verdict, in metrics.json).
    """
    import keras

    cfg = {**EVAL_DEFAULTS, **(params or {})}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    from tasks.records.shards import load_manifest

    manifest = load_manifest(processed_dir)
    split = evaluation_split(manifest, Path(processed_dir) / "manifest.json")
    images, y_true, names, ids = load_arrays(processed_dir, split, with_ids=True)
    model = keras.models.load_model(model_path)
    probs = model.predict(images, batch_size=int(cfg["batch_size"]), verbose=0,
                          callbacks=[keras_callback(f"evaluate {out_dir.name}")])  # it only prints
    y_pred = probs.argmax(axis=1)
    cm = confusion_matrix(y_true, y_pred, len(names))
    per_class = per_class_metrics(cm, names)
    k = int(cfg["top_k"])
    metrics = {
        "accuracy": float(np.mean(y_pred == y_true)),
        f"top{k}_accuracy": top_k_accuracy(probs, y_true, k),
        "macro_precision": float(np.mean([c["precision"] for c in per_class.values()])),
        "macro_recall": float(np.mean([c["recall"] for c in per_class.values()])),
        "macro_f1": float(np.mean([c["f1"] for c in per_class.values()])),
        "test_count": int(len(y_true)),
        "split": split,
        "split_origin": split_origin(manifest, split),
        "validation_count": int((manifest["splits"].get("validation") or {}).get("count", 0)),
    }
    views = (cfg["tta"] or {}).get(manifest.get("dataset"))
    if views:  # the dataset allows these views at test time: their averaged score, reported on its own
        metrics["tta"] = tta_scores(lambda x: model.predict(x, batch_size=int(cfg["batch_size"]), verbose=0,
                                                            callbacks=[keras_callback(f"evaluate {out_dir.name} tta")]),
                                    images, y_true, probs, views)
    by_attribute = attribute_accuracy(y_true, y_pred, names, manifest.get("label_attributes") or {})
    metrics.update({f"{attr}_accuracy": v["accuracy"] for attr, v in by_attribute.items()})
    if verdict:
        gate = bless(metrics, cfg, baseline_path or cfg.get("baseline"))
        metrics.update(blessed=gate["blessed"], blessing=gate)
    from tasks.records.tables import PREDICTIONS, confused_pairs, misclassified_rows, predictions_table, read_table, write_table

    write_table(out_dir / PREDICTIONS, predictions_table(ids, split, y_true, names, probs, k))
    table = read_table(out_dir / PREDICTIONS)  # the report's pairs and grid come from the table
    confused = confused_pairs(table, names, int(cfg["most_confused"]))

    write_json(out_dir / "per_class.json", {"per_class": per_class, "most_confused": confused,
                                            "by_attribute": by_attribute})
    write_json(out_dir / "confusion.json", [{"actual": names[a], "predicted": names[p]}
                                            for a, p in zip(y_true, y_pred)])
    np.savetxt(out_dir / "confusion_matrix.csv", cm, fmt="%d", delimiter=",",
               header=",".join(names), comments="")
    plot_confusion(cm, names, out_dir / "confusion_matrix.png")
    wrong = misclassified_rows(table, int(cfg["grid"]))
    label, pred = table["label"].to_numpy(), table["keras_pred"].to_numpy()
    plot_examples(images[wrong], label[wrong], pred[wrong], names, out_dir / "misclassified.png",
                  title=f"misclassified (true -> pred), {int(np.sum(pred != label))} of {table.num_rows}")
    write_json(out_dir / metrics_file, metrics)
    return {**metrics, "most_confused": confused}
