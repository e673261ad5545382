"""Tiny, deterministic fixtures in the real upstream formats (IDX gz, EMNIST .mat inside a zip).

Images depend on their label (a class-specific block at a class-specific place, plus noise), so
models can learn them; the class templates do not depend on ``seed``, so train and test sets
generated with different seeds agree. The block positions are not transpose-symmetric across
classes, so an orientation bug (a missing or extra transpose) swaps classes and is detectable.
"""
from __future__ import annotations

import hashlib
import io
import math
import zipfile
from pathlib import Path

import numpy as np

from tasks.formats.emnist_mat import write_emnist_mat
from tasks.formats.idx import write_idx
from tasks.formats.normalize import LETTERS

SIDE = 28

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
EMNIST_PREFIX = "emnist-letters"
EMNIST_GZIP_FILES = {
    "train_images": f"{EMNIST_PREFIX}-train-images-idx3-ubyte.gz",
    "train_labels": f"{EMNIST_PREFIX}-train-labels-idx1-ubyte.gz",
    "test_images": f"{EMNIST_PREFIX}-test-images-idx3-ubyte.gz",
    "test_labels": f"{EMNIST_PREFIX}-test-labels-idx1-ubyte.gz",
}
EMNIST_MAT_MEMBER = "matlab/emnist-letters.mat"
EMNIST_DECOY_MEMBER = "matlab/emnist-byclass.mat"
_ZIP_DATE = (2017, 4, 1, 0, 0, 0)


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------
# glyphs
# ---------------------------------------------------------------------------------------------
def make_glyph(kind: str) -> np.ndarray:
    """A 28×28 uint8 upright image of a known asymmetric glyph (255 ink on 0).

    - ``"L"``: vertical bar in columns 0..2 (rows 0..27) and horizontal bar in the bottom rows 25..27.
    - ``"F"``: vertical bar in columns 0..2, top bar in rows 0..2, shorter middle bar in rows 12..14.
    - ``"J"``: vertical bar in columns 25..27 (rows 0..27), short foot in bottom rows 25..27, columns 0..27.
    - ``"blank"``: all zero.
    None of L/F/J equals its own transpose or its left-right / up-down mirror.
    """
    g = np.zeros((SIDE, SIDE), dtype=np.uint8)
    if kind == "L":
        g[:, 0:3] = 255
        g[25:28, :] = 255
    elif kind == "F":
        g[:, 0:3] = 255
        g[0:3, :] = 255
        g[12:15, :18] = 255
    elif kind == "J":
        g[:, 25:28] = 255
        g[25:28, 8:] = 255
    elif kind == "blank":
        pass
    else:
        raise ValueError(f"unknown glyph {kind!r}: expected 'L', 'F', 'J' or 'blank'")
    return g


def emnist_store(upright: np.ndarray) -> np.ndarray:
    """Upright N×28×28 (or one 28×28) -> EMNIST storage: transposed and flattened (N×784 / 784)."""
    a = np.asarray(upright, dtype=np.uint8)
    if a.ndim == 2:
        return np.ascontiguousarray(a.T).reshape(SIDE * SIDE)
    return np.ascontiguousarray(a.transpose(0, 2, 1)).reshape(len(a), SIDE * SIDE)


# ---------------------------------------------------------------------------------------------
# learnable synthetic datasets
# ---------------------------------------------------------------------------------------------
def class_template(label: int, num_classes: int) -> np.ndarray:
    """The noiseless upright template of class ``label``: a bright block at a class-specific cell
    of a g×g grid (g = ceil(sqrt(num_classes))), plus a thin bar in row 26 from column 0 that marks
    "bottom" (so upright vs transposed differ even for diagonal cells)."""
    g = max(2, math.ceil(math.sqrt(num_classes)))
    cell = (SIDE - 2) // g
    r, c = divmod(int(label), g)
    t = np.zeros((SIDE, SIDE), dtype=np.uint8)
    t[r * cell + 1 : (r + 1) * cell, c * cell + 1 : (c + 1) * cell] = 220
    t[SIDE - 1, : 4 + (int(label) % 7)] = 160
    return t


def mnist_like(n: int, seed: int, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """``n`` upright images (N×28×28 uint8) and labels (uint8 0..num_classes-1), every class present
    when n >= num_classes (labels cycle through the classes, then are shuffled)."""
    if not 1 <= num_classes <= 36:
        raise ValueError("num_classes must be 1..36")
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % num_classes).astype(np.uint8)
    rng.shuffle(labels)
    templates = np.stack([class_template(k, num_classes) for k in range(num_classes)]).astype(np.int16)
    noise = rng.integers(0, 40, size=(n, SIDE, SIDE), dtype=np.int16)
    gain = rng.integers(-25, 26, size=(n, 1, 1), dtype=np.int16)
    imgs = templates[labels] + noise + np.where(templates[labels] > 0, gain, 0)
    return np.clip(imgs, 0, 255).astype(np.uint8), labels


