"""MediaPipe Tasks' ImageClassifier on an exported model over a prepared photo dataset's evaluation
split: its accuracy and its top-1 agreement with `tlpipe predict` (tasks.evaluate.predict), per .tflite
(every format export wrote: float32, float16, dynamic, int8, those of `export.formats`).

    python bench/mediapipe_check.py models/cards_phone_v2_035 data/processed/cards          # tflite/
    python bench/mediapipe_check.py models/cards_phone_v2_035/current data/processed/cards  # the blessed set

Prints a table and writes reports/bench/mediapipe_<model>.json.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np


def tflite_files(model_dir: Path) -> tuple[Path, list[str]]:
    """The folder of .tflite files (models/<key>/tflite/, or `model_dir` itself: current/) and the formats
    found there, in FORMATS order."""
    from tasks.evaluate.export import FORMATS, TFLITE_DIR, tflite_path

    for folder in (model_dir / TFLITE_DIR, model_dir):
        kinds = [k for k in FORMATS if tflite_path(folder, k).is_file()]
        if kinds:
            return folder, kinds
    raise FileNotFoundError(f"{model_dir}: no model_<format>.tflite here or in {model_dir / TFLITE_DIR} "
                            f"(formats: {', '.join(FORMATS)}); run `tlpipe export` first")


def main(model_dir: str, processed: str) -> dict:
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions
    from mediapipe.tasks.python.vision import ImageClassifier, ImageClassifierOptions

    from tasks.evaluate.export import TFLITE_DIR, tflite_path
    from tasks.evaluate.metrics import evaluation_split, load_arrays
    from tasks.evaluate.predict import predict
    from tasks.records.shards import load_manifest
    from PIL import Image

    model_dir, processed = Path(model_dir), Path(processed)
    folder, kinds = tflite_files(model_dir)
    split = evaluation_split(load_manifest(processed))
    images, labels, names, _ = load_arrays(processed, split, with_ids=True)
    key = model_dir.name if folder == model_dir / TFLITE_DIR else model_dir.parent.name
    out = {"model": key, "folder": str(folder), "split": split, "count": int(len(labels))}
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i, im in enumerate(images):  # PNG: lossless, both clients see the same pixels
            files.append(Path(tmp) / f"{i:05d}.png")
            Image.fromarray(im).save(files[-1])
        for kind in kinds:
            path = tflite_path(folder, kind)
            clf = ImageClassifier.create_from_options(ImageClassifierOptions(
                base_options=BaseOptions(model_asset_path=str(path)), max_results=1))
            mp_top = [clf.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(im)))
                      .classifications[0].categories[0].category_name for im in images]
            clf.close()
            ours = [r["top"][0]["label"] for r in predict(path, files, top_k=1)]
            truth = [names[y] for y in labels]
            out[kind] = {"mediapipe_accuracy": float(np.mean([a == b for a, b in zip(mp_top, truth)])),
                         "tlpipe_predict_accuracy": float(np.mean([a == b for a, b in zip(ours, truth)])),
                         "top1_agreement": float(np.mean([a == b for a, b in zip(mp_top, ours)]))}
    print(f"{'model':<24}{'tflite':<9}{'MediaPipe acc':>15}{'predict acc':>13}{'agreement':>11}")
    for kind in kinds:
        r = out[kind]
        print(f"{out['model']:<24}{kind:<9}{100 * r['mediapipe_accuracy']:>14.2f}%{100 * r['tlpipe_predict_accuracy']:>12.2f}%"
              f"{100 * r['top1_agreement']:>10.2f}%")
    dest = Path("reports/bench") / f"mediapipe_{out['model']}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main(*sys.argv[1:3])
