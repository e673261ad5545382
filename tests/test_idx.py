"""tasks.formats.idx: IDX round trips and every validation error."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from tasks.formats.idx import IdxError, read_idx, write_idx

from fixtures import MNIST_FILES, mnist_like, sha256_file, write_mnist_dir  # tests/ is on sys.path (conftest.py)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def _header(code: int, dims) -> bytes:
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


# ------------------------------------------------------------------ round trips
@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize(
    "dtype,shape",
    [
        (np.uint8, (7, 28, 28)),
        (np.uint8, (13,)),
        (np.int8, (3, 4)),
        (np.int16, (2, 3, 4, 5)),
        (np.int32, (6,)),
        (np.float32, (4, 5)),
        (np.float64, (3, 2, 2)),
    ],
)
def test_round_trip(tmp_path, suffix, dtype, shape):
    rng = np.random.default_rng(1)
    if np.dtype(dtype).kind == "f":
        a = rng.standard_normal(shape).astype(dtype)
    else:
        info = np.iinfo(dtype)
        a = rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
    p = tmp_path / f"x-idx{suffix}"
    write_idx(p, a)
    b = read_idx(p)
    assert b.shape == a.shape
    assert b.dtype == np.dtype(dtype) and b.dtype.isnative
    assert b.flags.writeable and b.flags.c_contiguous
    np.testing.assert_array_equal(a, b)


def test_bytes_are_big_endian_and_exact(tmp_path):
    p = tmp_path / "labels-idx1-ubyte"
    write_idx(p, np.array([1, 2, 3], dtype=np.int16))
    assert p.read_bytes() == _header(0x0B, (3,)) + b"\x00\x01\x00\x02\x00\x03"
    p2 = tmp_path / "img-idx3-ubyte"
    write_idx(p2, np.zeros((2, 28, 28), np.uint8))
    assert p2.read_bytes()[:16] == struct.pack(">IIII", 2051, 2, 28, 28)
    write_idx(p, np.zeros(5, np.uint8))
    assert p.read_bytes()[:8] == struct.pack(">II", 2049, 5)


def test_gzip_detected_by_magic_not_name(tmp_path):
    a = np.arange(10, dtype=np.uint8)
    gz_named_raw = tmp_path / "labels.gz"
    gz_named_raw.write_bytes(_header(0x08, (10,)) + a.tobytes())
    np.testing.assert_array_equal(read_idx(gz_named_raw), a)
    raw_named_gz = tmp_path / "labels-idx1-ubyte"
    raw_named_gz.write_bytes(_gz(_header(0x08, (10,)) + a.tobytes()))
    np.testing.assert_array_equal(read_idx(raw_named_gz), a)


def test_gz_output_is_deterministic(tmp_path):
    a, _ = mnist_like(20, seed=3)
    write_idx(tmp_path / "a.gz", a)
    write_idx(tmp_path / "sub" / "b.gz", a)
    assert (tmp_path / "a.gz").read_bytes() == (tmp_path / "sub" / "b.gz").read_bytes()
    # standard gzip with mtime 0 and no embedded name
    blob = (tmp_path / "a.gz").read_bytes()
    assert blob[:2] == b"\x1f\x8b" and blob[4:8] == b"\x00\x00\x00\x00" and not blob[3] & 0x08
    assert not list(tmp_path.glob(".*.tmp")) and not list((tmp_path / "sub").glob(".*.tmp"))


def test_mnist_fixture_dir(tmp_path):
    sums = write_mnist_dir(tmp_path, n_train=30, n_test=10, seed=0)
    assert set(sums) == set(MNIST_FILES.values())
    for name, digest in sums.items():
        assert sha256_file(tmp_path / name) == digest
    x = read_idx(tmp_path / MNIST_FILES["train_images"], ndim=3)
    y = read_idx(tmp_path / MNIST_FILES["train_labels"], ndim=1)
    assert x.shape == (30, 28, 28) and x.dtype == np.uint8 and y.shape == (30,)
    assert set(y.tolist()) == set(range(10))
    # same seed -> same bytes
    sums2 = write_mnist_dir(tmp_path / "again", n_train=30, n_test=10, seed=0)
    assert sums2 == sums


def test_empty_first_dim(tmp_path):
    p = tmp_path / "empty-idx3"
    write_idx(p, np.zeros((0, 28, 28), np.uint8))
    assert read_idx(p).shape == (0, 28, 28)


# ------------------------------------------------------------------ validation errors
def _expect(p: Path, *fragments: str) -> IdxError:
    with pytest.raises(IdxError) as ei:
        read_idx(p)
    msg = str(ei.value)
    assert p.name in msg, msg
    for frag in fragments:
        assert frag in msg, msg
    assert isinstance(ei.value, ValueError)
    return ei.value


@pytest.mark.parametrize("gz", [False, True])
def test_bad_magic(tmp_path, gz):
    p = tmp_path / "bad-magic"
    data = b"\x01\x02\x08\x01" + b"\x00\x00\x00\x01" + b"\x05"
    p.write_bytes(_gz(data) if gz else data)
    _expect(p, "not an IDX file", "expected a 4-byte magic")


def test_unknown_type_code(tmp_path):
    p = tmp_path / "bad-type"
    p.write_bytes(_header(0x0A, (1,)) + b"\x00")
    _expect(p, "unknown IDX type code 0x0A", "0x08 uint8")


@pytest.mark.parametrize("nd", [0, 5, 255])
def test_bad_dimension_count(tmp_path, nd):
    p = tmp_path / "bad-ndim"
    p.write_bytes(bytes([0, 0, 0x08, nd]) + b"\x00\x00\x00\x01" * nd + b"\x00")
    _expect(p, f"bad IDX dimension count {nd}", "expected 1..4")


def test_truncated_header(tmp_path):
    p = tmp_path / "short-header.gz"
    p.write_bytes(_gz(bytes([0, 0, 0x08, 3]) + struct.pack(">I", 60000)))
    _expect(p, "truncated header", "expected 12 bytes", "found 4")


def test_empty_file(tmp_path):
    p = tmp_path / "empty"
    p.write_bytes(b"")
    _expect(p, "not an IDX file", "empty file")


def test_wrong_ndim_requested(tmp_path):
    p = tmp_path / "labels-idx1-ubyte"
    write_idx(p, np.zeros(4, np.uint8))
    with pytest.raises(IdxError, match=r"labels-idx1-ubyte: expected a 3-dimensional IDX file, found 1"):
        read_idx(p, ndim=3)


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_payload(tmp_path, gz):
    p = tmp_path / ("train-images-idx3-ubyte" + (".gz" if gz else ""))
    data = _header(0x08, (60000, 28, 28)) + b"\x07" * 1000
    p.write_bytes(_gz(data) if gz else data)
    _expect(p, "expected 47040000 bytes of uint8 image data after the header (60000×28×28)", "found 1000")


def test_truncated_payload_wide_type(tmp_path):
    p = tmp_path / "floats"
    p.write_bytes(_header(0x0D, (10,)) + b"\x00" * 39)
    _expect(p, "expected 40 bytes of float32 label data", "(10)", "found 39")


@pytest.mark.parametrize("gz", [False, True])
def test_trailing_bytes(tmp_path, gz):
    p = tmp_path / ("t10k-labels-idx1-ubyte" + (".gz" if gz else ""))
    data = _header(0x08, (10,)) + bytes(range(10)) + b"GARBAGE"
    p.write_bytes(_gz(data) if gz else data)
    _expect(p, "expected 10 bytes of uint8 label data after the header (10)", "found 17", "7 trailing bytes")


def test_truncated_gzip_stream(tmp_path):
    a, _ = mnist_like(20, seed=0)
    full = tmp_path / "full.gz"
    write_idx(full, a)
    blob = full.read_bytes()
    p = tmp_path / "train-images-idx3-ubyte.gz"
    p.write_bytes(blob[: len(blob) // 2])
    _expect(p, "corrupt or truncated gzip stream")
    # only the gzip trailer (CRC32 + size) missing
    p.write_bytes(blob[:-8])
    _expect(p, "corrupt or truncated gzip stream")


def test_corrupt_gzip_stream(tmp_path):
    a, _ = mnist_like(20, seed=0)
    full = tmp_path / "full.gz"
    write_idx(full, a)
    blob = bytearray(full.read_bytes())
    blob[-8] ^= 0xFF  # CRC mismatch
    p = tmp_path / "crc.gz"
    p.write_bytes(bytes(blob))
    _expect(p, "corrupt or truncated gzip stream")
    blob = bytearray(full.read_bytes())
    blob[20:40] = b"\xff" * 20  # garbage in the deflate stream
    p.write_bytes(bytes(blob))
    _expect(p, "corrupt or truncated gzip stream")


def test_garbage_after_gzip_stream(tmp_path):
    a = np.arange(10, dtype=np.uint8)
    p = tmp_path / "labels.gz"
    p.write_bytes(_gz(_header(0x08, (10,)) + a.tobytes()) + b"<html>oops</html>")
    _expect(p, "corrupt or truncated gzip stream")


def test_html_instead_of_gzip(tmp_path):
    p = tmp_path / "train-images-idx3-ubyte.gz"
    p.write_bytes(b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body>nope</body></html>\n")
    _expect(p, "not an IDX file", "HTML")


def test_huge_header_refused(tmp_path):
    p = tmp_path / "huge"
    p.write_bytes(_header(0x0E, (1 << 31, 1 << 31)))
    _expect(p, "more than the limit")


def test_missing_file_is_oserror(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope.gz")


def test_write_rejects_unsupported(tmp_path):
    with pytest.raises(ValueError, match="cannot store dtype int64"):
        write_idx(tmp_path / "x", np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="1..4 dimensions"):
        write_idx(tmp_path / "x", np.zeros((1, 1, 1, 1, 1), np.uint8))
    with pytest.raises(ValueError, match="1..4 dimensions"):
        write_idx(tmp_path / "x", np.uint8(3))
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------ real upstream data (opt-in)
@pytest.mark.realdata
def test_real_mnist_counts():
    d = SHARED / "mnist"
    if not d.is_dir():
        pytest.skip(f"no real data at {d}")
    x = read_idx(d / "train-images-idx3-ubyte.gz", ndim=3)
    y = read_idx(d / "train-labels-idx1-ubyte.gz", ndim=1)
    tx = read_idx(d / "t10k-images-idx3-ubyte.gz", ndim=3)
    ty = read_idx(d / "t10k-labels-idx1-ubyte.gz", ndim=1)
    assert x.shape == (60000, 28, 28) and y.shape == (60000,)
    assert tx.shape == (10000, 28, 28) and ty.shape == (10000,)
    assert x.dtype == np.uint8 and y.dtype == np.uint8
    assert set(np.unique(y).tolist()) == set(range(10)) == set(np.unique(ty).tolist())
    # MNIST is stored upright (row-major): the mean "1" is a tall, thin stroke
    ones = x[y == 1].astype(np.float64).mean(axis=0)
    rows, cols = ones.sum(axis=1), ones.sum(axis=0)
    assert (rows > rows.max() * 0.2).sum() > 1.5 * (cols > cols.max() * 0.2).sum()
