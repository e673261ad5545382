"""When the process that runs the pipeline flow dies (SIGKILL, the OOM killer, a killed worker).

What Prefect 3.8.8 (self-hosted, no Cloud) does about it on its own, as tests/test_orchestrator_kill.py
found it:
- the killed flow run stays Running in the server's database for good: nothing on the server notices
  (its zombie detection is an automation on flow-run heartbeats that a user has to set up, and the
  ephemeral server of `tlpipe pipeline` dies with the run anyway);
- what the process started outlives it: `tlpipe pipeline`'s ephemeral API server (uvicorn, started by
  Prefect) serves on for good, and the stage's command (`tlpipe train ...`) trains on unsupervised,
  holding its output's lock, until it happens to write to its dead parent's pipe;
- under a process worker the flow-run process has a session of its own: a killed worker leaves it
  running until one of its writes hits the worker's closed pipe (then it ends Crashed, "aborted by
  Python system exit call"), or to the end if it stays quiet; its stage's command runs on after it.

What this module adds, called at the start of every pipeline run (flows/pipeline.py) and when a stage
or the ephemeral server is started:
- `dies_with_parent()`: a `preexec_fn` (Linux `PR_SET_PDEATHSIG`) so that a stage's command
  (flows/dag.py) and the ephemeral server (`ephemeral_server()`, from `tlpipe pipeline`) end with the
  process that started them;
- `claim()`: label the flow run with this process's host, PID and start time; and when a worker (or
  `tlpipe serve`) started this process for this run, watch that parent: once it is gone, mark the run
  Crashed and exit (the stage's command with us) rather than run on where nobody can cancel it;
- `reap()`: mark Crashed each Running run of the flow whose labelled process is gone from this host
  (no such PID, or the PID reused by a process started at another time), and its unfinished task
  runs, with a message naming the PID; runs of other hosts and live ones are left alone;
- `prune_rwlock()`: drop the dead processes' entries from DVC's read/write lock file.

The killed stage is then simply stale for DVC: the next run runs it again (a training resumes from its
per-epoch backup, tasks/fit) and skips what was recorded in dvc.lock; DVC's repo lock and the
pipeline's runner lock are flocks that the kernel released with the process.
"""
from __future__ import annotations

import ctypes
import functools
import os
import signal
import socket
import sys
import threading
import time
import types

HOST, PID, STARTED = "tlpipe.host", "tlpipe.pid", "tlpipe.pid_started"  # flow-run labels
PR_SET_PDEATHSIG = 1
WATCH_S = 0.5  # how often a worker-started run checks that its worker is still there


def dies_with_parent(sig: int = signal.SIGKILL):
    """A `preexec_fn` that makes the child get `sig` when the thread that started it ends (Linux
    `PR_SET_PDEATHSIG`; the kernel counts the *thread*, so only for a child started by a thread that
    outlives it: one that waits for it, or the main thread). None where there is no prctl."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), sig)

    return preexec


def ephemeral_server() -> None:
    """Without PREFECT_API_URL, start Prefect's temporary API server now, from the main thread, as a
    child that gets SIGTERM when this process dies (Prefect starts it lazily, from whichever thread
    first needs a client, and a SIGKILLed `tlpipe pipeline` left it serving for good). A no-op with
    a server configured, outside the main thread, or once it runs."""
    from prefect.server.api import server as api_server
    from prefect.settings import get_current_settings

    if get_current_settings().api.url or threading.current_thread() is not threading.main_thread():
        return
    server = api_server.SubprocessASGIServer()  # the instance Prefect's get_client() uses too
    if server.running:
        return

    def run_uvicorn(self):
        # Prefect's own command, with our preexec_fn added to its one Popen (the module's only one).
        real = api_server.subprocess
        popen = functools.partial(real.Popen, preexec_fn=dies_with_parent(signal.SIGTERM))
        api_server.subprocess = types.SimpleNamespace(Popen=popen, TimeoutExpired=real.TimeoutExpired)
        try:
            return api_server.SubprocessASGIServer._run_uvicorn_command(self)
        finally:
            api_server.subprocess = real

    server._run_uvicorn_command = types.MethodType(run_uvicorn, server)
    server.start()


def _process_started(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch); None when there is no such live process."""
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process.create_time()
    except psutil.NoSuchProcess:
        return None


def alive(pid: int, started: float) -> bool:
    """Whether the process `pid` that started at `started` still runs here (not a reused PID)."""
    import psutil

    try:
        now = _process_started(pid)
    except psutil.Error:  # not ours to inspect: assume it is there
        return True
    return now is not None and abs(now - started) < 1.0


def claim() -> None:
    """Record which process runs this flow run (labels `tlpipe.host`, `tlpipe.pid`,
    `tlpipe.pid_started`) so that a later run can tell it died; and when a runner (a worker,
    `tlpipe serve`) started this process for this run, stop with that runner (`_watch_runner`)."""
    from prefect.client.orchestration import get_client
    from prefect.context import get_run_context

    run = get_run_context().flow_run
    labels = {HOST: socket.gethostname(), PID: os.getpid(), STARTED: _process_started(os.getpid())}
    with get_client(sync_client=True) as client:
        client.update_flow_run_labels(run.id, labels)
    if os.environ.get("PREFECT__FLOW_RUN_ID") == str(run.id):
        _watch_runner(run.id, os.getppid())


