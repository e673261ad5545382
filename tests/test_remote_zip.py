import hashlib
import io
import os
import time
import zipfile

import httpserver
import pytest

from tasks.fetch.download import ChecksumError, ContentError, DownloadError, NotFound, TransientError
from tasks.fetch.remote_zip import READAHEAD, TAIL, MemberNotFound, ZipFormatError, fetch_zip_member

FAST = dict(backoff_s=0.01, timeout_s=5.0)
MEMBER = "matlab/emnist-letters.mat"
PAYLOAD = b"".join(b"row %06d " % i + bytes(range(i % 200)) for i in range(3000))  # compressible
PAYLOAD_SUM = hashlib.sha256(PAYLOAD).hexdigest()
DECOY = os.urandom(3_000_000)  # incompressible: the part a range fetch must skip


def make_zip(*, member_first=True, method=zipfile.ZIP_DEFLATED, comment=b"", prefix=b""):
    buf = io.BytesIO()
    buf.write(prefix)
    with zipfile.ZipFile(buf, "a" if prefix else "w") as zf:
        zf.comment = comment
        zf.writestr("matlab/README", b"readme")
        if not member_first:
            zf.writestr("matlab/emnist-byclass.mat", DECOY, compress_type=zipfile.ZIP_STORED)
        zf.writestr(MEMBER, PAYLOAD, compress_type=method)
        if member_first:
            zf.writestr("matlab/emnist-byclass.mat", DECOY, compress_type=zipfile.ZIP_STORED)
    return buf.getvalue()


def sha(data):
    return hashlib.sha256(data).hexdigest()


def check_result(rec, dest, method):
    assert dest.read_bytes() == PAYLOAD
    assert rec["method"] == method and rec["crc32_ok"] is True
    assert rec["bytes"] == len(PAYLOAD) and rec["sha256"] == PAYLOAD_SUM
    assert rec["path"] == str(dest) and rec["member"] == MEMBER
    assert sorted(p.name for p in dest.parent.iterdir()) == [dest.name]  # no temp files left


@pytest.mark.parametrize("member_first", [True, False])
@pytest.mark.parametrize("method", [zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED])
def test_range_fetch_reads_a_small_fraction(http_server, tmp_path, member_first, method):
    archive = make_zip(member_first=member_first, method=method)
    url = http_server.add("/matlab.zip", archive)
    dest = tmp_path / "out" / "letters.mat"
    rec = fetch_zip_member(url, MEMBER, dest, member_sha256=PAYLOAD_SUM, archive_sha256=sha(archive), **FAST)
    check_result(rec, dest, "range")
    assert rec["verified"] is True and rec["archive_verified"] is False and rec["url"] == url
    assert all(r.range for r in http_server.requests)
    assert http_server.bytes_sent() < len(archive) / 5
    assert len(http_server.requests) <= 3


