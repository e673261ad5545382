"""Prepared datasets read by standard tools: TFDS (builder_from_directory and tfds.load) and the
Parquet example index, both checked against tasks.records.shards.read_split on fixtures; and the opt-in
real-data check that our MNIST test split equals TFDS's own `mnist` builder's."""
import hashlib
import io
from pathlib import Path

import numpy as np
import pytest

from photos import class_tree, small_prepare, write_params
from tasks.stages.project import Project
from tasks.stages.data import fetch_stage as fetch
from tasks.stages.data import prepare_stage as prepare
from tasks.records.shards import read_split
from tasks.records.tables import read_table
from tasks.prepare.tfds_export import tfds_name

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def ours(processed, split):
    """(images, labels, source ids) of a split as read_split yields them."""
    xs, ys, ids = [], [], []
    for x, y, i in read_split(processed, split, with_ids=True).as_numpy_iterator():
        xs.append(x)
        ys.append(int(y))
        ids.append(i.decode())
    return np.stack(xs), np.array(ys), ids


def digests(examples) -> dict:
    """source id -> (label, shape, sha256 of the decoded pixels), for (image, label, id) triples."""
    return {i.decode(): (int(y), tuple(x.shape), hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest())
            for x, y, i in examples}


def check_tfds_equals_ours(processed: Path, key: str):
    import tensorflow_datasets as tfds

    from tasks.records.shards import load_manifest

    manifest = load_manifest(processed)
    names = [manifest["labels"][str(i)] for i in range(len(manifest["labels"]))]
    by_dir = tfds.builder_from_directory(str(processed))
    by_name = tfds.builder(tfds_name(key), data_dir=str(processed / "tfds"))
    for builder in (by_dir, by_name):
        assert builder.info.features["label"].names == names
        assert {s: builder.info.splits[s].num_examples for s in builder.info.splits} == \
            {s: e["count"] for s, e in manifest["splits"].items() if e["count"]}
        assert builder.info.homepage and builder.info.citation and builder.info.description
        assert builder.info.metadata["checksums"]["shards"] == \
            {s["file"]: s["sha256"] for e in manifest["splits"].values() for s in e["shards"]}
    for split, entry in manifest["splits"].items():
        if not entry["count"]:
            continue
        expected = digests(read_split(processed, split, with_ids=True).as_numpy_iterator())
        for ds in (by_dir.as_dataset(split=split, shuffle_files=False),
                   tfds.load(tfds_name(key), data_dir=str(processed / "tfds"), split=split, shuffle_files=False,
                             download=False)):
            # keyed by source id: TFDS reads the shards in turn, read_split interleaves them
            got = digests((g["image/encoded"], g["label"], g["source_id"]) for g in tfds.as_numpy(ds))
            assert len(got) == len(expected) == entry["count"]
            assert got == expected
    x, y = next(iter(tfds.load(tfds_name(key), data_dir=str(processed / "tfds"), split=next(iter(manifest["splits"])),
                               as_supervised=True, download=False)))
    assert x.dtype.name == "uint8" and tuple(x.shape) == tuple(manifest["image_shape"]) and y.dtype.name == "int64"
    # no second copy of the images: the only record files are our shards
    records = sorted(p.relative_to(processed).as_posix() for p in processed.rglob("*") if "tfrecord" in p.name)
    assert records == sorted(s["file"] for e in manifest["splits"].values() for s in e["shards"])


def check_index(processed: Path):
    from tasks.records.shards import load_manifest

    manifest = load_manifest(processed)
    index = read_table(processed / "index.parquet")
    assert index.column_names == ["source_id", "split", "label", "label_name", "shard", "record", "bytes",
                                  "sha256", "height", "width"]
    assert index.num_rows == sum(e["count"] for e in manifest["splits"].values())
    rows = index.to_pylist()
    import tensorflow as tf

    current, records = None, []
    for row in rows:  # rows come shard by shard: one shard's records in memory at a time
        if row["shard"] != current:
            current = row["shard"]
            records = [r.numpy() for r in tf.data.TFRecordDataset(str(processed / current))]
        ex = tf.train.Example.FromString(records[row["record"]]).features.feature
        encoded = ex["image/encoded"].bytes_list.value[0]
        assert ex["source_id"].bytes_list.value[0].decode() == row["source_id"]
        assert row["sha256"] == hashlib.sha256(encoded).hexdigest() and row["bytes"] == len(encoded)
        assert row["label"] == ex["label"].int64_list.value[0] == int(
            next(k for k, v in manifest["labels"].items() if v == row["label_name"]))
        assert (row["height"], row["width"]) == tuple(manifest["image_shape"][:2])
        assert row["shard"].startswith(row["split"] + "-")
    for split, entry in manifest["splits"].items():
        if entry["count"]:
            ids = [i.decode() for _, _, i in read_split(processed, split, with_ids=True).as_numpy_iterator()]
            assert sorted(r["source_id"] for r in rows if r["split"] == split) == sorted(ids)


