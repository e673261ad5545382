"""Opt-in (`pytest -m realdata`): fetch + prepare the real MNIST and EMNIST letters through the
mirror setting, from ../shared/data (skipped when it is absent)."""
import shutil
from pathlib import Path

import pytest

from tasks.stages.project import Project
from tasks.stages.data import fetch_stage as fetch
from tasks.stages.data import prepare_stage as prepare

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"

pytestmark = [pytest.mark.realdata,
              pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is absent")]


@pytest.fixture
def project(tmp_path, monkeypatch):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.setenv("TLPIPE_MIRROR", str(SHARED))
    return Project(tmp_path)


def test_real_mnist(project):
    assert all(f["verified"] for f in fetch(project, "mnist")["files"])
    splits = prepare(project, "mnist")["splits"]
    assert splits["train"]["count"] + splits["validation"]["count"] == 60_000
    assert splits["test"]["count"] == 10_000


def test_real_emnist_letters(project):
    record = fetch(project, "emnist_letters")
    assert record["format"] == "idx"  # the mirror has no matlab.zip
    manifest = prepare(project, "emnist_letters")
    counts = {s: v["count"] for s, v in manifest["splits"].items()}
    dropped = manifest["edits"]["dropped"]  # params.yaml prepare.emnist_letters.drop: check@'s train/test copies
    assert len(dropped) == 2 and sum(counts.values()) == 124_800 - len(dropped) and counts["test"] > 0
    assert manifest["num_classes"] == 26
    assert {v for s in manifest["splits"].values() for v in s["per_class"].values()} != {0}
    assert any("carved from train" in n for n in manifest["notes"])
