"""fetch + prepare on real-format fixtures served by a loopback HTTP server (mocked downloads)."""
import json

import numpy as np
import pytest

from fixtures import emnist_like, mnist_like
from project import serve_dir, write_mirror, write_params
from tasks.stages.project import Project
from tasks.fetch.download import ChecksumError
from tasks.stages.data import fetch_stage as fetch
from tasks.formats.normalize import emnist_upright
from tasks.stages.data import prepare_stage as prepare
from tasks.records.shards import read_split


@pytest.fixture
def mirror(tmp_path):
    return tmp_path / "mirror"


def read_back(processed, split):
    """{source_id: (image, label)} read through the tf.data reader."""
    return {sid.numpy().decode(): (img.numpy(), int(lbl))
            for img, lbl, sid in read_split(processed, split, with_ids=True)}


def test_mnist_over_http_round_trips_exactly(tmp_path, mirror, http_server):
    pins = write_mirror(mirror, mat=False, idx=False)
    root = tmp_path / "proj"
    write_params(root, mirror=serve_dir(http_server, mirror), pins=pins)
    project = Project(root)

    record = fetch(project, "mnist")
    assert record["format"] == "idx" and all(f["verified"] for f in record["files"])
    manifest = prepare(project, "mnist")

    counts = {s: v["count"] for s, v in manifest["splits"].items()}
    assert counts["test"] == 30 and counts["train"] + counts["validation"] == 80
    assert manifest["num_classes"] == 10 and manifest["image_shape"] == [28, 28, 1]
    labels = json.loads((root / "data/processed/mnist/labels.json").read_text())
    assert labels == {str(i): str(i) for i in range(10)}

    train_x, train_y = mnist_like(80, 0)
    test_x, test_y = mnist_like(30, 1)
    got = {**read_back(project.processed_dir("mnist"), "train"),
           **read_back(project.processed_dir("mnist"), "validation"),
           **read_back(project.processed_dir("mnist"), "test")}
    assert len(got) == 110
    for sid, (image, label) in got.items():
        _, official, index = sid.split("/")
        x, y = (train_x, train_y) if official == "train" else (test_x, test_y)
        np.testing.assert_array_equal(image[..., 0], x[int(index)])
        assert label == y[int(index)]


def test_emnist_mat_from_zip_by_range_is_upright_with_labels_0_to_25(tmp_path, mirror, http_server):
    pins = write_mirror(mirror, idx=False)
    root = tmp_path / "proj"
    write_params(root, mirror=serve_dir(http_server, mirror), pins=pins, emnist_format="mat")
    project = Project(root)

    assert fetch(project, "emnist_letters")["format"] == "mat"
    manifest = prepare(project, "emnist_letters")
    assert manifest["num_classes"] == 26 and manifest["labels"]["0"] == "a" and manifest["labels"]["25"] == "z"
    flat, raw_labels = emnist_like(104, 0)
    upright = emnist_upright(flat)
    for sid, (image, label) in read_back(project.processed_dir("emnist_letters"), "train").items():
        i = int(sid.rsplit("/", 1)[1])
        if sid.split("/")[1] == "train":
            np.testing.assert_array_equal(image[..., 0], upright[i])
            assert label == raw_labels[i] - 1


def test_emnist_auto_falls_back_to_idx_and_carves_test_when_images_are_missing(tmp_path, mirror):
    pins = write_mirror(mirror, mat=False, test_images=False)
    root = tmp_path / "proj"
    write_params(root, mirror=str(mirror), pins=pins)  # a local directory mirror
    project = Project(root)

    record = fetch(project, "emnist_letters")
    assert record["format"] == "idx"
    assert record["unavailable_forms"] and "matlab.zip" in record["unavailable_forms"][0]
    manifest = prepare(project, "emnist_letters")
    assert any("test-images" in s["file"] for s in manifest["skipped"])
    assert any("carved from train" in n for n in manifest["notes"])
    assert sum(v["count"] for v in manifest["splits"].values()) == 104  # official test labels unused
    assert manifest["splits"]["test"]["count"] > 0


def test_wrong_pin_fails_and_leaves_no_output(tmp_path, mirror, http_server):
    pins = write_mirror(mirror, mat=False, idx=False)
    pins["mnist"]["t10k-labels-idx1-ubyte.gz"] = "0" * 64
    root = tmp_path / "proj"
    write_params(root, mirror=serve_dir(http_server, mirror), pins=pins)
    with pytest.raises(ChecksumError, match="0{64}"):
        fetch(Project(root), "mnist")
    assert not (root / "data/raw/mnist").exists()
    assert not [p for p in (root / "data/raw").iterdir()]  # no temp dirs left behind either


def test_shards_do_not_depend_on_checkout_path_or_worker_count(tmp_path, mirror, monkeypatch):
    pins = write_mirror(mirror, mat=False, idx=False)
    sums = []
    for name, workers in (("a", "1"), ("elsewhere/b", "2")):
        root = tmp_path / name
        write_params(root, mirror=str(mirror), pins=pins, datasets=("mnist",))
        project = Project(root)
        fetch(project, "mnist")
        monkeypatch.setenv("TLPIPE_WORKERS", workers)
        manifest = prepare(project, "mnist")
        sums.append({s: [sh["sha256"] for sh in v["shards"]] for s, v in manifest["splits"].items()})
    assert sums[0] == sums[1]
    assert len(sums[0]["train"]) == 2  # min_shards


def test_batched_and_shuffled_reads_hold_the_same_examples(tmp_path, mirror):
    pins = write_mirror(mirror, mat=False, idx=False)
    root = tmp_path / "proj"
    write_params(root, mirror=str(mirror), pins=pins, datasets=("mnist",))
    project = Project(root)
    fetch(project, "mnist")
    prepare(project, "mnist")
    one_by_one = read_back(project.processed_dir("mnist"), "train")
    batched = {}
    for images, labels, ids in read_split(project.processed_dir("mnist"), "train", batch_size=7,
                                          shuffle=True, seed=3, with_ids=True):
        assert images.shape[1:] == (28, 28, 1) and images.dtype == "uint8"
        for image, label, sid in zip(images.numpy(), labels.numpy(), ids.numpy()):
            batched[sid.decode()] = (image, int(label))
    assert batched.keys() == one_by_one.keys()
    for sid, (image, label) in batched.items():
        np.testing.assert_array_equal(image, one_by_one[sid][0])
        assert label == one_by_one[sid][1]
