"""IDX files (the MNIST / EMNIST format): a strict reader and a deterministic writer.

Layout (http://yann.lecun.com/exdb/mnist/): a 4-byte magic ``00 00 <type> <ndim>``, then
``ndim`` big-endian uint32 dimensions, then ``prod(dims)`` big-endian items of ``<type>``.
Files may be gzip-compressed; the reader detects that by the gzip magic bytes (``1f 8b``),
never by the file name.
"""
from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from tasks.core.io import atomic_file
from tasks.core.sniff import describe

__all__ = ["IdxError", "read_idx", "write_idx", "IDX_TYPES"]

GZIP_MAGIC = b"\x1f\x8b"
MAX_NDIM = 4
DEFAULT_MAX_BYTES = 4 << 30  # refuse to allocate more than this for a (possibly bogus) header

# type code -> (name, big-endian dtype)
IDX_TYPES: dict[int, tuple[str, np.dtype]] = {
    0x08: ("uint8", np.dtype(">u1")),
    0x09: ("int8", np.dtype(">i1")),
    0x0B: ("int16", np.dtype(">i2")),
    0x0C: ("int32", np.dtype(">i4")),
    0x0D: ("float32", np.dtype(">f4")),
    0x0E: ("float64", np.dtype(">f8")),
}
_CODE_BY_KIND = {(dt.kind, dt.itemsize): code for code, (_, dt) in IDX_TYPES.items()}

_CHUNK = 1 << 20


class IdxError(ValueError):
    """A file is not a valid IDX file; the message names the file and what was wrong."""

    def __init__(self, path, message: str):
        self.path = str(path)
        super().__init__(f"{self.path}: {message}")


def _read_exact(f, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        chunk = f.read(n - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _readinto_full(f, buf: memoryview) -> int:
    got = 0
    while got < len(buf):
        n = f.readinto(buf[got:])
        if not n:
            break
        got += n
    return got


def _count_rest(f) -> int:
    total = 0
    while True:
        chunk = f.read(_CHUNK)
        if not chunk:
            return total
        total += len(chunk)


def _what(ndim: int) -> str:
    return {1: "label data", 3: "image data"}.get(ndim, "data")


def read_idx(path, *, ndim: int | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed) into a native-endian, writable array of shape dims.

    ``ndim``: if given, the number of dimensions the caller expects (e.g. 3 for images, 1 for labels).
    ``max_bytes``: refuse headers that announce a larger payload (protects against garbage headers).

    Raises :class:`IdxError` (a ``ValueError``) naming the file for a bad magic, unsupported type,
    bad dimension count, a payload that is shorter or longer than the header announces, and a
    corrupt or truncated gzip stream. ``FileNotFoundError``/``OSError`` pass through unchanged.
    """
    path = Path(path)
    with open(path, "rb") as raw:
        sniff = raw.read(2)
        raw.seek(0)
        compressed = sniff == GZIP_MAGIC
        try:
            if compressed:
                with gzip.GzipFile(fileobj=raw, mode="rb") as f:
                    return _read_stream(path, f, ndim, max_bytes, compressed=True)
            return _read_stream(path, raw, ndim, max_bytes, compressed=False)
        except IdxError:
            raise
        except (EOFError, gzip.BadGzipFile, zlib.error) as e:
            raise IdxError(path, f"corrupt or truncated gzip stream ({e})") from e


def _read_stream(path: Path, f, want_ndim, max_bytes: int, *, compressed: bool) -> np.ndarray:
    gz = " (after gunzip)" if compressed else ""
    magic = _read_exact(f, 4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0:
        head = magic + _read_exact(f, 60) if len(magic) == 4 else magic
        raise IdxError(
            path, f"not an IDX file: expected a 4-byte magic 00 00 <type> <ndim>{gz}, found {describe(head)}"
        )
    code, nd = magic[2], magic[3]
    if code not in IDX_TYPES:
        known = ", ".join(f"0x{c:02X} {n}" for c, (n, _) in IDX_TYPES.items())
        raise IdxError(path, f"unknown IDX type code 0x{code:02X} in magic {magic.hex()}: expected one of {known}")
    if not 1 <= nd <= MAX_NDIM:
        raise IdxError(path, f"bad IDX dimension count {nd} in magic {magic.hex()}: expected 1..{MAX_NDIM}")
    if want_ndim is not None and nd != want_ndim:
        raise IdxError(path, f"expected a {want_ndim}-dimensional IDX file, found {nd} dimensions")
    header = _read_exact(f, 4 * nd)
    if len(header) < 4 * nd:
        raise IdxError(
            path, f"truncated header: expected {4 * nd} bytes of dimensions after the magic, found {len(header)}"
        )
    dims = struct.unpack(f">{nd}I", header)
    type_name, dtype = IDX_TYPES[code]
    shape_txt = "×".join(str(d) for d in dims)
    expected = math.prod(dims) * dtype.itemsize
    if expected > max_bytes:
        raise IdxError(
            path, f"header announces {expected} bytes of {type_name} data ({shape_txt}), more than the limit {max_bytes}"
        )
    what = f"{type_name} {_what(nd)}"

    buf = np.empty(expected, dtype=np.uint8)
    got = _readinto_full(f, memoryview(buf)) if expected else 0
    if got < expected:
        raise IdxError(path, f"expected {expected} bytes of {what} after the header ({shape_txt}){gz}, found {got}")
    extra = _count_rest(f)
    if extra:
        raise IdxError(
            path,
            f"expected {expected} bytes of {what} after the header ({shape_txt}){gz}, "
            f"found {expected + extra} ({extra} trailing bytes)",
        )
    arr = buf.view(dtype).reshape(dims)
    native = dtype.newbyteorder("=")
    if dtype.itemsize > 1 and not dtype.isnative:
        return arr.astype(native)
    return arr.view(native)


def _idx_bytes_header(arr: np.ndarray) -> tuple[bytes, np.ndarray]:
    if not 1 <= arr.ndim <= MAX_NDIM:
        raise ValueError(f"IDX arrays must have 1..{MAX_NDIM} dimensions, got shape {arr.shape}")
    code = _CODE_BY_KIND.get((arr.dtype.kind, arr.dtype.itemsize))
    if code is None:
        names = ", ".join(n for n, _ in IDX_TYPES.values())
        raise ValueError(f"IDX cannot store dtype {arr.dtype}: expected one of {names}")
    if any(d >= 1 << 32 for d in arr.shape):
        raise ValueError(f"IDX dimensions must fit in uint32, got shape {arr.shape}")
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    big = np.ascontiguousarray(arr, dtype=IDX_TYPES[code][1])
    return header, big


def write_idx(path, array) -> Path:
    """Write ``array`` as an IDX file at ``path``; gzip-compressed (mtime 0, no name) if it ends with .gz.

    The output is deterministic (same array -> same bytes) and written atomically (temp file + rename).
    Supported dtypes: uint8, int8, int16, int32, float32, float64; 1..4 dimensions.
    """
    path = Path(path)
    arr = np.asarray(array)
    header, big = _idx_bytes_header(arr)
    with atomic_file(path) as out:
        if path.name.endswith(".gz"):
            with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as gz:
                gz.write(header)
                gz.write(big.reshape(-1).view(np.uint8))
        else:
            out.write(header)
            out.write(big.reshape(-1).view(np.uint8))
    return path
