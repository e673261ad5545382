"""Deterministic fault injection: kill (os._exit) or fail a process at an exact call of a function.

`kill_at("tasks.records.shards:write_records", call=2)` replaces that attribute so its 2nd call ends the
process (`when="before"`: before the real call; `"after"`: once it returned). `run_killed(script)`
runs a Python snippet in a fresh interpreter with the worktree and tests/ importable, expects it to
die with KILLED, and returns its output. This stands in for a `kill -9` at that instant, without a race.
"""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

KILLED = 77
ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


def kill_at(target: str, call: int = 1, when: str = "before", action=None):
    """Patch `module:attr` (a function, or `module:Class.method`) so its `call`-th call kills the process."""
    module_name, attr = target.split(":")
    owner = importlib.import_module(module_name)
    *path, name = attr.split(".")
    for part in path:
        owner = getattr(owner, part)
    original = getattr(owner, name)
    count = [0]

    def wrapper(*args, **kwargs):
        count[0] += 1
        hit = count[0] == call
        if hit and when == "before":
            (action or _die)(*args, **kwargs)
        result = original(*args, **kwargs)
        if hit and when == "after":
            (action or _die)(*args, **kwargs)
        return result

    setattr(owner, name, wrapper)
    return wrapper


def _die(*args, **kwargs):
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(KILLED)


def run_killed(script: str, cwd: Path | None = None, expect: int = KILLED, timeout: int = 300) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == expect, f"exit {proc.returncode}, expected {expect}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def tree_bytes(root: Path) -> dict[str, bytes]:
    """{relative path: bytes} of every file under `root` (to compare two runs' outputs byte for byte)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()}


def leftovers(parent: Path) -> list[str]:
    """Temp / old / lock entries beside the outputs in `parent` (what a killed run can leave)."""
    return sorted(p.name for p in Path(parent).iterdir() if p.name.startswith(".") and
                  any(t in p.name for t in (".tmp-", ".old-", ".lock")))