def emnist_like(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """EMNIST-letters-like data as stored upstream: images N×784 uint8 (each row an image transposed,
    i.e. column-major) and labels uint8 1..26. ``tasks.formats.normalize.emnist_upright`` recovers
    ``mnist_like(n, seed, 26)[0]``."""
    upright, labels = mnist_like(n, seed, num_classes=len(LETTERS))
    return emnist_store(upright), (labels + 1).astype(np.uint8)


def letters_mapping() -> np.ndarray:
    """NIST's emnist-letters mapping: rows (label, uppercase ASCII, lowercase ASCII)."""
    k = np.arange(1, 27)
    return np.stack([k, 64 + k, 96 + k], axis=1)


# ---------------------------------------------------------------------------------------------
# on-disk fixtures
# ---------------------------------------------------------------------------------------------
def write_mnist_dir(directory, n_train: int = 60, n_test: int = 20, seed: int = 0) -> dict[str, str]:
    """Write the four MNIST IDX gz files into ``directory``; return {file name: sha256}."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tr_x, tr_y = mnist_like(n_train, seed)
    te_x, te_y = mnist_like(n_test, seed + 1)
    arrays = {
        MNIST_FILES["train_images"]: tr_x,
        MNIST_FILES["train_labels"]: tr_y,
        MNIST_FILES["test_images"]: te_x,
        MNIST_FILES["test_labels"]: te_y,
    }
    out = {}
    for name, arr in arrays.items():
        write_idx(d / name, arr)
        out[name] = sha256_file(d / name)
    return out


def write_emnist_gzip_dir(directory, n_train: int = 104, n_test: int = 52, seed: int = 0, *,
                          include_test_images: bool = True) -> dict[str, str]:
    """Write EMNIST letters IDX gz files (images transposed as upstream, labels 1..26) into
    ``directory``; ``include_test_images=False`` omits the test images like the real mirror.
    Returns {file name: sha256}."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tr_x, tr_y = emnist_like(n_train, seed)
    te_x, te_y = emnist_like(n_test, seed + 1)
    arrays = {
        EMNIST_GZIP_FILES["train_images"]: tr_x.reshape(-1, SIDE, SIDE),
        EMNIST_GZIP_FILES["train_labels"]: tr_y,
        EMNIST_GZIP_FILES["test_labels"]: te_y,
    }
    if include_test_images:
        arrays[EMNIST_GZIP_FILES["test_images"]] = te_x.reshape(-1, SIDE, SIDE)
    out = {}
    for name, arr in arrays.items():
        write_idx(d / name, arr)
        out[name] = sha256_file(d / name)
    return out


def emnist_mat_bytes(n_train: int = 104, n_test: int = 52, seed: int = 0, tmp_dir=None) -> bytes:
    """The bytes of an emnist-letters.mat fixture (NIST layout, deterministic)."""
    import tempfile

    tr_x, tr_y = emnist_like(n_train, seed)
    te_x, te_y = emnist_like(n_test, seed + 1)
    with tempfile.TemporaryDirectory(dir=tmp_dir) as t:
        p = Path(t) / "emnist-letters.mat"
        write_emnist_mat(p, {"train": (tr_x, tr_y), "test": (te_x, te_y)}, letters_mapping())
        return p.read_bytes()


def write_emnist_mat_zip(zip_path, n_train: int = 104, n_test: int = 52, seed: int = 0, *,
                         decoy_bytes: int = 0, member: str = EMNIST_MAT_MEMBER) -> dict:
    """Write a zip like NIST's matlab.zip holding ``matlab/emnist-letters.mat`` (deflated).

    ``decoy_bytes > 0`` adds an incompressible (random, stored) ``matlab/emnist-byclass.mat``
    before the letters member, so a range fetch that reads only the one member is measurably
    smaller than the archive. Deterministic. Returns
    ``{"zip": path, "zip_sha256", "zip_bytes", "member", "member_sha256", "member_bytes", "decoy"}``.
    """
    zp = Path(zip_path)
    zp.parent.mkdir(parents=True, exist_ok=True)
    data = emnist_mat_bytes(n_train, n_test, seed, tmp_dir=zp.parent)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        if decoy_bytes > 0:
            zi = zipfile.ZipInfo(EMNIST_DECOY_MEMBER, date_time=_ZIP_DATE)
            zi.compress_type = zipfile.ZIP_STORED
            z.writestr(zi, np.random.default_rng(seed + 12345).bytes(decoy_bytes))
        zi = zipfile.ZipInfo(member, date_time=_ZIP_DATE)
        zi.compress_type = zipfile.ZIP_DEFLATED
        z.writestr(zi, data)
    blob = buf.getvalue()
    zp.write_bytes(blob)
    return {
        "zip": zp,
        "zip_sha256": sha256_bytes(blob),
        "zip_bytes": len(blob),
        "member": member,
        "member_sha256": sha256_bytes(data),
        "member_bytes": len(data),
        "decoy": EMNIST_DECOY_MEMBER if decoy_bytes > 0 else None,
    }
