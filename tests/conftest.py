import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/ helpers, with or without __init__.py

from httpserver import LoopbackServer  # noqa: E402


# ---- http_server: loopback HTTP server with Range support and fault injection (tests/httpserver.py)
@pytest.fixture
def http_server():
    """`.add(path, data, **faults) -> url`, `.url(path)`, `.requests`, `.ranges = False`."""
    server = LoopbackServer().start()
    try:
        yield server
    finally:
        server.stop()


# ---- Prefect: a throwaway PREFECT_HOME and no analytics, set before prefect is imported anywhere
import os  # noqa: E402
import tempfile  # noqa: E402

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="tlpipe-prefect-home-")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "false")


@pytest.fixture(scope="session")
def prefect_harness():
    """A temporary Prefect API (its own SQLite DB) for flow tests; started once per session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(autouse=True)
def _console_env_restored():
    """`tlpipe -q`/`-v` called in-process (tasks.cli.main) sets TLPIPE_QUIET/TLPIPE_VERBOSE for the stages it
    runs; put them back after each test, so a later test's subprocesses (dvc repro, tlpipe) are not quiet."""
    saved = {k: os.environ.get(k) for k in ("TLPIPE_QUIET", "TLPIPE_VERBOSE")}
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
