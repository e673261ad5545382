"""`tlpipe status`: which models and datasets were made by other code, params or commands than the tree
now holds, and which package or key differs. Informational: it reruns nothing and needs no data.

DVC's own `dvc status` also reports outputs missing from the workspace or the cache (a fresh clone:
everything) and data deps that changed, hashing data/ to find out, and it waits for the repo lock a
running `dvc repro` holds. This asks DVC's index (dvc.yaml expanded, dvc.lock filled in) about the three
things a tree can change under a result instead: per stage, its code deps (paths under tasks/: a few
small folders to hash), its params deps (values compared with params.yaml) and its command. A stage
that dvc.lock has never recorded is listed as never run. Output folders, data deps and the cache are not
looked at, so a missing output is no difference. Takes no lock (reads dvc.yaml, dvc.lock, params.yaml
and tasks/): safe beside a running `dvc repro`.
"""
from __future__ import annotations

from pathlib import Path

from tasks.stages.provenance import CODE_ROOT

# which kind of thing a foreach stage's key names, by stage group, for grouping the listing
KINDS = {"fetch": "dataset", "prepare": "dataset", "check": "dataset", "fetch_weights": "weights",
         "features": "features", "teach": "teach", "train": "model", "evaluate": "model", "export": "model",
         "report_page": "model"}


def _changed_keys(old, new, prefix: str) -> list[str]:
    """The dotted keys under `prefix` whose values differ between two params values (leaves, as deep
    as both sides are mappings)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in [*old, *(k for k in new if k not in old)]:
            if k not in old or k not in new:
                out.append(f"{prefix}.{k} ({'added' if k not in old else 'removed'})")
            else:
                out += _changed_keys(old[k], new[k], f"{prefix}.{k}")
        return out
    if isinstance(new, tuple):
        new = list(new)
    return [] if old == new else [prefix]


def _is_code(path: str) -> bool:
    return Path(path).parts[:1] == (CODE_ROOT,)


def stage_changes(stage, lock_entry: dict | None, hashes: dict) -> dict | None:
    """What differs between one DVC stage's dvc.lock entry and the tree: {"code": [paths], "params":
    [keys], "command": {"recorded", "now"}} (only the non-empty ones), {"never_run": True}, or None.
    `hashes` memoizes code dep status by (path, recorded md5): the same package is hashed once."""
    if lock_entry is None:
        return {"never_run": True}
    changes: dict = {}
    code, params = [], []
    for dep in stage.deps:
        if hasattr(dep, "params"):  # a ParamsDependency: values, no hashing
            info = dep.hash_info.value if dep.hash_info and isinstance(dep.hash_info.value, dict) else {}
            status = dep.status().get(str(dep))
            if not status:
                continue
            if isinstance(status, str):  # the params file "deleted", or "new" to the stage
                params += [f"{dep.def_path}: {status}"]
                continue
            actual = dep.read_params() if dep.exists else {}
            for key, what in status.items():
                if what == "modified":
                    params += _changed_keys(info.get(key), actual.get(key), key) or [key]
                else:
                    params.append(f"{key} ({what})")
        elif _is_code(dep.def_path):
            memo = (dep.def_path, dep.hash_info.value if dep.hash_info else None)
            if memo not in hashes:
                hashes[memo] = dep.status().get(str(dep))
            if hashes[memo]:
                code.append(dep.def_path if hashes[memo] == "modified" else f"{dep.def_path} ({hashes[memo]})")
    if code:
        changes["code"] = code
    if params:
        changes["params"] = params
    if getattr(stage, "cmd_changed", False):
        changes["command"] = {"recorded": lock_entry.get("cmd"), "now": stage.cmd}
    return changes or None


def _lock_of(stage, cache: dict) -> dict:
    """The `stages` of the dvc.lock beside a stage's dvc.yaml (read once per file)."""
    from tasks.stages.provenance import lock_stages

    folder = Path(stage.dvcfile.path).parent
    if folder not in cache:
        cache[folder] = lock_stages(folder)
    return cache[folder]


def _address(stage, root: Path) -> str:
    """How `dvc` names a stage from the project root: `name`, or `sub/dvc.yaml:name` for another dvc.yaml."""
    path = Path(stage.dvcfile.path).resolve()
    if path == Path(root).resolve() / "dvc.yaml":
        return stage.name
    return f"{path.relative_to(Path(root).resolve()).as_posix()}:{stage.name}"


def status(root: Path) -> dict:
    """{"stale": [{"stage", "group", "kind", "key", "code"?, "params"?, "command"?, "never_run"?}],
    "stages": n}: every pipeline stage of the project at `root` whose recorded code, params or command
    differ from the tree (or that dvc.lock never recorded), in dvc.yaml order."""
    from dvc.repo import Repo

    stale: list[dict] = []
    locks: dict = {}
    hashes: dict = {}
    with Repo(str(root)) as repo:
        stages = [s for s in repo.index.stages if getattr(s, "cmd", None) and getattr(s, "name", None)]
        for stage in stages:
            changes = stage_changes(stage, _lock_of(stage, locks).get(stage.name), hashes)
            if not changes:
                continue
            group, _, key = stage.name.partition("@")
            stale.append({"stage": _address(stage, root), "group": group, "key": key or group,
                          "kind": KINDS.get(group, "stage") if key else "stage", **changes})
    return {"stages": len(stages), "stale": stale}


def format_status(result: dict) -> str:
    """One line per stale stage under a heading per model/dataset (kind and key), naming what differs;
    or one line saying nothing does."""
    if not result["stale"]:
        return (f"tlpipe status: all {result['stages']} stages match the tree (code, params, command); "
                "outputs and data were not looked at")
    groups: dict[tuple, list[dict]] = {}
    for row in result["stale"]:
        groups.setdefault((row["kind"], row["key"]), []).append(row)
    lines = [f"tlpipe status: {len(result['stale'])} of {result['stages']} stages were recorded with other code, "
             "params or command than the tree holds (or never ran):"]
    for (kind, key), rows in groups.items():
        lines.append(f"{kind} {key}:" if kind != "stage" else f"{key}:")
        for row in rows:
            lines.append(f"  {row['stage']}: {describe(row)}")
    return "\n".join(lines)


def describe(row: dict) -> str:
    if row.get("never_run"):
        return "never run (no dvc.lock entry)"
    parts = []
    if row.get("code"):
        parts.append("code " + ", ".join(row["code"]))
    if row.get("params"):
        parts.append("params " + ", ".join(row["params"]))
    if row.get("command"):
        parts.append(f"command (recorded `{row['command']['recorded']}`, now `{row['command']['now']}`)")
    return "; ".join(parts)
