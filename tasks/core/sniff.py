"""The one content sniffer: what a file's first bytes say it is, for checks and error messages
(an HTML login page where an archive, a gzip, an IDX, a MAT or an HDF5 file was expected)."""
from __future__ import annotations

HTML_STARTS = (b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")


def is_html(head: bytes) -> bool:
    """An HTML (or XML) page: what a login page, a proxy error or a 'file too large to scan' page is."""
    return head.lstrip()[:14].lower().startswith(HTML_STARTS)


def describe(head: bytes) -> str:
    """A short, human description of what bytes starting with `head` are."""
    if is_html(head):
        return "an HTML/XML page"
    if head.startswith(b"\x1f\x8b"):
        return "a gzip stream"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "a zip archive"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "an HDF5 file"
    if not head:
        return "an empty file"
    return "bytes " + head[:8].hex(" ")
