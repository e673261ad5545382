"""Kaggle sources with a fake `kagglehub` (the client's public `dataset_download`): anonymous and
credentialed downloads, a dataset that needs an account, kagglehub missing, and no secret in any
log line or error message."""
import json
import logging
import sys
import types

import pytest

from photos import class_tree, small_prepare, write_params
from tasks.cli import main
from tasks.stages.project import Project
from tasks.stages.data import fetch_stage as fetch
from tasks.fetch.kaggle_api import parse_slug, redact
from tasks.stages.data import prepare_stage as prepare

SLUG = "gpiosenka/cards-image-datasetclassification"
KEY = "s3cr3t-kaggle-key-0123456789"
TOKEN = "KGAT_token-abcdef987654321"


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.delenv("TLPIPE_MIRROR", raising=False)
    for name in ("KAGGLE_KEY", "KAGGLE_USERNAME", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-kaggle-dir"))
    root = tmp_path / "proj"
    write_params(root, {"cards": {"source": f"kaggle:{SLUG}"}}, {"cards": small_prepare()})
    return Project(root)


class HTTPError(Exception):
    def __init__(self, message, status):
        super().__init__(message)
        self.response = types.SimpleNamespace(status_code=status)


def fake_kagglehub(tmp_path, calls, fail=None):
    """dataset_download as kagglehub's: extracts the dataset (here: writes it) into output_dir."""
    def dataset_download(handle, path=None, *, force_download=False, output_dir=None):
        calls.append({"handle": handle, "output_dir": output_dir, "force_download": force_download})
        logging.getLogger("kagglehub").info("Downloading from https://www.kaggle.com/api/v1/datasets/download/%s "
                                            "with key %s", handle, KEY)
        if fail:
            raise fail
        from pathlib import Path

        tree = Path(output_dir)
        class_tree(tree, {"ace of clubs": 3, "two of hearts": 3}, prefix="train")
        class_tree(tree, {"ace of clubs": 1, "two of hearts": 1}, prefix="valid")
        class_tree(tree, {"ace of clubs": 1, "two of hearts": 1}, prefix="test")
        (tree / "cards.csv").write_bytes(b"class index,filepaths,labels,card type,data set\r\n"
                                         b"0,train/ace of clubs/000.jpg,ace of clubs,ace,train\r\n")
        return output_dir

    module = types.ModuleType("kagglehub")
    module.dataset_download = dataset_download
    return module


def test_anonymous_download_is_fetched_and_prepared(project, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "kagglehub", fake_kagglehub(tmp_path, calls))
    record = fetch(project, "cards")
    assert calls == [{"handle": SLUG, "output_dir": calls[0]["output_dir"], "force_download": True}]
    assert record["via"] == "kaggle" and record["format"] == "kaggle" and record["source"] == f"kaggle:{SLUG}"
    raw = project.raw_dir("cards")
    assert sorted(p.name for p in raw.iterdir()) == ["cards.csv", "fetch.json", "test", "train", "valid"]
    manifest = prepare(project, "cards")
    assert {s: v["count"] for s, v in manifest["splits"].items()} == {"train": 6, "validation": 2, "test": 2}
    assert manifest["labels"] == {"0": "ace of clubs", "1": "two of hearts"}


def test_a_dataset_that_needs_an_account_says_what_to_do_and_never_shows_keys(
        project, tmp_path, monkeypatch, caplog, capsys):
    monkeypatch.setenv("KAGGLE_USERNAME", "ada")
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    monkeypatch.setenv("KAGGLE_API_TOKEN", TOKEN)
    fail = HTTPError(f"403 Client Error: Forbidden for url ...?key={KEY} (token {TOKEN})", 403)
    monkeypatch.setitem(sys.modules, "kagglehub", fake_kagglehub(tmp_path, [], fail=fail))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(RuntimeError, match="failed: HTTPError: 403.*needs a Kaggle account") as err:
        fetch(project, "cards")
    message = str(err.value)
    for hint in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY", "~/.kaggle/", "fetch.cards.source"):
        assert hint in message
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no chained exception with the key
    assert "***" in message and "Downloading from" in caplog.text
    monkeypatch.chdir(project.root)
    assert main(["fetch", "cards"]) == 1  # one clear line from the CLI, not a traceback
    captured = capsys.readouterr()
    assert "needs a Kaggle account" in captured.err
    for secret in (KEY, TOKEN):
        assert secret not in message and secret not in caplog.text
        assert secret not in captured.out and secret not in captured.err
    assert not project.raw_dir("cards").exists()


def test_keys_from_kaggle_json_are_redacted_too(tmp_path, monkeypatch):
    folder = tmp_path / "kaggle"
    folder.mkdir()
    (folder / "kaggle.json").write_text(json.dumps({"username": "ada", "key": KEY}))
    (folder / "access_token").write_text(TOKEN + "\n")
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(folder))
    for name in ("KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    assert redact(f"a {KEY} b {TOKEN} c") == "a *** b *** c"


def test_kagglehub_not_installed_says_how(project, monkeypatch):
    monkeypatch.setitem(sys.modules, "kagglehub", None)  # import kagglehub -> ImportError
    with pytest.raises(RuntimeError, match="needs the `kagglehub` package.*fetch.cards.source"):
        fetch(project, "cards")


def test_kaggle_download_failure_is_a_clear_error(project, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "kagglehub", fake_kagglehub(tmp_path, [], fail=ValueError("connection reset")))
    with pytest.raises(RuntimeError, match="Kaggle download of .* failed: ValueError: connection reset"):
        fetch(project, "cards")


def test_an_archive_pin_on_a_kaggle_source_points_at_versions(project, tmp_path, monkeypatch):
    write_params(project.root, {"cards": {"source": f"kaggle:{SLUG}", "sha256": "ab" * 32}},
                 {"cards": small_prepare()})
    monkeypatch.setitem(sys.modules, "kagglehub", fake_kagglehub(tmp_path, []))
    with pytest.raises(ValueError, match="versions/<n>"):
        fetch(project, "cards")


def test_slug_must_be_owner_and_name():
    assert parse_slug("kaggle:owner/some-data.v2") == "owner/some-data.v2"
    assert parse_slug(f"kaggle:{SLUG}/versions/2") == f"{SLUG}/versions/2"
    for bad in ("kaggle:", "kaggle:justname", "kaggle:a/b/c", "kaggle:../x", "kaggle:a/b/versions/x"):
        with pytest.raises(ValueError, match="expected kaggle:<owner>/<dataset>"):
            parse_slug(bad)


def test_real_kagglehub_imports_without_credentials(monkeypatch, tmp_path):
    """The pinned client imports (no exit, no prompt) with no credentials at all."""
    for name in ("KAGGLE_KEY", "KAGGLE_USERNAME", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path))
    import kagglehub

    assert callable(kagglehub.dataset_download)
