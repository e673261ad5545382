"""tasks.formats.emnist_mat: NIST's EMNIST .mat layout, round trips and precise errors."""
from __future__ import annotations

import gzip
import zipfile

import numpy as np
import pytest
import scipy.io

from tasks.formats.emnist_mat import MatFormatError, read_emnist_mat, write_emnist_mat
from tasks.formats.normalize import emnist_upright

from fixtures import (  # tests/ is on sys.path (conftest.py)
    EMNIST_DECOY_MEMBER, EMNIST_MAT_MEMBER, emnist_like, letters_mapping, mnist_like, sha256_bytes,
    write_emnist_mat_zip,
)


def _splits(n_train=52, n_test=26, seed=0):
    return {"train": emnist_like(n_train, seed), "test": emnist_like(n_test, seed + 1)}


# ------------------------------------------------------------------ round trips
@pytest.mark.parametrize("label_dtype", ["float64", "uint8", "int32", "int64"])
@pytest.mark.parametrize("compress", [False, True])
def test_round_trip(tmp_path, label_dtype, compress):
    splits = _splits()
    p = tmp_path / "emnist-letters.mat"
    write_emnist_mat(p, splits, letters_mapping(), label_dtype=label_dtype, do_compression=compress)
    d = read_emnist_mat(p)
    assert set(d) == {"train", "test", "mapping"}
    for name in ("train", "test"):
        images, labels = d[name]
        np.testing.assert_array_equal(images, splits[name][0])  # as stored: not transposed
        np.testing.assert_array_equal(labels, splits[name][1])
        assert images.dtype == np.uint8 and images.shape == (len(splits[name][0]), 784)
        assert labels.dtype == np.int64 and labels.ndim == 1
    assert d["mapping"].shape == (26, 3) and d["mapping"].dtype == np.int64
    np.testing.assert_array_equal(d["mapping"], letters_mapping())


def test_documented_scipy_access_path(tmp_path):
    """The file we write has exactly NIST's documented structure."""
    splits = _splits()
    p = tmp_path / "emnist-letters.mat"
    write_emnist_mat(p, splits, letters_mapping())
    m = scipy.io.loadmat(p)
    train = m["dataset"][0, 0]["train"][0, 0]
    assert train["images"].shape == (52, 784) and train["images"].dtype == np.uint8
    assert train["labels"].shape == (52, 1)
    assert train["writers"].shape == (52, 1)
    assert m["dataset"][0, 0]["mapping"].shape == (26, 3)


def test_upright_after_mat(tmp_path):
    """emnist_like stores transposed images; read + emnist_upright gives back the upright ones."""
    p = tmp_path / "emnist-letters.mat"
    write_emnist_mat(p, _splits(), letters_mapping())
    images, labels = read_emnist_mat(p)["train"]
    upright_expected, labels0 = mnist_like(52, 0, num_classes=26)
    np.testing.assert_array_equal(emnist_upright(images), upright_expected)
    np.testing.assert_array_equal(labels, labels0.astype(np.int64) + 1)


def test_deterministic_bytes(tmp_path):
    splits = _splits()
    write_emnist_mat(tmp_path / "a.mat", splits, letters_mapping())
    write_emnist_mat(tmp_path / "b.mat", splits, letters_mapping())
    assert (tmp_path / "a.mat").read_bytes() == (tmp_path / "b.mat").read_bytes()


@pytest.mark.parametrize("shape_kind", ["column", "row", "flat"])
def test_label_shapes_and_double_images(tmp_path, shape_kind):
    """Robust to N×1 / 1×N / N label shapes and to double-valued images (hand-written files)."""
    images, labels = emnist_like(10, 0)
    lab = {"column": labels.reshape(-1, 1), "row": labels.reshape(1, -1), "flat": labels}[shape_kind]
    p = tmp_path / "hand.mat"
    split = {"images": images.astype(np.float64), "labels": lab.astype(np.float64), "writers": np.zeros((10, 1))}
    scipy.io.savemat(p, {"dataset": {"train": split, "test": split, "mapping": letters_mapping()}}, oned_as="row")
    d = read_emnist_mat(p)
    np.testing.assert_array_equal(d["train"][0], images)
    assert d["train"][0].dtype == np.uint8
    np.testing.assert_array_equal(d["test"][1], labels.astype(np.int64))


