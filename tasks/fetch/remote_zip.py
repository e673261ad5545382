"""Fetch one member of a (possibly huge, possibly remote) zip archive.

Over http(s), when the server honours Range requests, only the archive's tail (End Of
Central Directory, ZIP64 aware), its central directory and the member's own bytes are
fetched: a few MB of NIST's ~700 MB matlab.zip instead of all of it. The archive sha256
cannot be checked that way; the member's CRC-32 (from the central directory) always is,
and `member_sha256` when given. Anything odd about the range answers falls back to a
full download (archive sha256 verified) and a streamed extraction with `zipfile`.

The member is always written to the caller's `dest` (never to a path taken from the
archive: zip-slip safe), through `dest.name + ".part"` and an atomic rename.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import os
import struct
import zipfile
import zlib
from pathlib import Path
from typing import NamedTuple

import requests

from tasks.fetch.download import (
    CHUNK, ChecksumError, DownloadError, NotFound, TransientError, check_status,
    content_range_start, download, local_path, progress_bar, sha256_file, with_retries,
)

log = logging.getLogger(__name__)

TAIL = 22 + 65535 + 20 + 56  # EOCD + longest comment + ZIP64 locator + ZIP64 record
EOCD = struct.Struct("<4s4H2LH")
ZIP64_LOCATOR = struct.Struct("<4sLQL")
ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
CENTRAL = struct.Struct("<4s6H3L5H2L")
LOCAL = struct.Struct("<4s5H3L2H")


class MemberNotFound(DownloadError):
    pass


class ZipFormatError(DownloadError):
    """The archive is readable but the member cannot be extracted (method, encryption, corruption)."""


class RangeUnusable(Exception):
    """Internal: range requests are not usable for this URL; fall back to a full download."""


# ---------------------------------------------------------------- shared bits


def missing_member(member: str, names: list[str], source: str) -> MemberNotFound:
    close = difflib.get_close_matches(member, names, n=5)
    shown = close or names[:8]
    more = "" if len(shown) == len(names) else f" (of {len(names)})"
    return MemberNotFound(f"{member!r} is not in the zip {source}; it has e.g. {shown}{more}")


class MemberSink:
    """Streams a member's uncompressed bytes into dest.part, with sha256 and CRC-32."""

    def __init__(self, dest: Path):
        self.part = dest.with_name(dest.name + ".part")
        self.f = open(self.part, "wb")
        self.hash = hashlib.sha256()
        self.crc = 0
        self.size = 0

    def write(self, data: bytes) -> None:
        self.f.write(data)
        self.hash.update(data)
        self.crc = zlib.crc32(data, self.crc)
        self.size += len(data)

    def commit(self, dest: Path, member_sha256, source: str) -> dict:
        self.close(fsync=True)
        digest = self.hash.hexdigest()
        if member_sha256 and digest != member_sha256.lower():
            raise ChecksumError(f"sha256 mismatch for member of {source}: expected "
                                f"{member_sha256.lower()}, got {digest}")
        os.replace(self.part, dest)
        return {"path": str(dest), "bytes": self.size, "sha256": digest, "crc32_ok": True,
                "verified": bool(member_sha256)}

    def close(self, fsync=False) -> None:
        if not self.f.closed:
            if fsync:
                self.f.flush()
                os.fsync(self.f.fileno())
            self.f.close()

    def discard(self) -> None:
        self.close()
        self.part.unlink(missing_ok=True)


def extract_with_zipfile(archive: Path, member: str, dest: Path, member_sha256, source: str) -> dict:
    """Streamed extraction of one member with zipfile (it checks the CRC at the end)."""
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        raise ZipFormatError(f"not a readable zip: {source}: {exc}") from exc
    with zf:
        try:
            info = zf.getinfo(member)
        except KeyError:
            raise missing_member(member, zf.namelist(), source) from None
        sink = MemberSink(dest)
        try:
            with zf.open(info) as f:
                while block := f.read(CHUNK):
                    sink.write(block)
            return sink.commit(dest, member_sha256, source)
        except zipfile.BadZipFile as exc:
            sink.discard()
            if "CRC" in str(exc):
                raise ChecksumError(f"CRC-32 mismatch for {member!r} in {source}") from exc
            raise ZipFormatError(f"cannot extract {member!r} from {source}: {exc}") from exc
        except (NotImplementedError, RuntimeError, zlib.error, EOFError) as exc:
            sink.discard()
            if isinstance(exc, DownloadError):
                raise
            raise ZipFormatError(f"cannot extract {member!r} from {source}: {exc}") from exc
        except BaseException:
            sink.discard()
            raise


# ---------------------------------------------------------------- range requests


