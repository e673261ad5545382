"""check@<key>: planted problems of every kind are found (the right kind, the right pair), a clean folder
passes, the drop/relabel list changes the next prepare@, and the array datasets' checks run on the MNIST
fixture. The failing verdict stopping `dvc repro` before train@ is tests/test_dvc.py's."""
import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from photos import jpeg, shape_image, shape_tree, small_prepare, write, write_params
from tasks.check.run import BACKBONE, CHECK_DEFAULTS, CheckFailed
from tasks.stages.data import check_stage, fetch_stage, prepare_stage
from tasks.stages.project import Project

SIZE = 128  # photo-like: JPEG noise at 64 px is as large as a corner index
REPO_PARAMS = yaml.safe_load(open(__import__("pathlib").Path(__file__).resolve().parents[1] / "params.yaml"))


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv("TLPIPE_MIRROR", raising=False)


def project(tmp_path, src, check=None, **prepare):
    root = tmp_path / "proj"
    write_params(root, {"pets": {"source": str(src)}},
                 {"pets": small_prepare(image_size=SIZE, max_pixels=4 * SIZE * SIZE, **prepare)})
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["check"] = {"pets": {"image_size": 64, **(check or {})}}  # the backbone's input: fast
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    p = Project(root)
    fetch_stage(p, "pets")
    prepare_stage(p, "pets")
    return p


def findings(p, key="pets"):
    return pq.read_table(p.check_dir(key) / "findings.parquet").to_pylist()


def reencoded(path, quality=70) -> bytes:
    buf = io.BytesIO()
    Image.open(path).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("planted")
    src = tmp / "photos"
    shape_tree(src, {"red": 16, "green": 16, "blue": 16}, prefix="train", size=SIZE)
    shape_tree(src, {"red": 4, "green": 4, "blue": 4}, prefix="valid", size=SIZE)
    shape_tree(src, {"red": 4, "green": 4, "blue": 4}, prefix="test", size=SIZE)
    t = src / "train"
    # a re-encoded copy of a red train image filed under green
    write(t / "green/copy_of_red_003.jpg", reencoded(t / "red/003.jpg"))
    # a lightly cropped copy of a valid image, in train (same class: a duplicate and a leak)
    im = Image.open(src / "valid/blue/001.jpg")
    write(t / "blue/crop_of_valid_001.jpg", jpeg(im.crop((4, 4, SIZE - 4, SIZE - 4)).resize((SIZE, SIZE),
                                                                                           Image.Resampling.LANCZOS)))
    # swapped labels: a red image in green/ and a green one in red/
    write(t / "green/swapped.jpg", jpeg(shape_image("red", 777, SIZE)))
    write(t / "red/swapped.jpg", jpeg(shape_image("green", 778, SIZE)))
    # a black image and a tiny one
    write(t / "blue/black.jpg", jpeg(Image.new("RGB", (SIZE, SIZE), (0, 0, 0))))
    write(t / "red/tiny.jpg", jpeg(shape_image("red", 779, size=6)))
    p = project(tmp, src)
    with pytest.raises(CheckFailed) as failed:
        check_stage(p, "pets")
    return {"project": p, "src": src, "error": str(failed.value), "rows": findings(p),
            "summary": json.loads((p.check_dir("pets") / "summary.json").read_text())}


def test_every_planted_problem_is_found_as_its_kind(planted):
    rows = planted["rows"]
    pairs = {(r["kind"], r["source_id"], r["other_source_id"], r["split"], r["other_split"])
             for r in rows if r["kind"] in ("duplicate", "label_conflict")}
    assert ("label_conflict", "train/green/copy_of_red_003.jpg", "train/red/003.jpg", "train", "train") in pairs \
        or ("label_conflict", "train/red/003.jpg", "train/green/copy_of_red_003.jpg", "train", "train") in pairs
    assert ("duplicate", "train/blue/crop_of_valid_001.jpg", "valid/blue/001.jpg", "train", "validation") in pairs
    issues = {r["source_id"]: r["suggested_label_name"] for r in rows if r["kind"] == "label_issue"}
    assert issues.get("train/green/swapped.jpg") == "red" and issues.get("train/red/swapped.jpg") == "green"
    odd = {r["source_id"]: r["detail"] for r in rows if r["kind"] == "outlier"}
    assert "dark" in odd["train/blue/black.jpg"]
    assert "tiny before the resize (6x6" in odd["train/red/tiny.jpg"]
    # nothing else is a pair: distinct pictures of one class are not duplicates
    assert len(pairs) == 2, pairs


