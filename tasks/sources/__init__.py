"""One module per dataset: where its files live upstream, their pins, and how to load them.

File-based sources (MNIST, EMNIST) expose `file_sets(fetch_params) -> {format: [RemoteFile]}`
(alternatives, preferred first) and `load(raw_dir, formats) -> Loaded` (arrays per official split,
label names, notes). `formats` (tasks.prepare.arrays.formats()) hands them the file readers (IDX, .mat) and
label conventions, so a source module imports no format code: fetch@<key> depends on the source
module and the downloader only, prepare@<key> on the readers too.

Image-folder sources (photos in class folders: cards, banknotes, any `kind: folder` dataset) set
`KIND = "image_folder"` and may define:
  UPSTREAM      default `fetch.<key>.source` ("kaggle:<owner>/<slug>", a URL, ...; None = must be given)
  MIRROR_PATH   where a mirror (TLPIPE_MIRROR) holds the dataset: a folder, or MIRROR_PATH + ".zip"
  INDEX_CSV     a CSV beside the split folders to cross-check labels against (cards.csv)
  label_attributes(class_names, root) -> {class: {attr: value}} or None (ValueError on a bad name)
tasks/sources/folder.py is the generic one: `datasets: {<key>: folder}` in params.yaml, no code.

Which module a dataset uses is its value in params.yaml `datasets` (key -> module name); a key not
listed there uses the module of its own name.
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


IMAGE_FOLDER = "image_folder"


def module_name(key: str, params: dict | None = None) -> str:
    """The source module of dataset `key`: its value in params `datasets` (key -> module), else `key`."""
    datasets = (params or {}).get("datasets") or {}
    return str(datasets.get(key) or key) if isinstance(datasets, dict) else key


def source(key: str, params: dict | None = None):
    """The source module of dataset `key`: tasks.sources.<params datasets[key]>, e.g. `folder` (the
    generic image-folder source) for any photos in class folders."""
    name = module_name(key, params)
    try:
        return importlib.import_module(f"tasks.sources.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"tasks.sources.{name}":
            raise
        raise KeyError(f"unknown dataset {key!r}: no module tasks/sources/{name}.py (for photos in class "
                       f"folders set `datasets: {{{key}: folder}}` and `fetch.{key}: {{source: ...}}` in params.yaml)"
                       ) from e


def fetch_record(raw_dir) -> dict:
    """What fetch@<key> recorded beside a dataset's raw files (data/raw/<key>/fetch.json), or {}."""
    import json
    from pathlib import Path

    path = Path(raw_dir) / "fetch.json"
    return json.loads(path.read_text()) if path.exists() else {}


def is_image_folder(module) -> bool:
    return getattr(module, "KIND", None) == IMAGE_FOLDER
