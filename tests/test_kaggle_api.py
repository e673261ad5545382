"""Kaggle sources with a fake `kaggle` package: one that exits at import (no credentials, as the
real one does), one that raises OSError, none installed, and one that downloads a real zip."""
import sys
import types

import pytest

from photos import class_tree, small_prepare, write_params, zip_tree
from tasks.cli import main
from tasks.config import Project
from tasks.fetch import fetch
from tasks.kaggle_api import parse_slug
from tasks.prepare import prepare

SLUG = "gpiosenka/cards-image-datasetclassification"


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.delenv("TLPIPE_MIRROR", raising=False)
    monkeypatch.delitem(sys.modules, "kaggle", raising=False)
    root = tmp_path / "proj"
    write_params(root, {"cards": {"source": f"kaggle:{SLUG}"}}, {"cards": small_prepare()})
    return Project(root)


def fake_package(tmp_path, monkeypatch, body: str):
    """A `kaggle` package on sys.path whose __init__ runs `body` (like the real one authenticating)."""
    pkg = tmp_path / "fakes" / "kaggle"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path / "fakes"))


@pytest.mark.parametrize("body, kind", [
    ("print('Could not find kaggle.json. Make sure it is located in ~/.kaggle.')\nexit(1)\n", "SystemExit"),
    ("raise OSError('Could not find kaggle.json. Make sure it is located in /root/.kaggle.')\n", "OSError"),
])
def test_missing_credentials_say_how_to_provide_them(project, tmp_path, monkeypatch, capsys, body, kind):
    fake_package(tmp_path, monkeypatch, body)
    with pytest.raises(RuntimeError, match=f"credentials not found.*{kind}") as err:
        fetch(project, "cards")
    for hint in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY", "~/.kaggle/", "fetch.cards.source"):
        assert hint in str(err.value)
    assert not project.raw_dir("cards").exists()
    monkeypatch.chdir(project.root)
    monkeypatch.delitem(sys.modules, "kaggle", raising=False)
    assert main(["fetch", "cards"]) == 1  # one clear line from the CLI, not a traceback or a silent exit
    assert "KAGGLE_USERNAME" in capsys.readouterr().err


def test_kaggle_not_installed_says_pip_install(project, monkeypatch):
    monkeypatch.setitem(sys.modules, "kaggle", None)  # import kaggle -> ModuleNotFoundError
    with pytest.raises(RuntimeError, match="pip install kaggle.*fetch.cards.source"):
        fetch(project, "cards")


def working_kaggle(tmp_path, calls, fail=None):
    class Api:
        def dataset_download_files(self, slug, path=None, unzip=True, quiet=True):
            calls.append({"slug": slug, "path": path, "unzip": unzip, "quiet": quiet})
            if fail:
                raise fail
            tree = tmp_path / "upstream"
            class_tree(tree, {"ace of clubs": 3, "two of hearts": 3}, prefix="train")
            class_tree(tree, {"ace of clubs": 1, "two of hearts": 1}, prefix="valid")
            class_tree(tree, {"ace of clubs": 1, "two of hearts": 1}, prefix="test")
            (tree / "cards.csv").write_bytes(b"class index,filepaths,labels,card type,data set\r\n"
                                             b"0,train/ace of clubs/000.jpg,ace of clubs,ace,train\r\n")
            zip_tree(tree, __import__("pathlib").Path(path) / f"{slug.split('/')[1]}.zip")

    module = types.ModuleType("kaggle")
    module.api = Api()
    return module


def test_working_kaggle_downloads_a_zip_that_is_extracted_and_prepared(project, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "kaggle", working_kaggle(tmp_path, calls))
    record = fetch(project, "cards")
    assert calls == [{"slug": SLUG, "path": calls[0]["path"], "unzip": False, "quiet": True}]
    assert record["via"] == "kaggle" and record["format"] == "zip" and record["source"] == f"kaggle:{SLUG}"
    assert len(record["files"][0]["sha256"]) == 64 and not record["files"][0]["verified"]
    raw = project.raw_dir("cards")
    assert sorted(p.name for p in raw.iterdir()) == ["cards.csv", "fetch.json", "test", "train", "valid"]
    manifest = prepare(project, "cards")
    assert {s: v["count"] for s, v in manifest["splits"].items()} == {"train": 6, "validation": 2, "test": 2}
    assert manifest["labels"] == {"0": "ace of clubs", "1": "two of hearts"}


def test_kaggle_download_failure_is_a_clear_error(project, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "kaggle", working_kaggle(tmp_path, [], fail=ValueError("403 Forbidden")))
    with pytest.raises(RuntimeError, match="Kaggle download of .* failed: ValueError: 403 Forbidden"):
        fetch(project, "cards")


def test_slug_must_be_owner_and_name():
    assert parse_slug("kaggle:owner/some-data.v2") == "owner/some-data.v2"
    for bad in ("kaggle:", "kaggle:justname", "kaggle:a/b/c", "kaggle:../x"):
        with pytest.raises(ValueError, match="expected kaggle:<owner>/<dataset>"):
            parse_slug(bad)
