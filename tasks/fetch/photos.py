"""fetch, the photo-folder strategy: a folder, an archive, a URL or a Kaggle dataset -> data/raw/<key>/.

`fetch.<key>.source` (or the source module's UPSTREAM) says where the photos are:
  kaggle:<owner>/<dataset>   downloaded with kagglehub (public datasets need no account), extracted
  http(s)://.../x.zip|.tar.gz  downloaded (retries, resume), optional `sha256`, then extracted
  a local .zip/.tar(.gz) file  optional `sha256`, extracted
  a local folder               copied (or hard-linked with `link: hardlink`)
Relative paths are relative to the project root. With a mirror (TLPIPE_MIRROR or params `mirror`),
an upstream source is replaced by `<mirror>/<MIRROR_PATH>/` (a folder) or `<mirror>/<MIRROR_PATH>.zip`.
Archives are extracted safely (tasks/fetch/archives.py); a lone wrapper folder is unwrapped. The tree
lands in data/raw/<key>/ in one rename, beside fetch.json (source, kind, sha256, counts, skipped).
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from tasks.fetch import archives, kaggle_api, mirrors
from tasks.fetch.download import ChecksumError, NotFound, download, local_path, sha256_file
from tasks.core.io import atomic_dir, write_json

log = logging.getLogger(__name__)
RECORD = "fetch.json"
WORK_DIRS = (".download", ".extract")


def fetch_images(key: str, module, fp: dict, *, raw_dir: Path, root: Path, mirror: str | None,
                 options: dict) -> dict:
    """Materialize dataset `key` (settings `fp` = params fetch.<key>) in `raw_dir`; a relative source is
    relative to `root`. Returns the record written to fetch.json."""
    where, shown = resolve_source(key, module, fp, mirror, root)
    pin = _pin(key, fp)
    link = str(fp.get("link", "copy"))
    if link not in ("copy", "hardlink"):
        raise ValueError(f"fetch.{key}.link must be copy or hardlink, not {link!r}")
    raw = raw_dir
    with atomic_dir(raw) as tmp:
        if where["via"] == "folder":
            if pin:
                raise ValueError(f"fetch.{key}.sha256 pins an archive, but the source {shown} is a folder")
            _check_not_nested(where["path"], raw)
            count, size, skipped = copy_tree(where["path"], tmp, hardlink=link == "hardlink")
            entry, fmt = {"source": shown, "files": count, "bytes": size}, "folder"
        elif where["via"] == "kaggle":  # kagglehub hands over the dataset extracted
            if pin:
                raise ValueError(f"fetch.{key}.sha256 pins an archive, but kagglehub delivers {shown} "
                                 "extracted; pin the Kaggle version instead: kaggle:<owner>/<dataset>/versions/<n>")
            folder = kaggle_api.download_dataset(where["slug"], tmp / ".download", key=key)
            count, size, skipped = copy_tree(archives.unwrap_single_folder(folder), tmp, hardlink=True)
            entry, fmt = {"source": shown, "files": count, "bytes": size}, "kaggle"
        else:
            archive, entry = _obtain_archive(key, where, shown, pin, tmp / ".download", options)
            result = archives.extract(archive, tmp / ".extract", source=shown)
            _move_children(archives.unwrap_single_folder(tmp / ".extract"), tmp)
            fmt, count, skipped = result["kind"], result["members"], result["skipped"]
        for name in WORK_DIRS:
            shutil.rmtree(tmp / name, ignore_errors=True)
        record = {"dataset": key, "kind": "image_folder", "format": fmt, "via": where["via"], "source": shown,
                  "files": [entry], "file_count": count, "skipped": skipped}
        write_json(tmp / RECORD, record)
    log.info("fetch %s: %d files from %s (%s)%s", key, count, shown, fmt,
             f", {len(skipped)} skipped" if skipped else "")
    return record


def resolve_source(key: str, module, fp: dict, base: str | None, root: Path) -> tuple[dict, str]:
    """({"via": folder|archive|url|kaggle, "path"|"url"|"slug": ...}, the source as recorded)."""
    upstream = getattr(module, "UPSTREAM", None)
    given = str(fp.get("source") or "").strip()
    source = given or upstream
    if not source:
        raise ValueError(getattr(module, "NO_DEFAULT", None) or
                         f"fetch.{key}.source is not set: give a folder of class folders, a zip/tar archive, "
                         "an http(s) URL of one, or kaggle:<owner>/<dataset>")
    mirror_path = getattr(module, "MIRROR_PATH", None)
    if base and mirror_path and source == upstream:
        return _mirrored(key, base, mirror_path)
    if source.startswith("kaggle:"):
        return {"via": "kaggle", "slug": kaggle_api.parse_slug(source)}, source
    if source.startswith(("http://", "https://")):
        return {"via": "url", "url": source}, source
    path = local_path(source).expanduser()
    path = path if path.is_absolute() else root / path
    if path.is_dir():
        return {"via": "folder", "path": path}, source
    if path.is_file():
        return {"via": "archive", "path": path}, source
    raise NotFound(None, source, f"fetch.{key}.source {source!r}: no such folder or archive ({path})")


def _mirrored(key: str, base: str, mirror_path: str) -> tuple[dict, str]:
    folder, archive = mirror_path.rstrip("/"), mirror_path.rstrip("/") + ".zip"
    if mirrors.is_remote(base):
        return {"via": "url", "url": mirrors.join(base, archive)}, mirrors.recorded(archive)
    root = mirrors.local_root(base)
    if (root / folder).is_dir():
        return {"via": "folder", "path": root / folder}, mirrors.recorded(folder + "/")
    if (root / archive).is_file():
        return {"via": "archive", "path": root / archive}, mirrors.recorded(archive)
    raise NotFound(None, str(root / folder), f"{key}: the mirror {base} has neither {folder}/ nor {archive}")


def _pin(key: str, fp: dict) -> str | None:
    pin = fp.get("sha256") or None
    if pin is not None and not isinstance(pin, str):
        raise ValueError(f"fetch.{key}.sha256 must be the archive's sha256 (a hex string), not {pin!r}")
    return pin.lower() if pin else None


def _obtain_archive(key, where, shown, pin, work: Path, options: dict) -> tuple[Path, dict]:
    """The archive as a local file (downloaded into `work` when remote), checked against `pin`."""
    work.mkdir(parents=True, exist_ok=True)
    if where["via"] == "url":
        name = where["url"].split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] or "archive"
        path = work / name
        expect = "zip" if name.lower().endswith(".zip") else None
        download(where["url"], path, sha256=pin, expect=expect, **options)  # ChecksumError on a mismatch
    else:
        path = where["path"]
    digest = sha256_file(path)
    if pin and digest != pin:
        raise ChecksumError(f"sha256 mismatch for {shown}: expected {pin} (fetch.{key}.sha256), got {digest}")
    return path, {"source": shown, "sha256": digest, "verified": bool(pin), "bytes": path.stat().st_size}


def copy_tree(src: Path, dest: Path, *, hardlink: bool = False) -> tuple[int, int, list[dict]]:
    """Copy the regular files under `src` into `dest` (hidden entries left out, links not followed);
    returns (files, bytes, skipped)."""
    count, size, skipped = 0, 0, []
    for dirpath, dirnames, filenames in os.walk(src):
        here = Path(dirpath)
        rel_dir = here.relative_to(src)
        for d in list(dirnames):
            if d.startswith(".") or d in archives.JUNK_DIRS:
                dirnames.remove(d)
            elif (here / d).is_symlink():
                dirnames.remove(d)
                skipped.append({"file": (rel_dir / d).as_posix(), "reason": "symbolic link (not followed)"})
        dirnames.sort()
        (dest / rel_dir).mkdir(parents=True, exist_ok=True)
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path, rel = here / name, (rel_dir / name).as_posix()
            if path.is_symlink() or not path.is_file():
                skipped.append({"file": rel, "reason": "symbolic link or special file (not copied)"})
                continue
            _copy_file(path, dest / rel_dir / name, hardlink)
            count += 1
            size += path.stat().st_size
    return count, size, skipped


def _copy_file(src: Path, dest: Path, hardlink: bool) -> None:
    if hardlink:
        try:
            os.link(src, dest)
            return
        except OSError:
            pass  # another filesystem (or links not allowed): copy
    shutil.copyfile(src, dest)


def _check_not_nested(src: Path, raw: Path) -> None:
    src, raw = src.resolve(), raw.resolve()
    if src == raw or src in raw.parents or raw in src.parents:
        raise ValueError(f"source folder {src} contains or is inside the output {raw}; "
                         "point the source at the photos' own folder")


def _move_children(src: Path, dest: Path) -> None:
    for child in sorted(src.iterdir()):
        if child.name in archives.JUNK_DIRS or child.name in WORK_DIRS:
            continue
        target = dest / child.name
        if target.exists():
            raise ValueError(f"archive entry {child.name!r} clashes with the fetch bookkeeping in {dest}")
        child.rename(target)