class RangeReader:
    def __init__(self, url, *, retries, backoff_s, timeout_s):
        self.url, self.retries, self.backoff_s, self.timeout_s = url, retries, backoff_s, timeout_s
        self.session = requests.Session()
        self.size = None
        self.fetched = 0

    def open(self, header: str, want_start: int | None):
        """GET with a Range header; the response must be a 206 starting at want_start."""
        resp = self.session.get(self.url, headers={"Range": header, "Accept-Encoding": "identity"},
                                stream=True, timeout=self.timeout_s)
        try:
            if resp.status_code == 416:
                raise RangeUnusable(f"416 for {header}")
            check_status(resp, self.url)
            if resp.status_code != 206:
                raise RangeUnusable(f"answered {resp.status_code} to {header}")
            try:
                start, total = content_range_start(resp)
            except TransientError as exc:
                raise RangeUnusable(str(exc)) from None
            if total is None or (want_start is not None and start != want_start):
                raise RangeUnusable(f"Content-Range {resp.headers['Content-Range']!r} for {header}")
            if self.size is not None and total != self.size:
                raise RangeUnusable(f"archive size changed from {self.size} to {total}")
            self.size = total
            return resp, start
        except BaseException:
            resp.close()
            raise

    def read_once(self, header, want_start):
        resp, start = self.open(header, want_start)
        with resp:
            data = resp.raw.read(decode_content=False)
        length = int(resp.headers.get("Content-Length", len(data)))
        if len(data) < length:
            raise TransientError(f"connection dropped after {len(data)} of {length} bytes from {self.url}")
        self.fetched += len(data)
        return start, data

    def read(self, header: str, want_start: int | None = None) -> tuple[int, bytes]:
        """(start, bytes) of one small range, with retries."""
        return with_retries(lambda: self.read_once(header, want_start), retries=self.retries,
                            backoff_s=self.backoff_s, what=f"GET {self.url} Range {header}")

    def read_at(self, start: int, end: int, tail: tuple[int, bytes]) -> bytes:
        """Bytes [start, end) from the cached tail when it covers them, else a range request."""
        t0, tdata = tail
        if start >= t0 and end <= t0 + len(tdata):
            return tdata[start - t0:end - t0]
        if start < 0 or end > self.size or end <= start:
            raise RangeUnusable(f"bad range {start}-{end} for a {self.size}-byte archive")
        _, data = self.read(f"bytes={start}-{end - 1}", start)
        if len(data) != end - start:
            raise RangeUnusable(f"asked {end - start} bytes at {start}, got {len(data)}")
        return data

    def stream(self, start: int, end: int, consume) -> None:
        """Feed bytes [start, end) to consume(); resumes from where a dropped connection stopped."""
        pos = [start]

        def once():
            resp, _ = self.open(f"bytes={pos[0]}-{end - 1}", pos[0])
            with resp:
                for block in resp.raw.stream(CHUNK, decode_content=False):
                    block = block[: end - pos[0]]
                    pos[0] += len(block)
                    self.fetched += len(block)
                    if consume(block) or pos[0] >= end:
                        return
            if pos[0] < end:
                raise TransientError(f"connection dropped at byte {pos[0]} of {self.url}")

        with_retries(once, retries=self.retries, backoff_s=self.backoff_s, what=f"GET {self.url} (member)")


def find_eocd(tail: bytes) -> int:
    """Offset in `tail` of the End Of Central Directory whose comment reaches the end."""
    pos = len(tail)
    while (pos := tail.rfind(b"PK\x05\x06", 0, pos)) >= 0:
        if pos + EOCD.size <= len(tail):
            comment_len = EOCD.unpack_from(tail, pos)[-1]
            if pos + EOCD.size + comment_len == len(tail):
                return pos
    raise RangeUnusable("no End Of Central Directory record in the archive tail")


def read_directory_location(reader: RangeReader, tail) -> tuple[int, int, int]:
    """(cd_start, cd_size, base): absolute start and size of the central directory, and
    the number of bytes prepended to the archive (offsets in the zip are relative to it)."""
    t0, tdata = tail
    pos = find_eocd(tdata)
    _, disk, cd_disk, _, entries, cd_size, cd_offset, _ = EOCD.unpack_from(tdata, pos)
    eocd_at = t0 + pos
    directory_end = eocd_at
    loc = pos - ZIP64_LOCATOR.size
    if loc >= 0 and tdata[loc:loc + 4] == b"PK\x06\x07":
        _, _, rec_at, _ = ZIP64_LOCATOR.unpack_from(tdata, loc)
        # like zipfile, trust the record's position just before the locator (handles prepended data)
        rec_at_actual = eocd_at - ZIP64_LOCATOR.size - ZIP64_EOCD.size
        record = reader.read_at(rec_at_actual, rec_at_actual + ZIP64_EOCD.size, tail)
        sig, _, _, _, disk, cd_disk, _, entries, cd_size, cd_offset = ZIP64_EOCD.unpack(record)
        if sig != b"PK\x06\x06":
            raise RangeUnusable(f"bad ZIP64 end record signature (locator says {rec_at})")
        directory_end = rec_at_actual
    elif 0xFFFFFFFF in (cd_size, cd_offset) or entries == 0xFFFF:
        raise RangeUnusable("ZIP64 sizes without a ZIP64 locator")
    if disk or cd_disk:
        raise RangeUnusable("multi-disk archive")
    cd_start = directory_end - cd_size
    base = cd_start - cd_offset
    if cd_start < 0 or base < 0:
        raise RangeUnusable("central directory offsets do not add up")
    return cd_start, cd_size, base


