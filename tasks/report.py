"""Markdown reports: one page per model (`reports/<model>/README.md`) and an index (`reports/README.md`)
with the transfer comparison figure and a table of final accuracies.

Reads what the other steps wrote: `reports/<model>/metrics.json`, `per_class.json` and PNGs (evaluate,
export), `models/<model>/history.json` and `train.json` (train).
"""
from __future__ import annotations

import json
from pathlib import Path

TRANSFER_KEYS = ("mnist_scratch", "mnist_transfer_conv", "mnist_transfer_conv_dense",
                 "emnist_cnn", "emnist_from_mnist")


def _load(path: Path, default=None):
    return json.loads(path.read_text()) if path.exists() else default


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.2f} %"


def _ms(x) -> str:
    return "–" if x is None else f"{x:.2f}"


def architecture(recipe: dict) -> str:
    """`reference_cnn`, or `mobilenet_v2 α=1.0 224px + ours head` for photo recipes."""
    if recipe.get("base"):
        return (f"{recipe['base']} α={recipe.get('alpha', 1.0)} {recipe.get('image_size', '?')}px"
                f" + {recipe.get('head', '?')} head")
    return recipe.get("arch", "?")


def side_by_side(rows: list[dict]) -> list[str]:
    """Markdown: per dataset, every recipe's accuracy, train time, model size and latency."""
    lines = ["## Recipes side by side", "",
             "Accuracy on the evaluation split (test, or validation where the dataset has none), "
             "training time on the machine that trained it, TFLite sizes and single-image latency.", ""]
    for dataset in sorted({r["dataset"] for r in rows}):
        lines += [f"### {dataset}", "",
                  "| model | architecture | split | accuracy | int8 TFLite acc | train s | float32 bytes "
                  "| int8 bytes | int8 latency ms |", "|---|---|---|---|---|---|---|---|---|"]
        for r in (r for r in rows if r["dataset"] == dataset):
            f32, i8 = r["tflite"].get("float32", {}), r["tflite"].get("int8", {})
            lines.append(f"| {r['key']} | {r['arch']} | {r['split']} | {_pct(r['accuracy'])} | "
                         f"{_pct(i8.get('accuracy'))} | {r['seconds'] if r['seconds'] is not None else '–'} | "
                         f"{f32.get('bytes', '–')} | {i8.get('bytes', '–')} | {_ms(i8.get('latency_ms'))} |")
        lines.append("")
    return lines


