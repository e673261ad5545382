"""Image-folder datasets (cards, banknotes, any `datasets: {key: folder}`): fetch + prepare on PIL-made photo trees,
with every kind of bad input a real photo folder has."""
import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image, ImageFile

from photos import class_tree, encoded, jpeg, pattern, small_prepare, write, write_params
from tasks.prepare import photos as image_folder
from tasks.prepare.splits import percentage
from tasks.cli import main
from tasks.stages.project import Project
from tasks.fetch.download import NotFound
from tasks.stages.data import fetch_stage as fetch
from tasks.prepare.images import BadImage, Options, convert
from tasks.stages.data import prepare_stage as prepare
from tasks.records.shards import read_split
from tasks.sources.banknotes import STUDY_CLASSES, parse_class


@pytest.fixture(autouse=True)
def no_mirror(monkeypatch):
    monkeypatch.delenv("TLPIPE_MIRROR", raising=False)
    monkeypatch.delenv("TLPIPE_WORKERS", raising=False)


def read_back(processed, split):
    """{source_id: (image, label)} through the tf.data reader."""
    return {sid.numpy().decode(): (img.numpy(), int(lbl))
            for img, lbl, sid in read_split(processed, split, with_ids=True)}


def raw_records(processed, manifest):
    """{source_id: stored image bytes} straight from the shards."""
    import tensorflow as tf

    spec = {"image/encoded": tf.io.FixedLenFeature([], tf.string), "source_id": tf.io.FixedLenFeature([], tf.string)}
    files = [str(processed / sh["file"]) for s in manifest["splits"].values() for sh in s["shards"]]
    out = {}
    for rec in tf.data.TFRecordDataset(files):
        ex = tf.io.parse_single_example(rec, spec)
        out[ex["source_id"].numpy().decode()] = ex["image/encoded"].numpy()
    return out


