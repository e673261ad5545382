"""Small file helpers: outputs appear whole or not at all, one writer at a time."""
from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import logging
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)


class OutputLocked(RuntimeError):
    """Another live process holds the lock of the output this one was about to write."""

    def __init__(self, output: Path, lock: Path, pid: int | None):
        self.output, self.lock, self.pid = output, lock, pid
        who = f"process {pid}" if pid else "another process"
        super().__init__(f"{output}: {who} is writing it now (lock {lock}); wait for it to finish, "
                         f"or stop it, then rerun")


# A write that finds no room: the disk (or the user's quota) is full, or the file-size limit (`ulimit -f`,
# RLIMIT_FSIZE) is reached. One class of error: the remedy is the same, free space or raise the limit.
NO_ROOM = frozenset(code for code in (errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", None)) if code)
_NO_ROOM_TEXT = {os.strerror(code): code for code in NO_ROOM}  # "No space left on device", "File too large", ...
# what libraries that wrap the OSError keep of it: h5py "errno = 27", TensorFlow "<path>; File too large"
_ERRNO_TEXT = re.compile(r"errno\s*=\s*(\d+)")
_FILE_TEXT = re.compile(r"filename\s*=\s*'([^']+)'|(/[^\s;:'\"]+)\s*;\s*(?:%s)"
                        % "|".join(map(re.escape, _NO_ROOM_TEXT)))


class NoRoom(OSError):
    """A write that found no room (ENOSPC, EFBIG, EDQUOT): one line naming the file and what to do."""

    def __init__(self, path: Path | str | None, code: int, writing: str | None = None):
        self.path, self.code, self.writing = path, code, writing
        what = f"{path}: could not write it" if path else "could not write a file"
        if writing and str(writing) != str(path):
            what += f" (writing {writing})"
        places = [str(Path(path).parent)] if path else []
        if writing and not (path and Path(writing).is_relative_to(Path(path).parent)):
            temp = tempfile.gettempdir()
            places.append(f"the temp dir {temp}" if Path(writing).is_relative_to(temp) else str(Path(writing).parent))
        super().__init__(f"{what}: {os.strerror(code)} ({errno.errorcode.get(code, code)}): no room for it, the "
                         f"disk is full or the file-size limit (`ulimit -f`) is reached; free space"
                         f"{' on ' + ' and '.join(places) if places else ''} or raise the limit, then rerun")
        self.errno = code  # for callers that test it; the message above stays the text


def no_room(e: BaseException | None) -> NoRoom | None:
    """`e` as a NoRoom when it, or an error it was raised from, says a write found no room; else None.

    An OSError by its errno; libraries that wrap it (TensorFlow's OpError, h5py's OSError without
    an errno) by the text they keep of it."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, NoRoom):
            return e
        code = e.errno if isinstance(e, OSError) and e.errno in NO_ROOM else None
        text = str(getattr(e, "message", None) or e)
        if code is None:
            code = next((c for t, c in _NO_ROOM_TEXT.items() if t in text), None)
        if code is None:
            match = _ERRNO_TEXT.search(text)
            code = int(match.group(1)) if match and int(match.group(1)) in NO_ROOM else None
        if code is not None:
            writing = getattr(e, "filename", None)
            if not writing:
                match = _FILE_TEXT.search(text)
                writing = match and (match.group(1) or match.group(2))
            return NoRoom(None, code, writing or None)
        e = e.__cause__ or e.__context__
    return None


@contextmanager
def room_for(path: Path):
    """Raise a write in the block that finds no room (`no_room`) as NoRoom naming `path` (the file the
    user knows, e.g. the output a temp file stands in for); other errors pass unchanged."""
    try:
        yield
    except NoRoom:
        raise
    except Exception as e:  # noqa: BLE001 - OSError, TensorFlow's and h5py's errors alike
        found = no_room(e)
        if found is None:
            raise
        raise NoRoom(path, found.code, found.writing) from e


def umask() -> int:
    """The process umask, read without changing it (/proc on Linux; a set-and-restore elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _holder(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def try_flock(path: Path) -> int | None:
    """Open `path` (created if missing) and take an exclusive `flock` on it without waiting: the open
    fd, which holds the lock until closed; None when another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno not in (errno.EAGAIN, errno.EACCES):
            raise
        return None
    return fd


@contextmanager
def output_lock(final: Path):
    """Hold the per-output lock `.<name>.lock` beside `final` for the block.

    An exclusive `flock`, so the kernel drops it when the holder dies (a killed run never leaves a
    stale lock, only a lock file that the next run takes over). While another live process holds it,
    raises `OutputLocked` naming that process's PID (the lock file holds it) instead of racing it.
    The holder removes the file when done (checking, after locking, that the file it locked is still
    the one at the path, so a run that opened it just before the removal cannot hold a dead lock).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    path = final.with_name(f".{final.name}.lock")
    while True:
        fd = try_flock(path)
        if fd is None:
            raise OutputLocked(final, path, _holder(path))
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # locked a file the previous holder had just removed: take the new one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        try:
            path.unlink(missing_ok=True)  # while still holding it
        finally:
            os.close(fd)  # releases the flock


def remove_stale(final: Path) -> list[Path]:
    """Remove what killed runs of `final` left beside it: `.<name>.tmp-*` (temp dirs and files) and
    `.<name>.old-*` (a swapped-out old copy). Only call it holding `output_lock(final)`: every live
    writer of `final` holds that lock, so anything of these names is then left by a dead process."""
    final = Path(final)
    removed = []
    if not final.parent.is_dir():
        return removed
    prefixes = (f".{final.name}.tmp-", f".{final.name}.old-")
    for p in sorted(final.parent.iterdir()):
        if p.name.startswith(prefixes):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    if removed:
        log.info("removed %d leftover(s) of an interrupted run beside %s: %s", len(removed), final,
                 [p.name for p in removed])
    return removed


_RENAME_EXCHANGE = 2
_libc = None


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step (Linux renameat2 RENAME_EXCHANGE); False where the system
    or file system cannot, so the caller falls back to two renames."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = _libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(b))


@contextmanager
def atomic_dir(final: Path):
    """Yield a fresh temp dir beside `final`; on success it replaces `final` in one step.

    Guarantees:
    - A failed or killed run leaves `final` as it was (old outputs or nothing), never half-written;
      the swap is one atomic exchange where the file system has it (Linux), so `final` is never
      absent while it is replaced.
    - One writer per output: a second process writing the same `final` while one is at it gets
      `OutputLocked` naming the first one's PID (`output_lock`).
    - What a killed run of this same output left beside it (`.<name>.tmp-*` with any `.part`
      download inside, `.<name>.old-*`) is removed when the next run starts; another output's, or a
      live run's, never.
    - `final` gets the user's umask (mkdtemp alone would leave it 0700).
    """
    final = Path(final)
    with output_lock(final):
        remove_stale(final)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-{os.getpid()}-", dir=final.parent))
        try:
            os.chmod(tmp, 0o777 & ~umask())
            yield tmp
            if not final.exists():
                tmp.rename(final)
            elif not exchange(tmp, final):
                old = final.with_name(f".{final.name}.old-{os.getpid()}")
                final.rename(old)
                tmp.rename(final)
                shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # after an exchange: the old copy


def write_json(path: Path, data) -> None:
    """Write JSON atomically (temp file + rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with room_for(path):
            tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_file(path: Path):
    """Yield a binary file to write; it appears at `path` (one rename) only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with room_for(path), os.fdopen(fd, "wb") as f:
            yield f
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_path(path: Path, suffix: str = ""):
    """Yield a temp path beside `path` (ending in `suffix`, for writers that check the extension, such
    as Keras' `.keras` / `.weights.h5`) for a library to write; it is renamed to `path` only if the
    block succeeds, so `path` is the old file or the whole new one, never a partial one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{suffix}")
    try:
        with room_for(path):
            yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_files(paths):
    """{final: temp path beside it} for the block to write (and read back); when the whole block
    succeeds each temp is renamed over its final, else every temp is removed and every final is left
    as it was (a set of files of which a failed run replaces none, e.g. an export's models)."""
    temps = {Path(p): Path(p).with_name(f".{Path(p).name}.tmp-{os.getpid()}") for p in paths}
    try:
        yield temps
        for final, tmp in temps.items():
            os.replace(tmp, final)
    except BaseException:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
        raise
