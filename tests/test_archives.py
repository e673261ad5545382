"""Archive sources: safe extraction (zip-slip, tar-slip, links, devices), HTML where an archive was
expected, sha256 pins, over a real loopback HTTP server."""
import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from photos import class_tree, small_prepare, tar_tree, write_params, zip_tree
from tasks.fetch.archives import extract
from tasks.stages.project import Project
from tasks.fetch.download import ChecksumError, ContentError, sha256_file
from tasks.stages.data import fetch_stage as fetch
from tasks.stages.data import prepare_stage as prepare
from tasks.records.shards import read_split


@pytest.fixture(autouse=True)
def no_mirror(monkeypatch):
    monkeypatch.delenv("TLPIPE_MIRROR", raising=False)


def files_under(path):
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file() or p.is_symlink())


def test_zip_members_outside_the_target_links_and_devices_are_skipped(tmp_path):
    archive = tmp_path / "members.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("good/a.txt", b"ok")
        zf.writestr("../evil1.txt", b"x")
        zf.writestr("/abs_evil.txt", b"x")
        zf.writestr("good/../../evil2.txt", b"x")
        zf.writestr("..\\evil3.txt", b"x")
        link = zipfile.ZipInfo("good/link")
        link.create_system, link.external_attr = 3, (0o120777 << 16)
        zf.writestr(link, "/etc/passwd")
        fifo = zipfile.ZipInfo("good/fifo")
        fifo.create_system, fifo.external_attr = 3, (0o010644 << 16)
        zf.writestr(fifo, b"")
    dest = tmp_path / "out" / "dest"
    result = extract(archive, dest)
    assert files_under(tmp_path) == ["members.zip", "out/dest/good/a.txt"]  # nothing beside or above dest
    assert not Path("/abs_evil.txt").exists()
    reasons = {s["file"]: s["reason"] for s in result["skipped"]}
    assert "absolute" in reasons["/abs_evil.txt"]
    for name in ("../evil1.txt", "good/../../evil2.txt", "..\\evil3.txt"):
        assert "'..'" in reasons[name]
    assert reasons["good/link"].startswith("symbolic link")
    assert reasons["good/fifo"].startswith("device, FIFO")
    assert result == {"kind": "zip", "members": 1, "skipped": result["skipped"]} and len(reasons) == 6


def test_tar_members_outside_the_target_links_and_devices_are_skipped(tmp_path):
    archive = tmp_path / "members.tar.gz"

    def member(name, data=b"", **kw):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        for k, v in kw.items():
            setattr(info, k, v)
        return info, io.BytesIO(data)

    with tarfile.open(archive, "w:gz") as tf:
        for info, data in (member("good.txt", b"ok"), member("../evil.txt", b"x"), member("/abs.txt", b"x"),
                           member("sub/../../evil2.txt", b"x"),
                           member("lnk", type=tarfile.SYMTYPE, linkname="/etc/passwd"),
                           member("rel_lnk", type=tarfile.SYMTYPE, linkname="../../outside"),
                           member("hard", type=tarfile.LNKTYPE, linkname="good.txt"),
                           member("dev", type=tarfile.CHRTYPE, devmajor=1, devminor=3),
                           member("fifo", type=tarfile.FIFOTYPE)):
            tf.addfile(info, data)
    dest = tmp_path / "out" / "dest"
    result = extract(archive, dest)
    assert files_under(tmp_path) == ["members.tar.gz", "out/dest/good.txt"] and result["kind"] == "tar"
    assert not Path("/abs.txt").exists()
    reasons = {s["file"]: s["reason"] for s in result["skipped"]}
    assert "absolute" in reasons["/abs.txt"]
    assert "'..'" in reasons["../evil.txt"] and "'..'" in reasons["sub/../../evil2.txt"]
    assert reasons["lnk"].startswith("symbolic link") and reasons["rel_lnk"].startswith("symbolic link")
    assert reasons["hard"].startswith("hard link")
    assert reasons["dev"].startswith("device") and reasons["fifo"].startswith("device")


