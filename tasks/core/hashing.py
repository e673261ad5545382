"""The one file hasher: sha256 of a file, read in chunks (downloads, archives, weights, models)."""
from __future__ import annotations

import hashlib

CHUNK = 1 << 20


def sha256_file(path, chunk: int = CHUNK) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
