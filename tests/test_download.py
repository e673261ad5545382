import gzip
import hashlib
import io
import os
import types
import zipfile

import pytest

from tasks.fetch import download as dl
from tasks.fetch.download import (
    ChecksumError, ContentError, DownloadError, HttpError, NotFound, ServerError, download, sha256_file,
)

FAST = dict(backoff_s=0.01, timeout_s=5.0)
DATA = os.urandom(300_000)
SUM = hashlib.sha256(DATA).hexdigest()


def files_in(path):
    return sorted(p.name for p in path.iterdir())


def test_plain_http_with_checksum(http_server, tmp_path):
    url = http_server.add("/a.bin", DATA)
    rec = download(url, tmp_path / "sub" / "a.bin", sha256=SUM.upper(), **FAST)
    assert (tmp_path / "sub" / "a.bin").read_bytes() == DATA
    assert rec == {"url": url, "path": str(tmp_path / "sub" / "a.bin"), "bytes": len(DATA),
                   "sha256": SUM, "verified": True}
    assert files_in(tmp_path / "sub") == ["a.bin"]
    assert sha256_file(tmp_path / "sub" / "a.bin") == SUM


def test_unverified_when_no_checksum(http_server, tmp_path):
    rec = download(http_server.add("/a", DATA), tmp_path / "a", **FAST)
    assert rec["verified"] is False and rec["sha256"] == SUM


def test_500s_then_success(http_server, tmp_path):
    url = http_server.add("/a", DATA, fail_times=3)
    rec = download(url, tmp_path / "a", sha256=SUM, **FAST)
    assert rec["verified"] and (tmp_path / "a").read_bytes() == DATA
    assert [r.status for r in http_server.requests] == [500, 500, 500, 200]


def test_429_is_retried(http_server, tmp_path):
    url = http_server.add("/a", DATA, fail_times=1, fail_status=429)
    download(url, tmp_path / "a", **FAST)
    assert len(http_server.requests) == 2


def test_persistent_503_gives_up_with_server_error(http_server, tmp_path):
    url = http_server.add("/a", DATA, status=503)
    with pytest.raises(ServerError) as err:
        download(url, tmp_path / "a", retries=2, **FAST)
    assert err.value.status == 503 and url in str(err.value)
    assert len(http_server.requests) == 3
    assert files_in(tmp_path) == []


def test_dropped_connection_resumes_with_range(http_server, tmp_path):
    url = http_server.add("/a", DATA, drop_after=100_000)
    rec = download(url, tmp_path / "a", sha256=SUM, **FAST)
    assert (tmp_path / "a").read_bytes() == DATA and rec["bytes"] == len(DATA)
    reqs = http_server.requests
    assert len(reqs) == 2 and reqs[0].range is None and reqs[0].sent == 100_000
    assert reqs[1].range == "bytes=100000-" and reqs[1].status == 206
    assert http_server.bytes_sent() == len(DATA)


def test_dropped_connection_restarts_when_range_ignored(http_server, tmp_path):
    url = http_server.add("/a", DATA, drop_after=100_000, ranges=False)
    rec = download(url, tmp_path / "a", sha256=SUM, **FAST)
    assert rec["verified"] and (tmp_path / "a").read_bytes() == DATA
    assert [r.status for r in http_server.requests] == [200, 200]
    assert http_server.requests[1].range == "bytes=100000-"


def test_resumed_gzip_is_still_checked_whole(http_server, tmp_path):
    body = gzip.compress(os.urandom(200_000))
    url = http_server.add("/a.gz", body, drop_after=50_001)
    rec = download(url, tmp_path / "a.gz", expect="gzip", **FAST)
    assert (tmp_path / "a.gz").read_bytes() == body and rec["bytes"] == len(body)


def test_wrong_checksum(http_server, tmp_path):
    url = http_server.add("/a", DATA)
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as err:
        download(url, tmp_path / "a", sha256=wrong, **FAST)
    msg = str(err.value)
    assert url in msg and wrong in msg and SUM in msg
    assert files_in(tmp_path) == []  # no dest, no .part
    assert len(http_server.requests) == 1  # a checksum mismatch is not retried


def test_failure_keeps_previous_dest(http_server, tmp_path):
    (tmp_path / "a").write_bytes(b"old")
    with pytest.raises(ChecksumError):
        download(http_server.add("/a", DATA), tmp_path / "a", sha256="1" * 64, **FAST)
    assert (tmp_path / "a").read_bytes() == b"old"
    assert files_in(tmp_path) == ["a"]


@pytest.mark.parametrize("kind", ["gzip", "zip"])
@pytest.mark.parametrize("body,ctype", [
    (b"\n  <!DOCTYPE HTML><html><body>Please log in</body></html>", "application/octet-stream"),
    (b"<html><head><title>502 Proxy Error</title></head></html>" * 3, "application/octet-stream"),
    (b"Please log in", "text/html; charset=utf-8"),
])
def test_html_where_archive_expected(http_server, tmp_path, kind, body, ctype):
    url = http_server.add("/f", body, content_type=ctype)
    with pytest.raises(ContentError, match=f"got an HTML page where a {kind} was expected from {url}"):
        download(url, tmp_path / "f", expect=kind, **FAST)
    assert files_in(tmp_path) == []