def _watch_runner(run_id, runner: int) -> None:
    """A daemon thread: once the runner process `runner` is gone (we are re-parented), take the thread
    lock of flows/dag.py (so no dvc.lock write of ours is cut in half), mark this run Crashed and exit;
    the stage's command gets SIGKILL with us (dies_with_parent). Nothing is printed on the way: our
    stdout and stderr were pipes to the dead runner (a write there can end this thread)."""
    def watch():
        while os.getppid() == runner:
            time.sleep(WATCH_S)
        try:
            from flows import dag

            dag._THREAD_LOCK.acquire(timeout=60)
            message = (f"the worker (or other runner) process {runner} on {socket.gethostname()} that started "
                       f"this flow run is gone: the run stopped with it, and so did its stage's command; the "
                       f"next run runs that stage again (a training resumes from its backup)")
            marker = threading.Thread(target=_mark_crashed, args=(run_id, message), daemon=True)
            marker.start()
            marker.join(20)  # the server may be unreachable: exit anyway, a later run's reap() marks it
        finally:
            os._exit(70)

    threading.Thread(target=watch, name="tlpipe-watch-runner", daemon=True).start()


def _mark_crashed(run_id, message: str, client=None) -> None:
    """Set flow run `run_id` and its unfinished task runs to Crashed with `message`."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (TaskRunFilter, TaskRunFilterFlowRunId, TaskRunFilterState,
                                                TaskRunFilterStateType)
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import TaskRunSort
    from prefect.states import Crashed

    with client or get_client(sync_client=True) as c:
        c.set_flow_run_state(run_id, Crashed(message=message), force=True)
        unfinished = TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[run_id]),
                                   state=TaskRunFilterState(type=TaskRunFilterStateType(
                                       any_=[StateType.RUNNING, StateType.PENDING])))
        # sort and limit spelled out: with our FastAPI pin the server answers 422 to their nulls (flows/compat.py)
        for task_run in c.read_task_runs(task_run_filter=unfinished, sort=TaskRunSort.ID_DESC, limit=200):
            c.set_task_run_state(task_run.id, Crashed(message=message), force=True)


def prune_rwlock(root) -> list[int]:
    """Drop from DVC's read/write lock file (`.dvc/tmp/rwlock`) the entries of processes that are
    gone; returns their PIDs. DVC drops a dead process's entry only when another process asks for
    the same path in a conflicting mode, so the read locks a killed run held on its stage's deps
    stayed for good: harmless until the PID is reused, then a live stranger "holds" those paths
    (DVC refuses to write them, and `dag.other_runner` reports a runner at work)."""
    import psutil
    from dvc.rwlock import RWLOCK_FILE, _edit_rwlock

    from flows import dag

    with dag.locked_repo(root) as repo:
        if not os.path.exists(os.path.join(repo.tmp_dir, RWLOCK_FILE)):
            return []
        dead = set()
        with _edit_rwlock(repo.tmp_dir, repo.fs, repo.config["core"].get("hardlink_lock", False)) as lock:
            for mode in ("read", "write"):
                for path, infos in list(lock[mode].items()):
                    infos = infos if isinstance(infos, list) else [infos]
                    keep = [i for i in infos if psutil.pid_exists(int(i["pid"]))]
                    dead.update(int(i["pid"]) for i in infos if i not in keep)
                    if not keep:
                        del lock[mode][path]
                    elif mode == "read":
                        lock[mode][path] = keep
        return sorted(dead)


def reap(logger=None) -> list[str]:
    """Mark Crashed every Running run of this flow whose process (its labels, see `claim`) is gone from
    this host; returns their names. Runs of other hosts, live processes and unlabelled runs are left."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterState,
                                                FlowRunFilterStateType)
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.context import get_run_context

    ctx = get_run_context()
    me, host = ctx.flow_run, socket.gethostname()
    reaped = []
    with get_client(sync_client=True) as client:
        running = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[ctx.flow.name])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(
                any_=[StateType.RUNNING]))), sort=FlowRunSort.ID_DESC, limit=200)
        for run in running:
            labels = run.labels or {}
            if run.id == me.id or labels.get(HOST) != host or PID not in labels:
                continue
            pid, started = int(labels[PID]), float(labels.get(STARTED) or 0)
            if alive(pid, started):
                continue
            message = (f"its process {pid} on {host} is gone (killed?); marked Crashed by flow run "
                       f"'{me.name}' ({me.id}). Stages it had finished are recorded in dvc.lock; the one it "
                       f"was running runs again (a training resumes from its backup)")
            _mark_crashed(run.id, message, client)
            reaped.append(run.name)
            if logger is not None:
                logger.warning("flow run '%s' (%s): %s", run.name, run.id, message)
    return reaped
