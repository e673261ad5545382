"""Markdown reports: one page per model (`reports/<model>/README.md`, stage report_page@<model>) and an
index (`reports/README.md`, stage report) with a table of final accuracies and the comparison figure
configured in params.yaml `report.transfer`.

A page reads what the model's stages wrote: `reports/<model>/metrics.json`, `per_class.json` and PNGs
(evaluate, export), `models/<model>/history.json` and `train.json` (train), and leaves its row of the
index in `reports/summaries/<model>.json`; the index reads only that folder (and params), so adding a
model adds a page stage and no edit here or in dvc.yaml.
"""
from __future__ import annotations

import json
from pathlib import Path

SUMMARIES = "summaries"   # reports/summaries/<model>.json: a page's row of the index
RETIRED = "retired"       # reports/retired/<model>/: a retired recipe's last page, row (summary.json) and records
# what each TFLite format of tasks/evaluate/export.py is, for the page's table
TFLITE_FORMATS = {"float32": "the Keras model as trained",
                  "float16": "float16 weights (half the bytes), float32 maths on a CPU",
                  "dynamic": "dynamic range: int8 weights (a quarter of the bytes), float32 in and out",
                  "int8": "full integer: int8 weights and activations, uint8 pixels in, uint8 scores out"}


def layer_name(tensor: str) -> str:
    """A TFLite tensor's Keras layer: 'm/base/block_2_depthwise_relu/Relu6;m/base/...' -> 'block_2_depthwise_relu'."""
    parts = tensor.split(";")[0].split("/")
    return parts[-2] if len(parts) > 1 else parts[0]


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
             "Accuracy on each dataset's test split (nothing picks a checkpoint on it; a `validation` row "
             "comes from before every dataset had one and is optimistic), "
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


def plot_transfer(histories: dict, path: Path, title: str = "", dashed=()) -> None:
    """Validation accuracy per epoch of the compared models (those in `dashed` dashed), one plot."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for key, history in histories.items():
        ax.plot([h["epoch"] + 1 for h in history], [h["val_accuracy"] for h in history], marker="o",
                linestyle="--" if key in dashed else "-", label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if histories:
        ax.legend(fontsize=8)
    else:  # the stage's declared output, even with nothing to compare
        ax.text(0.5, 0.5, "no curves: set params.yaml report.transfer.models", ha="center", va="center",
                transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def scored_on(metrics: dict) -> str:
    """The sentence that says which split the page's numbers come from and how that split was made."""
    split = metrics.get("split")
    if not split:
        return "**Scored on:** not evaluated yet."
    line = f"**Scored on:** the {split} split ({metrics.get('test_count', '?')} examples"
    line += f": {metrics['split_origin']})." if metrics.get("split_origin") else ")."
    if split == "test":
        line += (f" Validation ({metrics.get('validation_count', '?')} examples) only picked the checkpoint and "
                 "stopped training early; nothing was selected on the test split.")
    else:
        line += " This split also picked the checkpoint, so the number is optimistic (made before test splits)."
    return line


def tta_line(metrics: dict) -> list[str]:
    """The test-time augmentation score (evaluate.tta), said apart from the headline, or nothing."""
    tta = metrics.get("tta")
    if not tta:
        return []
    alone = ", ".join(f"{v} alone {_pct(a)}" for v, a in tta["per_view_accuracy"].items())
    return [f"**Test-time augmentation** (apart from the headline; the exported model does not do it): the softmax "
            f"averaged over {' + '.join(tta['views'])}: {_pct(tta['accuracy'])} ({alone}).", ""]


