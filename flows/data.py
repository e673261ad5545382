"""Prefect tasks for the data stages: the same functions DVC's fetch@/prepare@ stages call."""
from __future__ import annotations

from pathlib import Path

from prefect import task

from tasks import fetch as fetch_step
from tasks import prepare as prepare_step
from tasks.config import Project


@task(name="fetch", task_run_name="fetch-{key}", retries=2, retry_delay_seconds=[10, 60])
def fetch_task(key: str, root: str) -> dict:
    return fetch_step.fetch(Project(Path(root)), key)


@task(name="prepare", task_run_name="prepare-{key}")
def prepare_task(key: str, root: str) -> dict:
    return prepare_step.prepare(Project(Path(root)), key)
