"""EMNIST letters (NIST): 26 classes, 1..26 labels, images stored column-major.

Two upstream forms of the same data:
- mat: `matlab/emnist-letters.mat` inside NIST's `matlab.zip` (~700 MB; only that member is fetched,
  with HTTP range requests where the server allows them);
- idx: the `gzip/emnist-letters-*` members of NIST's `gzip.zip`.
"""
from __future__ import annotations

from pathlib import Path

from tasks.sources import Loaded, RemoteFile

BASE_URL = "https://biometrics.nist.gov/cs_links/EMNIST/"
MIRROR_DIR = "emnist/"

# matlab.zip's sha256 as recorded in the-full-stack/fsdl-text-recognizer-project's data metadata.
MATLAB_ZIP_SHA256 = "e1fa805cdeae699a52da0b77c2db17f6feb77eed125f9b45c022e7990444df95"
MAT_MEMBER = "matlab/emnist-letters.mat"
MAT_FILE = "emnist-letters.mat"

# Member sha256s (the EMNIST gzip files as published); the test images' sum is not pinned
# anywhere we could verify, so that member is checked by the zip's CRC-32 only.
IDX_SHA256 = {
    "emnist-letters-train-images-idx3-ubyte.gz": "6288f418a917e007bf5fddb823a2dc7a5c6a35031401b93292a539cb12bd881f",
    "emnist-letters-train-labels-idx1-ubyte.gz": "9759af91ea6bccdf07a6040fd085861f2ec88e37f7c3f5760f6feb57106fbe5c",
    "emnist-letters-test-images-idx3-ubyte.gz": None,
    "emnist-letters-test-labels-idx1-ubyte.gz": "924955c31fe7fd809b7303b5c0141282955f4b8390c74cdfd5d80435e0f4b4cb",
}
FORMATS = ("mat", "idx")


def file_sets(fetch_params: dict) -> dict[str, list[RemoteFile]]:
    """The alternative file sets, in order of preference (`format: auto` tries each)."""
    fmt = fetch_params.get("format", "auto")
    if fmt not in (*FORMATS, "auto"):
        raise ValueError(f"fetch.emnist_letters.format: expected one of mat, idx, auto; got {fmt!r}")
    sets = {"mat": _mat_files(), "idx": _idx_files()}
    return sets if fmt == "auto" else {fmt: sets[fmt]}


def _mat_files() -> list[RemoteFile]:
    return [RemoteFile(name=MAT_FILE, url=BASE_URL + "matlab.zip", mirror_path=MIRROR_DIR + "matlab.zip",
                       sha256=None, member=MAT_MEMBER, archive_sha256=MATLAB_ZIP_SHA256)]


def _idx_files() -> list[RemoteFile]:
    return [
        RemoteFile(name=name, url=BASE_URL + "gzip.zip", mirror_path=MIRROR_DIR + "gzip.zip", sha256=sha,
                   expect="gzip", member="gzip/" + name, optional="test-images" in name)
        for name, sha in IDX_SHA256.items()
    ]


def load(raw_dir: Path, formats) -> Loaded:
    """Upright images and 0..25 labels from the .mat or IDX form (`formats`: tasks.prepare.arrays.formats())."""
    norm = formats.normalize
    raw = _load_mat(raw_dir, formats) if (raw_dir / MAT_FILE).exists() else _load_idx(raw_dir, formats)
    splits = {split: (norm.emnist_upright(images), norm.emnist_letter_labels(labels))
              for split, (images, labels) in raw["splits"].items()}
    return Loaded(splits=splits, label_names=norm.letters_label_names(), source_name="emnist_letters",
                  notes=raw["notes"])


def _load_mat(raw_dir: Path, formats) -> dict:
    mat = formats.read_emnist_mat(raw_dir / MAT_FILE)
    return {"splits": {"train": mat["train"], "test": mat["test"]}, "notes": [f"read from {MAT_FILE}"]}


def _load_idx(raw_dir: Path, formats) -> dict:
    read_idx = formats.read_idx

    def pair(split: str):
        images = read_idx(raw_dir / f"emnist-letters-{split}-images-idx3-ubyte.gz")
        labels = read_idx(raw_dir / f"emnist-letters-{split}-labels-idx1-ubyte.gz")
        if len(images) != len(labels):
            raise ValueError(f"{raw_dir}: emnist-letters-{split}: {len(images)} images but {len(labels)} labels")
        return images.reshape(len(images), -1), labels

    splits, notes = {"train": pair("train")}, ["read from the IDX (gzip.zip) form"]
    if (raw_dir / "emnist-letters-test-images-idx3-ubyte.gz").exists():
        splits["test"] = pair("test")
    else:
        notes.append("official test images absent: test split carved from train by stable hash")
    return {"splits": splits, "notes": notes}