def machine_line(machine: dict | None) -> str:
    """The machine a model trained on, as recorded (a bench record of its timed train@ run), or
    "not recorded"; the CPU model only where a record names it."""
    machine = machine or {}
    gpus = machine.get("gpus")
    trainer = (f"the trainer records only the GPUs it used: {gpus}" if gpus is not None
               else "the trainer records none")
    if not machine.get("recorded"):
        return f"**Machine:** not recorded ({trainer})."
    cpu = machine.get("cpu_model") or "CPU model not recorded"
    fit = f", this model's fit {machine['fit_seconds']} s" if machine.get("fit_seconds") is not None else ""
    return (f"**Machine:** {machine.get('cpus', '?')} CPUs, {machine.get('processor') or '?'} ({cpu}), from "
            f"`{machine['source']}`'s timed `{machine.get('command')}` of {machine.get('when', '?')} "
            f"({machine.get('seconds', '?')} s wall{fit}); {trainer}.")


def provenance_lines(prov: dict | None) -> list[str]:
    """Markdown: the code train@ ran (its dvc.lock code hashes as read when the page was written), whether
    that lock entry is this model's run, and the machine; or that none of it was recorded."""
    if not prov:
        return ["## What made these numbers", "", "**Code:** not recorded (the page was written without dvc.lock).", ""]
    stage, lock = prov.get("stage", "train@?"), prov.get("lock", "dvc.lock")
    lines = ["## What made these numbers", ""]
    if not prov.get("in_lock"):
        lines += [f"**Code:** not recorded: `{lock}` has no `{stage}` entry (no DVC run of this checkout "
                  "recorded its training).", ""]
    else:
        lines += [f"**Code:** `{stage}` ran the code below (code id `{prov.get('code_id')}`), as `{lock}` recorded it "
                  f"when this page was written (read at report time; `tlpipe status` says whether the tree still "
                  f"matches). Numbers in `docs/history.md` and `reports/retired/` came from earlier runs: "
                  "the same code only where they show the same code id.", "",
                  "| code | md5 in dvc.lock |", "|---|---|",
                  *[f"| {path} | `{md5}` |" for path, md5 in sorted((prov.get("code") or {}).items())], ""]
        tj = prov.get("train_json") or {}
        if tj.get("matches") is True:
            lines += [f"That entry recorded this model's `{tj.get('path')}` (md5 `{tj.get('lock_md5')}`): it is the "
                      "run that made these numbers.", ""]
        elif tj.get("matches") is False:
            lines += [f"**Warning:** that entry recorded another `{tj.get('path')}` (md5 `{tj.get('lock_md5')}`) than "
                      "the one beside the model: these hashes may not be the code that made it.", ""]
    lines += [machine_line(prov.get("machine")), ""]
    return lines


def model_page(key: str, metrics: dict, train: dict, per_class: dict,
               provenance: dict | None = None) -> str:
    recipe = train.get("recipe", {})
    lines = [f"# {key}", "",
             f"Dataset `{recipe.get('dataset', train.get('dataset', '?'))}`, arch `{architecture(recipe)}`"
             + (f", transferred from `{recipe['transfer_from']}` (frozen: {recipe.get('freeze')})"
                if recipe.get("transfer_from") else "")
             + f"; {train.get('epochs_run', '?')} epochs, {train.get('fit_seconds', '?')} s.", "",
             scored_on(metrics), "", *tta_line(metrics), "| metric | value |", "|---|---|"]
    for name, value in metrics.items():
        if name in ("split_origin", "validation_count"):
            continue
        if isinstance(value, float):
            lines.append(f"| {name} | {value:.4f} |")
        elif isinstance(value, (int, bool, str)):
            lines.append(f"| {name} | {value} |")
    gate = metrics.get("blessing", {})
    lines += ["", f"**Gate:** {'blessed' if metrics.get('blessed') else 'NOT blessed'} — {gate.get('reason', '')}", ""]
    if provenance is not None:
        lines += provenance_lines(provenance)
    tflite = metrics.get("tflite")
    if tflite:
        lines += ["## TFLite", "", "Every format exported (`export.formats`), scored on the same split: its accuracy, "
                  "its top-1 agreement with the Keras model, its size with the metadata and its single-image latency.",
                  "", "| model | what it is | accuracy | agreement with Keras | bytes | latency (ms, 1 image) |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {k} | {TFLITE_FORMATS.get(k, '')} | {_pct(v['accuracy'])} | {_pct(v['agreement'])} | "
                  f"{v['bytes']:,} | {v['latency_ms']:.3f} |" for k, v in tflite.items()]
        lines.append("")
        kept = (tflite.get("int8") or {}).get("float_layers") or []
        if kept:  # export.int8_float_layers: selective quantisation
            lines += [f"int8 keeps {len(kept)} layer{'s' if len(kept) > 1 else ''} float inside (`export.int8_float_layers`: "
                      "the largest int8 error on the calibration images, in quantisation steps): " +
                      ", ".join(f"{layer_name(r['tensor'])} ({r['op']}, {r['rmse_steps']:.2f})" for r in kept) + ".", ""]
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