def test_mapping_k_by_2(tmp_path):
    p = tmp_path / "digits.mat"
    mapping = np.stack([np.arange(10), 48 + np.arange(10)], axis=1)
    write_emnist_mat(p, _splits(), mapping)
    assert read_emnist_mat(p)["mapping"].shape == (10, 2)


# ------------------------------------------------------------------ errors
def _expect(p, *fragments):
    with pytest.raises(MatFormatError) as ei:
        read_emnist_mat(p)
    msg = str(ei.value)
    assert p.name in msg, msg
    for f in fragments:
        assert f in msg, msg
    assert isinstance(ei.value, ValueError)
    return msg


def _save(p, dataset):
    scipy.io.savemat(p, {"dataset": dataset})


def _good_split(n=5):
    images, labels = emnist_like(n, 0)
    return {"images": images, "labels": labels.reshape(-1, 1).astype(np.float64), "writers": np.zeros((n, 1))}


@pytest.mark.parametrize("field", ["images", "labels"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_missing_split_field(tmp_path, split, field):
    p = tmp_path / "emnist-letters.mat"
    bad = {k: v for k, v in _good_split().items() if k != field}
    ds = {"train": _good_split(), "test": _good_split(), "mapping": letters_mapping()}
    ds[split] = bad
    _save(p, ds)
    _expect(p, f"missing field dataset.{split}.{field}")


@pytest.mark.parametrize("field", ["train", "test", "mapping"])
def test_missing_dataset_field(tmp_path, field):
    p = tmp_path / "emnist-letters.mat"
    ds = {"train": _good_split(), "test": _good_split(), "mapping": letters_mapping()}
    del ds[field]
    _save(p, ds)
    _expect(p, f"missing field dataset.{field}")


def test_missing_dataset_variable(tmp_path):
    p = tmp_path / "emnist-letters.mat"
    scipy.io.savemat(p, {"something_else": np.zeros(3)})
    _expect(p, "missing field dataset")


def test_dataset_not_a_struct(tmp_path):
    p = tmp_path / "emnist-letters.mat"
    scipy.io.savemat(p, {"dataset": np.zeros((3, 3))})
    _expect(p, "missing field dataset.train", "not a struct")


def test_images_wrong_width(tmp_path):
    p = tmp_path / "emnist-letters.mat"
    split = _good_split()
    split["images"] = split["images"][:, :700]
    _save(p, {"train": split, "test": _good_split(), "mapping": letters_mapping()})
    _expect(p, "field dataset.train.images must be N×784", "(5, 700)")


def test_images_transposed_hint(tmp_path):
    p = tmp_path / "emnist-letters.mat"
    split = _good_split()
    split["images"] = split["images"].T.copy()
    _save(p, {"train": _good_split(), "test": split, "mapping": letters_mapping()})
    _expect(p, "dataset.test.images", "(784, 5)", "transposed?")


def test_images_out_of_range(tmp_path):
    p = tmp_path / "emnist-letters.mat"
    split = _good_split()
    split["images"] = split["images"].astype(np.float64) * 2
    _save(p, {"train": split, "test": _good_split(), "mapping": letters_mapping()})
    _expect(p, "dataset.train.images", "0..255")


def test_labels_ill_shaped(tmp_path):
    p = tmp_path / "emnist-letters.mat"
    split = _good_split()
    split["labels"] = np.ones((5, 2))
    _save(p, {"train": split, "test": _good_split(), "mapping": letters_mapping()})
    _expect(p, "field dataset.train.labels must be N×1", "(5, 2)")


def test_labels_non_integer(tmp_path):
    p = tmp_path / "emnist-letters.mat"
    split = _good_split()
    split["labels"] = split["labels"] + 0.5
    _save(p, {"train": split, "test": _good_split(), "mapping": letters_mapping()})
    _expect(p, "dataset.train.labels", "non-integer")


def test_label_count_mismatch(tmp_path):
    p = tmp_path / "emnist-letters.mat"
    split = _good_split()
    split["labels"] = split["labels"][:4]
    _save(p, {"train": _good_split(), "test": split, "mapping": letters_mapping()})
    _expect(p, "dataset.test.labels has 4 labels but dataset.test.images has 5 images")


@pytest.mark.parametrize("mapping", [np.arange(26), np.zeros((26, 1)), np.zeros((0, 2))])
def test_mapping_ill_shaped(tmp_path, mapping):
    p = tmp_path / "emnist-letters.mat"
    _save(p, {"train": _good_split(), "test": _good_split(), "mapping": mapping})
    _expect(p, "field dataset.mapping must be K×2 or K×3")


def test_v73_hdf5_rejected(tmp_path):
    p = tmp_path / "emnist-letters.mat"
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Apr 10 2017 HDF5 schema 1.00 .".ljust(116)
    header += b"\x00" * 8 + b"\x00\x02IM"
    p.write_bytes(header.ljust(512, b"\x00") + b"\x89HDF\r\n\x1a\n" + b"\x00" * 512)
    _expect(p, "v7.3", "not supported", "expected a MATLAB v5/v7 MAT-file")


def test_bare_hdf5_rejected(tmp_path):
    p = tmp_path / "emnist-letters.mat"
    p.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 600)
    _expect(p, "v7.3", "not supported")


@pytest.mark.parametrize(
    "content,found",
    [
        (b"<!DOCTYPE html><html><body>Access denied</body></html>", "HTML"),
        (gzip.compress(b"hello", mtime=0), "gzip"),
        (b"", "empty file"),
        (b"\x00\x01\x02\x03" * 40, "bytes 00 01 02 03"),
    ],
)
def test_not_a_mat_file(tmp_path, content, found):
    p = tmp_path / "emnist-letters.mat"
    p.write_bytes(content)
    _expect(p, "not a MAT-file", "expected a MATLAB v5/v7 MAT-file", found)


def test_zip_instead_of_member(tmp_path):
    info = write_emnist_mat_zip(tmp_path / "matlab.zip", n_train=26, n_test=26)
    p = tmp_path / "emnist-letters.mat"
    p.write_bytes(info["zip"].read_bytes())
    _expect(p, "zip archive")


def test_truncated_mat(tmp_path):
    p = tmp_path / "emnist-letters.mat"
    write_emnist_mat(p, _splits(), letters_mapping())
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    _expect(p, "cannot parse MAT-file")
    p.write_bytes(data[:100])
    _expect(p, "truncated MAT-file")


# ------------------------------------------------------------------ the zip fixture
def test_mat_zip_fixture(tmp_path):
    info = write_emnist_mat_zip(tmp_path / "matlab.zip", n_train=52, n_test=26, seed=2, decoy_bytes=300_000)
    with zipfile.ZipFile(info["zip"]) as z:
        names = z.namelist()
        assert names == [EMNIST_DECOY_MEMBER, EMNIST_MAT_MEMBER]
        member = z.read(EMNIST_MAT_MEMBER)
        decoy = z.getinfo(EMNIST_DECOY_MEMBER)
        assert decoy.compress_size >= 300_000  # incompressible, stored
    assert sha256_bytes(member) == info["member_sha256"] and len(member) == info["member_bytes"]
    assert info["member_bytes"] < 300_000 < info["zip_bytes"]
    out = tmp_path / "emnist-letters.mat"
    out.write_bytes(member)
    d = read_emnist_mat(out)
    assert d["train"][0].shape == (52, 784) and d["test"][0].shape == (26, 784)
    assert set(d["train"][1].tolist()) == set(range(1, 27))
    # deterministic
    again = write_emnist_mat_zip(tmp_path / "again.zip", n_train=52, n_test=26, seed=2, decoy_bytes=300_000)
    assert again["zip_sha256"] == info["zip_sha256"]
    small = write_emnist_mat_zip(tmp_path / "small.zip", n_train=52, n_test=26, seed=2)
    assert small["decoy"] is None and small["member_sha256"] == info["member_sha256"]