def test_corrupt_and_non_archives_are_content_errors(tmp_path):
    class_tree(tmp_path / "t", {"a": 2})
    good = zip_tree(tmp_path / "t", tmp_path / "good.zip")
    (tmp_path / "cut.zip").write_bytes(good.read_bytes()[:150])
    with pytest.raises(ContentError, match="corrupt zip"):
        extract(tmp_path / "cut.zip", tmp_path / "o1")
    (tmp_path / "notes.zip").write_bytes(b"just some text, not an archive\n" * 30)
    with pytest.raises(ContentError, match="not a zip or tar archive"):
        extract(tmp_path / "notes.zip", tmp_path / "o2")


def project_for(tmp_path, source, **fetch_extra):
    root = tmp_path / "proj"
    write_params(root, {"pets": {"source": source, **fetch_extra}}, {"pets": small_prepare()})
    return Project(root)


def test_html_served_where_a_zip_was_expected_is_a_clear_error(tmp_path, http_server):
    page = b"<!DOCTYPE html>\n<html><body>Sign in to continue</body></html>\n"
    for path in ("/pets.zip", "/download?id=7"):  # with and without an archive name in the URL
        http_server.add(path.split("?")[0], page, content_type="text/html")
        project = project_for(tmp_path, http_server.url(path))
        with pytest.raises(ContentError, match="HTML page where a"):
            fetch(project, "pets")
        assert not project.raw_dir("pets").exists()
        assert not list((project.root / "data" / "raw").iterdir())  # no temp dirs left behind


def test_sha256_mismatch_is_refused_for_local_and_remote_archives(tmp_path, http_server):
    class_tree(tmp_path / "t", {"a": 2, "b": 2})
    zip_path = zip_tree(tmp_path / "t", tmp_path / "pets.zip")
    wrong = "0" * 64
    project = project_for(tmp_path, str(zip_path), sha256=wrong)
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        fetch(project, "pets")
    url = http_server.add("/pets.zip", zip_path.read_bytes())
    project = project_for(tmp_path, url, sha256=wrong)
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        fetch(project, "pets")
    assert not project.raw_dir("pets").exists()
    with pytest.raises(ValueError, match="pins an archive"):
        fetch(project_for(tmp_path, str(tmp_path / "t"), sha256=wrong), "pets")


def test_zip_over_http_with_a_wrapper_folder_fetches_and_prepares(tmp_path, http_server):
    class_tree(tmp_path / "t", {"cat": 4, "dog": 4})
    zip_path = zip_tree(tmp_path / "t", tmp_path / "pets.zip", wrapper="PetImages")
    with zipfile.ZipFile(zip_path, "a") as zf:
        zf.writestr("__MACOSX/PetImages/._x", b"resource fork")
        zf.writestr("../escape.jpg", b"x")
    url = http_server.add("/files/pets.zip", zip_path.read_bytes())
    project = project_for(tmp_path, url, sha256=sha256_file(zip_path))
    record = fetch(project, "pets")
    assert record["format"] == "zip" and record["via"] == "url" and record["files"][0]["verified"]
    assert record["file_count"] == 9  # 8 photos + the __MACOSX member (extracted, then dropped)
    assert [s["file"] for s in record["skipped"]] == ["../escape.jpg"]
    raw = project.raw_dir("pets")
    assert sorted(p.name for p in raw.iterdir()) == ["cat", "dog", "fetch.json"]
    manifest = prepare(project, "pets")
    assert manifest["skipped"] == [{**record["skipped"][0], "stage": "fetch"}]
    assert sum(v["count"] for v in manifest["splits"].values()) == 8
    assert sum(1 for _ in read_split(project.processed_dir("pets"), "train")) == manifest["splits"]["train"]["count"]


def test_local_tar_gz_source(tmp_path):
    class_tree(tmp_path / "t", {"cat": 3, "dog": 3})
    archive = tar_tree(tmp_path / "t", tmp_path / "pets.tar.gz")
    project = project_for(tmp_path, "../pets.tar.gz", sha256=sha256_file(archive))  # relative to the project
    record = fetch(project, "pets")
    assert record["format"] == "tar" and record["via"] == "archive" and record["file_count"] == 6
    assert record["source"] == "../pets.tar.gz" and record["files"][0]["verified"]
