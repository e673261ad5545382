"""What code a `tlpipe` stage runs: the tasks/ packages reached from its entry package by imports.

The unit of code is a package (a folder under tasks/: tasks/fetch, tasks/core, ...); a dataset's source
module (tasks/sources/<module>.py) is a unit of its own, so a dataset's stages depend on their own
source only. Shared by tests/test_dvc.py (each dvc.yaml stage declares exactly that code, no more, no
less) and tests/test_layout.py (no circles, no upward imports); usable by hand:
`python tests/imports.py tasks/photo` prints a trainer's closure.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# What each `tlpipe` subcommand runs: its entry units ({module}: the dataset's source module from params
# `datasets`; {trainer}, {init}: the recipe's).
STAGE_ENTRY = {"fetch": ["tasks/fetch", "tasks/sources/{module}.py"],
               "prepare": ["tasks/prepare", "tasks/sources/{module}.py"], "check": ["tasks/check"],
               "fetch-weights": ["tasks/fetch"], "features": ["tasks/photo"], "teach": ["tasks/photo"],
               "train": ["{trainer}", "{init}"], "evaluate": ["tasks/evaluate"], "export": ["tasks/evaluate"],
               "report": ["tasks/report"]}
# The plumbing that decides which key, which paths and which function (params loading and checking,
# the stage functions, the CLI), never what is computed: not declared, and not walked into, so that
# touching it does not retrain every model. Nothing below it may import it (tests/test_layout.py).
PLUMBING = {"tasks/__init__.py", "tasks/cli.py", "tasks/stages"}


def _module(name: str) -> Path | None:
    base = REPO / Path(*name.split("."))
    return next((p for p in (base.with_suffix(".py"), base / "__init__.py") if p.exists()), None)


def tasks_imports(path: Path) -> set[Path]:
    """The tasks/ modules a file imports, at module level or inside functions, and the packages
    (__init__.py) Python runs on the way to each."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "tasks":
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]  # submodules
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.split(".")[0] == "tasks"]
        for name in names:
            parts = name.split(".")
            found.update(_module(".".join(parts[:i])) for i in range(1, len(parts) + 1))
    return found - {None}


def unit(path: Path) -> str:
    """The dep unit of a tasks/ file: its package folder, or itself for a dataset's source module and
    for a top-level module of tasks/."""
    rel = path.relative_to(REPO).as_posix()
    parent = path.parent.relative_to(REPO).as_posix()
    if parent in ("tasks", "tasks/sources"):
        return rel
    return "/".join(rel.split("/")[:2])


def files_of(u: str) -> list[Path]:
    path = REPO / u
    return sorted(path.rglob("*.py")) if path.is_dir() else [path]


def unit_imports(u: str) -> set[str]:
    """The units the files of unit `u` import (itself and the plumbing left out)."""
    return {unit(m) for f in files_of(u) for m in tasks_imports(f)} - {u}


def code_of(entries: list[str]) -> set[str]:
    """Every unit reached from the entry units (package folders or files) by imports, the plumbing
    left out (and not walked into)."""
    todo = [unit(REPO / e) if (REPO / e).is_file() else e.rstrip("/") for e in entries if e]
    seen = set()
    while todo:
        u = todo.pop()
        if u in seen or u in PLUMBING:
            continue
        seen.add(u)
        todo.extend(unit_imports(u) - seen)
    return seen


def covered(path: str, deps) -> bool:
    """Is `path` one of `deps`, or inside a folder dep?"""
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


def within(dep: str, units) -> bool:
    """Is the declared `dep` one of `units`, or a file inside one of them?"""
    return any(dep == u or dep.startswith(u + "/") for u in units)


if __name__ == "__main__":
    print("\n".join(sorted(code_of(sys.argv[1:]))))
