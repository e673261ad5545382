"""check@'s speed on real datasets, and the calibration of its "same picture" test on the real cards.

    python bench/check_bench.py --datasets cards mnist emnist_letters     # -> reports/bench/check.json
    python bench/check_bench.py --calibrate cards --samples 40            # -> reports/bench/check_calibration.json

Speed: `tasks.check.run.check` on each prepared dataset (data/processed/<key>/, after `dvc repro
prepare@<key>`), written to a temporary folder (reports/data/ stays the DAG's), wall time and examples/s.
The issue's budget is 10 minutes each on 2 cores for cards (7,886) and MNIST (70,000).

Calibration (one scan of the dataset): the out-of-sample accuracy of the label model on the pooled features
against the 2 x 2-grid ones the check uses; and the block difference (similar.picture_difference) of (a) copies made from `--samples` train
images (JPEG quality 40 and 75, brightness x1.25, a 5 % crop, a 3x downsize) against the image, and (b)
every cross-class candidate pair of the dataset (hash distance <= phash_max or cosine >= cosine_min among
the nearest neighbours), lowest first: the genuine label conflicts sit at the bottom of (b) and the
look-alikes of one deck above them; the threshold `pixel_max` separates (b)'s look-alikes from (a).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.core.io import write_json  # noqa: E402


def speed(keys: list[str]) -> dict:
    from tasks.check.run import CheckFailed, check
    from tasks.stages.project import Project

    project, out = Project(ROOT), {}
    params = project.params()
    for key in keys:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            try:
                summary = check(key, project.processed_dir(key), project.raw_dir(key), Path(tmp) / key,
                                (params.get("check") or {}).get(key) or {})
            except CheckFailed:
                summary = json.loads((Path(tmp) / key / "summary.json").read_text())
            seconds = time.perf_counter() - start
        out[key] = {"examples": summary["examples"], "seconds": round(seconds, 1),
                    "examples_per_s": round(summary["examples"] / seconds, 1), "counts": summary["counts"],
                    "verdict": summary["verdict"], "out_of_sample_accuracy": summary["out_of_sample_accuracy"]}
        print(f"{key}: {out[key]}", flush=True)
    return out


def calibrate(key: str, samples: int) -> dict:
    from PIL import Image, ImageEnhance

    from tasks.check import similar
    from tasks.check.run import scan, settings
    from tasks.records.shards import load_manifest, read_split
    from tasks.stages.project import Project

    project = Project(ROOT)
    processed = project.processed_dir(key)
    manifest = load_manifest(processed)
    s = settings((project.params().get("check") or {}).get(key))
    data = scan(processed, manifest, s, True)
    emb, hashes, thumbs, labels = data["embeddings"], data["hashes"], data["thumbs"], data["labels"]
    candidates = {(i, j) for i, j, _ in similar.close_hashes(hashes, int(s["phash_max"]))}
    idx, sim = similar.top_k(emb, int(s["neighbours"]))
    for i, (row, cos) in enumerate(zip(idx, sim)):
        candidates.update((min(i, int(j)), max(i, int(j))) for j, c in zip(row, cos) if c >= float(s["cosine_min"]))
    cross = sorted((similar.picture_difference(thumbs[i], thumbs[j]), data["ids"][i], data["ids"][j])
                   for i, j in candidates if labels[i] != labels[j])

    def jpeg(im, q):
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, "JPEG", quality=q)
        return np.asarray(Image.open(buf))

    size = manifest["image_shape"][0]
    c = round(size * 0.025)
    copies: dict[str, list[float]] = {}
    originals = []
    for x, _ in read_split(processed, "train", batch_size=64, manifest=manifest):
        originals += list(x.numpy()[::8])
        if len(originals) >= samples:
            break
    for im in originals[:samples]:
        pil = Image.fromarray(im)
        made = {"jpeg_q40": jpeg(im, 40), "jpeg_q75": jpeg(im, 75),
                "brightness_x1.25": np.asarray(ImageEnhance.Brightness(pil).enhance(1.25)),
                "crop_5pct": np.asarray(pil.crop((c, c, size - c, size - c)).resize((size, size), Image.Resampling.LANCZOS)),
                "downsize_3x": np.asarray(pil.resize((size // 3, size // 3)).resize((size, size)))}
        for name, copy in made.items():
            copies.setdefault(name, []).append(similar.picture_difference(similar.thumbnail(im), similar.thumbnail(copy)))
    limit = float(s["pixel_max"])
    from tasks.check.labels import cross_val_probs

    k, folds, seed = len(manifest["labels"]), int(s["folds"]), int(s["seed"])
    probe = {name: round(float(np.mean(cross_val_probs(x, labels, k, folds, seed).argmax(axis=1) == labels)), 4)
             for name, x in (("pooled", emb), ("grid_2x2", data["grid"]))}
    result = {"dataset": key, "pixel_max": limit, "samples": len(originals[:samples]),
              "label_model_out_of_sample_accuracy": probe,
              "copies": {k: {"max": round(max(v), 3), "median": round(float(np.median(v)), 3),
                             "found_at_pixel_max": round(float(np.mean(np.array(v) <= limit)), 3)}
                         for k, v in copies.items()},
              "cross_class_candidates": len(cross),
              "cross_class_at_or_below_pixel_max": [{"difference": round(d, 3), "a": a, "b": b}
                                                    for d, a, b in cross if d <= limit],
              "cross_class_quantiles": {q: round(float(np.quantile([d for d, _, _ in cross], float(q))), 3)
                                        for q in ("0", "0.01", "0.05", "0.5")} if cross else {}}
    print(json.dumps(result, indent=1))
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="*", default=[])
    ap.add_argument("--calibrate", metavar="KEY")
    ap.add_argument("--samples", type=int, default=40)
    args = ap.parse_args(argv)
    machine = {"cpus": os.cpu_count()}
    if args.datasets:
        write_json(ROOT / "reports/bench/check.json", {"what": "check@ on the real datasets", "machine": machine,
                                                       "results": speed(args.datasets)})
    if args.calibrate:
        write_json(ROOT / "reports/bench/check_calibration.json", calibrate(args.calibrate, args.samples))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
