"""Dataset conventions: EMNIST orientation, label ranges and label names."""
from __future__ import annotations

import numpy as np

__all__ = [
    "LETTERS",
    "emnist_upright",
    "emnist_letter_labels",
    "letters_label_names",
    "digit_label_names",
]

LETTERS = "abcdefghijklmnopqrstuvwxyz"
SIDE = 28


def emnist_upright(flat_images) -> np.ndarray:
    """EMNIST images as stored (transposed / column-major) -> upright N×28×28 uint8, C-contiguous.

    Accepts N×784 rows (the .mat form) or N×28×28 (the IDX form, equally transposed). For one
    image this is ``img.reshape(28, 28).T``.
    """
    a = np.asarray(flat_images)
    if a.ndim == 2 and a.shape[1] == SIDE * SIDE:
        a = a.reshape(a.shape[0], SIDE, SIDE)
    elif not (a.ndim == 3 and a.shape[1:] == (SIDE, SIDE)):
        raise ValueError(f"expected EMNIST images of shape N×{SIDE * SIDE} or N×{SIDE}×{SIDE}, found {a.shape}")
    if a.dtype != np.uint8:
        if a.dtype.kind not in "uif":
            raise ValueError(f"expected uint8 pixel values, found dtype {a.dtype}")
        if a.size and (not np.all(np.isfinite(a)) or a.min() < 0 or a.max() > 255 or not np.all(a == np.round(a))):
            raise ValueError(f"expected integer pixel values 0..255, found dtype {a.dtype} with other values")
        a = a.astype(np.uint8)
    return np.ascontiguousarray(a.transpose(0, 2, 1))


def emnist_letter_labels(labels) -> np.ndarray:
    """EMNIST letters labels 1..26 (a..z, case merged) -> int64 class ids 0..25."""
    a = np.asarray(labels)
    if a.dtype.kind not in "buif":
        raise ValueError(f"expected integer EMNIST letter labels 1..26, found dtype {a.dtype}")
    a = a.reshape(-1)
    if a.dtype.kind == "f":
        bad_f = ~np.isfinite(a) | (a != np.round(np.nan_to_num(a)))
        if bad_f.any():
            raise ValueError(f"expected integer EMNIST letter labels 1..26, found non-integer values {np.unique(a[bad_f])[:10].tolist()}")
    a = a.astype(np.int64)
    bad = (a < 1) | (a > len(LETTERS))
    if bad.any():
        values = np.unique(a[bad])
        more = f" (and {len(values) - 10} more)" if len(values) > 10 else ""
        raise ValueError(
            f"expected EMNIST letter labels 1..26, found {int(bad.sum())} labels outside that range: "
            f"values {values[:10].tolist()}{more}"
        )
    return a - 1


def letters_label_names() -> list[str]:
    """Class names for EMNIST letters ids 0..25: 'a'..'z'."""
    return list(LETTERS)


def digit_label_names() -> list[str]:
    """Class names for MNIST ids 0..9: '0'..'9'."""
    return [str(i) for i in range(10)]
