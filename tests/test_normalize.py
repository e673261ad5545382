"""tasks.formats.normalize: EMNIST orientation (proved on asymmetric glyphs), label ranges, label names."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tasks.formats.idx import read_idx
from tasks.core.labels import label_map
from tasks.formats.normalize import (
    LETTERS, digit_label_names, emnist_letter_labels, emnist_upright, letters_label_names,
)

from fixtures import (  # tests/ is on sys.path (conftest.py)
    EMNIST_GZIP_FILES, emnist_like, emnist_store, make_glyph, mnist_like, write_emnist_gzip_dir,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


# ------------------------------------------------------------------ orientation
def test_glyph_l_is_what_we_think():
    g = make_glyph("L")
    assert g.shape == (28, 28) and g.dtype == np.uint8
    assert (g[:, 0:3] == 255).all()  # vertical bar on the left, full height
    assert (g[25:28, :] == 255).all()  # horizontal bar in the bottom rows
    assert (g[:25, 3:] == 0).all()  # nothing else (top right is empty)
    for kind in ("L", "F", "J"):
        a = make_glyph(kind)
        assert not np.array_equal(a, a.T), kind
        assert not np.array_equal(a, a[:, ::-1]) and not np.array_equal(a, a[::-1]), kind


def test_emnist_upright_on_stored_l():
    """Store "L" the EMNIST way (transposed, flattened column-major); emnist_upright gives back the upright L."""
    upright = make_glyph("L")
    stored = upright.T.reshape(784)  # what NIST's files hold for this image
    np.testing.assert_array_equal(stored, upright.reshape(784, order="F"))  # same thing: column-major
    out = emnist_upright(stored[None, :])
    assert out.shape == (1, 28, 28) and out.dtype == np.uint8 and out.flags.c_contiguous
    img = out[0]
    np.testing.assert_array_equal(img, upright)
    assert (img[:, 0:3] == 255).all(), "vertical bar must be in columns 0..2 on the left"
    assert (img[25:28, :] == 255).all(), "horizontal bar must be in the bottom rows"
    assert (img[:25, 3:] == 0).all()
    # Without the transpose the image would be wrong: a bar along the top and one on the right.
    naive = stored.reshape(28, 28)
    assert not np.array_equal(naive, upright)
    assert (naive[0:3, :] == 255).all() and (naive[:, 25:28] == 255).all()
    assert not (naive[25:28, :] == 255).all()


def test_emnist_upright_idx_form_and_batch():
    glyphs = np.stack([make_glyph(k) for k in ("L", "F", "J", "blank")])
    stored_flat = emnist_store(glyphs)
    assert stored_flat.shape == (4, 784)
    np.testing.assert_array_equal(emnist_upright(stored_flat), glyphs)
    # the IDX form: N×28×28, equally transposed
    np.testing.assert_array_equal(emnist_upright(stored_flat.reshape(4, 28, 28)), glyphs)
    # a non-contiguous input still yields a C-contiguous output
    out = emnist_upright(stored_flat[::2])
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out, glyphs[::2])


def test_emnist_upright_through_idx_gzip(tmp_path):
    """A full trip through the fixture's real file format: IDX gz as EMNIST stores it -> upright."""
    sums = write_emnist_gzip_dir(tmp_path, n_train=52, n_test=26, seed=4, include_test_images=False)
    assert EMNIST_GZIP_FILES["test_images"] not in sums and len(sums) == 3
    assert not (tmp_path / EMNIST_GZIP_FILES["test_images"]).exists()
    x = read_idx(tmp_path / EMNIST_GZIP_FILES["train_images"])
    y = read_idx(tmp_path / EMNIST_GZIP_FILES["train_labels"])
    expected, labels0 = mnist_like(52, 4, num_classes=26)
    np.testing.assert_array_equal(emnist_upright(x), expected)
    np.testing.assert_array_equal(emnist_letter_labels(y), labels0)
    sums_all = write_emnist_gzip_dir(tmp_path / "all", n_train=52, n_test=26, seed=4)
    assert len(sums_all) == 4
    assert read_idx(tmp_path / "all" / EMNIST_GZIP_FILES["test_images"]).shape == (26, 28, 28)


def test_emnist_like_is_stored_transposed():
    flat, labels = emnist_like(30, 1)
    upright, labels0 = mnist_like(30, 1, num_classes=26)
    assert flat.shape == (30, 784) and flat.dtype == np.uint8
    assert labels.min() >= 1 and labels.max() <= 26
    np.testing.assert_array_equal(labels, labels0 + 1)
    np.testing.assert_array_equal(flat.reshape(30, 28, 28), upright.transpose(0, 2, 1))
    assert not np.array_equal(flat.reshape(30, 28, 28), upright)


