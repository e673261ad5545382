"""A real loopback HTTP server for download tests, with honest Range support and faults.

    server = LoopbackServer().start()
    server.add("/a.gz", data, fail_times=2)         # 2 x HTTP 500, then success
    server.add("/b", data, drop_after=1000)         # first request: full headers, 1000 bytes, close
    server.add("/b2", data, drop_after=10, drop_on=(2,))  # same, on the second request
    server.add("/c", b"<html>..", content_type="text/html")
    server.add("/d", data, status=403)              # always 403
    server.add("/e", data, ranges=False)            # ignore Range (answer 200)
    server.ranges = False                           # ignore Range everywhere
    requests.get(server.url("/a.gz"))
    server.requests  # [Request(method, path, range, status, sent), ...]
    server.stop()
"""

from __future__ import annotations

import re
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    status: int = 0
    sent: int = 0  # body bytes actually written


@dataclass
class Entry:
    data: bytes
    content_type: str = "application/octet-stream"
    fail_times: int = 0  # answer fail_status this many times first
    fail_status: int = 500
    drop_after: int | None = None  # close the connection after this many body bytes ...
    drop_on: tuple = (1,)  # ... on these successful requests (1 = first one after the failures)
    status: int | None = None  # always answer this status (e.g. 403)
    ranges: bool = True
    hits: int = field(default=0)


def parse_range(header: str, size: int):
    """(start, end) inclusive for a single byte range, 'bad' if unsatisfiable, None to ignore."""
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if not m or (not m.group(1) and not m.group(2)):
        return None  # multi-range or garbage: serve the whole body (allowed by RFC 9110)
    first, last = m.group(1), m.group(2)
    if not first:  # suffix: the last N bytes
        n = int(last)
        return "bad" if n == 0 or size == 0 else (max(0, size - n), size - 1)
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        return "bad"
    return start, end


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_HEAD(self):
        self.respond(body=False)

    def do_GET(self):
        self.respond(body=True)

    def respond(self, body: bool):
        owner = self.server.owner
        path = self.path.split("?", 1)[0]
        rec = Request(self.command, path, self.headers.get("Range"))
        with owner.lock:
            owner.requests.append(rec)
            entry = owner.files.get(path)
            if entry is not None:
                entry.hits += 1
                hit = entry.hits
        if entry is None:
            return self.simple(rec, 404, b"not found\n")
        if entry.status is not None:
            return self.simple(rec, entry.status, b"denied\n")
        if hit <= entry.fail_times:
            return self.simple(rec, entry.fail_status, b"server error\n")
        data, status, extra = entry.data, 200, {}
        wanted = parse_range(rec.range, len(data)) if rec.range and entry.ranges and owner.ranges else None
        if wanted == "bad":
            return self.simple(rec, 416, b"", {"Content-Range": f"bytes */{len(data)}"})
        if wanted:
            start, end = wanted
            status, extra = 206, {"Content-Range": f"bytes {start}-{end}/{len(data)}"}
            data = data[start:end + 1]
        if owner.ranges and entry.ranges:
            extra["Accept-Ranges"] = "bytes"
        dropping = entry.drop_after is not None and hit - entry.fail_times in entry.drop_on
        self.send_head(rec, status, len(data), entry.content_type, extra)
        if not body:
            return
        if dropping:
            data = data[: entry.drop_after]
            self.close_connection = True
        self.wfile.write(data)
        self.wfile.flush()
        rec.sent = len(data)

    def send_head(self, rec, status, length, ctype, extra):
        rec.status = status
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(length))
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()

    def simple(self, rec, status, body, extra=None):
        self.send_head(rec, status, len(body), "text/plain", extra or {})
        if self.command != "HEAD":
            self.wfile.write(body)
            rec.sent = len(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: "LoopbackServer"

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)  # clients hanging up early is expected


class LoopbackServer:
    def __init__(self):
        self.files: dict[str, Entry] = {}
        self.requests: list[Request] = []
        self.ranges = True
        self.lock = threading.Lock()
        self.httpd = None
        self.thread = None

    def start(self) -> "LoopbackServer":
        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.httpd.owner = self
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def base(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base + "/" + path.lstrip("/")

    def add(self, path: str, data: bytes, **faults) -> str:
        """Serve `data` at `path` (faults: see Entry); returns the full URL."""
        path = "/" + path.lstrip("/")
        with self.lock:
            self.files[path] = Entry(bytes(data), **faults)
        return self.url(path)

    def requests_for(self, path: str) -> list[Request]:
        path = "/" + path.lstrip("/")
        return [r for r in self.requests if r.path == path]

    def bytes_sent(self, path: str | None = None) -> int:
        return sum(r.sent for r in (self.requests if path is None else self.requests_for(path)))
