"""Every prepared dataset is also a TFDS dataset, over the same shards (no second copy of the images).

`prepare` writes TensorFlow Datasets' metadata beside ours, in data/processed/<key>/:
- `dataset_info.json`, `features.json`, `label.labels.txt`, `metadata.json` (TFDS's own writer,
  `tfds.core.DatasetInfo.write_to_directory`): the features as our tf.train.Example stores them
  (`image/encoded` an Image of the manifest's shape, `label` a ClassLabel with the label map's
  names, `source_id` Text), each split's shard lengths, and a file template that names our shards
  (`{SPLIT}-{SHARD_X_OF_Y}.tfrecord`, TFDS's own placeholders); description, homepage, citation;
  `metadata.json` holds the manifest's checksums (source files and shards). So
  `tfds.builder_from_directory("data/processed/<key>")` reads it.
- `tfds/tlpipe_<key>/1.0.0/`: the same metadata with the template `../../../{SPLIT}-...`, the
  `<data_dir>/<name>/<version>/` layout `tfds.load("tlpipe_<key>", data_dir="data/processed/<key>/tfds")`
  looks for. The name has a `tlpipe_` prefix so it never collides with a TFDS catalogue builder
  (`mnist` is one).

`supervised_keys` is ("image/encoded", "label"): `as_supervised=True` gives (image uint8, label).
"""
from __future__ import annotations

from pathlib import Path

VERSION = "1.0.0"
TFDS_DIR = "tfds"
TEMPLATE = "{SPLIT}-{SHARD_X_OF_Y}.tfrecord"

ABOUT = {
    "mnist": {
        "description": "MNIST handwritten digits (28x28 greyscale), prepared by tlpipe: official train/test kept, "
                       "validation carved from train by a stable hash of the source id.",
        "homepage": "http://yann.lecun.com/exdb/mnist/",
        "citation": "@article{lecun2010mnist, title={MNIST handwritten digit database}, "
                    "author={LeCun, Yann and Cortes, Corinna and Burges, CJ}, "
                    "journal={ATT Labs [Online]. Available: http://yann.lecun.com/exdb/mnist}, volume={2}, year={2010}}",
    },
    "emnist_letters": {
        "description": "EMNIST letters (28x28 greyscale, a-z, upright), prepared by tlpipe.",
        "homepage": "https://www.nist.gov/itl/products-and-services/emnist-dataset",
        "citation": "@article{cohen_afshar_tapson_schaik_2017, title={EMNIST: an extension of MNIST to handwritten "
                    "letters}, author={Cohen, Gregory and Afshar, Saeed and Tapson, Jonathan and van Schaik, André}, "
                    "journal={arXiv preprint arXiv:1702.05373}, year={2017}}",
    },
    "cards": {
        "description": "Playing cards (53 classes, 224x224 RGB JPEG), the Kaggle dataset "
                       "gpiosenka/cards-image-datasetclassification, prepared by tlpipe (its own splits kept).",
        "homepage": "https://www.kaggle.com/datasets/gpiosenka/cards-image-datasetclassification",
        "citation": "@misc{gpiosenka_cards, author={Gerry (gpiosenka)}, title={Cards Image Dataset-Classification}, "
                    "howpublished={Kaggle}, url={https://www.kaggle.com/datasets/gpiosenka/"
                    "cards-image-datasetclassification}}",
    },
}


def tfds_name(key: str) -> str:
    return f"tlpipe_{key}"


def features(manifest: dict):
    import tensorflow_datasets as tfds

    names = [manifest["labels"][str(i)] for i in range(len(manifest["labels"]))]
    encoding = "jpeg" if str(manifest.get("encoding", "png")).lower() in ("jpeg", "jpg") else "png"
    return tfds.features.FeaturesDict({
        "image/encoded": tfds.features.Image(shape=tuple(manifest["image_shape"]), encoding_format=encoding),
        "label": tfds.features.ClassLabel(names=names),
        "source_id": tfds.features.Text(),
    })


def checksums(manifest: dict) -> dict:
    """The manifest's checksums: the source files and every shard."""
    return {"source_files": [{k: f.get(k) for k in ("url", "member", "file", "source", "sha256") if f.get(k)}
                             for f in (manifest.get("source") or {}).get("files", [])],
            "shards": {s["file"]: s["sha256"] for e in manifest["splits"].values() for s in e["shards"]}}


def write_tfds_metadata(processed_dir: Path, manifest: dict, key: str) -> list[Path]:
    """TFDS metadata for the shards in `processed_dir` (see the module doc); returns the folders written."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core import dataset_info, utils

    processed_dir = Path(processed_dir)
    name = tfds_name(key)
    about = {"description": f"{key}: image dataset prepared by tlpipe.", "homepage": "", "citation": "",
             **ABOUT.get(key, {})}
    notes = " ".join(manifest.get("notes") or [])
    feats = features(manifest)
    written = []
    for target, prefix in ((processed_dir, ""), (processed_dir / TFDS_DIR / name / VERSION, "../../../")):
        target.mkdir(parents=True, exist_ok=True)
        template = tfds.core.ShardedFileTemplate(data_dir=target, template=prefix + TEMPLATE,
                                                 dataset_name=name, filetype_suffix="tfrecord")
        splits = [tfds.core.SplitInfo(name=split, shard_lengths=[s["count"] for s in entry["shards"]],
                                      num_bytes=sum(s["bytes"] for s in entry["shards"]), filename_template=template)
                  for split, entry in manifest["splits"].items() if entry["shards"]]
        identity = dataset_info.DatasetIdentity(name=name, version=utils.Version(VERSION), data_dir=str(target),
                                                module_name="")
        info = dataset_info.DatasetInfo(
            builder=identity, features=feats, supervised_keys=("image/encoded", "label"),
            description=f"{about['description']} {notes}".strip(), homepage=about["homepage"] or None,
            citation=about["citation"] or None,
            metadata=tfds.core.MetadataDict(checksums=checksums(manifest), tlpipe_dataset=key))
        info.set_file_format("tfrecord")
        info.set_splits(tfds.core.SplitDict(splits))
        info.write_to_directory(target)
        written.append(target)
    return written


def write_readers(out_dir, manifest: dict, key: str) -> None:
    """What standard tools read, beside the shards: the example index (Parquet, tasks/records/tables.py) and TFDS's
    metadata (here). Both prepare paths (arrays and photo folders) call it."""
    from tasks.records.tables import write_index

    write_index(out_dir, manifest)
    write_tfds_metadata(out_dir, manifest, key)
