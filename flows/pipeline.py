"""The pipeline as a Prefect 3 flow whose graph is dvc.yaml's, read through DVC (flows/dag.py).

One Prefect task per DVC stage, waiting for the stages it depends on; the run asks DVC once which
stages are not up to date (what `dvc status` says), a task asks again only when its stage was listed
or one of its upstream stages ran, runs the stage's own command when it is not up to date, and
records the run in dvc.lock and DVC's cache (as `dvc repro` does), so `dvc status` and Prefect
agree. Independent stages run concurrently in threads; DVC's repo lock orders the dvc.lock writes.

One runner at a time (`sole_runner`): a run refuses to start, in one line naming it, while a `dvc repro`
or another `tlpipe pipeline` is at work on the project; while it runs, it holds the project's runner
lock, so the `tlpipe` stage commands a `dvc repro` started meanwhile refuse, naming it.
"""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from flows import dag, runs
from tasks.stages import runner
from tasks.stages.project import find_project

# Stages that reach the network: Prefect retries them (their downloads also retry on their own).
NETWORK_STAGES = {"fetch": 2, "fetch_weights": 2}
RETRY_DELAYS_S = [10, 60]


@task(name="dvc-stage", cache_policy=NO_CACHE, persist_result=False)
def stage_task(root: str, stage: dag.Stage, stale_at_start: bool = True, upstream: list | None = None) -> dict:
    """One DVC stage: skipped when DVC says it is up to date, else run and committed.

    `stale_at_start`: whether the run's one `dvc status` of the whole graph listed this stage;
    `upstream`: the records of its upstream stages' tasks. A stage that was up to date at the start
    and whose upstream ran nothing is still up to date (its deps are unchanged) and is skipped without
    asking DVC again (a no-op run costs one status of the graph, not one per stage)."""
    logger = get_run_logger()
    upstream_ran = any(r.get("ran") or r.get("restored") for r in upstream or [])
    if not stale_at_start and not upstream_ran:
        logger.info("%s is up to date", stage.name)
        return {"stage": stage.name, "ran": False}
    changes = dag.changed(root, stage.name)
    if not changes:
        logger.info("%s is up to date", stage.name)
        return {"stage": stage.name, "ran": False}
    if stage.frozen:
        logger.warning("%s is frozen: not run although DVC reports %s", stage.name, changes)
        return {"stage": stage.name, "ran": False, "frozen": True}
    logger.info("%s: running `%s` (%s)", stage.name, stage.cmd, _describe(changes))
    start = time.perf_counter()
    how = dag.run(root, stage, log=lambda line: logger.info("%s | %s", stage.name, line), commit=True)
    return {"stage": stage.name, "ran": how == "ran", "restored": how == "restored",
            "seconds": round(time.perf_counter() - start, 2), "changes": changes}


@contextlib.contextmanager
def sole_runner(root: str, command: str):
    """The project to this process alone for the block, or RunnerBusy in one line naming the other
    runner: another `tlpipe pipeline` (it holds the runner lock, tasks/stages/runner.py), a `dvc repro`
    (or `dvc exp run`) at work on it now (DVC's locks: `dag.other_runner`, which waits while DVC's
    repo lock is held, so it is asked before this process takes the runner lock: a `dvc repro` between
    two stages finishes its turn). Then the runner lock, which makes the `tlpipe` stage commands that
    a `dvc repro` starts meanwhile refuse. Re-entrant: the CLI takes it before the flow, so the flow's
    own call finds it held."""
    if not runner.holds(root):
        runner.check(root, started_by_it=False)
        other = dag.other_runner(root) if (Path(root) / ".dvc").is_dir() else None
        if other is not None:
            pid, cmd, path = other
            raise runner.RunnerBusy(root, f"`{_short(cmd)}`" if cmd else "a DVC process", pid,
                                    f"DVC's lock on {path}")
    with runner.sole_runner(root, command):
        yield


def _short(cmd: str) -> str:
    """A command line with its program's folder dropped (`/x/.venv/bin/dvc repro` -> `dvc repro`)."""
    first, _, rest = cmd.partition(" ")
    return f"{Path(first).name} {rest}".strip()


def stage_options(stage: dag.Stage) -> dict:
    """Prefect options of a stage's task: its name, and retries for the network stages."""
    options = {"name": stage.group, "task_run_name": stage.name}
    if stage.group in NETWORK_STAGES:
        options.update(retries=NETWORK_STAGES[stage.group], retry_delay_seconds=RETRY_DELAYS_S)
    return options


