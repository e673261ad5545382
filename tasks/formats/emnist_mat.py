"""EMNIST's MATLAB form (``matlab/emnist-<split>.mat`` inside NIST's ``matlab.zip``).

Documented layout: a 1×1 struct ``dataset`` with fields ``train``, ``test`` and ``mapping``;
``train``/``test`` are 1×1 structs with ``images`` (N×784 uint8, each row one image stored
column-major, i.e. transposed), ``labels`` (N×1) and ``writers`` (N×1). ``mapping`` is K×2 or
K×3 (label, ASCII code[, second ASCII code]).

Images are returned exactly as stored (N×784, *not* transposed); see
:func:`tasks.formats.normalize.emnist_upright`.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import scipy.io

from tasks.core.io import atomic_file
from tasks.core.sniff import describe

__all__ = ["MatFormatError", "read_emnist_mat", "write_emnist_mat", "SPLITS"]

SPLITS = ("train", "test")
PIXELS = 28 * 28
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_FIXED_HEADER = b"MATLAB 5.0 MAT-file, written by tlpipe (tasks.formats.emnist_mat)".ljust(116, b" ")


class MatFormatError(ValueError):
    """A file is not an EMNIST .mat file of the documented layout; the message names file and field."""

    def __init__(self, path, message: str):
        self.path = str(path)
        super().__init__(f"{self.path}: {message}")


def _sniff(path: Path) -> None:
    """Reject what scipy cannot read, or reads confusingly, with a precise message."""
    with open(path, "rb") as f:
        head = f.read(128)
        f.seek(512)
        at512 = f.read(8)
    expected = "expected a MATLAB v5/v7 MAT-file (header text 'MATLAB 5.0 MAT-file')"
    if head.startswith(b"MATLAB 7.3") or head.startswith(_HDF5_MAGIC) or at512 == _HDF5_MAGIC:
        raise MatFormatError(
            path, f"MAT v7.3 (HDF5) files are not supported: {expected}; re-save with save(..., '-v7')"
        )
    if not head.startswith(b"MATLAB"):
        found = describe(head)
        found += " (extract the .mat member first)" if found == "a zip archive" else ""
        raise MatFormatError(path, f"not a MAT-file: {expected}, found {found}")
    if len(head) < 128:
        raise MatFormatError(path, f"truncated MAT-file: {expected} with a 128-byte header, found {len(head)} bytes")


def _unwrap(obj):
    """A MATLAB 1×1 struct/cell as loaded by scipy -> the single element."""
    while isinstance(obj, np.ndarray) and obj.dtype == object and obj.size == 1:
        obj = obj.reshape(())[()]
    if isinstance(obj, np.ndarray) and obj.dtype.names is not None and obj.size == 1:
        obj = obj.reshape(())[()] if obj.ndim else obj[()]
    return obj


def _field(path: Path, obj, name: str, where: str):
    """Field ``name`` of struct ``obj`` (found at ``where``), robust to scipy's struct representations."""
    full = f"{where}.{name}" if where else name
    obj = _unwrap(obj)
    if isinstance(obj, dict):
        if name in obj:
            return obj[name]
    elif isinstance(obj, (np.void, np.ndarray)) and obj.dtype.names is not None:
        if obj.size != 1:
            raise MatFormatError(path, f"field {where or '<root>'} must be a 1×1 struct, found shape {obj.shape}")
        if name in obj.dtype.names:
            return obj[name]
    elif hasattr(obj, "_fieldnames"):  # scipy.io.matlab.mat_struct (struct_as_record=False)
        if name in obj._fieldnames:
            return getattr(obj, name)
    else:
        kind = type(obj).__name__ if not isinstance(obj, np.ndarray) else f"{obj.dtype} array {obj.shape}"
        raise MatFormatError(path, f"missing field {full}: {where or '<root>'} is not a struct (found {kind})")
    return _missing(path, full)


def _missing(path: Path, full: str):
    raise MatFormatError(path, f"missing field {full}")


def _images(path: Path, arr, where: str) -> np.ndarray:
    arr = np.asarray(_unwrap(arr))
    if arr.dtype == object or arr.dtype.names is not None or arr.dtype.kind not in "uif":
        raise MatFormatError(path, f"field {where} must be a numeric N×{PIXELS} array, found dtype {arr.dtype}")
    if arr.ndim == 1 and arr.size == PIXELS:
        arr = arr.reshape(1, PIXELS)
    if arr.ndim != 2 or arr.shape[1] != PIXELS:
        hint = " (transposed? expected one image per row)" if arr.ndim == 2 and arr.shape[0] == PIXELS else ""
        raise MatFormatError(path, f"field {where} must be N×{PIXELS}, found shape {arr.shape}{hint}")
    if arr.dtype != np.uint8:
        if arr.size and (
            not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 255 or not np.all(arr == np.round(arr))
        ):
            raise MatFormatError(path, f"field {where} must hold integer pixel values 0..255, found dtype {arr.dtype}")
        arr = arr.astype(np.uint8)
    return np.ascontiguousarray(arr)


