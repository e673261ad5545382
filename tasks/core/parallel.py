"""Where the data work (PNG encoding of shards, per-image checks of photo folders) runs.

By default: a pool of spawned worker processes on this machine (`runtime.workers`). When asked, Dask:

    TLPIPE_DASK=local            a LocalCluster on this machine, `runtime.workers` worker processes
    TLPIPE_DASK=local:8          ... with 8 worker processes
    TLPIPE_DASK=tcp://host:8786  an existing cluster (its workers must see the same files for photo
                                 folders; shard encoding ships the pixels and needs no shared disk)

or `runtime.dask` in params.yaml (the same values; the environment wins). Results come back in
submission order either way, so the shards are byte-identical whichever path wrote them.

Dask worker processes are daemonic and may not start a process pool of their own: code that runs
inside a Dask task (a Prefect task under `DaskTaskRunner`) submits its chunks to the same cluster
through `worker_client()`, and any other daemonic process works in-process.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar

DASK_ENV = "TLPIPE_DASK"
_client: ContextVar = ContextVar("tlpipe_dask_client", default=None)


def dask_setting(params: dict) -> str | None:
    """`local`, `local:N` or a scheduler address, from $TLPIPE_DASK or params `runtime.dask`; None: no Dask."""
    value = os.environ.get(DASK_ENV) or (params.get("runtime") or {}).get("dask") or ""
    value = str(value).strip()
    if value.lower() in ("", "0", "false", "no", "off", "none"):
        return None
    return value


def parse_setting(value: str, default_workers: int) -> tuple[str | None, int]:
    """(address, n_workers): address None means a LocalCluster of n_workers processes."""
    if value == "local" or value.startswith("local:"):
        _, _, n = value.partition(":")
        if n and not n.isdigit():
            raise ValueError(f"{DASK_ENV}={value!r}: expected local, local:N (N workers) or a scheduler "
                             "address such as tcp://host:8786")
        return None, max(1, int(n) if n else default_workers)
    if "://" not in value and ":" not in value:
        raise ValueError(f"{DASK_ENV}={value!r}: expected local, local:N or a scheduler address "
                         "such as tcp://host:8786")
    return value, 0


def local_cluster(n_workers: int):
    """A LocalCluster of single-threaded worker processes on the loopback interface, no dashboard."""
    from distributed import LocalCluster

    return LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                        dashboard_address=None, silence_logs=logging.WARNING)


@contextmanager
def scheduler(params: dict, default_workers: int = 1):
    """Within this block, data work goes to Dask when params/env ask for it (yields the Client, or None).

    Already inside a Dask worker, or with a client already active, nothing new is started.
    """
    setting = dask_setting(params)
    if not setting or _client.get() is not None or in_dask_worker():
        yield _client.get()
        return
    from distributed import Client

    address, n_workers = parse_setting(setting, default_workers)
    cluster = local_cluster(n_workers) if address is None else None
    client = Client(cluster if cluster is not None else address)
    token = _client.set(client)
    try:
        yield client
    finally:
        _client.reset(token)
        client.close()
        if cluster is not None:
            cluster.close()


@contextmanager
def using(client):
    """Send data work to an existing `distributed.Client` within this block."""
    token = _client.set(client)
    try:
        yield client
    finally:
        _client.reset(token)


def in_dask_worker() -> bool:
    try:
        from distributed import get_worker
    except ImportError:
        return False
    try:
        get_worker()
    except ValueError:
        return False
    return True


def distributed() -> bool:
    """True when data work goes to a Dask cluster (an active client, or we run inside a Dask task)."""
    return _client.get() is not None or in_dask_worker()


class _DaskPool:
    """The `submit(fn, *args) -> future` face of a distributed.Client (what ordered_map needs)."""

    def __init__(self, client):
        self.client = client
        self.width = max(1, sum(client.nthreads().values()))  # the cluster's task slots: chunks in flight

    def submit(self, fn, *args):
        return self.client.submit(fn, *args, pure=False)  # pure=False: no hashing of the pixels


class _InlinePool:
    """Runs each call at once, in this process (a daemonic process may not have children)."""

    def submit(self, fn, *args):
        future = Future()
        try:
            future.set_result(fn(*args))
        except BaseException as e:  # noqa: BLE001 - handed to the caller through .result()
            future.set_exception(e)
        return future


@contextmanager
def pool(n_workers: int):
    """An executor for chunks of data work: the active Dask client, the cluster of the Dask task we run
    in, in-process in any other daemonic process, else `n_workers` spawned processes (no TensorFlow)."""
    client = _client.get()
    if client is not None:
        yield _DaskPool(client)
        return
    if in_dask_worker():
        from distributed import worker_client

        with worker_client() as inner:  # secedes from the worker's thread pool while it waits
            yield _DaskPool(inner)
        return
    if multiprocessing.current_process().daemon:
        yield _InlinePool()
        return
    with worker_pool(n_workers) as p:
        yield p


def _die_with_parent(parent: int) -> None:
    """Pool worker initializer: exit as soon as the parent process is gone (a killed `prepare` must not
    leave its workers, and through them the resource tracker, running). A daemon thread polls the
    parent pid (Linux's PR_SET_PDEATHSIG would fire when the spawning *thread* ends, too early)."""
    import threading
    import time

    def watch():
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of `workers` spawned processes (no TensorFlow in them: fast start) that die with this one."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_die_with_parent, initargs=(os.getpid(),))
