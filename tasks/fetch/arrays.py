"""fetch, the array-files strategy: a source module's `file_sets` (MNIST IDX gz, EMNIST .mat or IDX) downloaded
(or taken from a mirror, or from a zip member by HTTP range requests) into the raw dir, with `fetch.json`."""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from tasks.fetch.download import NotFound, download
from tasks.fetch.mirrors import TOKEN, as_recorded, join
from tasks.core.io import atomic_dir, write_json
from tasks.fetch.remote_zip import fetch_zip_member
from tasks.sources import RemoteFile

log = logging.getLogger(__name__)


def fetch_arrays(key: str, module, fetch_params: dict, *, raw_dir: Path, mirror: str | None,
                 options: dict) -> dict:
    """Fetch dataset `key`'s files (the first of its source module's forms that is available) into
    `raw_dir`; returns the record also written to `raw_dir`/fetch.json."""
    sets = {fmt: [with_pins(f, fetch_params.get("sha256") or {}) for f in files]
            for fmt, files in module.file_sets(fetch_params).items()}
    base = mirror
    misses = []
    with atomic_dir(raw_dir) as tmp:
        for fmt, files in sets.items():
            try:
                record = _fetch_set(files, tmp, base, options)
            except NotFound as e:
                misses.append(f"{fmt}: {e}")
                log.warning("%s: %s form not available (%s)%s", key, fmt, e,
                            "; trying the next form" if len(misses) < len(sets) else "")
                _clear(tmp)
                continue
            # the mirror as a token, never as spelled: the same bytes give the same record on any machine
            record = {"dataset": key, "format": fmt, "mirror": TOKEN if base else None,
                      "unavailable_forms": misses, **record}
            write_json(tmp / "fetch.json", record)
            return record
        raise NotFound(404, key, f"{key}: no form of the dataset could be fetched: " + "; ".join(misses))


def with_pins(f: RemoteFile, pins: dict) -> RemoteFile:
    """Apply `fetch.<key>.sha256: {file or archive name: sum}` from params.yaml.

    For copies whose bytes differ from upstream on purpose (a re-encoded private mirror, test
    fixtures): the pin still has to match, it is just a different pin.
    """
    archive = Path(f.mirror_path).name
    return replace(f, sha256=pins.get(f.name, f.sha256), archive_sha256=pins.get(archive, f.archive_sha256))


def _fetch_set(files: list[RemoteFile], out: Path, base: str | None, options: dict) -> dict:
    fetched, skipped = [], []
    for f in files:
        try:
            fetched.append(fetch_file(f, out / f.name, base, options))
        except NotFound as e:
            if not f.optional:
                raise
            skipped.append({"file": f.name, "reason": f"optional file not found: {e}"})
    return {"files": fetched, "skipped": skipped}


def fetch_file(f: RemoteFile, dest: Path, base: str | None, options: dict) -> dict:
    """Fetch one file, trying each location a mirror may hold it at; NotFound if none has it."""
    errors = []
    for url, member in locations(f, base):
        try:
            if member:
                record = fetch_zip_member(url, member, dest, archive_sha256=f.archive_sha256,
                                          member_sha256=f.sha256, **options)
            else:
                record = download(url, dest, sha256=f.sha256, expect=f.expect, **options)
            # Records name the mirror symbolically, so they are the same on every machine.
            return {**record, "url": as_recorded(url, base), "path": f.name}
        except NotFound as e:
            errors.append(str(e))
    raise NotFound(404, f.url, f"{f.name}: " + "; ".join(errors))


def locations(f: RemoteFile, base: str | None) -> list[tuple[str, str | None]]:
    """(url, zip member or None) candidates for `f`: upstream, or the mirror's copies."""
    if not base:
        return [(f.url, f.member)]
    archive = join(base, f.mirror_path)
    if not f.member:
        return [(archive, None)]
    # A mirror may hold the archive, or the member already extracted beside where the archive would be.
    extracted = join(base, str(Path(f.mirror_path).parent / f.member))
    return [(archive, f.member), (extracted, None)]


def _clear(directory: Path) -> None:
    for p in directory.iterdir():
        p.unlink()