def plot_curves(history: list[dict], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] + 1 for h in history]
    fig, (acc, loss) = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, key in ((acc, "accuracy"), (loss, "loss")):
        ax.plot(epochs, [h[key] for h in history], "o-", label="train")
        ax.plot(epochs, [h[f"val_{key}"] for h in history], "o-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_transfer(histories: dict, path: Path) -> None:
    """Validation accuracy per epoch of the transfer variants (MNIST solid, EMNIST dashed), one plot."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for key, history in histories.items():
        ax.plot([h["epoch"] + 1 for h in history], [h["val_accuracy"] for h in history], marker="o",
                linestyle="--" if key.startswith("emnist") else "-", label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.set_title("transfer learning: EMNIST letters <-> MNIST digits")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def model_page(key: str, metrics: dict, train: dict, per_class: dict) -> str:
    recipe = train.get("recipe", {})
    lines = [f"# {key}", "",
             f"Dataset `{recipe.get('dataset', train.get('dataset', '?'))}`, arch `{architecture(recipe)}`"
             + (f", transferred from `{recipe['transfer_from']}` (frozen: {recipe.get('freeze')})"
                if recipe.get("transfer_from") else "")
             + f"; {train.get('epochs_run', '?')} epochs, {train.get('fit_seconds', '?')} s.", "",
             "| metric | value |", "|---|---|"]
    for name, value in metrics.items():
        if isinstance(value, float):
            lines.append(f"| {name} | {value:.4f} |")
        elif isinstance(value, (int, bool, str)):
            lines.append(f"| {name} | {value} |")
    gate = metrics.get("blessing", {})
    lines += ["", f"**Gate:** {'blessed' if metrics.get('blessed') else 'NOT blessed'} — {gate.get('reason', '')}", ""]
    tflite = metrics.get("tflite")
    if tflite:
        lines += ["## TFLite", "", "| model | accuracy | agreement with Keras | bytes | latency (ms, 1 image) |",
                  "|---|---|---|---|---|"]
        lines += [f"| {k} | {_pct(v['accuracy'])} | {_pct(v['agreement'])} | {v['bytes']:,} | {v['latency_ms']:.3f} |"
                  for k, v in tflite.items()]
        lines.append("")
    lines += ["## Training curves", "", "![curves](curves.png)", "",
              "## Confusion matrix", "", "![confusion matrix](confusion_matrix.png)", ""]
    if per_class.get("most_confused"):
        lines += ["Most confused (actual → predicted: count): " +
                  ", ".join(f"{p['actual']} → {p['predicted']}: {p['count']}" for p in per_class["most_confused"]), ""]
    lines += ["## Misclassified examples", "", "![misclassified](misclassified.png)", ""]
    for attr, result in (per_class.get("by_attribute") or {}).items():
        lines += [f"## Accuracy per {attr}", "",
                  f"Share of images whose predicted class has the right {attr} (overall {_pct(result['accuracy'])}).",
                  "", f"| {attr} | accuracy | images |", "|---|---|---|"]
        lines += [f"| {v} | {_pct(r['accuracy'])} | {r['count']} |" for v, r in result["per_value"].items()]
        lines.append("")
    if per_class.get("per_class"):
        lines += ["## Per class", "", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        lines += [f"| {n} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} | {c['support']} |"
                  for n, c in per_class["per_class"].items()]
    return "\n".join(lines) + "\n"


def write_report(reports_dir: Path, model_keys: list[str], *, models_dir: Path | None = None) -> dict:
    """Write every model page and the index; returns {"index": path, "markdown": index text}."""
    reports_dir = Path(reports_dir)
    models_dir = Path(models_dir) if models_dir else reports_dir.parent / "models"
    rows, histories, compared = [], {}, []
    for key in model_keys:
        page_dir = reports_dir / key
        page_dir.mkdir(parents=True, exist_ok=True)
        metrics = _load(page_dir / "metrics.json", {})
        train = _load(models_dir / key / "train.json", {})
        history = _load(models_dir / key / "history.json", [])
        if history:
            plot_curves(history, page_dir / "curves.png", key)
            histories[key] = history
        (page_dir / "README.md").write_text(model_page(key, metrics, train, _load(page_dir / "per_class.json", {})),
                                            encoding="utf-8")
        recipe, tflite = train.get("recipe", {}), metrics.get("tflite", {})
        compared.append({"key": key, "dataset": recipe.get("dataset", "?"), "arch": architecture(recipe),
                         "split": metrics.get("split", "test"), "accuracy": metrics.get("accuracy"),
                         "tflite": tflite, "seconds": train.get("fit_seconds")})
        rows.append(f"| [{key}]({key}/README.md) | {recipe.get('dataset', '?')} | {architecture(recipe)} | "
                    f"{recipe.get('transfer_from') or '–'} / {recipe.get('freeze') or '–'} | "
                    f"{train.get('epochs_run', '–')} | {_pct(train.get('best_val_accuracy'))} | "
                    f"{_pct(metrics.get('accuracy'))} | {_pct(tflite.get('float32', {}).get('accuracy'))} | "
                    f"{_pct(tflite.get('int8', {}).get('accuracy'))} | "
                    f"{tflite.get('int8', {}).get('bytes', '–')} | {'yes' if metrics.get('blessed') else 'no'} |")
    lines = ["# Model reports", "",
             "| model | dataset | arch | transfer from / frozen | epochs | best val acc | eval acc (Keras) | "
             "float32 TFLite acc | int8 TFLite acc | int8 bytes | blessed |",
             "|---|---|---|---|---|---|---|---|---|---|---|", *rows, "", *side_by_side(compared)]
    transfer = {k: histories[k] for k in TRANSFER_KEYS if k in histories}
    if transfer:
        plot_transfer(transfer, reports_dir / "transfer.png")
        lines += ["## Transfer learning", "",
                  "Validation accuracy per epoch: MNIST from scratch vs. conv layers from the EMNIST model "
                  "frozen (b) vs. conv + first dense frozen (c); dashed: EMNIST letters, from scratch "
                  "and from MNIST features (the reverse direction).", "", "![transfer](transfer.png)", ""]
    text = "\n".join(lines)
    (reports_dir / "README.md").write_text(text, encoding="utf-8")
    return {"index": reports_dir / "README.md", "markdown": text}
