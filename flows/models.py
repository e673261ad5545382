"""Prefect tasks for the model line: the same functions DVC's train@/evaluate@/export@/report call."""
from __future__ import annotations

from pathlib import Path

from prefect import flow, task

from tasks.stages import models as model_stages
from tasks.stages.project import Project, find_project


@task(name="features", task_run_name="features-{key}")
def features_task(key: str, root: str) -> dict:
    from tasks.stages.data import features_stage

    return features_stage(Project(Path(root)), key)


@task(name="train", task_run_name="train-{key}")
def train_task(key: str, root: str) -> dict:
    return model_stages.train_stage(Project(Path(root)), key)


@task(name="evaluate", task_run_name="evaluate-{key}")
def evaluate_task(key: str, root: str) -> dict:
    return model_stages.evaluate_stage(Project(Path(root)), key)


@task(name="export", task_run_name="export-{key}")
def export_task(key: str, root: str) -> dict:
    return model_stages.export_stage(Project(Path(root)), key)


@task(name="report")
def report_task(root: str) -> str:
    project = Project(Path(root))
    for key in model_stages.recipes(project.params()):
        model_stages.report_page_stage(project, key)
    return model_stages.report_stage(project)["markdown"]


@flow(name="tlpipe-model")
def model_flow(key: str, root: str | None = None) -> dict:
    """One model's line: train -> evaluate -> export (its init model and dataset must exist)."""
    root = str(find_project(root).root)
    train_task(key, root)
    evaluate_task(key, root)
    return export_task(key, root)
