"""`tlpipe deploy`: Prefect's own `prefect deploy`, with one request fixed for our pins.

prefect 3.8.8's client asks for a pool's workers with `{"offset": null, "limit": null}`, and the
FastAPI we pin (0.154, prefect 3.8.x needs <0.155) answers 422 to explicit nulls for those body
fields. `prefect deploy` sends that request after creating each deployment (to tell whether a worker
is online), so it creates the deployment and then exits 1 with a traceback. This module sends the
server's defaults instead of the nulls and then runs the unchanged `prefect --no-prompt deploy`.
"""
from __future__ import annotations

import functools


def fix_worker_filter() -> None:
    """Make WorkPoolAsyncClient/WorkPoolClient.read_workers_for_work_pool send offset 0 and the API's
    default limit instead of nulls (idempotent)."""
    from prefect.client.orchestration._work_pools import client as pools
    from prefect.settings import PREFECT_API_DEFAULT_LIMIT

    for cls in (pools.WorkPoolAsyncClient, pools.WorkPoolClient):
        original = cls.read_workers_for_work_pool
        if getattr(original, "_tlpipe_fixed", False):
            continue
        if cls is pools.WorkPoolAsyncClient:
            @functools.wraps(original)
            async def fixed(self, work_pool_name, worker_filter=None, offset=None, limit=None, _o=original):
                return await _o(self, work_pool_name, worker_filter, 0 if offset is None else offset,
                                PREFECT_API_DEFAULT_LIMIT.value() if limit is None else limit)
        else:
            @functools.wraps(original)
            def fixed(self, work_pool_name, worker_filter=None, offset=None, limit=None, _o=original):
                return _o(self, work_pool_name, worker_filter, 0 if offset is None else offset,
                          PREFECT_API_DEFAULT_LIMIT.value() if limit is None else limit)
        fixed._tlpipe_fixed = True
        cls.read_workers_for_work_pool = fixed


def deploy(args: list[str]) -> int:
    """`prefect --no-prompt deploy ARGS` (default: --all) in this process, with the fix applied."""
    import sys

    fix_worker_filter()
    from prefect.cli import app

    argv, sys.argv = sys.argv, ["prefect", "--no-prompt", "deploy", *(args or ["--all"])]
    try:
        app()
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = argv
    return 0
