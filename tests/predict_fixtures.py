"""Fixtures of the batch predict tests (tests/test_predict_batch.py, tests/test_predict_flow.py): tiny real
TFLite classifiers built here, and a folder of small real JPEG/PNG images in nested folders with the
files a real folder has besides (a text file, a hidden folder, an image without an extension, a
corrupt JPEG, a truncated one)."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

RGB_LABELS = ["red", "green", "blue"]
GREY_LABELS = ["zero", "one", "two", "three"]

# the images find_images must take, in its order (sorted paths; hidden and non-image files left out)
IMAGES = ["a/nested/deeper/wide.png", "a/red.jpg", "a/rgba.png", "b/blue.jpg", "b/grey.png", "b/no_extension",
          "b/truncated.jpg", "broken.jpg", "tiny.png"]
BROKEN = {"broken.jpg": "not an image", "truncated.jpg": "corrupt or truncated image"}


def rgb_int8(out_dir: Path) -> Path:
    """An int8 classifier of 16x16 RGB images (uint8 in, uint8 scores; 3 classes) whose labels live in
    its TFLite metadata only (no labels.txt beside it), as `tlpipe export` writes it."""
    import keras

    from tasks.evaluate.export import to_tflite_int8
    from tasks.evaluate.tflite_metadata import add_classifier_metadata

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((16, 16, 3), dtype="uint8"), keras.layers.Rescaling(1 / 255),
                              keras.layers.Conv2D(4, 3, activation="relu"), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(3, activation="softmax")])
    rng = np.random.default_rng(0)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "model_int8.tflite"
    path.write_bytes(to_tflite_int8(model, rng.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)))
    add_classifier_metadata(path, {"name": "tiny", "version": "1"}, RGB_LABELS)
    return path


def grey_float32(out_dir: Path) -> Path:
    """A float32 classifier of 28x28 greyscale images (4 classes) with a labels.txt beside it."""
    import keras

    from tasks.evaluate.export import to_tflite_float32

    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((28, 28, 1), dtype="uint8"), keras.layers.Rescaling(1 / 255),
                              keras.layers.Flatten(), keras.layers.Dense(4, activation="softmax")])
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "model_float32.tflite"
    path.write_bytes(to_tflite_float32(model))
    (out_dir / "labels.txt").write_text("".join(f"{n}\n" for n in GREY_LABELS))
    return path


def _jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def photo_folder(root: Path) -> Path:
    """Small real images in nested folders, plus what must be skipped or reported (see IMAGES)."""
    rng = np.random.default_rng(0)

    def noise(h, w, c=3):
        return rng.integers(0, 256, (h, w, c) if c > 1 else (h, w), dtype=np.uint8)

    for d in ("a/nested/deeper", "b", ".hidden"):
        (root / d).mkdir(parents=True, exist_ok=True)
    red = np.zeros((24, 32, 3), np.uint8)
    red[..., 0] = 220
    (root / "a/red.jpg").write_bytes(_jpeg(Image.fromarray(red)))
    Image.fromarray(noise(12, 40)).save(root / "a/nested/deeper/wide.png")
    Image.fromarray(noise(20, 20, 4), "RGBA").save(root / "a/rgba.png")
    blue = np.zeros((48, 48, 3), np.uint8)
    blue[..., 2] = 200
    (root / "b/blue.jpg").write_bytes(_jpeg(Image.fromarray(blue)))
    Image.fromarray(noise(30, 30, 1), "L").save(root / "b/grey.png")
    Image.fromarray(noise(16, 16)).save(root / "b/no_extension", format="PNG")  # found by its first bytes
    whole = _jpeg(Image.fromarray(noise(64, 64)))
    (root / "b/truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (root / "broken.jpg").write_bytes(b"this is not a JPEG at all\n" * 4)
    Image.fromarray(noise(2, 2)).save(root / "tiny.png")  # far smaller than either model's input
    (root / "b/notes.txt").write_text("not an image\n")
    (root / "b/.DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    Image.fromarray(noise(16, 16)).save(root / ".hidden/skipped.png")
    return root
