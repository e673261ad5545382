"""What code a `tlpipe` stage runs: the tasks/ files reached from its entry modules by imports.

Shared by tests/test_dvc.py (each dvc.yaml stage declares exactly that code, no more, no less) and
usable by hand: `python tests/imports.py tasks/photo` prints a trainer's closure.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# What each `tlpipe` subcommand runs: its entry modules ({key}: the stage's item; {module}: the
# dataset's source module from params `datasets`; {trainer}, {init}: the recipe's).
STAGE_ENTRY = {"fetch": ["tasks/fetch.py", "tasks/sources/{module}.py"],
               "prepare": ["tasks/prepare.py", "tasks/sources/{module}.py"],
               "fetch-weights": ["tasks/weights.py"], "features": ["tasks/photo/features.py"],
               "train": ["{trainer}", "{init}"], "evaluate": ["tasks/evaluate.py"], "export": ["tasks/export.py"],
               "report": ["tasks/report.py"]}
# Plumbing that decides where and how files are written and which function a command calls (paths,
# params loading and checking, atomic writes, JSON, the CLI and the stage functions that resolve a
# key to paths), never what is computed: not declared, and not walked into, so that touching it does
# not retrain every model.
PLUMBING = {"tasks/__init__.py", "tasks/config.py", "tasks/io.py", "tasks/cli.py", "tasks/validate.py",
            "tasks/model_stages.py",
            "tasks/parallel.py"}  # where data work runs (processes or Dask), never what it computes


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


def code_of(entries: list[str]) -> set[str]:
    """Every tasks/ file reached from the entry files (or folders: each .py in them) by imports,
    plumbing left out (and not walked into)."""
    todo = [p for e in entries if e for p in ((REPO / e).glob("*.py") if (REPO / e).is_dir() else [REPO / e])]
    seen = set()
    while todo:
        path = todo.pop()
        rel = path.relative_to(REPO).as_posix()
        if path in seen or rel in PLUMBING:
            continue
        seen.add(path)
        parent = path.parent / "__init__.py"
        if parent.exists() and parent != path:
            todo.append(parent)
        todo.extend(tasks_imports(path) - seen)
    return {p.relative_to(REPO).as_posix() for p in seen}


def covered(path: str, deps) -> bool:
    """Is `path` one of `deps`, or inside a folder dep?"""
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


if __name__ == "__main__":
    print("\n".join(sorted(code_of(sys.argv[1:]))))
