"""formats: the file formats array datasets come in, read and checked (IDX, EMNIST's .mat), and the
label/image conventions (EMNIST letters 1-26 -> 0-25, column-major -> upright). Nothing here downloads
or writes a dataset: prepare hands these readers to a source module's `load(raw_dir, readers())`, so the
source modules import no format code and fetch does not depend on this package."""
from __future__ import annotations


def readers():
    """What an array source's `load(raw_dir, formats)` reads its files with: the IDX and .mat readers
    and the label conventions (normalize)."""
    from types import SimpleNamespace

    from tasks.formats import emnist_mat, idx, normalize

    return SimpleNamespace(read_idx=idx.read_idx, read_emnist_mat=emnist_mat.read_emnist_mat, normalize=normalize)