def zip64_extra(extra: bytes, usize, csize, offset):
    """Apply a ZIP64 extended-information extra field (id 1) to the 32-bit placeholders."""
    i = 0
    while i + 4 <= len(extra):
        tag, n = struct.unpack_from("<HH", extra, i)
        if tag == 1:
            body, j = extra[i + 4:i + 4 + n], 0
            vals = []
            for v in (usize, csize, offset):
                if v == 0xFFFFFFFF:
                    if j + 8 > len(body):
                        raise RangeUnusable("short ZIP64 extra field")
                    v = struct.unpack_from("<Q", body, j)[0]
                    j += 8
                vals.append(v)
            return tuple(vals)
        i += 4 + n
    return usize, csize, offset


class Entry(NamedTuple):
    name: str
    raw_name: bytes
    flags: int
    method: int
    crc: int
    csize: int
    usize: int
    offset: int


def parse_directory(cd: bytes):
    """Yield an Entry for each central directory record."""
    i = 0
    while i < len(cd):
        if cd[i:i + 4] != b"PK\x01\x02" or i + CENTRAL.size > len(cd):
            raise RangeUnusable(f"bad central directory entry at {i}")
        (_, _, _, flags, method, _, _, crc, csize, usize,
         nlen, elen, clen, _, _, _, offset) = CENTRAL.unpack_from(cd, i)
        raw = cd[i + CENTRAL.size:i + CENTRAL.size + nlen]
        extra = cd[i + CENTRAL.size + nlen:i + CENTRAL.size + nlen + elen]
        name = raw.decode("utf-8" if flags & 0x800 else "cp437")
        usize, csize, offset = zip64_extra(extra, usize, csize, offset)
        yield Entry(name, raw, flags, method, crc, csize, usize, offset)
        i += CENTRAL.size + nlen + elen + clen


class MemberStream:
    """Consumes local header + compressed data, inflating into a MemberSink."""

    def __init__(self, entry: "Entry", sink: MemberSink, bar):
        self.entry, self.sink, self.bar = entry, sink, bar
        self.name = entry.name
        self.header = b""
        self.header_len = None  # known once the fixed part of the local header is in
        self.left = entry.csize
        self.inflate = zlib.decompressobj(-15) if entry.method == zipfile.ZIP_DEFLATED else None

    def __call__(self, block: bytes) -> bool:
        """Returns True once the member's compressed data has all been seen."""
        if self.header_len is None or len(self.header) < self.header_len:
            block = self.read_header(block)
            if block is None:
                return False
        data = block[: self.left]
        self.left -= len(data)
        self.bar.update(len(data))
        self.write(data)
        return self.left == 0

    def read_header(self, block: bytes) -> bytes | None:
        """Buffers the local header; returns what follows it once complete."""
        self.header += block
        if self.header_len is None and len(self.header) >= LOCAL.size:
            sig, *_, nlen, elen = LOCAL.unpack_from(self.header)
            if sig != b"PK\x03\x04":
                raise RangeUnusable("bad local header signature")
            self.header_len = LOCAL.size + nlen + elen
        if self.header_len is None or len(self.header) < self.header_len:
            return None
        nlen = LOCAL.unpack_from(self.header)[-2]
        if self.header[LOCAL.size:LOCAL.size + nlen] != self.entry.raw_name:
            raise RangeUnusable(f"local header name differs from the central directory's {self.name!r}")
        rest, self.header = self.header[self.header_len:], self.header[:self.header_len]
        return rest

    def write(self, data: bytes) -> None:
        if self.inflate is None:
            self.sink.write(data)
            return
        try:
            out = self.inflate.decompress(data, CHUNK)
            self.sink.write(out)
            while not self.inflate.eof and (self.inflate.unconsumed_tail or len(out) == CHUNK):
                out = self.inflate.decompress(self.inflate.unconsumed_tail, CHUNK)  # bounded memory
                self.sink.write(out)
        except zlib.error as exc:
            raise ZipFormatError(f"corrupt deflate data for {self.name!r}: {exc}") from exc

    def finish(self, source: str) -> None:
        if self.inflate is not None:
            self.sink.write(self.inflate.flush())
            if not self.inflate.eof:
                raise ZipFormatError(f"deflate data for {self.name!r} in {source} ends early")