def test_range_fetch_of_a_large_member_reads_little_more_than_it(http_server, tmp_path):
    # a member of several read blocks between two big neighbours: the bytes over the wire are the
    # tail probe, the member and at most two read-aheads, and the record says so
    big = os.urandom(2_500_000)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("matlab/emnist-balanced.mat", DECOY, compress_type=zipfile.ZIP_STORED)
        zf.writestr(MEMBER, big, compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr("matlab/emnist-byclass.mat", DECOY, compress_type=zipfile.ZIP_STORED)
    archive = buf.getvalue()
    url = http_server.add("/matlab.zip", archive)
    rec = fetch_zip_member(url, MEMBER, tmp_path / "m", member_sha256=sha(big), **FAST)
    assert (tmp_path / "m").read_bytes() == big and rec["method"] == "range" and rec["verified"] is True
    csize = zipfile.ZipFile(io.BytesIO(archive)).getinfo(MEMBER).compress_size
    sent = http_server.bytes_sent()
    assert csize < sent < csize + TAIL + 2 * READAHEAD + 1000
    assert sent < len(archive) / 3
    assert rec["fetched_bytes"] == sent and rec["archive_bytes"] == len(archive)
    assert all(r.range and r.status == 206 for r in http_server.requests)


def test_member_reaching_into_the_tail_reads_the_tail_from_the_probe(http_server, tmp_path):
    # the probe's tail begins inside the member: only the member's bytes before it are fetched again
    member = os.urandom(TAIL + 40_000)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("matlab/emnist-byclass.mat", DECOY, compress_type=zipfile.ZIP_STORED)
        zf.writestr(MEMBER, member, compress_type=zipfile.ZIP_STORED)
    archive = buf.getvalue()
    url = http_server.add("/matlab.zip", archive)
    rec = fetch_zip_member(url, MEMBER, tmp_path / "m", member_sha256=sha(member), **FAST)
    assert (tmp_path / "m").read_bytes() == member and rec["method"] == "range"
    assert len(http_server.requests) == 2 and http_server.bytes_sent() < TAIL + READAHEAD + 1000


def test_range_with_comment_and_prepended_data(http_server, tmp_path):
    archive = make_zip(comment=b"c" * 2000, prefix=b"#!/bin/sh\nexit 0\n" * 50)
    url = http_server.add("/sfx.zip", archive)
    rec = fetch_zip_member(url, MEMBER, tmp_path / "m", **FAST)
    check_result(rec, tmp_path / "m", "range")
    assert rec["verified"] is False


def test_range_retries_dropped_member_block(http_server, tmp_path):
    # fsspec reads each block whole: a connection dropped mid-block is retried (download's backoff)
    # by asking for the same block again, so at most one block is fetched twice
    archive = make_zip(method=zipfile.ZIP_STORED)
    url = http_server.add("/matlab.zip", archive, drop_after=5000, drop_on=(2,))
    rec = fetch_zip_member(url, MEMBER, tmp_path / "m", member_sha256=PAYLOAD_SUM, **FAST)
    check_result(rec, tmp_path / "m", "range")
    reqs = http_server.requests
    assert len(reqs) == 4 and reqs[1].sent == 5000 and reqs[2].range == reqs[1].range
    assert reqs[2].sent > 5000 and reqs[3].range != reqs[1].range
    assert http_server.bytes_sent() < len(archive) / 4


def test_range_gives_up_after_the_download_retries(http_server, tmp_path):
    archive = make_zip(method=zipfile.ZIP_STORED)
    url = http_server.add("/matlab.zip", archive, drop_after=100, drop_on=(2, 3, 4))
    with pytest.raises(TransientError, match=r"gave up on GET .*/matlab.zip bytes \d+-\d+ after 3 attempts"):
        fetch_zip_member(url, MEMBER, tmp_path / "m", retries=2, **FAST)
    assert len(http_server.requests) == 4
    assert list(tmp_path.iterdir()) == []


def test_range_read_timeout_comes_from_the_download_settings(http_server, tmp_path, monkeypatch):
    # the server answers the tail probe, then stalls on every other range: aiohttp's read timeout
    # is timeout_s, and the stalled reads are retried `retries` times before giving up
    respond = httpserver.Handler.respond
    stalled = []

    def stalling(self, body):
        if not (self.headers.get("Range") or "").startswith("bytes=-"):
            stalled.append(self.headers.get("Range"))
            time.sleep(3.0)
        return respond(self, body)

    monkeypatch.setattr(httpserver.Handler, "respond", stalling)
    url = http_server.add("/matlab.zip", make_zip())
    t0 = time.monotonic()
    with pytest.raises(TransientError, match=r"(?s)bytes \d+-\d+: no answer within 0\.3 s.*gave up .* after 2 attempts"):
        fetch_zip_member(url, MEMBER, tmp_path / "m", retries=1, backoff_s=0.01, timeout_s=0.3)
    assert time.monotonic() - t0 < 2.5  # two stalled reads, each cut at 0.3 s
    assert len(stalled) == 2 and stalled[0] == stalled[1]
    assert list(tmp_path.iterdir()) == []


def test_range_probe_retried_after_500(http_server, tmp_path):
    url = http_server.add("/matlab.zip", make_zip(), fail_times=2)
    rec = fetch_zip_member(url, MEMBER, tmp_path / "m", **FAST)
    check_result(rec, tmp_path / "m", "range")
    assert [r.status for r in http_server.requests][:3] == [500, 500, 206]


def test_range_probe_retried_after_a_dropped_connection(http_server, tmp_path):
    url = http_server.add("/matlab.zip", make_zip(), drop_after=100)
    rec = fetch_zip_member(url, MEMBER, tmp_path / "m", **FAST)
    check_result(rec, tmp_path / "m", "range")
    assert [(r.range, r.sent) for r in http_server.requests][:2] == [(f"bytes=-{TAIL}", 100), (f"bytes=-{TAIL}", TAIL)]


@pytest.mark.parametrize("global_off", [True, False])
def test_fallback_when_ranges_unsupported(http_server, tmp_path, global_off):
    archive = make_zip()
    if global_off:
        http_server.ranges = False
        url = http_server.add("/matlab.zip", archive)
    else:
        url = http_server.add("/matlab.zip", archive, ranges=False)
    rec = fetch_zip_member(url, MEMBER, tmp_path / "m", archive_sha256=sha(archive),
                           member_sha256=PAYLOAD_SUM, **FAST)
    check_result(rec, tmp_path / "m", "full")
    assert rec["archive_verified"] is True and rec["verified"] is True


@pytest.mark.parametrize("odd", ["only_suffix_ranges", "short_answers", "416"])
def test_fallback_when_later_ranges_go_wrong(http_server, tmp_path, monkeypatch, odd):
    # the tail probe is answered as asked, the reads after it are not: a 200 with the whole archive
    # (fsspec refuses it), a 206 shorter than asked (40000 bytes: the member's local header comes
    # whole, its data short) or a 416; each time the whole archive is downloaded instead
    parse = httpserver.parse_range

    def odd_range(header, size):
        got = parse(header, size)
        if header.strip().startswith("bytes=-") or got in (None, "bad"):
            return got
        return {"only_suffix_ranges": None, "416": "bad"}.get(odd, (got[0], min(got[1], got[0] + 39_999)))

    monkeypatch.setattr(httpserver, "parse_range", odd_range)
    archive = make_zip(method=zipfile.ZIP_STORED)
    url = http_server.add("/matlab.zip", archive)
    rec = fetch_zip_member(url, MEMBER, tmp_path / "m", archive_sha256=sha(archive), member_sha256=PAYLOAD_SUM, **FAST)
    check_result(rec, tmp_path / "m", "full")
    assert rec["archive_verified"] is True
    assert http_server.requests[-1].range is None and http_server.requests[-1].sent == len(archive)


def test_fallback_checks_archive_sha256(http_server, tmp_path):
    http_server.ranges = False
    url = http_server.add("/matlab.zip", make_zip())
    with pytest.raises(ChecksumError, match="expected 0000"):
        fetch_zip_member(url, MEMBER, tmp_path / "m", archive_sha256="0" * 64, **FAST)
    assert list(tmp_path.iterdir()) == []


def test_fallback_html_login_page(http_server, tmp_path):
    url = http_server.add("/matlab.zip", b"<!doctype html><title>Sign in</title>", ranges=False)
    with pytest.raises(ContentError, match="HTML page where a zip was expected"):
        fetch_zip_member(url, MEMBER, tmp_path / "m", **FAST)
    assert list(tmp_path.iterdir()) == []


def test_zip64_archive(http_server, tmp_path, monkeypatch):
    # shrink zipfile's limits so it writes real ZIP64 structures (EOCD64, locator, extra fields)
    monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 1000)
    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 1)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
        zf.writestr("a", DECOY[:1_500_000], compress_type=zipfile.ZIP_STORED)
        with zf.open(MEMBER, "w", force_zip64=True) as f:
            f.write(PAYLOAD)
        zf.writestr("z", DECOY[1_500_000:], compress_type=zipfile.ZIP_STORED)
    monkeypatch.undo()
    archive = buf.getvalue()
    assert b"PK\x06\x06" in archive[-200:] and b"PK\x06\x07" in archive[-200:]
    assert zipfile.ZipFile(io.BytesIO(archive)).read(MEMBER) == PAYLOAD
    url = http_server.add("/z64.zip", archive)
    rec = fetch_zip_member(url, MEMBER, tmp_path / "m", member_sha256=PAYLOAD_SUM, **FAST)
    check_result(rec, tmp_path / "m", "range")
    assert http_server.bytes_sent() < len(archive) / 5