def test_a_failing_check_says_why_in_one_line_and_still_writes_its_page(planted):
    error, summary, p = planted["error"], planted["summary"], planted["project"]
    assert "\n" not in error
    assert error.startswith("check@pets failed: 1 label conflicts; leaks across splits: 1 train/validation")
    assert f"open {p.check_dir('pets') / 'README.md'}" in error
    assert summary["verdict"] == "fail" and summary["leaks"] == {"train/validation": 1}
    assert summary["counts"]["label_conflict"] == 1 and summary["counts"]["duplicate"] == 1
    page = (p.check_dir("pets") / "README.md").read_text()
    assert "verdict **FAIL**" in page and "prepare.pets.drop" in page
    for png in ("pairs.png", "label_issues.png", "outliers.png", "balance.png"):
        assert Image.open(p.check_dir("pets") / png).size[0] > 100
    assert summary["balance"]["train"]["smallest"]["count"] >= 16 and summary["balance"]["validation"]["ratio"] == 1.0


def test_the_drop_and_relabel_lists_change_the_next_prepare_and_the_check_passes(planted, tmp_path):
    p = planted["project"]
    params = yaml.safe_load(p.params_file.read_text())
    params["prepare"]["pets"]["drop"] = ["train/green/copy_of_red_003.jpg", "train/blue/crop_of_valid_001.jpg",
                                         "train/blue/black.jpg", "train/red/tiny.jpg"]
    params["prepare"]["pets"]["relabel"] = {"train/green/swapped.jpg": "red", "train/red/swapped.jpg": "green"}
    p.params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    manifest = prepare_stage(p, "pets")
    assert manifest["edits"]["dropped"] == sorted(params["prepare"]["pets"]["drop"])
    assert {(e["source_id"], e["from"], e["to"]) for e in manifest["edits"]["relabelled"]} == {
        ("train/green/swapped.jpg", "green", "red"), ("train/red/swapped.jpg", "red", "green")}
    reasons = {e["file"]: e["reason"] for e in manifest["skipped"]}
    assert reasons["train/blue/black.jpg"] == "dropped by prepare.pets.drop"
    summary = check_stage(p, "pets")
    assert summary["verdict"] == "pass", summary["reasons"]
    assert summary["counts"]["label_conflict"] == 0 and summary["leaks"] == {}
    relabelled = {r["source_id"] for r in findings(p) if r["kind"] == "label_issue"}
    assert not relabelled & {"train/green/swapped.jpg", "train/red/swapped.jpg"}
    assert (planted["src"] / "train/blue/black.jpg").exists()  # the user's files are untouched
    # an id that is no file is an error naming the key
    params["prepare"]["pets"]["drop"] = ["train/blue/nope.jpg"]
    p.params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    with pytest.raises(ValueError, match=r"prepare.pets.drop: 'train/blue/nope.jpg' is no file of"):
        prepare_stage(p, "pets")


def test_a_clean_folder_gives_no_fatal_finding(tmp_path):
    src = tmp_path / "photos"
    shape_tree(src, {"red": 12, "green": 12, "blue": 12}, seed=5, size=SIZE)
    p = project(tmp_path, src)
    summary = check_stage(p, "pets")
    assert summary["verdict"] == "pass", summary["reasons"]
    assert summary["counts"]["label_conflict"] == 0 and summary["leaks"] == {}


