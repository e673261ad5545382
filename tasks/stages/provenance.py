"""What made a model's numbers, as plain values for its report page: the code its train@ ran, as
dvc.lock recorded it, and the machine, where something recorded it.

Read at report time, not declared as deps of report_page@ (dvc.yaml): dvc.lock is the file DVC
rewrites after every stage it runs, so as a dep it would be changed by the very run that reads it and
no page would ever be up to date. The train@<key> entry it reads changes only when train@<key> runs
again, and that run rewrites models/<key>/train.json (a dep of the page: its fit time differs every
run), so the page reruns when the entry does. The page says which train.json the entry was recorded
with, and whether that is the train.json beside the model, so a hand-edited or `dvc commit`-ed lock
shows up as a mismatch instead of passing as the training run's code.

The machine: the trainers (tasks/cnn, tasks/photo) record only the GPUs they used in train.json;
the CPU is recorded by the run that timed the stage, in reports/bench/stage_seconds.json (also read at
report time, also not a dep: it is a benchmark record kept in git, no stage's output):
`bench/release_run.py` (the whole `dvc repro`, each stage written as it finishes) and `bench/dag_cost.py
--run` (one stage at a time) record the CPU count, architecture and CPU model with its widest vector
extension (AVX2 / AVX-512: the cards fine-tune moved by 3 points between the two); older records hold
the first two only. Nothing here guesses a CPU model that no record holds.

Reads files only (plain YAML/JSON): DVC's API would wait for the repo lock that the `dvc repro`
running report_page@ holds.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import yaml

from tasks.stages.project import SAFE_LOADER, Project

LOCK_FILE = "dvc.lock"
BENCH_FILE = "reports/bench/stage_seconds.json"
CODE_ROOT = "tasks"


def lock_stages(root: Path, attempts: int = 3) -> dict:
    """dvc.lock's `stages` ({} without a lock file). A read that meets DVC rewriting the file (a
    half-written YAML) is tried again after a moment."""
    path = Path(root) / LOCK_FILE
    for attempt in range(attempts):
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            return (yaml.load(text, Loader=SAFE_LOADER) or {}).get("stages") or {}
        except yaml.YAMLError:
            if attempt == attempts - 1:
                raise ValueError(f"{path}: not readable YAML (is a DVC run writing it? try again)") from None
            time.sleep(0.5)
    return {}


def code_of(entry: dict) -> dict[str, str]:
    """{path: md5} of a lock entry's code deps: those under tasks/ (a package's md5 ends in `.dir`)."""
    return {d["path"]: d.get("md5") or d.get("hash") or "?" for d in entry.get("deps") or []
            if Path(d.get("path", "")).parts[:1] == (CODE_ROOT,)}


def code_id(code: dict[str, str]) -> str | None:
    """One short name for a set of code hashes (8 hex digits of an md5 over the sorted path=md5 pairs):
    two models with the same id ran the same code; None for none."""
    if not code:
        return None
    return hashlib.md5("\n".join(f"{p}={h}" for p, h in sorted(code.items())).encode()).hexdigest()[:8]


def file_md5(path: Path) -> str | None:
    """The md5 DVC 3 records for a file (of its bytes), or None if it is missing."""
    try:
        return hashlib.md5(Path(path).read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def machine_of(root: Path, stage: str, train: dict) -> dict:
    """The machine a train stage ran on, as far as anything recorded it: {"recorded": bool, "source",
    "cpus", "processor", "cpu_model", "when", "gpus"}; "cpu_model" only where the record has it."""
    record: dict = {"recorded": False, "gpus": train.get("gpus")}
    timed = _json(Path(root) / BENCH_FILE).get(stage) or {}
    machine = timed.get("machine") or {}
    fit = train.get("fit_seconds")
    # a timed run shorter than the model's own fit time did not make this model
    consistent = fit is None or float(timed.get("seconds") or 0) >= float(fit)
    if machine and consistent:
        record.update(recorded=True, source=BENCH_FILE, command=timed.get("command"), when=timed.get("when"),
                      seconds=timed.get("seconds"), fit_seconds=fit, cpus=machine.get("cpus"),
                      processor=machine.get("processor"))
        if machine.get("cpu_model"):
            record["cpu_model"] = machine["cpu_model"]
    return record


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}


def train_provenance(project: Project, key: str) -> dict:
    """Plain values for report_page@<key>: train@<key>'s code hashes from dvc.lock, whether its recorded
    train.json is the one beside the model, and the machine (see the module docstring)."""
    stage = f"train@{key}"
    entry = lock_stages(project.root).get(stage)
    train_json = project.root / "models" / key / "train.json"
    train = _json(train_json)
    record: dict = {"stage": stage, "lock": LOCK_FILE, "in_lock": entry is not None,
                    "code": code_of(entry or {}), "machine": machine_of(project.root, stage, train)}
    record["code_id"] = code_id(record["code"])
    recorded = {o.get("path"): o.get("md5") for o in (entry or {}).get("outs") or []}
    locked = recorded.get(f"models/{key}/train.json")
    record["train_json"] = {"path": f"models/{key}/train.json", "lock_md5": locked,
                            "matches": None if locked is None else locked == file_md5(train_json)}
    return record