@pytest.mark.parametrize("ranges", [True, False])
def test_missing_member(http_server, tmp_path, ranges):
    url = http_server.add("/matlab.zip", make_zip(), ranges=ranges)
    with pytest.raises(MemberNotFound) as err:
        fetch_zip_member(url, "matlab/emnist-letter.mat", tmp_path / "m", **FAST)
    assert "matlab/emnist-letters.mat" in str(err.value) and url in str(err.value)
    assert isinstance(err.value, DownloadError)
    assert list(tmp_path.iterdir()) == []


def corrupt_member(archive: bytes) -> bytes:
    i = archive.index(PAYLOAD[1000:1100])  # inside the stored member's data
    return archive[:i] + bytes([archive[i] ^ 0xFF]) + archive[i + 1:]


@pytest.mark.parametrize("ranges", [True, False])
def test_crc_mismatch(http_server, tmp_path, ranges):
    archive = corrupt_member(make_zip(method=zipfile.ZIP_STORED))
    url = http_server.add("/matlab.zip", archive, ranges=ranges)
    with pytest.raises(ChecksumError, match="CRC-32 mismatch"):
        fetch_zip_member(url, MEMBER, tmp_path / "m", **FAST)
    assert list(tmp_path.iterdir()) == []


def test_member_sha256_mismatch(http_server, tmp_path):
    url = http_server.add("/matlab.zip", make_zip())
    with pytest.raises(ChecksumError, match=PAYLOAD_SUM):
        fetch_zip_member(url, MEMBER, tmp_path / "m", member_sha256="f" * 64, **FAST)
    assert list(tmp_path.iterdir()) == []