def scores(summary: dict) -> dict:
    """The figures people compare across models, flat (`dvc metrics show`, `dvc exp show` columns): accuracy,
    int8 accuracy and its top-1 agreement with Keras, the TFLite sizes, int8 latency, train time, and for
    each further TFLite format exported (float16, dynamic) its accuracy, agreement, size and latency
    (<format>_accuracy, _agreement, _kb, _latency_ms). The rest stays in the stage files it came from
    (train.json, evaluation.json, metrics.json)."""
    tflite = summary["tflite"]
    f32, i8 = tflite.get("float32", {}), tflite.get("int8", {})
    kb = lambda n: round(n / 1024, 1) if n is not None else None  # noqa: E731
    others = {f"{kind}_{name}": value for kind, v in tflite.items() if kind not in ("float32", "int8")
              for name, value in (("accuracy", v.get("accuracy")), ("agreement", v.get("agreement")),
                                  ("kb", kb(v.get("bytes"))), ("latency_ms", v.get("latency_ms")))}
    return {"accuracy": summary["accuracy"], "int8_accuracy": i8.get("accuracy"),
            "int8_agreement": i8.get("agreement"), "float32_kb": kb(f32.get("bytes")), "int8_kb": kb(i8.get("bytes")),
            "int8_latency_ms": i8.get("latency_ms"), **others, "train_s": summary["seconds"],
            "epochs": summary["epochs_run"], "blessed": summary["blessed"],
            **({"tta_accuracy": summary["tta_accuracy"]} if summary.get("tta_accuracy") is not None else {})}


def write_page(reports_dir: Path, key: str, *, models_dir: Path | None = None,
               provenance: dict | None = None) -> dict:
    """report_page@<key>: the model's page (README.md, curves.png), its scores (reports/<key>/scores.json:
    the metrics DVC shows) and its index row (reports/summaries/<key>.json: the row's numbers and the
    validation curve). `provenance`: plain values of what made the model (its train@ code hashes from
    dvc.lock, the machine: tasks/stages/provenance.py), said on the page and kept in the row."""
    from tasks.core.io import write_json

    reports_dir = Path(reports_dir)
    models_dir = Path(models_dir) if models_dir else reports_dir.parent / "models"
    page_dir = reports_dir / key
    page_dir.mkdir(parents=True, exist_ok=True)
    metrics = _load(page_dir / "metrics.json", {})
    train = _load(models_dir / key / "train.json", {})
    history = _load(models_dir / key / "history.json", [])
    if history:
        plot_curves(history, page_dir / "curves.png", key)
    (page_dir / "README.md").write_text(model_page(key, metrics, train, _load(page_dir / "per_class.json", {}),
                                                   provenance), encoding="utf-8")
    recipe = train.get("recipe", {})
    summary = {"key": key, "dataset": recipe.get("dataset", "?"), "arch": architecture(recipe),
               "transfer_from": recipe.get("transfer_from"), "freeze": recipe.get("freeze"),
               "epochs_run": train.get("epochs_run"), "best_val_accuracy": train.get("best_val_accuracy"),
               "split": metrics.get("split", "test"), "accuracy": metrics.get("accuracy"),
               "tflite": metrics.get("tflite", {}), "seconds": train.get("fit_seconds"),
               "blessed": bool(metrics.get("blessed")), "params": train.get("params"),
               **({"tta_accuracy": metrics["tta"]["accuracy"]} if metrics.get("tta") else {}),
               **({"provenance": provenance} if provenance is not None else {}),
               "val_accuracy": [{"epoch": h["epoch"], "val_accuracy": h["val_accuracy"]} for h in history]}
    write_json(page_dir / "scores.json", scores(summary))
    (reports_dir / SUMMARIES).mkdir(parents=True, exist_ok=True)
    write_json(reports_dir / SUMMARIES / f"{key}.json", summary)
    return {"page": page_dir / "README.md", "summary": summary}


