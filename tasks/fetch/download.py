"""Robust streaming downloader: retries, resume, checksum and content checks.

`download(url, dest, ...)` streams http(s)://, file:// or a plain local path into
`dest.name + ".part"` next to `dest`, hashing and sniffing while it streams, and only
renames it to `dest` once every check has passed, so `dest` is never partial.
On failure the `.part` file is removed (each call starts from zero; resume happens
between retries inside one call).

Errors all subclass `DownloadError` (a `RuntimeError`):
`HttpError` (has `.status`, `.url`) -> `NotFound` (404 or missing local file),
`TransientError` (worth retrying) -> `ServerError` (5xx / 429, also an `HttpError`),
`ChecksumError`, `ContentError` (HTML page, bad magic, truncated gzip).
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
import sys
import time
import zipfile
import zlib
from pathlib import Path
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

import requests
import urllib3
from tqdm import tqdm

from tasks.core.hashing import sha256_file
from tasks.core.sniff import is_html

log = logging.getLogger(__name__)

CHUNK = 1 << 20
MAX_BACKOFF_S = 60.0
EXPECT_KINDS = (None, "gzip", "zip")


class DownloadError(RuntimeError):
    """Base class of every error raised by tlpipe's downloaders."""


class HttpError(DownloadError):
    def __init__(self, status: int | None, url: str, message: str):
        super().__init__(message)
        self.status = status
        self.url = url


class NotFound(HttpError):
    """404, or a local file that does not exist: callers may try another location."""


class TransientError(DownloadError):
    """A failure worth retrying (dropped connection, short body, 5xx, 429)."""


class ServerError(HttpError, TransientError):
    """5xx or 429: retried, then raised as is when the retries are spent."""


class ChecksumError(DownloadError):
    pass


class ContentError(DownloadError):
    pass


# requests/urllib3 errors that mean "the network hiccuped", not "the request is wrong".
NETWORK_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.ReadTimeoutError,
    urllib3.exceptions.IncompleteRead,
    ConnectionError,
    TimeoutError,
)


# ---------------------------------------------------------------- retry helper


def download_options(params: dict) -> dict:
    """Retry and timeout settings from params.yaml `download`."""
    d = params.get("download") or {}
    return {"retries": int(d.get("retries", 5)), "backoff_s": float(d.get("backoff_s", 1.0)),
            "timeout_s": float(d.get("timeout_s", 60))}


def backoff_delay(attempt: int, backoff_s: float) -> float:
    """Exponential backoff with full jitter (AWS style): uniform(0, base * 2**attempt)."""
    return random.uniform(0.0, min(MAX_BACKOFF_S, backoff_s * (2**attempt)))


def with_retries(fn, *, retries: int = 5, backoff_s: float = 1.0, what: str = ""):
    """Call `fn()` up to `retries + 1` times, sleeping between transient failures.

    Non-transient errors (4xx, checksum, content) propagate at once.
    """
    for attempt in range(retries + 1):
        try:
            return fn()
        except (TransientError, *NETWORK_ERRORS) as exc:
            if attempt >= retries:
                if isinstance(exc, DownloadError):
                    exc.add_note(f"gave up on {what} after {attempt + 1} attempts")
                    raise
                raise TransientError(
                    f"gave up on {what} after {attempt + 1} attempts: {exc}"
                ) from exc
            delay = backoff_delay(attempt, backoff_s)
            log.warning("%s failed (%s); retry %d/%d in %.2fs", what, exc, attempt + 1, retries, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def check_status(resp: requests.Response, url: str) -> None:
    """Raise the right HttpError for a non-2xx answer (transient for 5xx and 429)."""
    code = resp.status_code
    if code < 400:
        return
    msg = f"HTTP {code} {resp.reason or ''} for {url}".replace("  ", " ")
    if code == 404:
        raise NotFound(code, url, msg)
    if code >= 500 or code == 429:
        raise ServerError(code, url, msg)
    raise HttpError(code, url, msg + " (not retried)")


# ---------------------------------------------------------------- helpers


def local_path(url) -> Path | None:
    """The local path behind `url` (Path, plain path or file:// URL), None for http(s)."""
    if isinstance(url, os.PathLike):
        return Path(url)
    parsed = urlparse(str(url))
    if parsed.scheme in ("http", "https"):
        return None
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise DownloadError(f"file:// URL with a remote host is not supported: {url}")
        return Path(url2pathname(unquote(parsed.path)))
    if len(parsed.scheme) > 1:  # one letter = a Windows drive, anything else is a URL
        raise DownloadError(f"unsupported URL scheme {parsed.scheme!r}: {url}")
    return Path(url)


def open_local(path: Path):
    if not path.is_file():
        raise NotFound(None, str(path), f"no such file: {path}")
    return open(path, "rb")


def progress_bar(progress, total, desc):
    show = progress if progress is not None else sys.stderr.isatty()
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                desc=desc, disable=not show, file=sys.stderr, leave=False)


