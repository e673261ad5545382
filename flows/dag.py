"""The stage graph of dvc.yaml, read through DVC's own Python API, and the three things a scheduler
needs to run it the way `dvc repro` does: is a stage up to date, run its command, record the run.

No Prefect here: flows/pipeline.py turns each stage into a Prefect task; this module only talks to
DVC. Every DVC call holds DVC's repo lock (`.dvc/tmp/lock`, waited for, never broken) and, inside
one process, a thread lock as well (DVC objects are not thread-safe), so stages that run at the same
time in threads or in other processes never write `dvc.lock` at once. A stage's command runs
outside both locks, under DVC's read/write locks on its deps and outs (as `dvc repro` does), so
independent stages run concurrently. Those are taken in the same hold of the repo lock that readies
the outs, and let go of in the same hold that records the run, so no other DVC process (which takes
them under the repo lock too) can step in between; a DVC call that finds a path held by another
process waits for it (with one line saying so) instead of failing.

`other_runner` tells whether another process (`dvc repro`, `dvc exp run`) is running a stage of the
project now: what the pipeline checks before it starts (tasks/stages/runner.py has the other half).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from flows.runs import dies_with_parent

# One DVC operation at a time in this process (the repo lock then orders processes).
_THREAD_LOCK = threading.RLock()
WAIT_S = 0.5  # between tries while another process holds DVC's lock on a path a call needs
log = logging.getLogger(__name__)


class StageFailed(RuntimeError):
    """A stage's command exited non-zero; the message names the stage, the command and its last lines."""


@dataclass(frozen=True)
class Stage:
    """One runnable stage of dvc.yaml (a `foreach` entry is one stage, e.g. `prepare@mnist`)."""

    name: str                    # DVC's addressing: `prepare@mnist`, `report`
    cmd: str
    wdir: str                    # absolute working directory of the command
    upstream: tuple[str, ...]    # stages whose outs this one depends on (directly)
    outs: tuple[str, ...]        # absolute paths of its outs
    frozen: bool = False

    @property
    def group(self) -> str:
        """The dvc.yaml stage the entry comes from: `prepare` for `prepare@mnist`."""
        return self.name.split("@", 1)[0]

    @property
    def key(self) -> str | None:
        """The foreach key: `mnist` for `prepare@mnist`, None for a plain stage."""
        return self.name.split("@", 1)[1] if "@" in self.name else None


@contextlib.contextmanager
def locked_repo(root: str | os.PathLike) -> Iterator:
    """A `dvc.repo.Repo` at `root` with the repo lock held (waiting for it as `--wait-for-lock` does)."""
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo, lock_repo

    # DVC resolves stage addressing and output paths against the working directory: run it from
    # the project root (under the thread lock, so no other DVC call sees a moving cwd; stage
    # commands get their own cwd).
    with _THREAD_LOCK, contextlib.chdir(root):
        try:
            repo = Repo(os.path.abspath(root), _wait_for_lock=True)
        except NotDvcRepoError as e:
            raise FileNotFoundError(
                f"{root}: not a DVC project (no .dvc/ at or above it); the pipeline flow runs the stages "
                f"of its dvc.yaml: run `git init && dvc init` there first ({e})") from e
        try:
            with lock_repo(repo):
                yield repo
        finally:
            repo.close()


def stages(root: str | os.PathLike, targets: Iterable[str] | None = None) -> list[Stage]:
    """The stages of dvc.yaml (all, or `targets` and everything upstream of them), upstream first.

    A target is a stage's addressing (`prepare@mnist`), a dvc.yaml stage name (`prepare`: every
    foreach entry) or a foreach key (`mnist`: every entry for that key).
    """
    import networkx as nx

    with locked_repo(root) as repo:
        graph = repo.index.graph  # edges: stage -> the stages it depends on
        by_name = {s.addressing: s for s in graph.nodes}
        if targets is None:
            chosen = set(graph.nodes)
        else:
            chosen = set()
            for target in targets:
                hits = [s for name, s in by_name.items()
                        if target in (name, name.split("@", 1)[0]) or name.endswith(f"@{target}")]
                if not hits:
                    raise KeyError(f"{Path(repo.root_dir) / 'dvc.yaml'}: no stage matches {target!r} "
                                   f"(stages: {', '.join(sorted(by_name))})")
                for s in hits:
                    chosen.add(s)
                    chosen.update(nx.descendants(graph, s))
        runnable = {s for s in chosen if getattr(s, "cmd", None)}
        order = [s for s in reversed(list(nx.topological_sort(graph))) if s in runnable]

        def upstream(s):  # through stages without a command (`dvc add`ed data) to the runnable ones
            found, todo, seen = set(), list(graph.successors(s)), set()
            while todo:
                u = todo.pop()
                if u in seen:
                    continue
                seen.add(u)
                if u in runnable:
                    found.add(u.addressing)
                else:
                    todo.extend(graph.successors(u))
            return tuple(sorted(found))

        return [Stage(name=s.addressing, cmd=s.cmd if isinstance(s.cmd, str) else " && ".join(s.cmd),
                      wdir=os.path.abspath(s.wdir), upstream=upstream(s),
                      outs=tuple(os.path.abspath(o.fs_path) for o in s.outs), frozen=bool(s.frozen))
                for s in order]