def exif_jpeg(image, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    return jpeg(image, exif=exif.tobytes())


def halves(size, first, second, vertical=True):
    """An image whose left (or top) half is `first` and the other half `second`."""
    w, h = size
    a = np.zeros((h, w, 3), np.uint8)
    if vertical:
        a[:, : w // 2], a[:, w // 2:] = first, second
    else:
        a[: h // 2], a[h // 2:] = first, second
    return Image.fromarray(a, "RGB")


def messy_cards(src):
    """An own-splits tree like the Kaggle cards layout, with cards.csv and every bad input."""
    class_tree(src, {"red": 5, "green": 3, "blue": 3}, prefix="train")
    class_tree(src, {"tiny": 1}, prefix="train")
    class_tree(src, {"red": 1, "green": 1, "blue": 1}, prefix="valid")
    t = src / "train"
    write(t / "red/empty.jpg", b"")
    write(t / "red/truncated.jpg", jpeg(pattern((200, 10, 10), (64, 64), seed=9))[:700])
    write(t / "red/random.jpg", np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    write(t / "red/readme.txt", b"photos of red things\n")
    write(t / "red/bomb.png", encoded(Image.new("RGB", (200, 200), (255, 0, 0)), "PNG"))
    write(t / "red/cmyk.jpg", jpeg(Image.new("CMYK", (40, 40), (0, 255, 255, 0))))
    write(t / "green/gray.png", encoded(Image.new("L", (32, 32), 100), "PNG"))
    write(t / "green/deep.png", encoded(Image.fromarray(np.full((32, 32), 128 * 257, np.uint16)), "PNG"))
    write(t / "green/flip.jpg", exif_jpeg(halves((32, 32), (0, 200, 0), (220, 0, 0), vertical=False), 3))
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[:, 16:] = (0, 0, 255, 255)  # left half fully transparent (black underneath), right half blue
    write(t / "blue/rgba.png", encoded(Image.fromarray(rgba, "RGBA"), "PNG"))
    write(t / "blue/palette.gif", encoded(Image.new("RGB", (32, 32), (0, 0, 200)).convert("P"), "GIF"))
    write(t / "blue/rotated.jpg", exif_jpeg(halves((48, 32), (220, 0, 0), (0, 0, 220)), 6))
    write(t / "blue/progressive.jpg", jpeg(pattern((30, 40, 210), seed=77), progressive=True))
    write(t / "blue/pic.bmp", encoded(Image.new("RGB", (32, 32), (0, 0, 180)), "BMP"))
    write(t / "blue/pic.webp", encoded(Image.new("RGB", (32, 32), (0, 0, 180)), "WEBP", lossless=True))
    write(t / "stray.jpg", jpeg(pattern((1, 2, 3))))
    rows = ["class index,filepaths,labels,card type,data set",
            "2,train/red/000.jpg,red,red,train",
            "2,train/red/001.jpg,blue,blue,train",  # label disagrees with the folder
            "0,train/ace of clubs/output,ace of clubs,ace,train",  # the real cards.csv's bogus row
            "2,valid/red/000.jpg,red,red,valid"]
    write(src / "cards.csv", ("\r\n".join(rows) + "\r\n").encode())


@pytest.fixture
def messy(tmp_path):
    src = tmp_path / "photos"
    messy_cards(src)
    root = tmp_path / "proj"
    write_params(root, {"cards": {"source": str(src)}}, {"cards": small_prepare()})
    return Project(root), src


def test_every_bad_input_is_skipped_with_its_reason_and_the_rest_is_right(messy):
    project, src = messy
    record = fetch(project, "cards")
    assert record["kind"] == "image_folder" and record["via"] == "folder"
    assert json.loads((project.raw_dir("cards") / "fetch.json").read_text()) == record
    manifest = prepare(project, "cards")

    reasons = {e["file"]: e["reason"] for e in manifest["skipped"]}
    assert reasons["train/red/empty.jpg"].startswith("empty file")
    assert reasons["train/red/truncated.jpg"].startswith("corrupt or truncated")
    assert reasons["train/red/random.jpg"].startswith("not an image")
    assert reasons["train/red/readme.txt"].startswith("not an image")
    assert reasons["train/red/bomb.png"].startswith("too many pixels: 200x200")
    assert "no such file" in reasons["train/ace of clubs/output"]
    assert "labels it 'blue'" in reasons["train/red/001.jpg"]
    assert reasons["train/stray.jpg"] == "not inside a class folder"
    assert len(reasons) == 8
    assert manifest["classes_skipped"] == [{"class": "tiny", "images": 1,
                                            "reason": "fewer than min_images_per_class=2 usable images"}]

    assert manifest["labels"] == {"0": "blue", "1": "green", "2": "red"}
    assert manifest["image_shape"] == [32, 32, 3] and manifest["encoding"] == "jpeg"
    # valid/ is the validation split; no test/ folder, so test is carved from train/ (testing_percentage 20)
    assert {s: v["count"] for s, v in manifest["splits"].items()} == {"train": 18, "validation": 3, "test": 2}
    assert {k: manifest["splits"]["train"]["per_class"][k] + manifest["splits"]["test"]["per_class"].get(k, 0)
            for k in "012"} == {"0": 9, "1": 6, "2": 5}
    assert manifest["images"]["passthrough"] == 13 and manifest["images"]["reencoded"] == 10
    assert manifest["images"]["rotated"] == 2
    assert "test: 20% of train/, carved by a stable hash of the relative path (the dataset has no test folder)" \
        in manifest["notes"]
    assert manifest["split_origin"] == {
        "train": "train/ less the splits carved from it", "validation": "the valid/ folder (the dataset's own)",
        "test": "20% of train/, carved by a stable hash of the relative path"}
    assert json.loads((project.processed_dir("cards") / "labels.json").read_text()) == manifest["labels"]

    processed = project.processed_dir("cards")
    got = {**read_back(processed, "train"), **read_back(processed, "validation"), **read_back(processed, "test")}
    assert len(got) == 23 and all(im.shape == (32, 32, 3) and im.dtype == np.uint8 for im, _ in got.values())
    assert got["valid/blue/000.jpg"][1] == 0 and got["train/red/cmyk.jpg"][1] == 2

    def mean(sid, rows=slice(None), cols=slice(None)):
        return got[sid][0][rows, cols].reshape(-1, 3).mean(axis=0)

    np.testing.assert_allclose(mean("train/red/cmyk.jpg"), (255, 0, 0), atol=12)  # CMYK -> RGB
    np.testing.assert_allclose(mean("train/green/gray.png"), (100, 100, 100), atol=3)  # grayscale -> RGB
    np.testing.assert_allclose(mean("train/green/deep.png"), (128, 128, 128), atol=3)  # 16-bit scaled, not clipped
    # alpha composited on white
    np.testing.assert_allclose(mean("train/blue/rgba.png", cols=slice(2, 12)), (255, 255, 255), atol=8)
    np.testing.assert_allclose(mean("train/blue/rgba.png", cols=slice(20, 30)), (0, 0, 255), atol=12)
    np.testing.assert_allclose(mean("train/blue/palette.gif"), (0, 0, 200), atol=8)
    np.testing.assert_allclose(mean("train/blue/pic.bmp"), (0, 0, 180), atol=8)
    np.testing.assert_allclose(mean("train/blue/pic.webp"), (0, 0, 180), atol=8)
    # EXIF orientation 6 (stored left|right = red|blue) must display as top red, bottom blue.
    np.testing.assert_allclose(mean("train/blue/rotated.jpg", rows=slice(2, 12)), (220, 0, 0), atol=15)
    np.testing.assert_allclose(mean("train/blue/rotated.jpg", rows=slice(20, 30)), (0, 0, 220), atol=15)
    # EXIF orientation 3 (rotate 180): stored top green / bottom red displays top red / bottom green.
    np.testing.assert_allclose(mean("train/green/flip.jpg", rows=slice(2, 12)), (220, 0, 0), atol=15)
    np.testing.assert_allclose(mean("train/green/flip.jpg", rows=slice(20, 30)), (0, 200, 0), atol=15)

    stored = raw_records(project.processed_dir("cards"), manifest)
    for sid in ("train/red/000.jpg", "train/green/002.jpg", "valid/blue/000.jpg"):  # baseline RGB 32x32 JPEGs
        assert stored[sid] == (src / sid).read_bytes()
    for sid in ("train/blue/progressive.jpg", "train/green/flip.jpg"):  # progressive / needs rotation: re-encoded
        assert stored[sid] != (src / sid).read_bytes()
        assert b"\xff\xc0" in stored[sid][:400]  # baseline SOF0


def test_output_is_byte_identical_whatever_the_worker_count(messy, monkeypatch):
    project, _ = messy
    monkeypatch.setattr(image_folder, "CHUNK", 3)  # many chunks, so the pool really splits the work
    fetch(project, "cards")
    one = prepare(project, "cards")
    out = project.processed_dir("cards")

    def contents():  # every file, the TFDS metadata folder and the Parquet index included
        return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    files = contents()
    assert {"index.parquet", "dataset_info.json", "tfds/tlpipe_cards/1.0.0/dataset_info.json"} <= set(files)
    monkeypatch.setenv("TLPIPE_WORKERS", "2")
    two = prepare(project, "cards")
    assert one == two
    assert contents() == files


def split_map(project, key):
    manifest = json.loads((project.processed_dir(key) / "manifest.json").read_text())
    return {sid: split for split in manifest["splits"] for sid in raw_records(project.processed_dir(key), {
        "splits": {split: manifest["splits"][split]}})}


def test_hash_splits_use_relative_paths_so_moving_the_dataset_changes_nothing(tmp_path):
    maps = []
    for where in ("a", "b/deeper"):
        src = tmp_path / where / "my photos"
        class_tree(src, {"cat": 6, "dog": 6, "owl": 6})
        root = tmp_path / where / "proj"
        write_params(root, {"pets": {"source": "../my photos"}},
                     {"pets": small_prepare(validation_percentage=25, testing_percentage=25, min_shards=2)})
        project = Project(root)
        fetch(project, "pets")
        manifest = prepare(project, "pets")
        assert set(manifest["splits"]) == {"train", "validation", "test"}
        assert all(len(s["shards"]) == min(2, s["count"]) for s in manifest["splits"].values())
        maps.append(split_map(project, "pets"))
    assert maps[0] == maps[1] and len(maps[0]) == 18
    assert "cat/000.jpg" in maps[0]  # ids are relative to the dataset root, no checkout path in them


def test_train_and_valid_without_test_get_a_test_split_carved_from_train_stably(tmp_path):
    """The cards mirror's layout: train/ and valid/, no test/. valid/ stays the validation split (it picks
    checkpoints); test is carved from train/ by the stable hash, the same wherever the data sits."""
    maps, manifests = [], []
    for where in ("a", "b/deeper"):
        src = tmp_path / where / "cards copy"
        class_tree(src, {"cat": 10, "dog": 10, "owl": 10}, prefix="train")
        class_tree(src, {"cat": 2, "dog": 2, "owl": 2}, prefix="valid")
        root = tmp_path / where / "proj"
        write_params(root, {"pets": {"source": "../cards copy"}}, {"pets": small_prepare(testing_percentage=20)})
        project = Project(root)
        fetch(project, "pets")
        manifests.append(prepare(project, "pets"))
        maps.append(split_map(project, "pets"))
    assert maps[0] == maps[1]  # path independent
    assert [m["splits"] for m in manifests[:1]] == [manifests[1]["splits"]]  # shards' sha256 included
    split_of = maps[0]
    assert {sid for sid, split in split_of.items() if split == "validation"} == \
        {f"valid/{c}/{i:03d}.jpg" for c in ("cat", "dog", "owl") for i in range(2)}
    test = {sid for sid, split in split_of.items() if split == "test"}
    assert test and all(sid.startswith("train/") for sid in test)
    # exactly the train/ files whose hash falls below testing_percentage
    assert test == {sid for sid in split_of if sid.startswith("train/")
                    and percentage(image_folder.hash_key(sid)) < 20}
    m = manifests[0]
    assert m["splits"]["test"]["count"] == len(test) and m["splits"]["train"]["count"] == 30 - len(test)
    assert m["split_origin"]["test"] == "20% of train/, carved by a stable hash of the relative path"
    assert m["split_origin"]["validation"] == "the valid/ folder (the dataset's own)"


def test_a_dataset_with_its_own_test_folder_keeps_it_and_carves_nothing(tmp_path):
    src = tmp_path / "photos"
    class_tree(src, {"cat": 5, "dog": 5}, prefix="train")
    class_tree(src, {"cat": 2, "dog": 2}, prefix="valid")
    class_tree(src, {"cat": 3, "dog": 3}, prefix="test")
    root = tmp_path / "proj"
    write_params(root, {"pets": {"source": str(src)}}, {"pets": small_prepare()})
    project = Project(root)
    fetch(project, "pets")
    manifest = prepare(project, "pets")
    assert {s: v["count"] for s, v in manifest["splits"].items()} == {"train": 10, "validation": 4, "test": 6}
    assert {sid for sid, split in split_map(project, "pets").items() if split == "test"} == \
        {f"test/{c}/{i:03d}.jpg" for c in ("cat", "dog") for i in range(3)}
    assert manifest["split_origin"] == {"train": "train/", "validation": "the valid/ folder (the dataset's own)",
                                        "test": "the test/ folder (the dataset's own)"}


@pytest.mark.parametrize("layout, knob", [("train_valid", "testing_percentage=0"), ("one_each", "testing_percentage=20")])
def test_a_dataset_left_without_a_test_split_is_an_error_naming_the_key(tmp_path, layout, knob):
    """No silent fall-back to validation: the user is told which key makes a test split."""
    src = tmp_path / "photos"
    if layout == "train_valid":
        class_tree(src, {"cat": 5, "dog": 5}, prefix="train")
        class_tree(src, {"cat": 1, "dog": 1}, prefix="valid")
        prep = small_prepare(testing_percentage=0)
    else:  # a user's folder with very few images per class: nothing falls into test
        class_tree(src, {"dog": 2, "owl": 2}, prefix="train")
        class_tree(src, {"dog": 1, "owl": 1}, prefix="valid")
        split_ids = [f"train/{c}/{i:03d}.jpg" for c in ("dog", "owl") for i in range(2)]
        assert all(percentage(i) >= 20 for i in split_ids)  # the fixture's premise
        prep = small_prepare(testing_percentage=20)
    root = tmp_path / "proj"
    write_params(root, {"pets": {"source": str(src)}}, {"pets": prep})
    project = Project(root)
    fetch(project, "pets")
    with pytest.raises(ValueError, match=rf"the test split is empty .*{knob}\): add images \(a test/ folder, "
                                         r"or more per class\) or raise prepare.pets.testing_percentage"):
        prepare(project, "pets")
    assert not project.processed_dir("pets").exists()


def test_evaluation_refuses_a_manifest_without_a_test_split():
    from tasks.evaluate.metrics import evaluation_split, split_origin

    manifest = {"dataset": "pets", "splits": {"train": {"count": 5}, "validation": {"count": 2}}}
    with pytest.raises(ValueError, match=r"m.json: dataset 'pets' has no test split.*rerun prepare@pets with "
                                         r"prepare.pets.testing_percentage > 0"):
        evaluation_split(manifest, "m.json")
    assert evaluation_split({**manifest, "splits": {**manifest["splits"], "test": {"count": 1}}}) == "test"
    # array datasets say how their test split was made in a note (their manifests are unchanged)
    assert split_origin({"notes": ["test: 10% of official train by stable hash (no official test split)"]}, "test") \
        == "10% of official train by stable hash (no official test split)"
    assert split_origin({"notes": []}, "test") == "the source's own test split"


def test_nohash_suffix_keeps_near_duplicates_together():
    key = image_folder.hash_key
    assert key("cat/img7_nohash_2.jpg") == key("cat/img7_nohash_0.jpg") == "cat/img7"
    assert image_folder.hash_key("a.jpg") == "a.jpg"


def test_too_few_classes_after_min_images_is_an_error(tmp_path):
    src = tmp_path / "photos"
    class_tree(src, {"cat": 5, "dog": 2, "owl": 1})
    root = tmp_path / "proj"
    write_params(root, {"pets": {"source": str(src)}},
                 {"pets": small_prepare(min_images_per_class=3)})
    project = Project(root)
    fetch(project, "pets")
    with pytest.raises(ValueError, match=r"1 class\(es\) left with at least min_images_per_class=3"):
        prepare(project, "pets")
    assert not project.processed_dir("pets").exists()


def test_a_class_missing_from_train_is_an_error(tmp_path):
    src = tmp_path / "photos"
    class_tree(src, {"cat": 3, "dog": 3}, prefix="train")
    class_tree(src, {"cat": 1, "dog": 1, "owl": 2}, prefix="valid")
    root = tmp_path / "proj"
    write_params(root, {"pets": {"source": str(src)}}, {"pets": small_prepare()})
    project = Project(root)
    fetch(project, "pets")
    with pytest.raises(ValueError, match=r"no usable image in the train split: \['owl'\].*valid/owl"):
        prepare(project, "pets")


def test_unknown_key_without_a_source_module_is_a_clear_error(tmp_path):
    root = tmp_path / "proj"
    write_params(root, {"pets": {"source": "x"}}, {}, datasets={})
    with pytest.raises(ValueError, match=r"no module tasks/sources/pets.py .*datasets: \{pets: folder\}"):
        fetch(Project(root), "pets")


def test_folder_fetch_records_counts_and_skips_symlinks_and_hardlinks_when_asked(tmp_path):
    src = tmp_path / "photos"
    class_tree(src, {"cat": 2, "dog": 2})
    (src / "cat" / "link.jpg").symlink_to(src / "dog" / "000.jpg")
    (src / ".DS_Store").write_bytes(b"junk")
    root = tmp_path / "proj"
    write_params(root, {"pets": {"source": str(src), "link": "hardlink"}}, {})
    record = fetch(Project(root), "pets")
    assert record["file_count"] == 4 and record["format"] == "folder"
    assert record["skipped"] == [{"file": "cat/link.jpg", "reason": "symbolic link or special file (not copied)"}]
    raw = Project(root).raw_dir("pets")
    assert sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*") if p.is_file()) == [
        "cat/000.jpg", "cat/001.jpg", "dog/000.jpg", "dog/001.jpg", "fetch.json"]
    assert (raw / "cat/000.jpg").stat().st_ino == (src / "cat/000.jpg").stat().st_ino  # same filesystem: linked


def test_decompression_bomb_refused_by_pil_itself_is_skipped(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("1", (15_000, 15_000)).save(path)  # 225 Mpx in ~30 kB: above PIL's own 2x limit
    assert path.stat().st_size < 200_000
    with pytest.raises(BadImage, match="decompression bomb refused by PIL"):
        convert(path, Options(size=32, max_pixels=10**12))  # our own limit would let it through


def test_own_pixel_limit_is_checked_from_the_header_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("1", (9_000, 9_000)).save(path)  # 81 Mpx: under PIL's limits, over ours
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded a too-large image"))
    with pytest.raises(BadImage, match="too many pixels: 9000x9000 = 81,000,000 > max_pixels 40,000,000"):
        convert(path, Options(size=32, max_pixels=40_000_000))


def test_crop_resize_keeps_aspect_and_squash_keeps_everything(tmp_path):
    path = write(tmp_path / "wide.png", encoded(halves((96, 32), (255, 0, 0), (0, 0, 255)), "PNG"))
    squash, _ = convert(path, Options(size=32, max_pixels=10**6, resize="squash"))
    crop, _ = convert(path, Options(size=32, max_pixels=10**6, resize="crop"))
    sq, cr = (np.asarray(Image.open(io.BytesIO(b))) for b in (squash, crop))
    assert sq.shape == cr.shape == (32, 32, 3)
    assert sq[:, :10, 0].mean() > 200 and sq[:, 22:, 2].mean() > 200  # both halves kept
    assert cr[:, 4:12, 0].mean() > 200 and cr[:, 20:28, 2].mean() > 200  # the middle 32 columns


# ---------------------------------------------------------------- banknotes


def test_banknote_class_names_parse():
    assert parse_class("500D1_Anv") == {"denomination": "500", "series": "D1", "side": "front"}
    assert parse_class("100FC_Rev") == {"denomination": "100", "series": "FC", "side": "back"}
    assert parse_class("200FConm_Anv") == {"denomination": "200", "series": "FConm", "side": "front"}
    assert parse_class("1000F_Anv") == {"denomination": "1000", "series": "F", "side": "front"}
    assert parse_class("50F1_Rev") == {"denomination": "50", "series": "F1", "side": "back"}
    assert parse_class("500G_Anv")["series"] == "G"
    parsed = [parse_class(c) for c in STUDY_CLASSES]
    assert len(STUDY_CLASSES) == 20 and sorted({p["denomination"] for p in parsed}, key=int) == [
        "20", "50", "100", "200", "500", "1000"]
    for bad in ("500_Anv", "D1_Anv", "500D1_Front", "500D1Anv", "0F_Rev", "cards"):
        with pytest.raises(ValueError, match="not a banknote class name"):
            parse_class(bad)


def test_banknotes_manifest_has_label_attributes(tmp_path):
    src = tmp_path / "billetes"
    class_tree(src, {"500D1_Anv": 3, "100FC_Rev": 3, "200FConm_Anv": 3, "50F1_Rev": 3})
    root = tmp_path / "proj"
    write_params(root, {"banknotes": {"source": str(src)}}, {"banknotes": small_prepare()})
    project = Project(root)
    fetch(project, "banknotes")
    manifest = prepare(project, "banknotes")
    assert manifest["label_attributes"]["200FConm_Anv"] == {"denomination": "200", "series": "FConm", "side": "front"}
    assert sorted(manifest["label_attributes"]) == sorted(manifest["labels"].values())
    assert any("study classes absent here" in n for n in manifest["notes"])


def test_banknotes_bad_folder_name_is_named_before_any_decoding(tmp_path, monkeypatch):
    src = tmp_path / "billetes"
    class_tree(src, {"500D1_Anv": 3, "500_Anv": 3})
    root = tmp_path / "proj"
    write_params(root, {"banknotes": {"source": str(src)}}, {"banknotes": small_prepare()})
    project = Project(root)
    fetch(project, "banknotes")
    monkeypatch.setattr(image_folder, "convert_all", lambda *a: pytest.fail("decoded before checking names"))
    with pytest.raises(ValueError, match=r"data/raw/banknotes/500_Anv: '500_Anv' is not a banknote class name"):
        prepare(project, "banknotes")


def test_banknotes_without_source_says_so(tmp_path, monkeypatch, capsys):
    root = tmp_path / "proj"
    write_params(root, {"banknotes": {}}, {})
    with pytest.raises(ValueError, match="never published its photos.*fetch.banknotes.source"):
        fetch(Project(root), "banknotes")
    monkeypatch.chdir(root)
    assert main(["fetch", "banknotes"]) == 1
    assert "fetch.banknotes.source" in capsys.readouterr().err


def test_cards_default_source_is_the_mirror_folder(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    class_tree(mirror / "cards", {"ace of clubs": 3, "two of hearts": 3}, prefix="train")
    class_tree(mirror / "cards", {"ace of clubs": 1, "two of hearts": 1}, prefix="valid")
    root = tmp_path / "proj"
    write_params(root, {"cards": {"source": "kaggle:gpiosenka/cards-image-datasetclassification"}},
                 {"cards": small_prepare()})
    monkeypatch.setenv("TLPIPE_MIRROR", str(mirror))
    project = Project(root)
    record = fetch(project, "cards")
    assert record["source"] == "$TLPIPE_MIRROR/cards/" and record["file_count"] == 8
    manifest = prepare(project, "cards")
    # valid/ kept; test carved from the 6 train images by the stable hash (20 %: 4 of 6 fall below it here)
    assert {s: v["count"] for s, v in manifest["splits"].items()} == {"train": 2, "validation": 2, "test": 4}
    assert any("no cards.csv" in n for n in manifest["notes"])
    shutil.rmtree(mirror / "cards")
    with pytest.raises(NotFound, match="has neither cards/ nor cards.zip"):
        fetch(project, "cards")
    assert project.raw_dir("cards").is_dir()  # the failed fetch left the previous data as it was


def test_a_misspelt_prepare_key_is_an_error_not_a_silent_default(tmp_path):
    src = tmp_path / "photos"
    class_tree(src, {"cat": 2, "dog": 2})
    root = tmp_path / "proj"
    write_params(root, {"pets": {"source": str(src)}}, {"pets": {"image_sise": 32}})
    with pytest.raises(ValueError, match=r"prepare.pets: unknown key `image_sise` \(did you mean `image_size`\?\)"):
        fetch(Project(root), "pets")  # checked before any work, whichever stage runs first


def test_exact_duplicates_are_listed_and_conflicting_labels_are_dropped(tmp_path):
    """Upstream cards have both kinds: `four of clubs/127.jpg` == `four of spades/120.jpg` (two labels)
    and `three of diamonds/079.jpg` == `080.jpg` (one class). A copy in valid/ of a train image is kept
    in valid/ only (no image is trained and evaluated on)."""
    src = tmp_path / "photos"
    class_tree(src, {"cat": 4, "dog": 4, "owl": 4}, prefix="train")
    class_tree(src, {"cat": 1, "dog": 1, "owl": 1}, prefix="valid")
    t = src / "train"
    shutil.copy(t / "cat/001.jpg", t / "cat/001_copy.jpg")        # same class
    shutil.copy(t / "dog/002.jpg", t / "owl/dog_in_owl.jpg")      # two labels
    shutil.copy(src / "valid/owl/000.jpg", t / "owl/leak.jpg")   # train copy of a valid image
    root = tmp_path / "proj"
    write_params(root, {"pets": {"source": str(src)}}, {"pets": small_prepare()})
    project = Project(root)
    fetch(project, "pets")
    manifest = prepare(project, "pets")

    groups = {tuple(g["files"]): g for g in manifest["duplicates"]}
    assert set(groups) == {("train/cat/001.jpg", "train/cat/001_copy.jpg"),
                           ("train/dog/002.jpg", "train/owl/dog_in_owl.jpg"),
                           ("valid/owl/000.jpg", "train/owl/leak.jpg")}
    assert groups[("train/dog/002.jpg", "train/owl/dog_in_owl.jpg")]["classes"] == ["dog", "owl"]
    assert groups[("train/dog/002.jpg", "train/owl/dog_in_owl.jpg")]["kept"] is None
    assert groups[("valid/owl/000.jpg", "train/owl/leak.jpg")]["kept"] == "valid/owl/000.jpg"
    reasons = {e["file"]: e["reason"] for e in manifest["skipped"]}
    assert set(reasons) == {"train/cat/001_copy.jpg", "train/dog/002.jpg", "train/owl/dog_in_owl.jpg",
                            "train/owl/leak.jpg"}
    assert reasons["train/cat/001_copy.jpg"] == "duplicate: byte-identical to train/cat/001.jpg (kept)"
    assert "conflicting labels" in reasons["train/owl/dog_in_owl.jpg"]
    train, test = (manifest["splits"][s]["per_class"] for s in ("train", "test"))
    assert {k: train[k] + test.get(k, 0) for k in train} == {"0": 4, "1": 3, "2": 4}  # test carved from train/
    assert manifest["splits"]["validation"]["count"] == 3