def run_dag(root: str, stages: list[dag.Stage]) -> dict:
    """Submit every stage (upstream first) with its upstream as `wait_for`; {stage: record}."""
    stale = dag.status(root, [stage.name for stage in stages])  # one `dvc status` of the whole graph
    futures = {}
    for stage in stages:
        waits = [futures[u] for u in stage.upstream if u in futures]
        futures[stage.name] = stage_task.with_options(**stage_options(stage)).submit(
            root, stage, stage.name in stale, upstream=waits, wait_for=waits)
    records, failed = {}, {}
    for name, future in futures.items():
        state = future.wait() or future.state
        if state.is_completed():
            records[name] = future.result()
        else:
            failed[name] = state
            records[name] = {"stage": name, "ran": False, "state": state.name}
    return {"records": records, "failed": failed}


@flow(name="tlpipe-pipeline", task_runner=ThreadPoolTaskRunner(max_workers=4))
def pipeline(datasets: list[str] | None = None, root: str | None = None, models: bool = False,
             targets: list[str] | None = None) -> dict:
    """dvc.yaml's DAG as a Prefect flow: the data stages of `datasets` (default: params.yaml
    `datasets`), or with `models` every stage (train, evaluate, export, report too), or `targets`
    (stage names as `dvc repro` takes them) with what they depend on. Up-to-date stages are skipped.

    Returns {"datasets": {key: split counts}, "ran": [stages whose command ran], "restored":
    [stages checked out of DVC's run cache], "skipped": [stages that were up to date]}."""
    project = find_project(root)
    root = str(project.root)
    _bookkeeping(root)
    if targets is None and not models:
        targets = list(datasets or project.params().get("datasets") or [])
    with sole_runner(root, "tlpipe-pipeline flow " + " ".join(targets or ["(every stage)"])):
        stages = dag.stages(root, targets)
        result = run_dag(root, stages)
    records = result["records"]

    summary = _datasets(stages)
    create_markdown_artifact(key="tlpipe-stages", markdown=_stages_markdown(records),
                             description="tlpipe: which DVC stages ran")
    if summary:
        create_markdown_artifact(key="tlpipe-data", markdown=_markdown(summary), description="tlpipe datasets")
    report = _report(stages) if models else None
    if report is not None:
        create_markdown_artifact(key="tlpipe-models", markdown=report, description="tlpipe model reports")
    if result["failed"]:
        names = ", ".join(f"{n} ({s.name})" for n, s in result["failed"].items())
        raise RuntimeError(f"tlpipe pipeline: stages did not complete: {names}")
    return {"datasets": summary, "ran": [n for n, r in records.items() if r["ran"]],
            "restored": [n for n, r in records.items() if r.get("restored")],
            "skipped": [n for n, r in records.items() if not (r["ran"] or r.get("restored"))]}


def _bookkeeping(root: str) -> None:
    """After a killed run (flows/runs.py): record this run's process, mark Crashed the runs whose
    process is gone, drop DVC's read/write lock entries of dead processes. A failure here is a
    warning, never the run's failure."""
    logger = get_run_logger()
    try:
        runs.claim()
        runs.reap(logger)
        if (Path(root) / ".dvc").is_dir():
            runs.prune_rwlock(root)
    except Exception as e:  # noqa: BLE001 - bookkeeping only
        logger.warning("could not check for crashed runs (%s: %s)", type(e).__name__, e)


def _describe(changes: list) -> str:
    parts = []
    for change in changes:
        if isinstance(change, dict):
            for kind, what in change.items():
                parts.append(f"{kind}: {', '.join(f'{k} {v}' for k, v in what.items())}"
                             if isinstance(what, dict) else f"{kind}: {what}")
        else:
            parts.append(str(change))
    return "; ".join(parts)


def _datasets(stages: list[dag.Stage]) -> dict:
    """Split counts of every dataset a stage of this run built (an out with a manifest.json)."""
    summary = {}
    for stage in stages:
        for out in stage.outs:
            manifest = Path(out) / "manifest.json"
            if manifest.is_file() and stage.key:
                splits = json.loads(manifest.read_text(encoding="utf-8")).get("splits", {})
                summary[stage.key] = {s: v["count"] for s, v in splits.items()}
    return summary


def _report(stages: list[dag.Stage]) -> str | None:
    """The report stage's index page (the first README.md among the outs of a stage named report)."""
    for stage in stages:
        if stage.group == "report":
            for out in stage.outs:
                if Path(out).name == "README.md" and Path(out).is_file():
                    return Path(out).read_text(encoding="utf-8")
    return None


def _stages_markdown(records: dict) -> str:
    rows = [f"| {name} | {'ran' if r['ran'] else 'restored from the run cache' if r.get('restored') else r.get('state', 'up to date')}"
            f" | {r.get('seconds', '')} |"
            for name, r in records.items()]
    return "\n".join(["# tlpipe stages", "", "| stage | result | seconds |", "|---|---|---:|", *rows])


def _markdown(summary: dict) -> str:
    rows = [f"| {k} | {c.get('train', 0):,} | {c.get('validation', 0):,} | {c.get('test', 0):,} |"
            for k, c in summary.items()]
    return "\n".join(["# tlpipe datasets", "", "| dataset | train | validation | test |",
                      "|---|---:|---:|---:|", *rows])
