"""Opt-in (`pytest -m realdata`): prepare a small slice of the real Kaggle cards data from
../shared/data/cards (3 classes, 10 train + all valid images each, copied into a temp dir together
with their real cards.csv rows, CRLF and the bogus `output` row included)."""
import shutil
from pathlib import Path

import pytest

from photos import small_prepare, write_params
from tasks.stages.project import Project
from tasks.stages.data import fetch_stage as fetch
from tasks.stages.data import prepare_stage as prepare
from tasks.records.shards import read_split

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CARDS = SHARED / "cards"
CLASSES = ["ace of clubs", "queen of hearts", "two of spades"]

pytestmark = [pytest.mark.realdata, pytest.mark.skipif(not CARDS.is_dir(), reason="../shared/data/cards is absent")]


def slice_of_cards(dest: Path) -> set[str]:
    kept = set()
    for split, n in (("train", 10), ("valid", None)):
        for name in CLASSES:
            for src in sorted((CARDS / split / name).glob("*.jpg"))[:n]:
                rel = src.relative_to(CARDS).as_posix()
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dest / rel)
                kept.add(rel)
    lines = (CARDS / "cards.csv").read_bytes().split(b"\r\n")
    rows = [lines[0]] + [ln for ln in lines[1:] if ln.split(b",")[1:2] and
                         (ln.split(b",")[1].decode() in kept or ln.split(b",")[1].endswith(b"/output"))]
    (dest / "cards.csv").write_bytes(b"\r\n".join(rows) + b"\r\n")
    return kept


def test_real_cards_slice(tmp_path, monkeypatch):
    monkeypatch.delenv("TLPIPE_MIRROR", raising=False)
    kept = slice_of_cards(tmp_path / "cards")
    root = tmp_path / "proj"
    write_params(root, {"cards": {"source": str(tmp_path / "cards")}},
                 {"cards": small_prepare(image_size=224, max_pixels=40_000_000)})
    project = Project(root)
    fetch(project, "cards")
    manifest = prepare(project, "cards")
    assert manifest["labels"] == {str(i): c for i, c in enumerate(CLASSES)}
    assert manifest["skipped"] == [{"file": "train/ace of clubs/output",
                                    "reason": "listed in cards.csv (line 12) but no such file"}]
    counts = {s: v["count"] for s, v in manifest["splits"].items()}
    # valid/ is the validation split; the test split is carved from the 30 train/ images (no test/ folder)
    assert counts["validation"] == 15 and counts["train"] + counts["test"] == 30 and counts["test"] > 0
    assert len(kept) == 45 and manifest["split_origin"]["test"].startswith("20% of train/")
    assert manifest["images"]["passthrough"] == 45  # the real files are baseline 224x224 RGB JPEGs
    images = [(im.numpy(), int(y)) for im, y in read_split(project.processed_dir("cards"), "validation")]
    assert len(images) == 15 and all(im.shape == (224, 224, 3) for im, _ in images)
    assert sorted({y for _, y in images}) == [0, 1, 2]