def test_mnist_like_learnable():
    """Class templates do not depend on the seed; nearest class mean classifies a held-out set."""
    x, y = mnist_like(200, 0)
    tx, ty = mnist_like(100, 1)
    assert set(y.tolist()) == set(range(10))
    means = np.stack([x[y == k].reshape(-1, 784).mean(0) for k in range(10)])
    d = ((tx.reshape(-1, 1, 784).astype(np.float64) - means[None]) ** 2).sum(-1)
    assert (d.argmin(1) == ty).mean() == 1.0
    # and a transposed image is classified as another class (orientation bugs are detectable)
    dt = ((tx.transpose(0, 2, 1).reshape(-1, 1, 784).astype(np.float64) - means[None]) ** 2).sum(-1)
    assert (dt.argmin(1) == ty).mean() < 0.5


@pytest.mark.parametrize("shape", [(784,), (3, 783), (3, 28, 27), (3, 1, 28, 28)])
def test_emnist_upright_bad_shape(shape):
    with pytest.raises(ValueError, match="expected EMNIST images of shape"):
        emnist_upright(np.zeros(shape, np.uint8))


def test_emnist_upright_dtypes():
    g = make_glyph("F")
    np.testing.assert_array_equal(emnist_upright(emnist_store(g)[None].astype(np.float64))[0], g)
    with pytest.raises(ValueError, match="0..255"):
        emnist_upright(np.full((1, 784), 300.0))
    with pytest.raises(ValueError, match="0..255"):
        emnist_upright(np.full((1, 784), 0.5))


# ------------------------------------------------------------------ labels
def test_letter_labels():
    out = emnist_letter_labels(np.array([1, 2, 26], np.uint8))
    assert out.dtype == np.int64
    assert out.tolist() == [0, 1, 25]
    assert emnist_letter_labels(np.array([[1.0], [26.0]])).tolist() == [0, 25]
    assert emnist_letter_labels([]).shape == (0,)
    all_labels = np.arange(1, 27)
    assert "".join(LETTERS[i] for i in emnist_letter_labels(all_labels)) == LETTERS


@pytest.mark.parametrize("bad", [0, 27, -1, 255])
def test_letter_labels_out_of_range(bad):
    with pytest.raises(ValueError, match=rf"1\.\.26.*\[{bad}\]"):
        emnist_letter_labels(np.array([1, bad, 3]))


def test_letter_labels_error_names_values():
    with pytest.raises(ValueError) as ei:
        emnist_letter_labels(np.array([0, 0, 27, 5, 40]))
    msg = str(ei.value)
    assert "4 labels outside" in msg and "[0, 27, 40]" in msg
    with pytest.raises(ValueError, match="non-integer"):
        emnist_letter_labels(np.array([1.5, 2.0]))
    with pytest.raises(ValueError, match="non-integer"):
        emnist_letter_labels(np.array([np.nan]))


def test_label_names():
    assert LETTERS == "abcdefghijklmnopqrstuvwxyz"
    assert letters_label_names() == list(LETTERS) and len(letters_label_names()) == 26
    assert digit_label_names() == [str(i) for i in range(10)]
    m = label_map(letters_label_names())
    assert m["0"] == "a" and m["25"] == "z" and len(m) == 26
    assert list(m) == [str(i) for i in range(26)]
    assert json.loads(json.dumps(m)) == m
    assert label_map(digit_label_names()) == {str(i): str(i) for i in range(10)}


# ------------------------------------------------------------------ real upstream data (opt-in)
@pytest.mark.realdata
def test_real_emnist_letters():
    d = SHARED / "emnist" / "gzip"
    if not d.is_dir():
        pytest.skip(f"no real data at {d}")
    x = read_idx(d / "emnist-letters-train-images-idx3-ubyte.gz", ndim=3)
    y = read_idx(d / "emnist-letters-train-labels-idx1-ubyte.gz", ndim=1)
    ty = read_idx(d / "emnist-letters-test-labels-idx1-ubyte.gz", ndim=1)
    assert x.shape == (124800, 28, 28) and y.shape == (124800,)
    assert y.min() == 1 and y.max() == 26
    assert np.bincount(y, minlength=27)[1:].tolist() == [4800] * 26
    assert ty.shape == (20800,) and np.bincount(ty, minlength=27)[1:].tolist() == [800] * 26
    ids = emnist_letter_labels(y)
    assert ids.min() == 0 and ids.max() == 25

    # Orientation on real data: the mean upright "l" is a tall, thin stroke; as stored it is wide.
    ells = x[ids == LETTERS.index("l")]
    up = emnist_upright(ells).astype(np.float64).mean(0)
    raw = ells.astype(np.float64).mean(0)

    def extent(img):
        rows, cols = img.sum(1), img.sum(0)
        return (rows > rows.max() * 0.2).sum(), (cols > cols.max() * 0.2).sum()

    h, w = extent(up)
    assert h > 1.5 * w, (h, w)
    rh, rw = extent(raw)
    assert rw > 1.5 * rh, (rh, rw)