# ---------------------------------------------------------------- content checks


class GzipCheck:
    """Streams data through zlib to prove the gzip is complete (handles multi-member)."""

    def __init__(self, source: str):
        self.source = source
        self.d = None
        self.seen = False

    def feed(self, data: bytes) -> None:
        while data:
            if self.d is None or self.d.eof:
                if self.d is not None and not data.strip(b"\0"):
                    return  # zero padding after the last member is tolerated
                self.d = zlib.decompressobj(wbits=31)
            self.seen = True
            try:
                out = self.d.decompress(data, CHUNK)
                while not self.d.eof and (self.d.unconsumed_tail or len(out) == CHUNK):
                    out = self.d.decompress(self.d.unconsumed_tail, CHUNK)  # bounded memory
            except zlib.error as exc:
                raise ContentError(f"corrupt gzip data from {self.source}: {exc}") from exc
            data = self.d.unused_data if self.d.eof else b""

    def finish(self) -> None:
        if not self.seen or not self.d.eof:
            raise ContentError(f"truncated gzip from {self.source} (stream ends before the gzip end marker)")


class Sink:
    """The .part file plus everything computed while streaming into it."""

    def __init__(self, part: Path, source: str, expect: str | None):
        self.part, self.source, self.expect = part, source, expect
        self.f = None
        self.reset()

    def reset(self) -> None:
        if self.f:
            self.f.close()
        self.f = open(self.part, "wb")
        self.size = 0
        self.hash = hashlib.sha256()
        self.head = b""
        self.checked = False
        self.pending = []
        self.gzip = GzipCheck(self.source) if self.expect == "gzip" else None

    def write(self, data: bytes) -> None:
        if len(self.head) < 512:
            self.head += data[: 512 - len(self.head)]
        self.f.write(data)
        self.hash.update(data)
        self.size += len(data)
        if self.gzip:
            self.pending.append(data)
        if self.expect and (self.checked or len(self.head) >= 64):
            self.drain()  # fail early on an HTML page instead of fetching it all

    def drain(self) -> None:
        if not self.checked:
            self.check_head()
            self.checked = True
        for data in self.pending:
            self.gzip.feed(data)
        self.pending = []

    def check_head(self) -> None:
        kind = self.expect
        if kind and is_html(self.head):
            raise ContentError(f"got an HTML page where a {kind} was expected from {self.source} "
                               "(a login page or a proxy error?)")
        if kind == "gzip" and not self.head.startswith(b"\x1f\x8b"):
            raise ContentError(f"not a gzip file (bad magic {self.head[:4]!r}) from {self.source}")

    def close(self) -> None:
        self.f.close()

    def finish(self) -> str:
        """Flush to disk and run the end-of-stream content checks; returns the sha256."""
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        if self.expect:
            self.drain()
        if self.gzip:
            self.gzip.finish()
        if self.expect == "zip" and not self.head.startswith(b"PK\x03\x04"):
            if not zipfile.is_zipfile(self.part):  # e.g. an empty zip starts with PK\x05\x06
                raise ContentError(f"not a zip file (bad magic {self.head[:4]!r}) from {self.source}")
        return self.hash.hexdigest()


# ---------------------------------------------------------------- transfers


def copy_local(path: Path, sink: Sink, bar) -> None:
    with open_local(path) as f:
        bar.reset(total=os.fstat(f.fileno()).st_size)
        while block := f.read(CHUNK):
            sink.write(block)
            bar.update(len(block))