def fetch_by_range(url, member, dest: Path, member_sha256, *, retries, backoff_s, timeout_s, progress) -> dict:
    reader = RangeReader(url, retries=retries, backoff_s=backoff_s, timeout_s=timeout_s)
    with reader.session:
        tail = reader.read(f"bytes=-{TAIL}")
        cd_start, cd_size, base = read_directory_location(reader, tail)
        cd = reader.read_at(cd_start, cd_start + cd_size, tail) if cd_size else b""
        entries = list(parse_directory(cd))
        found = [e for e in entries if e.name == member]
        if not found:
            raise missing_member(member, [e.name for e in entries], url)
        entry = found[-1]  # like zipfile: a later duplicate wins
        if entry.flags & 0x1:
            raise ZipFormatError(f"{member!r} in {url} is encrypted")
        if entry.method not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ZipFormatError(f"{member!r} in {url} uses compression method {entry.method}; "
                                 "only stored (0) and deflate (8) are supported")
        start = base + entry.offset
        # the member ends where the next one (or the central directory) begins
        end = min([base + e.offset for e in entries if base + e.offset > start] + [cd_start])
        if end - start < LOCAL.size + entry.csize:
            raise RangeUnusable(f"member {member!r} does not fit between {start} and {end}")
        sink = MemberSink(dest)
        try:
            with progress_bar(progress, entry.csize, dest.name) as bar:
                stream = MemberStream(entry, sink, bar)
                reader.stream(start, end, stream)
                if stream.left:
                    raise RangeUnusable(f"member data for {member!r} ended {stream.left} bytes early")
                stream.finish(url)
            if sink.size != entry.usize:
                raise ZipFormatError(f"{member!r} in {url}: inflated to {sink.size} bytes, "
                                     f"central directory says {entry.usize}")
            if sink.crc != entry.crc:
                raise ChecksumError(f"CRC-32 mismatch for {member!r} in {url}: expected "
                                    f"{entry.crc:08x}, got {sink.crc:08x}")
            record = sink.commit(dest, member_sha256, url)
        except BaseException:
            sink.discard()
            raise
    log.info("fetched %r from %s with range requests: %d of %d bytes", member, url, reader.fetched, reader.size)
    return {**record, "fetched_bytes": reader.fetched, "archive_bytes": reader.size}


# ---------------------------------------------------------------- public API


def fetch_zip_member(url, member, dest, *, archive_sha256=None, member_sha256=None, retries=5,
                     backoff_s=1.0, timeout_s=60.0, progress=None) -> dict:
    """Write zip member `member` of the archive at `url` (http(s), file:// or path) to `dest`.

    Returns {"url", "member", "path", "bytes", "sha256", "crc32_ok", "verified",
    "archive_verified", "method": "range" | "full" | "local"}; `verified` means
    `member_sha256` was given and matched.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    source = str(url)
    head = {"url": source, "member": member}
    src = local_path(url)
    if src is not None:
        if not src.is_file():
            raise NotFound(None, str(src), f"no such file: {src}")
        if archive_sha256:
            actual = sha256_file(src)
            if actual != archive_sha256.lower():
                raise ChecksumError(f"sha256 mismatch for {source}: expected {archive_sha256.lower()}, got {actual}")
        record = extract_with_zipfile(src, member, dest, member_sha256, source)
        return {**head, **record, "archive_verified": bool(archive_sha256), "method": "local"}
    opts = dict(retries=retries, backoff_s=backoff_s, timeout_s=timeout_s)
    try:
        record = fetch_by_range(source, member, dest, member_sha256, progress=progress, **opts)
        return {**head, **record, "archive_verified": False, "method": "range"}
    except RangeUnusable as why:
        log.info("range requests unusable for %s (%s); downloading the whole archive", source, why)
    archive = dest.with_name(dest.name + ".archive.zip")
    try:
        got = download(source, archive, sha256=archive_sha256, expect="zip", progress=progress, **opts)
        record = extract_with_zipfile(archive, member, dest, member_sha256, source)
    finally:
        archive.unlink(missing_ok=True)
    return {**head, **record, "archive_verified": got["verified"], "method": "full"}


__all__ = ["fetch_zip_member", "MemberNotFound", "ZipFormatError"]
