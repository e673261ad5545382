"""Fetch one member of a (possibly huge, possibly remote) zip archive.

The standard library's `zipfile` reads the archive and checks the member's CRC-32; over http(s) it
reads through fsspec's HTTP file, which fetches only the bytes asked for with Range requests: the
archive's tail (End Of Central Directory, ZIP64 records, central directory) and the member's own
bytes, a few MB of NIST's ~700 MB matlab.zip instead of all of it. The archive's sha256 cannot be
checked that way; the member's CRC-32 always is, and `member_sha256` when given. A server that does
not answer Range requests as asked falls back to a full download (archive sha256 verified).

The member is always written to the caller's `dest` (never to a path taken from the archive: zip-slip
safe), through a temp file beside it and an atomic rename (`tasks.core.io.atomic_file`).
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import os
import zipfile
import zlib
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import requests
from fsspec.implementations.http import HTTPFileSystem

from tasks.core.io import atomic_file
from tasks.fetch.download import (
    CHUNK, ChecksumError, DownloadError, NotFound, TransientError, check_status,
    content_range_start, download, local_path, progress_bar, sha256_file, with_retries,
)

log = logging.getLogger(__name__)

TAIL = 22 + 65535 + 20 + 56  # EOCD + longest comment + ZIP64 locator + ZIP64 record
READAHEAD = 64 << 10  # fsspec's read-ahead past each read: a member's local header and name in one request


class MemberNotFound(DownloadError):
    pass


class ZipFormatError(DownloadError):
    """The archive is readable but the member cannot be extracted (method, encryption, corruption)."""


class RangeUnusable(Exception):
    """Internal: range requests are not usable for this URL; fall back to a full download."""


# ---------------------------------------------------------------- public API


def fetch_zip_member(url, member, dest, *, archive_sha256=None, member_sha256=None, retries=5,
                     backoff_s=1.0, timeout_s=60.0, progress=None) -> dict:
    """Write zip member `member` of the archive at `url` (http(s), file:// or path) to `dest`.

    Returns {"url", "member", "path", "bytes", "sha256", "crc32_ok", "verified",
    "archive_verified", "method": "range" | "full" | "local"} (and, for "range", "fetched_bytes" and
    "archive_bytes"); `verified` means `member_sha256` was given and matched.
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
        with open_zip(src, source) as zf:
            record = write_member(zf, member, dest, member_sha256, source, progress)
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
        with open_zip(archive, source) as zf:
            record = write_member(zf, member, dest, member_sha256, source, progress)
    finally:
        archive.unlink(missing_ok=True)
    return {**head, **record, "archive_verified": got["verified"], "method": "full"}


# ---------------------------------------------------------------- the member, from any zip


def open_zip(file, source: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(file)
    except zipfile.BadZipFile as exc:
        raise ZipFormatError(f"not a readable zip: {source}: {exc}") from exc


def missing_member(member: str, names: list[str], source: str) -> MemberNotFound:
    close = difflib.get_close_matches(member, names, n=5)
    shown = close or names[:8]
    more = "" if len(shown) == len(names) else f" (of {len(names)})"
    return MemberNotFound(f"{member!r} is not in the zip {source}; it has e.g. {shown}{more}")


def write_member(zf: zipfile.ZipFile, member: str, dest: Path, member_sha256, source: str, progress,
                 *, ranged: bool = False) -> dict:
    """Stream `member` of `zf` into `dest` atomically; zipfile checks the CRC-32 at the end, this the
    sha256. `ranged`: a bad local header means the range answers were wrong (RangeUnusable)."""
    try:
        info = zf.getinfo(member)  # a later duplicate wins
    except KeyError:
        raise missing_member(member, zf.namelist(), source) from None
    what = f"{member!r} in {source}"
    digest, size = hashlib.sha256(), 0
    try:
        with atomic_file(dest) as out, progress_bar(progress, info.file_size, dest.name) as bar:
            try:
                stream = zf.open(info)
            except zipfile.BadZipFile as exc:  # the local header disagrees with the central directory
                if ranged:
                    raise RangeUnusable(f"local header of {member!r}: {exc}") from exc
                raise ZipFormatError(f"cannot extract {what}: {exc}") from exc
            with stream:
                while block := stream.read(CHUNK):
                    out.write(block)
                    digest.update(block)
                    size += len(block)
                    bar.update(len(block))
            if member_sha256 and digest.hexdigest() != member_sha256.lower():
                raise ChecksumError(f"sha256 mismatch for {what}: expected {member_sha256.lower()}, "
                                    f"got {digest.hexdigest()}")
            out.flush()
            os.fsync(out.fileno())
    except (DownloadError, RangeUnusable):
        raise
    except zipfile.BadZipFile as exc:
        if "CRC" in str(exc):
            raise ChecksumError(f"CRC-32 mismatch for {what}: the central directory says "
                                f"{info.CRC:08x}") from exc
        raise ZipFormatError(f"cannot extract {what}: {exc}") from exc
    except NotImplementedError as exc:
        name = zipfile.compressor_names.get(info.compress_type, "unknown")
        raise ZipFormatError(f"{what} uses compression method {info.compress_type} ({name}), which "
                             f"zipfile cannot read: {exc}") from exc
    except RuntimeError as exc:  # zipfile's "password required"
        if not info.flag_bits & 0x1:
            raise
        raise ZipFormatError(f"{what} is encrypted; an unencrypted member was expected") from exc
    except (zlib.error, EOFError) as exc:
        raise ZipFormatError(f"cannot extract {what}: {exc}") from exc
    return {"path": str(dest), "bytes": size, "sha256": digest.hexdigest(), "crc32_ok": True,
            "verified": bool(member_sha256)}


# ---------------------------------------------------------------- range requests


def fetch_by_range(url, member, dest: Path, member_sha256, *, retries, backoff_s, timeout_s, progress) -> dict:
    """The member through zipfile over fsspec's HTTP file; RangeUnusable when the server is odd."""
    size, tail_start, tail = probe_tail(url, retries=retries, backoff_s=backoff_s, timeout_s=timeout_s)
    fs = HTTPFileSystem(skip_instance_cache=True, headers={"Accept-Encoding": "identity"}, client_kwargs={
        "timeout": aiohttp.ClientTimeout(total=None, sock_connect=timeout_s, sock_read=timeout_s),
        "auto_decompress": False, "trust_env": True})  # proxies from the environment, as requests does
    with fs.open(url, "rb", size=size, block_size=READAHEAD, cache_type="readahead") as remote:
        view = RemoteArchive(remote, url, tail_start, tail, retries=retries, backoff_s=backoff_s,
                             timeout_s=timeout_s)
        try:
            zf = zipfile.ZipFile(view)
        except zipfile.BadZipFile as exc:
            raise RangeUnusable(f"no readable central directory in the range answers: {exc}") from exc
        with zf:
            record = write_member(zf, member, dest, member_sha256, url, progress, ranged=True)
        fetched = len(tail) + remote.cache.total_requested_bytes
    log.info("fetched %r from %s with range requests: %d of %d bytes", member, url, fetched, size)
    return {**record, "fetched_bytes": fetched, "archive_bytes": size}


def probe_tail(url, *, retries, backoff_s, timeout_s) -> tuple[int, int, bytes]:
    """(archive size, start of the tail, tail bytes) from one suffix Range GET, retried.

    Hand-written because fsspec's own size probe (HEAD, then GET) turns every failure, a 500
    included, into FileNotFoundError, cannot tell whether Range is honoured, and would cost a
    request more: this one answers all three, with download.py's status rules (404 NotFound,
    5xx/429 retried, other 4xx raised), and its bytes serve zipfile's reads of the directory.
    """
    header = f"bytes=-{TAIL}"

    def once():
        with requests.get(url, headers={"Range": header, "Accept-Encoding": "identity"}, stream=True,
                          timeout=timeout_s) as resp:
            if resp.status_code == 416:
                raise RangeUnusable(f"416 to {header}")
            check_status(resp, url)
            if resp.status_code != 206:
                raise RangeUnusable(f"answered {resp.status_code} to {header}")
            try:
                start, total = content_range_start(resp)
            except TransientError as exc:
                raise RangeUnusable(str(exc)) from None
            if total is None:
                raise RangeUnusable(f"Content-Range {resp.headers['Content-Range']!r} gives no size")
            data = resp.raw.read(decode_content=False)  # urllib3 raises (retried) if cut short of Content-Length
        if len(data) != total - start or len(data) > TAIL:
            raise RangeUnusable(f"asked for the last {TAIL} bytes of {total}, got {len(data)} from byte {start}")
        return total, start, data

    return with_retries(once, retries=retries, backoff_s=backoff_s, what=f"GET {url} Range {header}")


class RemoteArchive:
    """The remote archive as zipfile reads it (seek, tell, read) over fsspec's HTTP file.

    Hand-written for what fsspec's file lacks: the probe's tail is served from memory (zipfile's
    directory reads cost no request); each read is retried with the `download` settings' backoff
    (fsspec raises at the first dropped connection; a retry fetches the block again whole); aiohttp's
    errors become download.py's; and a server that stops honouring Range, or answers short, raises
    RangeUnusable instead of handing zipfile wrong bytes.
    """

    def __init__(self, remote, url: str, tail_start: int, tail: bytes, *, retries: int, backoff_s: float,
                 timeout_s: float):
        self.remote, self.url, self.tail_start, self.tail = remote, url, tail_start, tail
        self.retries, self.backoff_s, self.timeout_s = retries, backoff_s, timeout_s
        self.size = remote.size
        self.pos = 0

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        pos = (0, self.pos, self.size)[whence] + offset
        if pos < 0:
            raise OSError(f"seek to {pos} before the start of {self.url}")
        self.pos = pos
        return pos

    def read(self, n: int | None = -1) -> bytes:
        pos = self.pos
        want = max(0, self.size - pos if n is None or n < 0 else min(n, self.size - pos))
        if not want:
            return b""
        ahead = min(want, max(0, self.tail_start - pos))  # the bytes before the tail: fetched
        data = b""
        if ahead:
            data = with_retries(lambda: self.fetch(pos, ahead), retries=self.retries, backoff_s=self.backoff_s,
                                what=f"GET {self.url} bytes {pos}-{pos + ahead - 1}")
        if ahead < want:
            at = pos + ahead - self.tail_start
            data += self.tail[at:at + want - ahead]
        self.pos += len(data)
        return data

    def fetch(self, pos: int, want: int) -> bytes:
        what = f"GET {self.url} bytes {pos}-{pos + want - 1}"
        try:
            self.remote.seek(pos)
            data = self.remote.read(want)
        except aiohttp.ClientResponseError as exc:  # raise_for_status: the status as download.py maps it
            check_status(SimpleNamespace(status_code=exc.status, reason=exc.message), self.url)
            raise
        except aiohttp.ClientError as exc:  # dropped connection, short body, refused
            raise TransientError(f"{what}: {exc!r}") from exc
        except TimeoutError as exc:  # aiohttp's sock_connect / sock_read
            raise TransientError(f"{what}: no answer within {self.timeout_s} s") from exc
        except ValueError as exc:  # fsspec refuses a 200 with the whole file: Range ignored
            raise RangeUnusable(f"answer to bytes {pos}-{pos + want - 1} refused by fsspec: {exc}") from exc
        if len(data) != want:  # 416 (fsspec returns b"") or a short 206
            raise RangeUnusable(f"asked for {want} bytes at {pos}, got {len(data)}")
        return data


__all__ = ["fetch_zip_member", "MemberNotFound", "ZipFormatError"]
