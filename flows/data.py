"""Prefect tasks for the data stages: the same functions DVC's fetch@/prepare@ stages call."""
from __future__ import annotations

from pathlib import Path

from prefect import flow, task

from tasks.stages import data as data_stages
from tasks.stages.project import Project, find_project


@task(name="fetch", task_run_name="fetch-{key}", retries=2, retry_delay_seconds=[10, 60])
def fetch_task(key: str, root: str) -> dict:
    return data_stages.fetch_stage(Project(Path(root)), key)


@task(name="fetch-weights", task_run_name="fetch-weights-{key}", retries=2, retry_delay_seconds=[10, 60])
def fetch_weights_task(key: str, root: str) -> dict:
    return data_stages.weights_stage(Project(Path(root)), key)


@task(name="prepare", task_run_name="prepare-{key}")
def prepare_task(key: str, root: str) -> dict:
    return data_stages.prepare_stage(Project(Path(root)), key)


@flow(name="tlpipe-fetch")
def fetch_flow(datasets: list[str] | None = None, root: str | None = None) -> dict:
    """fetch@<key> for each dataset (default: params.yaml `datasets`), concurrently."""
    project = find_project(root)
    keys = datasets or project.params()["datasets"]
    futures = {k: fetch_task.submit(k, str(project.root)) for k in keys}
    return {k: f.result()["format"] for k, f in futures.items()}


@flow(name="tlpipe-prepare")
def prepare_flow(datasets: list[str] | None = None, root: str | None = None) -> dict:
    """prepare@<key> for each dataset, from the raw files already fetched."""
    project = find_project(root)
    keys = datasets or project.params()["datasets"]
    futures = {k: prepare_task.submit(k, str(project.root)) for k in keys}
    return {k: {s: v["count"] for s, v in f.result()["splits"].items()} for k, f in futures.items()}