def _row(r: dict) -> str:
    f32, i8 = r["tflite"].get("float32", {}), r["tflite"].get("int8", {})
    return (f"| [{r['key']}]({r['key']}/README.md) | {r['dataset']} | {r['arch']} | "
            f"{r['transfer_from'] or '–'} / {r['freeze'] or '–'} | "
            f"{r['epochs_run'] if r['epochs_run'] is not None else '–'} | {_pct(r['best_val_accuracy'])} | "
            f"{r.get('split', '–')} | {_pct(r['accuracy'])} | {_pct(f32.get('accuracy'))} | {_pct(i8.get('accuracy'))} | "
            f"{i8.get('bytes', '–')} | {'yes' if r['blessed'] else 'no'} |")


def model_table(table: dict, rows: dict) -> list[str]:
    """Markdown of a params `report.tables` entry ({heading, caption, models, retired}): parameters, evaluation
    accuracy, int8 accuracy and agreement with float32, train time, one row per listed model, then one per
    `retired` model (its last page and row, kept in reports/retired/<key>/: history beside the new rows)."""
    lines = [f"## {table.get('heading', 'Models')}", "", table.get("caption", ""), "",
             "| model | arch | parameters | scored on | accuracy (Keras) | int8 TFLite acc | int8 agreement | epochs | "
             "train s |", "|---|---|---|---|---|---|---|---|---|"]
    retired = set(table.get("retired") or [])
    for key in [*(table.get("models") or []), *(table.get("retired") or [])]:
        r = rows[key]
        i8 = r["tflite"].get("int8", {})
        params = f"{r['params']:,}" if r.get("params") is not None else "–"
        tta = f" (TTA {_pct(r['tta_accuracy'])})" if r.get("tta_accuracy") is not None else ""
        page = f"{RETIRED}/{key}/README.md" if key in retired else f"{key}/README.md"
        split = f"{r.get('split', '–')}, retired" if key in retired else r.get("split", "–")
        lines.append(f"| [{key}]({page}) | {r['arch']} | {params} | {split} | {_pct(r['accuracy'])}{tta} | "
                     f"{_pct(i8.get('accuracy'))} | {_pct(i8.get('agreement'))} | "
                     f"{r['epochs_run'] if r['epochs_run'] is not None else '–'} | "
                     f"{r['seconds'] if r['seconds'] is not None else '–'} |")
    return lines + [""]


def made_by(rows: list[dict], retired: list[dict] = ()) -> list[str]:
    """Markdown: which code made each model's numbers (its train@ code id and hashes from dvc.lock, as its
    page recorded them) and on what machine; models that ran the same code share an id. `retired`: the
    rows the tables above keep from reports/retired/ (docs/history.md), marked so: earlier runs, with a
    code id only where their kept row recorded one."""
    lines = ["## What made these numbers", "",
             "Each model's `train@` code as `dvc.lock` recorded it when its page was written (md5 of each "
             "package, first 8 hex digits; the full ones are on its page), and the machine where a record names "
             "it. The same code id, the same code. A *retired* row came from an earlier run "
             "(`reports/retired/`, `docs/history.md`), not from this `dvc.lock`; `tlpipe status` lists what "
             "changed since.", "",
             "| model | code id | train@ code (md5 in dvc.lock) | machine |", "|---|---|---|---|"]
    for r in [*rows, *({**r, "key": f"{r['key']} (*retired*)"} for r in retired)]:
        prov = r.get("provenance")
        if not prov or not prov.get("in_lock"):
            lines.append(f"| {r['key']} | – | not recorded | {_machine_cell(prov)} |")
            continue
        code = ", ".join(f"{p} `{h[:8]}`" for p, h in sorted((prov.get("code") or {}).items()))
        warn = " (**another train.json**)" if (prov.get("train_json") or {}).get("matches") is False else ""
        lines.append(f"| {r['key']} | `{prov.get('code_id')}`{warn} | {code} | {_machine_cell(prov)} |")
    return lines + [""]


