"""The one mirror resolver: where a file or folder is under a mirror ($TLPIPE_MIRROR or params
`mirror`: a URL or a local directory laid out like upstream), and how that place is recorded.

Records (fetch.json of datasets and weights) name the mirror by the token `$TLPIPE_MIRROR`, never as
spelled, so the same upstream bytes give the same record, and the same DVC hash, on any machine and
through any spelling of the mirror's path.
"""
from __future__ import annotations

from pathlib import Path

from tasks.fetch.download import local_path

TOKEN = "$TLPIPE_MIRROR"


def is_remote(base: str) -> bool:
    """An http(s) mirror (a file:// URL or a plain path is local)."""
    return "://" in base and not base.startswith("file://")


def join(base: str, path: str) -> str:
    """`path` under a mirror or upstream base: a URL, or a local directory (as an absolute path)."""
    if "://" in base:
        return base.rstrip("/") + "/" + path
    return str(Path(base).expanduser().resolve() / path)


def local_root(base: str) -> Path:
    """The directory of a local mirror (a plain path or a file:// URL)."""
    return local_path(base).expanduser().resolve()


def recorded(path: str) -> str:
    """How `path` under the mirror is written into a record: `$TLPIPE_MIRROR/<path>`."""
    return f"{TOKEN}/{path}"


def as_recorded(location: str, base: str | None) -> str:
    """`location` (a result of join(base, ...)) as a record names it: the mirror replaced by the token."""
    if not base:
        return location
    prefix = join(base, "x")[:-1]
    return recorded(location[len(prefix):]) if location.startswith(prefix) else location