def test_array_datasets_are_checked_on_pixels_and_a_copied_digit_is_a_leak(tmp_path):
    """The MNIST fixture with one train digit planted again in the test split: an exact copy across
    splits, found by bytes; kNN label issues in PCA space run too."""
    from project import mnist_mirror_params

    from tasks.formats.idx import read_idx, write_idx

    root = tmp_path / "proj"
    params = mnist_mirror_params(tmp_path, root)
    params["check"] = {"mnist": {}}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    p = Project(root)
    fetch_stage(p, "mnist")
    prepare_stage(p, "mnist")
    summary = check_stage(p, "mnist")
    assert summary["kind"] == "arrays" and summary["verdict"] == "pass", summary
    assert summary["method"]["labels"].startswith("leave-one-out")
    # plant: test image 0 := train image 0 (same label), rewrite the raw files, prepare again
    raw = p.raw_dir("mnist")
    train_x, test_x = read_idx(raw / "train-images-idx3-ubyte.gz"), read_idx(raw / "t10k-images-idx3-ubyte.gz")
    train_y, test_y = read_idx(raw / "train-labels-idx1-ubyte.gz"), read_idx(raw / "t10k-labels-idx1-ubyte.gz")
    test_x[0], test_y[0] = train_x[0], train_y[0]
    write_idx(raw / "t10k-images-idx3-ubyte.gz", test_x)
    write_idx(raw / "t10k-labels-idx1-ubyte.gz", test_y)
    prepare_stage(p, "mnist")
    with pytest.raises(CheckFailed, match="leaks across splits: 1 train/test|leaks across splits: 1 validation/test"):
        check_stage(p, "mnist")
    rows = findings(p, "mnist")
    copy = [r for r in rows if r["kind"] == "duplicate"]
    assert len(copy) == 1 and copy[0]["detail"] == "identical bytes" and copy[0]["other_source_id"] == "mnist/test/000000"


def test_the_backbone_pin_is_the_params_weights_pin_and_defaults_are_valid():
    entry = REPO_PARAMS["weights"]["efficientnet_lite0_224"]
    assert (entry["package"], entry["package_file"], entry["sha256"]) == \
        (BACKBONE["package"], BACKBONE["file"], BACKBONE["sha256"])
    assert set(REPO_PARAMS["check"]) == set(REPO_PARAMS["datasets"])
    assert 0 < CHECK_DEFAULTS["cosine_min"] <= 1 and 0 < CHECK_DEFAULTS["pixel_max"] < 1
    np.testing.assert_equal(CHECK_DEFAULTS["fail_on_leaks"], True)


def test_a_failing_check_stops_dvc_repro_before_train(tmp_path):
    """`dvc repro train@tiny` on a project whose check fails: check@mnist exits 1 with its one line, its
    page is there to read, and train@tiny never starts (no model, nothing recorded for it)."""
    from dvcproject import dvc_env, init_dvc_project
    from project import mnist_mirror_params

    import subprocess

    root = tmp_path / "proj"
    params = mnist_mirror_params(tmp_path, root)
    params.update({"check": {"mnist": {"pixel_diff_max": 1.0}},  # every nearest neighbour is a "copy": leaks
                   "models": {"tiny": {"dataset": "mnist", "init": "tasks/cnn/models.py", "trainer": "tasks/cnn",
                                       "arch": "softmax", "epochs": 1, "min_accuracy": 0.0}},
                   "weights": {}, "features": {}, "teach": {}, "report": {}})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    init_dvc_project(root, keep_params=True)
    done = subprocess.run(["dvc", "repro", "train@tiny"], cwd=root, env=dvc_env(PYTHONPATH=str(root)),
                          capture_output=True, text=True, timeout=600)
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    assert "tlpipe check: error: check@mnist failed: " in out and "leaks across splits" in out
    assert "Running stage 'train@tiny'" not in out and not (root / "models/tiny/model.keras").exists()
    assert (root / "reports/data/mnist/README.md").exists()  # the page to fix the data from
    assert json.loads((root / "reports/data/mnist/verdict.json").read_text())["verdict"] == "fail"
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    assert "prepare@mnist" in lock and "check@mnist" not in lock and "train@tiny" not in lock


def test_the_report_index_links_every_data_check_page(tmp_path):
    from tasks.report.pages import write_index

    (tmp_path / "summaries").mkdir()
    text = write_index(tmp_path, [], {}, checks=["mnist", "cards"])["markdown"]
    assert "Data checks (check@, before any training): [mnist](data/mnist/README.md), [cards](data/cards/README.md)" \
        in text