def _stage(repo, name: str):
    for s in repo.index.stages:
        if s.addressing == name:
            return s
    raise KeyError(f"{Path(repo.root_dir) / 'dvc.yaml'}: no stage {name!r}")


def status(root: str | os.PathLike, names: Iterable[str] | None = None) -> dict[str, list]:
    """What `dvc status` says: {stage: [changes]} for the stages that are not up to date (all when
    `names` is None; stages without a command are left out)."""
    def ask():
        with locked_repo(root) as repo:
            return repo.status(targets=list(names) if names is not None else None)

    got = _waiting(ask, "status")
    return {k: v for k, v in got.items() if not k.endswith(".dvc")}


def changed(root: str | os.PathLike, name: str) -> list:
    """DVC's reasons why one stage is not up to date ([] when it is), as `dvc status <stage>` gives them."""
    return status(root, [name]).get(name, [])


def _busy(e: BaseException) -> bool:
    """DVC's LockError for a path another process holds (its read/write lock), not the repo lock's."""
    from dvc.lock import LockError

    return isinstance(e, LockError) and "is busy" in str(e)


def _waiting(call: Callable, what: str):
    """`call()`, tried again every WAIT_S seconds while DVC says another process holds its read/write
    lock on a path the call needs (e.g. a `dvc repro` that started one of our stages meanwhile: the
    runner lock refuses its command, so DVC lets go within seconds); other errors pass."""
    said = False
    while True:
        try:
            return call()
        except Exception as e:  # noqa: BLE001 - only DVC's "is busy" LockError is waited on
            if not _busy(e):
                raise
            if not said:
                log.info("%s: waiting for DVC's lock that another process holds: %s", what,
                         " ".join(str(e).split("If there are no processes")[0].split()))
                said = True
            time.sleep(WAIT_S)


def _prepare_outs(dvc_stage, run_cache: bool) -> bool:
    dvc_stage.remove_outs(ignore_remove=False, force=False)
    if not run_cache:
        return False
    from dvc.stage.cache import RunCacheNotFoundError

    try:
        dvc_stage.repo.stage_cache.restore(dvc_stage)
    except RunCacheNotFoundError:
        return False
    return True


def prepare_outs(root: str | os.PathLike, name: str, *, run_cache: bool = True) -> bool:
    """Before a stage runs, as `dvc repro` does: remove its outs (persistent ones are kept but
    unprotected, so a cache linked into the workspace is never written through), then try DVC's
    run cache: when these deps and params were run before (or only the outs went missing), check
    the outs out of the cache instead of running the command. True when it did."""
    def ready():
        with locked_repo(root) as repo:
            return _prepare_outs(_stage(repo, name), run_cache)

    return _waiting(ready, name)


class _RWLock:
    """DVC's read lock on a stage's deps and write lock on its outs, labelled `tlpipe pipeline: <stage>`:
    another `dvc repro` (or flow) that wants to write them fails fast instead of racing this one.
    Taken and let go of only while this process holds the repo lock, as DVC itself does."""

    def __init__(self, repo, dvc_stage, name: str):
        from dvc.rwlock import rwlock

        reads = [d.fs_path for d in dvc_stage.deps if getattr(d, "is_in_repo", True)]
        writes = [o.fs_path for o in dvc_stage.outs]
        self._cm = rwlock(repo.tmp_dir, repo.fs, f"tlpipe pipeline: {name}", reads, writes,
                          repo.config["core"].get("hardlink_lock", False))
        self.held = False

    def take(self):
        with _THREAD_LOCK:
            self._cm.__enter__()
        self.held = True

    def let_go(self):
        if self.held:
            self.held = False
            with _THREAD_LOCK:
                self._cm.__exit__(None, None, None)