@pytest.fixture(scope="module")
def mnist_like(tmp_path_factory):
    from project import write_mirror
    from project import write_params as project_params

    root = tmp_path_factory.mktemp("std")
    pins = write_mirror(root / "mirror", mat=False, idx=False)
    project_params(root / "proj", mirror=str(root / "mirror"), datasets=("mnist",), pins=pins)
    project = Project(root / "proj")
    fetch(project, "mnist")
    prepare(project, "mnist")
    return project.processed_dir("mnist")


def test_mnist_fixture_loads_in_tfds_like_read_split(mnist_like):
    check_tfds_equals_ours(mnist_like, "mnist")


def test_mnist_fixture_example_index(mnist_like):
    check_index(mnist_like)


def test_photo_folder_loads_in_tfds_and_has_an_index(tmp_path):
    src = tmp_path / "photos"
    class_tree(src, {"ace of clubs": 4, "two of hearts": 4}, prefix="train")
    class_tree(src, {"ace of clubs": 2, "two of hearts": 2}, prefix="valid")
    write_params(tmp_path / "proj", {"cards": {"source": str(src)}}, {"cards": small_prepare()})
    project = Project(tmp_path / "proj")
    fetch(project, "cards")
    prepare(project, "cards")
    check_tfds_equals_ours(project.processed_dir("cards"), "cards")
    check_index(project.processed_dir("cards"))


@pytest.mark.realdata
@pytest.mark.skipif(not (SHARED / "mnist").is_dir(), reason="needs ../shared/data/mnist")
def test_our_mnist_test_split_equals_tfds_own_mnist_builder(tmp_path):
    """TFDS's catalogue `mnist` builder, prepared from the same upstream files (manual_dir, no
    network), gives the same 10,000 test images and labels as our test split (as a multiset keyed
    by image bytes: TFDS orders its split differently)."""
    import tensorflow_datasets as tfds

    write_params(tmp_path / "proj", {}, {"mnist": {"validation_percentage": 10, "testing_percentage": 10,
                                                   "shard_mb": 128, "min_shards": 2}}, mirror=str(SHARED))
    project = Project(tmp_path / "proj")
    fetch(project, "mnist")
    prepare(project, "mnist")
    images, labels, _ = ours(project.processed_dir("mnist"), "test")
    builder = tfds.builder("mnist", data_dir=str(tmp_path / "tfds"))
    config = tfds.download.DownloadConfig(manual_dir=str(SHARED / "mnist"), download_mode=tfds.GenerateMode.REUSE_DATASET_IF_EXISTS)
    builder.download_and_prepare(download_config=config, download_dir=str(tmp_path / "downloads"))
    theirs = list(tfds.as_numpy(builder.as_dataset(split="test", shuffle_files=False)))
    assert len(theirs) == len(images) == 10_000

    def keyed(pairs):
        return sorted((img.tobytes(), int(y)) for img, y in pairs)

    assert keyed((t["image"], t["label"]) for t in theirs) == keyed(zip(images, labels))
    check_tfds_equals_ours(project.processed_dir("mnist"), "mnist")


@pytest.mark.realdata
@pytest.mark.parametrize("key, needs", [("emnist_letters", "emnist"), ("cards", "cards")])
def test_real_datasets_load_in_tfds(tmp_path, key, needs):
    """The real EMNIST letters and cards (from ../shared/data) through both TFDS entry points."""
    if not (SHARED / needs).exists():
        pytest.skip(f"needs ../shared/data/{needs}")
    import yaml

    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    write_params(tmp_path / "proj", {key: (params["fetch"] or {}).get(key) or {}},
                 {key: params["prepare"][key]}, workers=2, mirror=str(SHARED))
    project = Project(tmp_path / "proj")
    fetch(project, key)
    prepare(project, key)
    check_tfds_equals_ours(project.processed_dir(key), key)
    check_index(project.processed_dir(key))