def _machine_cell(prov: dict | None) -> str:
    machine = (prov or {}).get("machine") or {}
    if not machine.get("recorded"):
        return "not recorded"
    return (f"{machine.get('cpus', '?')} CPUs, {machine.get('processor') or '?'}"
            f"{', ' + machine['cpu_model'] if machine.get('cpu_model') else ''} ({machine.get('when', '?')})")


def write_index(reports_dir: Path, model_keys: list[str], config: dict | None = None,
                checks: list[str] | None = None) -> dict:
    """report: reports/README.md from the pages' rows (reports/summaries/), in `model_keys` order, and
    the comparison figure of params `report.transfer` ({models, dashed, title, caption}) when it has
    curves. Returns {"index": path, "markdown": index text}."""
    reports_dir = Path(reports_dir)
    config = config or {}
    rows = []
    for key in model_keys:
        path = reports_dir / SUMMARIES / f"{key}.json"
        if not path.exists():
            raise FileNotFoundError(f"{path}: no page summary for model {key!r}; run report_page@{key} "
                                    f"(`tlpipe report {key}`) first")
        rows.append(json.loads(path.read_text()))
    lines = ["# Model reports", "",
             *(["Data checks (check@, before any training): " +
                ", ".join(f"[{k}](data/{k}/README.md)" for k in checks), ""] if checks else []),
             "| model | dataset | arch | transfer from / frozen | epochs | best val acc | scored on | accuracy (Keras) | "
             "float32 TFLite acc | int8 TFLite acc | int8 bytes | blessed |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|", *map(_row, rows), "", *side_by_side(rows)]
    figure = config.get("transfer") or {}
    curves = {r["key"]: r["val_accuracy"] for r in rows}
    compared = {k: curves[k] for k in figure.get("models") or [] if curves.get(k)}
    plot_transfer(compared, reports_dir / "transfer.png", figure.get("title", ""), tuple(figure.get("dashed") or ()))
    if compared:
        lines += [f"## {figure.get('heading', 'Transfer learning')}", "", figure.get("caption", ""), "",
                  "![transfer](transfer.png)", ""]
    by_key = {r["key"]: r for r in rows}
    for table in (config.get("tables") or {}).values():
        for key in table.get("retired") or []:
            path = reports_dir / RETIRED / key / "summary.json"
            if not path.exists():
                raise FileNotFoundError(f"{path}: report table lists retired model {key!r}, whose last row is kept "
                                        f"there (reports/{RETIRED}/<key>/summary.json); remove it from `retired`")
            by_key.setdefault(key, json.loads(path.read_text()))
    for table in (config.get("tables") or {}).values():
        lines += model_table(table, by_key)
    current = {r["key"] for r in rows}
    retired = [by_key[k] for k in dict.fromkeys(k for t in (config.get("tables") or {}).values()
                                                 for k in t.get("retired") or []) if k not in current]
    lines += made_by(rows, retired)
    text = "\n".join(lines)
    (reports_dir / "README.md").write_text(text, encoding="utf-8")
    return {"index": reports_dir / "README.md", "markdown": text}


def write_report(reports_dir: Path, model_keys: list[str], *, models_dir: Path | None = None,
                 config: dict | None = None) -> dict:
    """Every model page, then the index (what the report_page@ stages and the report stage do)."""
    for key in model_keys:
        write_page(reports_dir, key, models_dir=models_dir)
    return write_index(reports_dir, model_keys, config)