def content_range_start(resp: requests.Response) -> tuple[int, int | None]:
    """(start, total) from a 206's Content-Range, total None when '*'."""
    m = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", resp.headers.get("Content-Range", ""))
    if not m:
        raise TransientError(f"206 without a usable Content-Range from {resp.url}")
    return int(m.group(1)), None if m.group(3) == "*" else int(m.group(3))


def position_sink(resp: requests.Response, sink: Sink, url: str) -> int | None:
    """Check one answer and make the sink append (206) or start over (200); returns the total size."""
    if resp.status_code == 416 and sink.size:
        sink.reset()  # our offset is past the end: the file changed, start over
        raise TransientError(f"range not satisfiable on resume from {url}")
    check_status(resp, url)
    if sink.expect and "text/html" in resp.headers.get("Content-Type", "").lower():
        raise ContentError(f"got an HTML page where a {sink.expect} was expected from {url} "
                           "(Content-Type text/html: a login page or a proxy error?)")
    if resp.status_code == 206:
        start, total = content_range_start(resp)
        if start != sink.size:
            sink.reset()
            raise TransientError(f"asked for byte {sink.size}, got a range starting at {start} from {url}")
        return total
    if sink.size:
        log.info("server ignored Range for %s; restarting from zero", url)
    sink.reset()
    length = resp.headers.get("Content-Length")
    return int(length) if length else None


def fetch_once(session, url, sink: Sink, bar, timeout_s) -> None:
    """One GET, resuming with Range when the sink already holds bytes."""
    headers = {"Accept-Encoding": "identity"}
    if sink.size:
        headers["Range"] = f"bytes={sink.size}-"
    with session.get(url, headers=headers, stream=True, timeout=timeout_s) as resp:
        total = position_sink(resp, sink, url)
        if bar.n != sink.size or bar.total != total:
            bar.reset(total=total)
            bar.update(sink.size)
        length = resp.headers.get("Content-Length")
        got = 0
        for block in resp.raw.stream(CHUNK, decode_content=False):  # raw bytes, even if gzip-encoded
            sink.write(block)
            bar.update(len(block))
            got += len(block)
        if length is not None and got < int(length):
            raise TransientError(f"connection dropped after {got} of {length} bytes from {url}")


def fetch_http(url, sink: Sink, bar, *, retries, backoff_s, timeout_s) -> None:
    with requests.Session() as session:
        with_retries(lambda: fetch_once(session, url, sink, bar, timeout_s),
                     retries=retries, backoff_s=backoff_s, what=f"GET {url}")


# ---------------------------------------------------------------- public API


def download(url, dest, *, sha256=None, expect=None, retries=5, backoff_s=1.0,
             timeout_s=60.0, progress=None) -> dict:
    """Fetch `url` to `dest` atomically; see the module docstring for the guarantees.

    Returns {"url", "path", "bytes", "sha256", "verified"}; `verified` is True only when
    `sha256` was given and matched.
    """
    if expect not in EXPECT_KINDS:
        raise ValueError(f"expect must be one of {EXPECT_KINDS}, not {expect!r}")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    src = local_path(url)
    source = str(url)
    sink = None
    try:
        sink = Sink(part, source, expect)
        with progress_bar(progress, None, dest.name) as bar:
            if src is not None:
                copy_local(src, sink, bar)
            else:
                fetch_http(source, sink, bar, retries=retries, backoff_s=backoff_s, timeout_s=timeout_s)
        digest = sink.finish()
        if sha256 and digest != sha256.lower():
            raise ChecksumError(f"sha256 mismatch for {source}: expected {sha256.lower()}, got {digest}")
        os.replace(part, dest)
    except BaseException:
        if sink:
            sink.close()
        part.unlink(missing_ok=True)
        raise
    return {"url": source, "path": str(dest), "bytes": sink.size, "sha256": digest,
            "verified": bool(sha256)}


__all__ = [
    "download", "sha256_file", "with_retries", "backoff_delay", "check_status", "local_path",
    "DownloadError", "HttpError", "NotFound", "TransientError", "ServerError",
    "ChecksumError", "ContentError",
]