def _labels(path: Path, arr, where: str) -> np.ndarray:
    arr = np.asarray(_unwrap(arr))
    if arr.dtype == object or arr.dtype.names is not None or arr.dtype.kind not in "buif":
        raise MatFormatError(path, f"field {where} must be a numeric N×1 array, found dtype {arr.dtype}")
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    elif arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise MatFormatError(path, f"field {where} must be N×1 (or 1×N), found shape {arr.shape}")
    if arr.dtype.kind == "f":
        if arr.size and (not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr))):
            raise MatFormatError(path, f"field {where} must hold integer labels, found non-integer values")
    return arr.astype(np.int64)


def _mapping(path: Path, arr, where: str) -> np.ndarray:
    arr = np.asarray(_unwrap(arr))
    if arr.dtype == object or arr.dtype.names is not None or arr.dtype.kind not in "uif":
        raise MatFormatError(path, f"field {where} must be a numeric K×2 or K×3 array, found dtype {arr.dtype}")
    if arr.ndim == 1 and arr.size in (2, 3):
        arr = arr.reshape(1, -1)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] not in (2, 3):
        raise MatFormatError(path, f"field {where} must be K×2 or K×3 (label, ASCII code...), found shape {arr.shape}")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise MatFormatError(path, f"field {where} must hold integers, found non-integer values")
    return arr.astype(np.int64)


def read_emnist_mat(path) -> dict:
    """Read an EMNIST ``.mat`` file into ``{"train": (images, labels), "test": (images, labels), "mapping": arr}``.

    ``images`` are N×784 uint8 exactly as stored (column-major, not transposed), ``labels`` are
    int64 of shape (N,), ``mapping`` is an int64 K×2/K×3 array. Raises :class:`MatFormatError`
    (a ``ValueError``) naming the file and the missing or ill-shaped field (e.g.
    ``dataset.train.labels``), for non-MAT files and for unsupported MAT v7.3 (HDF5) files.
    """
    path = Path(path)
    _sniff(path)
    try:
        mat = scipy.io.loadmat(path, variable_names=["dataset"], squeeze_me=False, struct_as_record=True)
    except MatFormatError:
        raise
    except NotImplementedError as e:  # scipy's v7.3 message
        raise MatFormatError(path, f"MAT v7.3 (HDF5) files are not supported ({e})") from e
    except (ValueError, TypeError, OSError, EOFError, KeyError, IndexError, AttributeError) as e:
        raise MatFormatError(path, f"cannot parse MAT-file ({type(e).__name__}: {e})") from e
    if "dataset" not in mat:
        raise MatFormatError(path, "missing field dataset (the MAT-file has no variable 'dataset')")
    dataset = mat["dataset"]
    out: dict = {}
    for split in SPLITS:
        where = f"dataset.{split}"
        s = _field(path, dataset, split, "dataset")
        images = _images(path, _field(path, s, "images", where), f"{where}.images")
        labels = _labels(path, _field(path, s, "labels", where), f"{where}.labels")
        if len(labels) != len(images):
            raise MatFormatError(
                path, f"field {where}.labels has {len(labels)} labels but {where}.images has {len(images)} images"
            )
        out[split] = (images, labels)
    out["mapping"] = _mapping(path, _field(path, dataset, "mapping", "dataset"), "dataset.mapping")
    return out


def write_emnist_mat(path, splits: dict, mapping, *, writers: dict | None = None, label_dtype="float64",
                     do_compression: bool = False) -> Path:
    """Write ``splits`` ({"train": (images N×784, labels N), "test": ...}) and ``mapping`` in NIST's layout.

    Images are written as given (callers store them column-major as EMNIST does); labels and writers
    as N×1 columns (``label_dtype``, NIST's files hold doubles). Written atomically; for test fixtures.
    """
    path = Path(path)
    dataset: dict = {}
    for name, (images, labels) in splits.items():
        images = np.asarray(images, dtype=np.uint8)
        if images.ndim == 3:
            images = images.reshape(len(images), -1)
        labels = np.asarray(labels).reshape(-1, 1).astype(label_dtype)
        w = writers.get(name) if writers else None
        w = np.zeros((len(labels), 1), dtype=np.float64) if w is None else np.asarray(w, np.float64).reshape(-1, 1)
        dataset[name] = {"images": images, "labels": labels, "writers": w}
    dataset["mapping"] = np.asarray(mapping, dtype=np.float64)
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"dataset": dataset}, format="5", do_compression=do_compression, oned_as="column")
    data = bytearray(buf.getvalue())
    data[:116] = _FIXED_HEADER  # scipy stamps the creation time there; keep fixtures byte-deterministic
    with atomic_file(path) as f:
        f.write(data)
    return path
