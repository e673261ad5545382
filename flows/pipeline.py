"""The pipeline as a Prefect 3 flow: the DAG of dvc.yaml, datasets in parallel."""
from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.task_runners import ThreadPoolTaskRunner

from flows.data import fetch_task, prepare_task
from tasks.config import find_project


@flow(name="tlpipe-pipeline", task_runner=ThreadPoolTaskRunner(max_workers=4))
def pipeline(datasets: list[str] | None = None, root: str | None = None) -> dict:
    project = find_project(root)
    keys = datasets or project.params()["datasets"]
    root = str(project.root)
    # Each dataset's prepare waits only for its own fetch: independent datasets run concurrently.
    prepared = {k: prepare_task.submit(k, root, wait_for=[fetch_task.submit(k, root)]) for k in keys}
    summary = {k: {s: v["count"] for s, v in f.result()["splits"].items()} for k, f in prepared.items()}
    create_markdown_artifact(key="tlpipe-data", markdown=_markdown(summary), description="tlpipe datasets")
    return summary


def _markdown(summary: dict) -> str:
    rows = [f"| {k} | {c.get('train', 0):,} | {c.get('validation', 0):,} | {c.get('test', 0):,} |"
            for k, c in summary.items()]
    return "\n".join(["# tlpipe datasets", "", "| dataset | train | validation | test |",
                      "|---|---:|---:|---:|", *rows])
