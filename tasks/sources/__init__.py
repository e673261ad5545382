"""One module per dataset: where its files live upstream, their pins, and how to load them.

Each module exposes `file_sets(fetch_params) -> {format: [RemoteFile]}` (alternatives, preferred first) and
`load(raw_dir) -> Loaded` (arrays per official split, label names, notes).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class RemoteFile:
    """One file a dataset needs, and where to find it.

    `url` is the upstream location; `mirror_path` is the same file's path under a mirror. When
    `member` is set, the file is that member of the zip at `url` / `mirror_path`, and a mirror may
    instead hold the member already extracted at `<dirname(mirror_path)>/<member>`.
    """

    name: str                    # file name under data/raw/<key>/
    url: str
    mirror_path: str
    sha256: str | None           # of the file itself (the member, for zip members)
    expect: str | None = None    # "gzip" | "zip" | None: content check
    member: str | None = None
    archive_sha256: str | None = None
    optional: bool = False       # absent upstream/in the mirror is not an error


@dataclass
class Loaded:
    """A dataset's examples as arrays, per official split."""

    splits: dict[str, tuple[np.ndarray, np.ndarray]]   # split -> (images N×H×W[×C] uint8, labels int64)
    label_names: list[str]
    source_name: str                                    # prefix of stable source ids
    notes: list[str] = field(default_factory=list)


def source(key: str):
    """The source module of dataset `key` (tasks.sources.<key>)."""
    try:
        return importlib.import_module(f"tasks.sources.{key}")
    except ModuleNotFoundError as e:
        raise KeyError(f"unknown dataset {key!r}: no module tasks/sources/{key}.py") from e