def test_html_is_fine_when_nothing_expected(http_server, tmp_path):
    url = http_server.add("/index.html", b"<html></html>", content_type="text/html")
    assert download(url, tmp_path / "i.html", **FAST)["bytes"] == 13


def test_truncated_gzip(http_server, tmp_path):
    body = gzip.compress(os.urandom(50_000))[:-100]
    url = http_server.add("/t.gz", body)
    with pytest.raises(ContentError, match="truncated gzip") as err:
        download(url, tmp_path / "t.gz", expect="gzip", **FAST)
    assert url in str(err.value)
    assert files_in(tmp_path) == []


def test_tiny_truncated_gzip(http_server, tmp_path):
    url = http_server.add("/t.gz", b"\x1f\x8b\x08")
    with pytest.raises(ContentError, match="truncated gzip"):
        download(url, tmp_path / "t.gz", expect="gzip", **FAST)


def test_not_gzip(http_server, tmp_path):
    with pytest.raises(ContentError, match="not a gzip"):
        download(http_server.add("/t.gz", b"plain text, not compressed"), tmp_path / "t.gz", expect="gzip", **FAST)


def test_multimember_and_compressible_gzip(http_server, tmp_path):
    body = gzip.compress(b"\0" * 20_000_000) + gzip.compress(b"second member")
    download(http_server.add("/m.gz", body), tmp_path / "m.gz", expect="gzip", **FAST)
    assert (tmp_path / "m.gz").read_bytes() == body


def test_zip_expected(http_server, tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("x.txt", "hello")
    download(http_server.add("/z.zip", buf.getvalue()), tmp_path / "z.zip", expect="zip", **FAST)
    empty = io.BytesIO()
    zipfile.ZipFile(empty, "w").close()  # starts with PK\x05\x06, still a valid zip
    download(http_server.add("/e.zip", empty.getvalue()), tmp_path / "e.zip", expect="zip", **FAST)
    with pytest.raises(ContentError, match="not a zip"):
        download(http_server.add("/n.zip", b"nope" * 10), tmp_path / "n.zip", expect="zip", **FAST)


def test_404_is_not_found(http_server, tmp_path):
    url = http_server.url("/missing")
    with pytest.raises(NotFound) as err:
        download(url, tmp_path / "m", **FAST)
    assert isinstance(err.value, HttpError) and isinstance(err.value, DownloadError)
    assert isinstance(err.value, RuntimeError)
    assert err.value.status == 404 and err.value.url == url and url in str(err.value)
    assert len(http_server.requests) == 1
    assert files_in(tmp_path) == []


def test_403_not_retried(http_server, tmp_path):
    url = http_server.add("/secret", DATA, status=403)
    with pytest.raises(HttpError) as err:
        download(url, tmp_path / "s", **FAST)
    assert not isinstance(err.value, NotFound)
    assert err.value.status == 403 and "403" in str(err.value) and url in str(err.value)
    assert len(http_server.requests) == 1


def test_connection_refused_is_retried_then_raised(tmp_path, monkeypatch):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    sleeps = []
    monkeypatch.setattr(dl, "time", types.SimpleNamespace(sleep=sleeps.append))
    with pytest.raises(DownloadError, match="gave up"):
        download(f"http://127.0.0.1:{port}/x", tmp_path / "x", retries=3, backoff_s=0.5, timeout_s=2)
    assert len(sleeps) == 3
    assert all(0 <= d <= 0.5 * 2 ** i for i, d in enumerate(sleeps))  # full jitter bounds


def test_local_file_path_and_file_url(tmp_path):
    src = tmp_path / "src dir" / "a.bin"
    src.parent.mkdir()
    src.write_bytes(DATA)
    for i, url in enumerate([src, str(src), src.as_uri()]):
        rec = download(url, tmp_path / f"out{i}", sha256=SUM, **FAST)
        assert rec["verified"] and rec["bytes"] == len(DATA)
        assert (tmp_path / f"out{i}").read_bytes() == DATA
    with pytest.raises(ChecksumError):
        download(src, tmp_path / "bad", sha256="2" * 64)
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad.part").exists()


def test_local_truncated_gzip(tmp_path):
    src = tmp_path / "t.gz"
    src.write_bytes(gzip.compress(DATA)[:-10])
    with pytest.raises(ContentError, match=f"truncated gzip from {src}"):
        download(src, tmp_path / "out.gz", expect="gzip")


def test_missing_local_file(tmp_path):
    with pytest.raises(NotFound, match="no such file"):
        download(tmp_path / "nope", tmp_path / "out")
    with pytest.raises(NotFound):
        download((tmp_path / "nope").as_uri(), tmp_path / "out")


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        download("x", tmp_path / "o", expect="tar")
    with pytest.raises(DownloadError, match="unsupported URL scheme"):
        download("ftp://example.com/x", tmp_path / "o")


def test_progress_bar(http_server, tmp_path, capsys):
    download(http_server.add("/a", DATA), tmp_path / "a", progress=True, **FAST)
    assert "a" in capsys.readouterr().err
