"""One runner of a project's stages at a time.

`tlpipe pipeline` (the Prefect flow, flows/pipeline.py) holds the project's runner lock,
`.dvc/tmp/tlpipe-runner.lock` (an `flock`, so the kernel drops it when its holder dies: never stale),
for its whole run, with its PID and command line in the file. A `tlpipe` stage command that this
pipeline did not start (one that `dvc repro` or `dvc exp run` runs, or one typed by hand) refuses to
run meanwhile, with one line naming the pipeline's PID and command: `RunnerBusy`. The stage commands
the pipeline runs carry its PID in $TLPIPE_RUNNER_PID and go ahead. A second `tlpipe pipeline` is
refused the same way. The other direction, a pipeline started while `dvc repro` runs, is found
through DVC's own locks (flows/dag.py `other_runner`).

A project without `.dvc/` (no DVC runner can run it) has no runner lock.
"""
from __future__ import annotations

import errno
import fcntl
import os
import threading
from contextlib import contextmanager
from pathlib import Path

from tasks.core.io import try_flock

RUNNER_ENV = "TLPIPE_RUNNER_PID"
LOCK_NAME = "tlpipe-runner.lock"

_held: dict[str, list] = {}  # lock path -> [fd, depth]: a process re-enters its own lock
_guard = threading.Lock()


class RunnerBusy(RuntimeError):
    """Another runner (a `tlpipe pipeline`, a `dvc repro`) is running this project's stages now."""

    def __init__(self, root: Path | str, who: str, pid: int | None, holds: str):
        self.pid = pid
        name = f"{who} (PID {pid})" if pid else who
        super().__init__(f"{root}: {name} is running this project's stages now ({holds}); wait for it to "
                         f"finish, or stop it, then rerun")


def lock_path(root: Path | str) -> Path | None:
    dvc = Path(root) / ".dvc"
    return dvc / "tmp" / LOCK_NAME if dvc.is_dir() else None


def holder(path: Path) -> tuple[int | None, str]:
    """(PID, command line) the runner lock's holder wrote into it; (None, "") when unreadable."""
    try:
        pid, _, command = path.read_text(encoding="utf-8").partition("\n")
        return int(pid), command.strip()
    except (OSError, ValueError):
        return None, ""


def _busy(root: Path | str, path: Path) -> RunnerBusy:
    pid, command = holder(path)
    return RunnerBusy(root, f"`{command}`" if command else "another `tlpipe pipeline`", pid,
                      f"it holds {path.relative_to(root) if path.is_relative_to(root) else path}")


@contextmanager
def sole_runner(root: Path | str, command: str):
    """Hold the runner lock of the project at `root` for the block; RunnerBusy naming the holder when
    another process holds it. Re-entrant within a process (the CLI takes it, then the flow it runs).
    Yields True when this call took it, False when the process already held it (or no `.dvc/`)."""
    root = Path(root)
    path = lock_path(root)
    if path is None:
        yield False
        return
    key = os.path.realpath(path)
    with _guard:
        fresh = key not in _held
        if fresh:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = try_flock(path)
            if fd is None:
                raise _busy(root, path)
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n{' '.join(command.split())}\n".encode())
            _held[key] = [fd, 0]
        _held[key][1] += 1
    try:
        yield fresh
    finally:
        with _guard:
            entry = _held[key]
            entry[1] -= 1
            if entry[1] == 0:
                del _held[key]
                try:
                    os.ftruncate(entry[0], 0)
                finally:
                    os.close(entry[0])  # releases the flock


def holds(root: Path | str) -> bool:
    """Whether this process holds the runner lock of the project at `root`."""
    path = lock_path(root)
    return path is not None and os.path.realpath(path) in _held


def child_env() -> dict:
    """What a stage command started by this process's runner gets in its environment."""
    return {RUNNER_ENV: str(os.getpid())}


def check(root: Path | str, *, started_by_it: bool = True) -> None:
    """For a `tlpipe` stage command: RunnerBusy when a runner other than the one that started this
    process (its PID in $TLPIPE_RUNNER_PID) holds the project's runner lock; else nothing. With
    `started_by_it=False` (a runner about to start) any other holder counts."""
    root = Path(root)
    path = lock_path(root)
    if path is None or not path.exists():
        return
    if os.path.realpath(path) in _held:
        return  # this process is the runner (a flow calling a stage function in-process)
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            pid, _ = holder(path)
            if started_by_it and pid is not None and os.environ.get(RUNNER_ENV) == str(pid):
                return  # started by that runner
            raise _busy(root, path) from None
    finally:
        os.close(fd)  # drops the shared lock taken to look