def test_corrupt_deflate_stream(http_server, tmp_path):
    archive = bytearray(make_zip())
    info = zipfile.ZipFile(io.BytesIO(bytes(archive))).getinfo(MEMBER)
    start = info.header_offset + 30 + len(MEMBER)
    archive[start:start + 200] = b"\xff" * 200
    url = http_server.add("/matlab.zip", bytes(archive))
    with pytest.raises((ZipFormatError, ChecksumError)):
        fetch_zip_member(url, MEMBER, tmp_path / "m", **FAST)
    assert list(tmp_path.iterdir()) == []


def test_bzip2_member_by_range(http_server, tmp_path):
    archive = make_zip(method=zipfile.ZIP_BZIP2)
    url = http_server.add("/b.zip", archive)
    rec = fetch_zip_member(url, MEMBER, tmp_path / "m", member_sha256=PAYLOAD_SUM, **FAST)
    check_result(rec, tmp_path / "m", "range")
    assert http_server.bytes_sent() < len(archive) / 5


def patch_member(archive: bytes, local_at: int, central_at: int, value: int) -> bytes:
    """Set a 2-byte field of MEMBER's local header (offset local_at) and central record (central_at)."""
    out = bytearray(archive)
    local = zipfile.ZipFile(io.BytesIO(archive)).getinfo(MEMBER).header_offset
    central = archive.rindex(b"PK\x01\x02", 0, archive.rindex(MEMBER.encode()))
    for at in (local + local_at, central + central_at):
        out[at:at + 2] = value.to_bytes(2, "little")
    return bytes(out)


@pytest.mark.parametrize("ranges", [True, False])
def test_unsupported_method(http_server, tmp_path, ranges):
    archive = patch_member(make_zip(method=zipfile.ZIP_STORED), 8, 10, 98)  # 98: PPMd
    url = http_server.add("/b.zip", archive, ranges=ranges)
    with pytest.raises(ZipFormatError, match=r"matlab/emnist-letters.mat' in http://.*/b.zip uses compression method 98"):
        fetch_zip_member(url, MEMBER, tmp_path / "m", **FAST)
    assert list(tmp_path.iterdir()) == []


def test_encrypted_member(http_server, tmp_path):
    archive = patch_member(make_zip(method=zipfile.ZIP_STORED), 6, 8, 0x1)  # general purpose flag bit 0
    url = http_server.add("/e.zip", archive)
    with pytest.raises(ZipFormatError, match="encrypted"):
        fetch_zip_member(url, MEMBER, tmp_path / "m", **FAST)
    assert list(tmp_path.iterdir()) == []


def test_404(http_server, tmp_path):
    with pytest.raises(NotFound):
        fetch_zip_member(http_server.url("/nope.zip"), MEMBER, tmp_path / "m", **FAST)
    assert len(http_server.requests) == 1


def test_zip_slip_safe(http_server, tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("../../evil.txt", b"evil")
    url = http_server.add("/evil.zip", buf.getvalue())
    rec = fetch_zip_member(url, "../../evil.txt", tmp_path / "d" / "safe.txt", **FAST)
    assert (tmp_path / "d" / "safe.txt").read_bytes() == b"evil"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["d", "safe.txt"]
    assert rec["method"] == "range"


def test_local_zip(tmp_path):
    archive = make_zip()
    src = tmp_path / "src" / "matlab.zip"
    src.parent.mkdir()
    src.write_bytes(archive)
    for i, url in enumerate([src, str(src), src.as_uri()]):
        dest = tmp_path / f"o{i}" / "m"
        rec = fetch_zip_member(url, MEMBER, dest, archive_sha256=sha(archive), member_sha256=PAYLOAD_SUM)
        check_result(rec, dest, "local")
        assert rec["archive_verified"] is True and rec["verified"] is True
    with pytest.raises(ChecksumError):
        fetch_zip_member(src, MEMBER, tmp_path / "bad" / "m", archive_sha256="0" * 64)
    with pytest.raises(MemberNotFound):
        fetch_zip_member(src, "nope", tmp_path / "bad" / "m")
    with pytest.raises(NotFound):
        fetch_zip_member(tmp_path / "missing.zip", MEMBER, tmp_path / "bad" / "m")
    assert list((tmp_path / "bad").iterdir()) == []


def test_local_crc_mismatch(tmp_path):
    src = tmp_path / "c.zip"
    src.write_bytes(corrupt_member(make_zip(method=zipfile.ZIP_STORED)))
    with pytest.raises(ChecksumError, match="CRC-32"):
        fetch_zip_member(src, MEMBER, tmp_path / "out" / "m")
    assert list((tmp_path / "out").iterdir()) == []
