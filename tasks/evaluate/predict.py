"""Predict with an exported TFLite model: `tlpipe predict MODEL.tflite IMAGE...`, and the batch path
`tlpipe predict MODEL DIR_OR_FILES... --out predictions.parquet` (`predict_to_parquet`, which the
Prefect deployment `predict-folder` (flows/predict.py) runs too).

Labels come from `labels.txt` beside the model (line i = class id i), else from the model's own
TFLite metadata (its TENSOR_AXIS_LABELS file, which export packs into every .tflite). Images are read
with PIL, turned upright by their EXIF orientation, transparency composited on white (as prepare
does), converted to the model's channels (greyscale for 1), resized to its input size (a big JPEG is
decoded at a reduced scale first, never below the input size), fed as raw pixels (quantised when the
input tensor is int8/uint8 with a scale).

The batch path finds the images under folders (recursively; by extension, or by their first bytes
for a file without a known one; hidden files and folders skipped; a file named on the command line is
always taken), decodes them in a thread pool while the interpreter (num_threads = the cores) runs the
batch before, keeps about `AHEAD` + 2 batches of pixels in memory whatever the number of images, and
streams one Parquet row per image (path, top-k labels and scores, the image's size, the model's
sha256, and for an image that could not be read, the reason in `error`) into a temp file renamed over
`out` at the end.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from tasks.core.hashing import sha256_file
from tasks.core import progress as core_progress
from tasks.core.io import atomic_path
from tasks.core.sniff import describe
from tasks.evaluate.export import dequantize_output, make_interpreter, quantize_input

log = logging.getLogger(__name__)
TINY = 4  # warn when an input is more than this many times smaller than the model's input (each side)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
BATCH_SIZE = 16   # images per interpreter call (8-16: the least CPU per image on MobileNetV2 0.35 int8)
AHEAD = 2         # batches decoded ahead of the one the interpreter runs: memory is (AHEAD + 1) batches
ROW_GROUP = 8192  # Parquet rows buffered before they are written out
ALPHA = ("RGBA", "LA", "PA", "RGBa", "La")
ORIENTATION = 0x0112  # the EXIF tag


def cores() -> int:
    """The CPUs this process may run on (its affinity / cgroup share), not the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def open_model(tflite_path: Path, num_threads: int = 1):
    """The interpreter of a .tflite file; a missing or invalid file is an error naming it."""
    path = Path(tflite_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file (expected a .tflite written by `tlpipe export`)")
    try:
        return make_interpreter(path, num_threads)
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


def _io(interp, labels: list[str], tflite_path: Path):
    """(input detail, output detail, (h, w, c), outputs) of a classifier, its labels checked."""
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    _, h, w, c = (int(d) for d in inp["shape"])
    n_out = int(out["shape"][-1])
    if len(labels) < n_out:
        raise ValueError(f"{Path(tflite_path).with_name('labels.txt')}: {len(labels)} labels for the {n_out} outputs "
                         f"of {tflite_path}; it needs one line per class (rerun `tlpipe export` to rewrite it)")
    return inp, out, (h, w, c), n_out


def _pixels(img, height: int, width: int, channels: int) -> np.ndarray:
    """An open PIL image as the model's uint8 [H, W, C]: upright, on white, greyscaled, resized."""
    from PIL import Image, ImageOps

    side = max(width, height)
    if img.format in ("JPEG", "MPO") and min(img.size) >= 2 * side:
        img.draft("L" if channels == 1 else "RGB", (side, side))  # DCT scaling by 1/2..1/8, still >= the input
    try:
        turned = img.getexif().get(ORIENTATION) not in (None, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block is not a broken image: no turn
        turned = False
    if turned:
        img = ImageOps.exif_transpose(img)
    if img.mode in ALPHA or "transparency" in img.info:
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    img = img.convert("L" if channels == 1 else "RGB")
    if img.size != (width, height):
        img = img.resize((width, height), Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[..., None] if channels == 1 else arr


def load_image(path: Path, height: int, width: int, channels: int) -> np.ndarray:
    """uint8 [H, W, C] pixels of an image file, greyscaled / resized to the model's input."""
    from PIL import Image

    with Image.open(path) as img:
        return _pixels(img, height, width, channels)


def image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as img:
        return img.size


def predict(tflite_path: Path, image_paths: list, top_k: int = 3) -> list[dict]:
    """For each image: `{"image", "top": [{"label", "score"}, ...]}`, best first; an image that cannot
    be read gets `{"image", "error"}` instead (the others are still classified). One image at a time
    (the printed `tlpipe predict`); `predict_to_parquet` is the batch path."""
    if int(top_k) < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    interp = open_model(tflite_path)
    labels = read_labels(tflite_path)
    inp, out, (h, w, c), _ = _io(interp, labels, tflite_path)
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


# ---------------------------------------------------------------- the batch path


def looks_like_image(head: bytes) -> bool:
    """Whether a file's first bytes are those of an image PIL reads (JPEG, PNG, GIF, BMP, WebP, TIFF)."""
    return (head.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*"))
            or (head[:2] == b"BM" and len(head) >= 14)
            or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"))


def is_image_file(path: Path) -> bool:
    """An image by its extension, or, for a file without a known one, by its first bytes."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            return looks_like_image(f.read(16))
    except OSError:
        return False


def find_images(inputs) -> list[Path]:
    """The image files of `inputs`, in order: a folder's images recursively (sorted by path, hidden
    files and folders skipped, symlinked folders not followed), a named file as it is (even one that
    is missing or is no image: its row says why)."""
    found = []
    for item in inputs:
        item = Path(item)
        if not item.is_dir():
            found.append(item)
            continue
        inside = []
        for top, dirs, files in os.walk(item):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in files:
                path = Path(top) / name
                if not name.startswith(".") and path.is_file() and is_image_file(path):
                    inside.append(path)
        found += sorted(inside)
    return found


def read_image(path: Path, height: int, width: int, channels: int):
    """(pixels, (width, height) of the file, None) or (None, None, the reason it cannot be read)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            size = img.size
            return _pixels(img, height, width, channels), size, None
    except FileNotFoundError:
        return None, None, "no such file"
    except IsADirectoryError:
        return None, None, "a folder, not an image"
    except PermissionError as e:
        return None, None, f"not readable ({e.strerror})"
    except UnidentifiedImageError:
        try:
            with open(path, "rb") as f:
                head = f.read(16)
        except OSError:
            head = b""
        return None, None, f"not an image (PIL cannot identify it; the file is {describe(head)})"
    except Image.DecompressionBombError as e:
        return None, None, f"too many pixels ({' '.join(str(e).split())})"
    except MemoryError:
        return None, None, "needs more memory than is available to decode"
    except Exception as e:  # noqa: BLE001 - any decoder failure is this image's, never the run's
        return None, None, f"corrupt or truncated image ({type(e).__name__}: {' '.join(str(e).split())})"


def _to_input(batch: np.ndarray, detail: dict) -> np.ndarray:
    """The batch as the input tensor takes it; raw uint8 pixels pass as they are (scale 1, zero 0)."""
    scale, zero = detail["quantization"]
    if detail["dtype"] == np.uint8 and (not scale or (scale == 1.0 and zero == 0)):
        return batch
    return quantize_input(batch, detail)


class Progress:
    """What a batch run shows between its start and end lines: `bar` a live bar (tqdm, on stderr; for
    a terminal), `lines` a line about every `every_s` seconds (default: the stages' interval,
    TLPIPE_PROGRESS_INTERVAL, tasks/core/progress.py; for logs: never one per batch), `quiet` nothing.

    Not tasks/core/progress.Progress itself: a batch run's lines count the images that failed and go
    through `emit` (the CLI's stdout with its `tlpipe predict:` prefix, the Prefect flow's logger), not
    to stderr; the mode and the interval are the stages' own (`mode_for_stages`, `core_progress.interval`)."""

    MODES = ("bar", "lines", "quiet")

    def __init__(self, total: int, mode: str, emit=print, every_s: float | None = None, clock=time.monotonic):
        if mode not in self.MODES:
            raise ValueError(f"progress must be one of {', '.join(self.MODES)}, got {mode!r}")
        every_s = core_progress.interval() if every_s is None else float(every_s)
        self.total, self.mode, self.emit, self.every_s, self.clock = total, mode, emit, every_s, clock
        self.start = clock()
        self.next_at = self.start + self.every_s
        self.bar = None
        if mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="img", file=sys.stderr, dynamic_ncols=True, leave=False,
                            smoothing=0.1)

    def update(self, done: int, failed: int) -> None:
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
            if failed:
                self.bar.set_postfix_str(f"{failed} failed", refresh=False)
        elif self.mode == "lines":
            now = self.clock()
            if now >= self.next_at:
                self.emit(self.line(done, failed, now - self.start))
                self.next_at = now + self.every_s

    def line(self, done: int, failed: int, seconds: float) -> str:
        rate = done / seconds if seconds > 0 else 0.0
        left = f", about {_duration((self.total - done) / rate)} left" if rate > 0 and done < self.total else ""
        pct = 100 * done // self.total if self.total else 100
        return f"{done}/{self.total} images ({pct}%), {rate:.0f} images/s, {failed} failed{left}"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def mode_for_stages() -> str:
    """The Progress mode the stages would use here (tasks/core/progress.mode: quiet under `tlpipe -q`,
    a bar on a terminal, lines in a log), in this module's names."""
    return {"off": "quiet", "bar": "bar", "log": "lines"}[core_progress.mode()]


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds / 3600:.1f} h"


def _schema(meta: dict):
    import pyarrow as pa

    return pa.schema([("path", pa.string()), ("label", pa.string()), ("score", pa.float32()),
                      ("labels", pa.list_(pa.string())), ("scores", pa.list_(pa.float32())),
                      ("width", pa.int32()), ("height", pa.int32()), ("error", pa.string()),
                      ("model_sha256", pa.string())],
                     metadata={"tlpipe": json.dumps(meta)})


def predict_to_parquet(tflite_path: Path, inputs, out: Path, *, top_k: int = 3, batch_size: int = BATCH_SIZE,
                       threads: int | None = None, progress: str = "lines", emit=print, every_s: float | None = None,
                       setup=contextlib.nullcontext) -> dict:
    """Classify every image of `inputs` (files and folders, see `find_images`) into the Parquet file
    `out`, one row per image in that order; returns the run's summary (images, classified, failed, ...).

    `threads`: decoding threads and the interpreter's num_threads (default: the cores); `progress`,
    `every_s` (default TLPIPE_PROGRESS_INTERVAL's): see `Progress`; `emit(line)`: where the start, progress and end
    lines go (print, a logger); `setup`: a context manager around loading the model (the CLI's:
    LiteRT's native notice off).
    An image that cannot be read is a row with its reason in `error` and does not stop the run; a
    missing or invalid model, labels that do not fit it, or no image at all is an error before any
    work. `out` is written atomically (a temp file beside it, renamed at the end)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if int(top_k) < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    tflite_path, out = Path(tflite_path), Path(out)
    threads = int(threads or cores())
    inputs = [Path(i) for i in inputs]
    start = time.perf_counter()
    with setup():
        interp = open_model(tflite_path, threads)
        labels = read_labels(tflite_path)
        inp, outd, (h, w, c), n_out = _io(interp, labels, tflite_path)
    paths = find_images(inputs)
    if not paths:
        raise FileNotFoundError(f"no image files in {', '.join(map(str, inputs))} (looked for "
                                f"{', '.join(IMAGE_SUFFIXES)} and files whose first bytes are an image's)")
    batch = min(int(batch_size), len(paths))
    with setup():
        interp.resize_tensor_input(inp["index"], [batch, h, w, c])
        interp.allocate_tensors()
    sha = sha256_file(tflite_path)
    k = min(int(top_k), n_out)
    dtype = np.dtype(inp["dtype"]).name
    emit(f"{len(paths)} images -> {out} (model {tflite_path.name} sha256 {sha[:12]}, input {h}x{w}x{c} {dtype}, "
         f"{n_out} labels, top {k}, batches of {batch}, {threads} threads)")
    meta = {"model": tflite_path.name, "model_sha256": sha, "top_k": k, "input": [h, w, c], "input_dtype": dtype,
            "labels": labels[:n_out]}
    schema = _schema(meta)
    columns = {name: [] for name in schema.names}
    shown = Progress(len(paths), progress, emit, every_s)
    done = failed = tiny = 0
    pixels = np.zeros((batch, h, w, c), np.uint8)

    def flush(writer):
        writer.write_table(pa.table(columns, schema=schema))
        for v in columns.values():
            v.clear()

    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="predict-decode")
    try:
        with atomic_path(out) as tmp, pq.ParquetWriter(tmp, schema) as writer:
            chunks = (paths[i:i + batch] for i in range(0, len(paths), batch))
            pending = deque()
            for chunk in chunks:  # fill the pipeline: AHEAD batches decoding
                pending.append([(p, pool.submit(read_image, p, h, w, c)) for p in chunk])
                if len(pending) >= AHEAD:
                    break
            while pending:
                current = pending.popleft()
                nxt = next(chunks, None)
                if nxt is not None:
                    pending.append([(p, pool.submit(read_image, p, h, w, c)) for p in nxt])
                good, rows = [], []
                for path, future in current:
                    arr, size, error = future.result()
                    if error is None:
                        pixels[len(good)] = arr
                        good.append(len(rows))
                        if size[0] * TINY < w or size[1] * TINY < h:
                            tiny += 1
                    rows.append((str(path), size, error))
                if good:
                    pixels[len(good):] = 0  # a short batch is padded; its extra outputs are dropped
                    interp.set_tensor(inp["index"], _to_input(pixels, inp))
                    interp.invoke()
                    scores = dequantize_output(interp.get_tensor(outd["index"]), outd)[:len(good)]
                    best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
                    top = np.take_along_axis(scores, best, axis=1)
                slot = {row: j for j, row in enumerate(good)}
                for i, (path, size, error) in enumerate(rows):
                    columns["path"].append(path)
                    columns["model_sha256"].append(sha)
                    columns["error"].append(error)
                    columns["width"].append(size[0] if size else None)
                    columns["height"].append(size[1] if size else None)
                    if error is None:
                        j = slot[i]
                        names = [labels[int(x)] for x in best[j]]
                        columns["label"].append(names[0])
                        columns["score"].append(float(top[j, 0]))
                        columns["labels"].append(names)
                        columns["scores"].append(top[j].tolist())
                    else:
                        failed += 1
                        for name in ("label", "score", "labels", "scores"):
                            columns[name].append(None)
                done += len(rows)
                if len(columns["path"]) >= ROW_GROUP:
                    flush(writer)
                shown.update(done, failed)
            if columns["path"]:
                flush(writer)
    finally:
        shown.close()
        pool.shutdown(wait=True, cancel_futures=True)
    seconds = time.perf_counter() - start
    rate = done / seconds if seconds > 0 else 0.0
    if tiny:
        log.warning("%d images are far smaller than the model's %dx%d input (less than 1/%d of a side): their "
                    "predictions are unreliable (see the width and height columns of %s)", tiny, w, h, TINY, out)
    emit(f"done in {seconds:.1f} s: {done} images, {done - failed} classified, {failed} failed, "
         f"{rate:.0f} images/s -> {out}")
    return {"out": str(out), "images": done, "classified": done - failed, "failed": failed, "tiny": tiny,
            "seconds": round(seconds, 3), "images_per_s": round(rate, 1), "model": str(tflite_path),
            "model_sha256": sha, "top_k": k, "batch_size": batch, "threads": threads}
