"""MNIST: the four IDX gz files of the CVDF mirror (same bytes as yann.lecun.com/exdb/mnist)."""
from __future__ import annotations

from pathlib import Path

from tasks.sources import Loaded, RemoteFile

BASE_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"
MIRROR_DIR = "mnist/"

# sha256 as in tensorflow-datasets' checksum list.
SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
SPLIT_FILES = {"train": "train", "test": "t10k"}


def file_sets(fetch_params: dict) -> dict[str, list[RemoteFile]]:
    return {"idx": [
        RemoteFile(name=name, url=BASE_URL + name, mirror_path=MIRROR_DIR + name, sha256=sha, expect="gzip")
        for name, sha in SHA256.items()
    ]}


def load(raw_dir: Path, formats) -> Loaded:
    """The official splits from the IDX files (`formats`: tasks.prepare.arrays.formats())."""
    splits = {}
    for split, prefix in SPLIT_FILES.items():
        images = formats.read_idx(raw_dir / f"{prefix}-images-idx3-ubyte.gz")
        labels = formats.read_idx(raw_dir / f"{prefix}-labels-idx1-ubyte.gz").astype("int64")
        _check_pair(raw_dir, prefix, images, labels)
        splits[split] = (images, labels)
    return Loaded(splits=splits, label_names=formats.normalize.digit_label_names(), source_name="mnist")


def _check_pair(raw_dir: Path, prefix: str, images, labels) -> None:
    if images.ndim != 3 or len(images) != len(labels):
        raise ValueError(
            f"{raw_dir}/{prefix}-*: expected N×28×28 images and N labels, "
            f"got images {images.shape} and labels {labels.shape}")
    if labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"{raw_dir}/{prefix}-labels-idx1-ubyte.gz: labels outside 0..9")