def command(stage: Stage) -> list[str] | str:
    """The argv the stage runs: `tlpipe <sub> <arg>` through this Python (`-m tasks.cli`, the same
    function with the same args, whatever is on PATH); any other command as DVC runs it, in a shell."""
    argv = shlex.split(stage.cmd)
    if argv and argv[0] == "tlpipe" and not set(stage.cmd) & set("&|;<>()$`\n"):
        return [sys.executable, "-m", "tasks.cli", *argv[1:]]
    return stage.cmd


def run(root: str | os.PathLike, stage: Stage, log: Callable[[str], None] = print, *,
        run_cache: bool = True, commit: bool = False) -> str:
    """Bring one stage up to date as `dvc repro` does: its outs are removed, then restored from DVC's
    run cache ("restored") or made by its command in its wdir ("ran"), each output line going to
    `log`. With `commit` the run is also recorded (see `commit`) before DVC's locks on the stage's
    paths are let go of, in the same hold of the repo lock, so no other DVC process sees the stage
    run but not recorded; without it the caller records it. Raises StageFailed naming the stage when
    the command exits non-zero (nothing recorded)."""
    def ready():
        with locked_repo(root) as repo:
            dvc_stage = _stage(repo, stage.name)
            if _prepare_outs(dvc_stage, run_cache):
                if commit:
                    _record(dvc_stage)
                return None
            held = _RWLock(repo, dvc_stage, stage.name)
            held.take()  # in this hold of the repo lock: no other DVC process steps in before it
            return held

    held = _waiting(ready, stage.name)
    if held is None:
        log(f"{stage.name}: restored from DVC's run cache, command not run")
        return "restored"
    argv = command(stage)
    tail: list[str] = []
    try:
        from tasks.stages.runner import child_env

        # dies_with_parent: SIGKILL when this thread ends, i.e. when the flow's process is killed (this
        # thread waits for the command, so it never ends first); else the command runs on as an orphan.
        proc = subprocess.Popen(argv, cwd=stage.wdir, shell=isinstance(argv, str), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace",
                                env={**os.environ, **child_env()},  # its `tlpipe` passes the runner lock
                                preexec_fn=dies_with_parent())
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            log(line)
            tail = (tail + [line])[-20:]
        rc = proc.wait()
        if rc != 0:
            last = "\n".join(tail[-10:])
            raise StageFailed(f"stage {stage.name} (`{stage.cmd}` in {stage.wdir}) exited {rc}:\n{last}")
        if commit:
            def record():
                with locked_repo(root) as repo:
                    held.let_go()  # under the repo lock, then recorded in the same hold
                    _record(_stage(repo, stage.name))

            _waiting(record, stage.name)
    finally:
        if held.held:
            with locked_repo(root):
                held.let_go()
    return "ran"


def other_runner(root: str | os.PathLike) -> tuple[int, str, str] | None:
    """Another process running a stage of this project now (`dvc repro`, `dvc exp run`, another flow):
    (its PID, its command, a path it holds), else None. Asked holding the repo lock, which such a
    process holds whenever it is not inside a stage's command, and inside one it holds DVC's
    read/write lock on the stage's paths (`.dvc/tmp/rwlock`, taken before it lets go of the repo
    lock): so one of the two always shows it. Entries of dead processes are not counted."""
    import psutil

    with locked_repo(root) as repo:
        path = os.path.join(repo.tmp_dir, "rwlock")
        try:
            with open(path, encoding="utf-8") as f:
                held = json.load(f)
        except (FileNotFoundError, ValueError):
            return None
    me = os.getpid()
    for mode in ("write", "read"):
        for target, infos in (held.get(mode) or {}).items():
            for info in infos if isinstance(infos, list) else [infos]:
                pid = int(info.get("pid", 0))
                if pid and pid != me and psutil.pid_exists(pid):
                    return pid, str(info.get("cmd", "")), os.path.relpath(target, root)
    return None


def commit(root: str | os.PathLike, name: str) -> None:
    """Record a stage that just ran, as `dvc repro` does after running it (`dvc commit` of that one
    stage): hash its deps and outs, move cached outs into DVC's cache, write its dvc.lock entry."""
    def record():
        with locked_repo(root) as repo:
            _record(_stage(repo, name))

    _waiting(record, name)


def _record(stage) -> None:
    # DVC keeps a run in its run cache only when every plain (non-metric/plot) out is cached.
    run_cache = all(o.use_cache for o in stage.outs if not (o.is_metric or o.is_plot))
    stage.save(run_cache=run_cache)
    stage.commit()
    stage.dump(update_pipeline=False)
