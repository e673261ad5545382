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
             f"Dataset `{recipe.get('dataset', train.get('dataset', '?'))}`, arch `{recipe.get('arch', '?')}`"
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
    if per_class.get("per_class"):
        lines += ["## Per class", "", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        lines += [f"| {n} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} | {c['support']} |"
                  for n, c in per_class["per_class"].items()]
    return "\n".join(lines) + "\n"


def write_report(reports_dir: Path, model_keys: list[str], *, models_dir: Path | None = None) -> dict:
    """Write every model page and the index; returns {"index": path, "markdown": index text}."""
    reports_dir = Path(reports_dir)
    models_dir = Path(models_dir) if models_dir else reports_dir.parent / "models"
    rows, histories = [], {}
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
        rows.append(f"| [{key}]({key}/README.md) | {recipe.get('dataset', '?')} | {recipe.get('arch', '?')} | "
                    f"{recipe.get('transfer_from') or '–'} / {recipe.get('freeze') or '–'} | "
                    f"{train.get('epochs_run', '–')} | {_pct(train.get('best_val_accuracy'))} | "
                    f"{_pct(metrics.get('accuracy'))} | {_pct(tflite.get('float32', {}).get('accuracy'))} | "
                    f"{_pct(tflite.get('int8', {}).get('accuracy'))} | "
                    f"{tflite.get('int8', {}).get('bytes', '–')} | {'yes' if metrics.get('blessed') else 'no'} |")
    lines = ["# Model reports", "",
             "| model | dataset | arch | transfer from / frozen | epochs | best val acc | test acc (Keras) | "
             "float32 TFLite acc | int8 TFLite acc | int8 bytes | blessed |",
             "|---|---|---|---|---|---|---|---|---|---|---|", *rows, ""]
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
