"""Predict with an exported TFLite model: `tlpipe predict MODEL.tflite IMAGE...`.

Labels come from `labels.txt` beside the model (line i = class id i), else from the model's own
TFLite metadata (its TENSOR_AXIS_LABELS file, which export packs into every .tflite). Images are read with PIL,
converted to the model's channels (greyscale for 1), resized to its input size, fed as raw pixels
(quantised when the input tensor is int8/uint8 with a scale).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from tasks.evaluate.export import dequantize_output, make_interpreter, quantize_input

log = logging.getLogger(__name__)
TINY = 4  # warn when an input is more than this many times smaller than the model's input (each side)


def open_model(tflite_path: Path):
    """The interpreter of a .tflite file; a missing or invalid file is an error naming it."""
    path = Path(tflite_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file (expected a .tflite written by `tlpipe export`)")
    try:
        return make_interpreter(path)
    except (ValueError, RuntimeError) as e:
        raise ValueError(f"{path}: not a valid TFLite model ({' '.join(str(e).split())})") from e


def read_labels(tflite_path: Path) -> list[str]:
    """The sidecar labels.txt when there is one, else the labels inside the model's metadata."""
    from tasks.evaluate.tflite_metadata import labels_from_model

    path = Path(tflite_path).with_name("labels.txt")
    if path.exists():
        return path.read_text(encoding="utf-8").splitlines()
    labels = labels_from_model(tflite_path)
    if labels is None:
        raise FileNotFoundError(f"{path}: no labels.txt beside the model, and {tflite_path} carries no "
                                "labels in its TFLite metadata (tlpipe export writes both)")
    return labels


def load_image(path: Path, height: int, width: int, channels: int) -> np.ndarray:
    """uint8 [H, W, C] pixels of an image file, greyscaled / resized to the model's input."""
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("L" if channels == 1 else "RGB")
        if img.size != (width, height):
            img = img.resize((width, height), Image.Resampling.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
    return arr[..., None] if channels == 1 else arr


def image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as img:
        return img.size


def predict(tflite_path: Path, image_paths: list, top_k: int = 3) -> list[dict]:
    """For each image: `{"image", "top": [{"label", "score"}, ...]}`, best first; an image that cannot
    be read gets `{"image", "error"}` instead (the others are still classified)."""
    if int(top_k) < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    interp = open_model(tflite_path)
    labels = read_labels(tflite_path)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    _, h, w, c = (int(d) for d in inp["shape"])
    n_out = int(out["shape"][-1])
    if len(labels) < n_out:
        raise ValueError(f"{Path(tflite_path).with_name('labels.txt')}: {len(labels)} labels for the {n_out} outputs "
                         f"of {tflite_path}; it needs one line per class (rerun `tlpipe export` to rewrite it)")
    interp.resize_tensor_input(inp["index"], [1, h, w, c])
    interp.allocate_tensors()
    results = []
    for path in image_paths:
        try:
            iw, ih = image_size(path)
            pixels = load_image(path, h, w, c)
        except FileNotFoundError:
            results.append({"image": str(path), "error": "no such file"})
            continue
        except (OSError, ValueError) as e:  # PIL's UnidentifiedImageError is an OSError
            results.append({"image": str(path), "error": f"not a readable image ({' '.join(str(e).split())})"})
            continue
        if iw * TINY < w or ih * TINY < h:
            log.warning("%s is %dx%d pixels, far smaller than the model's %dx%d input: the prediction is "
                        "unreliable", path, iw, ih, w, h)
        interp.set_tensor(inp["index"], quantize_input(pixels[None], inp))
        interp.invoke()
        scores = dequantize_output(interp.get_tensor(out["index"]), out)[0]
        best = np.argsort(-scores, kind="stable")[:top_k]
        results.append({"image": str(path),
                        "top": [{"label": labels[i], "score": float(scores[i])} for i in best]})
    return results


def format_predictions(results: list[dict]) -> str:
    """Human-readable lines for the CLI."""
    lines = []
    for r in results:
        lines.append(r["image"])
        if "error" in r:
            lines.append(f"  error: {r['error']}")
            continue
        lines += [f"  {t['label']:>12}  {t['score']:.4f}" for t in r["top"]]
    return "\n".join(lines)
