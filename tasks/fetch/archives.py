"""Safe archive extraction (zip, tar, tar.gz/bz2/xz) for image-folder datasets.

Archives come from strangers (a Kaggle upload, a URL in params.yaml), so a member is never
written outside the target folder: absolute names, `..` components, links (symbolic or hard),
devices and FIFOs are skipped and recorded with the reason (zip-slip, tar-slip). Tar members
also pass through Python's own `filter="data"`; zip members get the same checks here.
"""
from __future__ import annotations

import os
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from tasks.fetch.download import ContentError
from tasks.core.sniff import is_html

CHUNK = 1 << 20
JUNK_DIRS = {"__MACOSX"}  # resource forks macOS's zip tool adds; never images


def archive_kind(path: Path, source: str | None = None) -> str:
    """'zip' or 'tar' from the file's first bytes; ContentError for an HTML page or anything else."""
    with open(path, "rb") as f:
        head = f.read(512)
    source = source or str(path)
    if is_html(head):
        raise ContentError(f"got an HTML page where an archive (zip or tar) was expected from {source} "
                           "(a login page, a 'file too large to scan' page or a proxy error?)")
    if not head:
        raise ContentError(f"empty file where an archive (zip or tar) was expected: {source}")
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")) or zipfile.is_zipfile(path):
        return "zip"
    if tarfile.is_tarfile(path):
        return "tar"
    raise ContentError(f"not a zip or tar archive (first bytes {head[:8]!r}): {source}")


def unsafe_reason(name: str) -> str | None:
    """Why a member name must not be extracted (None when it is a plain relative path)."""
    posix = name.replace("\\", "/")  # zips from Windows tools use backslashes
    if not posix or "\0" in posix:
        return "empty or NUL in the name"
    if posix.startswith("/") or (len(posix) > 1 and posix[1] == ":"):
        return "absolute path"
    if ".." in PurePosixPath(posix).parts:
        return "'..' in the path (would write outside the dataset folder)"
    return None


def _inside(dest: Path, name: str) -> Path:
    target = (dest / name.replace("\\", "/")).resolve()
    if os.path.commonpath([dest.resolve(), target]) != str(dest.resolve()):
        raise ValueError(f"{name}: resolves outside {dest}")
    return target


def extract(archive: Path, dest: Path, source: str | None = None) -> dict:
    """Extract `archive` into `dest` (created); returns {"kind", "members", "skipped": [{file, reason}]}."""
    dest.mkdir(parents=True, exist_ok=True)
    kind = archive_kind(archive, source)
    members, skipped = (_extract_zip if kind == "zip" else _extract_tar)(archive, dest)
    return {"kind": kind, "members": members, "skipped": skipped}


def _zip_type_reason(info: zipfile.ZipInfo) -> str | None:
    kind = stat.S_IFMT(info.external_attr >> 16)
    if info.create_system == 3 and kind:  # 3 = Unix: the high bits hold st_mode (type bits may be 0)
        if kind == stat.S_IFLNK:
            return "symbolic link (not extracted)"
        if kind not in (stat.S_IFREG, stat.S_IFDIR):
            return "device, FIFO or socket (not extracted)"
    if info.flag_bits & 0x1:
        return "encrypted member"
    return None


def _extract_zip(archive: Path, dest: Path) -> tuple[int, list[dict]]:
    members, skipped = 0, []
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as e:
        raise ContentError(f"{archive}: corrupt zip archive: {e}") from e
    with zf:
        for info in zf.infolist():
            reason = unsafe_reason(info.filename) or _zip_type_reason(info)
            if reason:
                skipped.append({"file": info.filename, "reason": reason})
                continue
            target = _inside(dest, info.filename)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as e:
                target.unlink(missing_ok=True)
                skipped.append({"file": info.filename, "reason": f"corrupt member: {e}"})
                continue
            members += 1
    return members, skipped


def _tar_type_reason(m: tarfile.TarInfo) -> str | None:
    if m.issym():
        return "symbolic link (not extracted)"
    if m.islnk():
        return "hard link (not extracted)"
    if not (m.isfile() or m.isdir()):
        return "device, FIFO or other special member (not extracted)"
    return None


def _extract_tar(archive: Path, dest: Path) -> tuple[int, list[dict]]:
    members, skipped = 0, []
    try:
        tf = tarfile.open(archive)
    except tarfile.TarError as e:
        raise ContentError(f"{archive}: corrupt tar archive: {e}") from e
    with tf:
        for m in _tar_members(tf, archive):
            reason = unsafe_reason(m.name) or _tar_type_reason(m)
            if reason:
                skipped.append({"file": m.name, "reason": reason})
                continue
            _inside(dest, m.name)
            try:
                # filter="data" is Python's own guard (paths, links, modes); ours ran first.
                tf.extract(m, dest, set_attrs=False, filter="data")
            except tarfile.FilterError as e:
                skipped.append({"file": m.name, "reason": f"refused by tarfile's data filter: {e}"})
                continue
            except (tarfile.TarError, OSError, EOFError) as e:
                if m.isfile():
                    (dest / m.name).unlink(missing_ok=True)
                skipped.append({"file": m.name, "reason": f"corrupt member: {e}"})
                continue
            members += m.isfile()
    return members, skipped


def _tar_members(tf: tarfile.TarFile, archive: Path):
    """The members, one at a time; a truncated or corrupt tar stream is a ContentError."""
    while True:
        try:
            m = tf.next()
        except (tarfile.TarError, EOFError, OSError) as e:
            raise ContentError(f"{archive}: truncated or corrupt tar archive: {e}") from e
        if m is None:
            return
        yield m


def unwrap_single_folder(root: Path) -> Path:
    """The dataset root inside an extracted archive: descend through lone wrapper folders.

    `cards.zip` may hold `train/ ...` or `cards/train/ ...`; both give the same tree.
    """
    while True:
        entries = [p for p in root.iterdir() if not p.name.startswith(".") and p.name not in JUNK_DIRS]
        if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
            root = entries[0]
        else:
            return root
