"""reports/data/<key>/README.md: the counts, the verdict, image grids of each kind of finding (pairs side
by side, each label issue with its given and suggested class) and the class-balance chart."""
from __future__ import annotations

from pathlib import Path

import numpy as np

GRID = {"pairs": 12, "label_issue": 20, "outlier": 12}  # findings shown per grid, best-ranked first


def _pairs(rows):  # the strongest pairs first: conflicts, then leaks, then the rest, by score
    ranked = [r for r in rows if r["kind"] in ("duplicate", "label_conflict")]
    return sorted(ranked, key=lambda r: (r["kind"] != "label_conflict", r["split"] == r["other_split"], -r["score"]))


def write(out: Path, key: str, summary: dict, rows: list[dict], processed_dir: Path, manifest: dict, s: dict) -> None:
    pairs = _pairs(rows)[:GRID["pairs"]]
    issues = [r for r in rows if r["kind"] == "label_issue"][:GRID["label_issue"]]
    odd = sorted((r for r in rows if r["kind"] == "outlier"), key=lambda r: -r["score"])[:GRID["outlier"]]
    wanted = {r["source_id"] for r in pairs + issues + odd} | {r["other_source_id"] for r in pairs}
    images = load_images(processed_dir, manifest, wanted)
    grid(out / "pairs.png", [(images[r["source_id"]], images[r["other_source_id"]],
                              f"{r['kind']}: {r['label_name']} ({r['split']}) | {r['other_label_name']} "
                              f"({r['other_split']}); {r['detail']}") for r in pairs], "pairs (left | right)")
    grid(out / "label_issues.png", [(images[r["source_id"]], None,
                                     f"{r['source_id']}: given {r['label_name']}, suggested "
                                     f"{r['suggested_label_name']} (quality {r['score']:.3f})") for r in issues],
         "label issues, lowest label quality first")
    grid(out / "outliers.png", [(images[r["source_id"]], None, f"{r['source_id']}: {r['detail']}") for r in odd],
         "outliers")
    balance_chart(out / "balance.png", summary["balance"])
    (out / "README.md").write_text(markdown(key, summary, rows, pairs, issues, odd, s), encoding="utf-8")


def load_images(processed_dir: Path, manifest: dict, wanted: set[str]) -> dict[str, np.ndarray]:
    """The stored images of `wanted` source ids (a second pass over the shards, keeping only those)."""
    from tasks.records.shards import read_split

    out = {}
    if not wanted:
        return out
    for split in manifest["splits"]:
        for x, _, sid in read_split(processed_dir, split, batch_size=256, manifest=manifest, with_ids=True):
            for img, i in zip(x.numpy(), sid.numpy()):
                if i.decode() in wanted:
                    out[i.decode()] = img
    return out


def grid(path: Path, items: list[tuple], title: str) -> None:
    """One row per finding: the image (and its pair) with a caption under it."""
    import matplotlib
    matplotlib.use("Agg")
    import textwrap

    import matplotlib.pyplot as plt

    cols = 2 if any(b is not None for _, b, _ in items) else 4
    per_row = 1 if cols == 2 else 4
    n_rows = max(1, -(-len(items) // per_row))
    fig, axes = plt.subplots(n_rows, cols, figsize=(2.6 * cols, 2.9 * n_rows), squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for k, (a, b, caption) in enumerate(items):
        row, col = (k, 0) if per_row == 1 else divmod(k, per_row)
        shown = [a, b] if per_row == 1 else [a]
        for c, img in enumerate(shown):
            if img is None:
                continue
            ax = axes[row, col + c]
            ax.imshow(np.squeeze(img), cmap="gray", vmin=0, vmax=255)
        axes[row, col].set_title("\n".join(textwrap.wrap(caption, 34 if per_row == 1 else 30))[:400], fontsize=7,
                                 loc="left")
    fig.suptitle(title if items else f"{title}: none", fontsize=10)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def balance_chart(path: Path, balance: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = list(next(iter(balance.values()))["per_class"]) if balance else []
    fig, ax = plt.subplots(figsize=(max(6.0, 0.18 * len(classes) + 2), 3.4), layout="constrained")
    x = np.arange(len(classes))
    width = 0.8 / max(1, len(balance))
    for k, (split, b) in enumerate(balance.items()):
        ax.bar(x + k * width, [b["per_class"][c] for c in classes], width, label=f"{split} ({b['count']})")
    ax.set_xticks(x + 0.4 - width / 2, classes, rotation=90, fontsize=6 if len(classes) > 20 else 8)
    ax.set_ylabel("examples")
    ax.set_title("examples per class and split")
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _table(rows: list[dict], columns: list[str]) -> list[str]:
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        out.append("| " + " | ".join("–" if r.get(c) is None else (f"{r[c]:.3f}" if isinstance(r[c], float) else
                                                                   str(r[c]).replace("|", "/")) for c in columns) + " |")
    return out


def markdown(key: str, summary: dict, rows: list[dict], pairs, issues, odd, s: dict) -> str:
    c = summary["counts"]
    verdict = "**PASS**" if summary["verdict"] == "pass" else "**FAIL**: " + "; ".join(summary["reasons"])
    lines = [f"# Data check: {key}", "",
             f"{summary['examples']:,} examples ({summary['kind']}); verdict {verdict}. Made by `check@{key}` "
             f"in {summary['seconds']} s; every finding is a row of `findings.parquet`.", "",
             "| finding | count |", "|---|---|",
             *[f"| {k.replace('_', ' ')} | {c[k]:,} |" for k in c],
             *[f"| leak {pair} | {n:,} |" for pair, n in sorted(summary["leaks"].items())], "",
             f"Pairs: {summary['method']['pairs']}. Label issues: {summary['method']['labels']} (out-of-sample "
             f"accuracy {summary['out_of_sample_accuracy']:.2%}), ranked by {summary['method']['ranking']}.", "",
             f"To fix without touching your files: list `source_id`s under `prepare.{key}.drop`, or map them to "
             f"their right class under `prepare.{key}.relabel`; the next `prepare@{key}` applies them and records "
             f"them in its manifest. Thresholds: `check.{key}`.", ""]
    if s.get("notes"):
        lines += ["## Reviewed by eye", "", str(s["notes"]).strip(), ""]
    lines += ["## Class balance", "", "| split | examples | smallest class | largest class | largest / smallest |",
              "|---|---|---|---|---|"]
    for split, b in summary["balance"].items():
        lines.append(f"| {split} | {b['count']:,} | {b['smallest']['class']} ({b['smallest']['count']}) | "
                     f"{b['largest']['class']} ({b['largest']['count']}) | {b['ratio']} |")
    lines += ["", "![balance](balance.png)", "", f"## Pairs ({c['duplicate'] + c['label_conflict']:,})", "",
              "![pairs](pairs.png)", "",
              *_table(pairs, ["kind", "source_id", "split", "other_source_id", "other_split", "detail"]), "",
              f"## Label issues ({c['label_issue']:,}; the {len(issues)} lowest label quality)", "",
              "![label issues](label_issues.png)", "",
              *_table(issues, ["source_id", "split", "label_name", "suggested_label_name", "score", "detail"]), "",
              f"## Outliers ({c['outlier']:,})", "", "![outliers](outliers.png)", "",
              *_table(odd, ["source_id", "split", "label_name", "detail"]), ""]
    return "\n".join(lines)
