"""The pipeline as a Prefect 3 flow: the DAG of dvc.yaml, datasets in parallel."""
from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.task_runners import ThreadPoolTaskRunner

from flows.data import fetch_task, fetch_weights_task, prepare_task
from flows.models import evaluate_task, export_task, features_task, report_task, train_task
from tasks.config import find_project
from tasks.model_stages import RANDOM_INIT


@flow(name="tlpipe-pipeline", task_runner=ThreadPoolTaskRunner(max_workers=4))
def pipeline(datasets: list[str] | None = None, root: str | None = None, models: bool = False) -> dict:
    """fetch -> prepare per dataset; with `models`, then train -> evaluate -> export per model and report."""
    project = find_project(root)
    params = project.params()
    keys = datasets or params["datasets"]
    root = str(project.root)
    # Each dataset's prepare waits only for its own fetch: independent datasets run concurrently.
    prepared = {k: prepare_task.submit(k, root, wait_for=[fetch_task.submit(k, root)]) for k in keys}
    summary = {k: {s: v["count"] for s, v in f.result()["splits"].items()} for k, f in prepared.items()}
    create_markdown_artifact(key="tlpipe-data", markdown=_markdown(summary), description="tlpipe datasets")
    if models:
        create_markdown_artifact(key="tlpipe-models", markdown=_model_line(params, root, prepared),
                                 description="tlpipe model reports")
    return summary


def _model_line(params: dict, root: str, prepared: dict) -> str:
    """Train models in dependency order, as dvc.yaml's DAG: a transfer waits for the model it
    starts from, a photo model for its pretrained weights or its bottleneck cache."""
    trained, weights, caches, exported = {}, {}, {}, []

    def fetched_weights(key):
        if key not in weights:
            weights[key] = fetch_weights_task.submit(key, root)
        return weights[key]

    def cache(key):
        if key not in caches:
            cfg = params["features"][key]
            waits = [fetched_weights(cfg["weights"])] if cfg.get("weights") else []
            waits += [prepared[cfg["dataset"]]] if cfg["dataset"] in prepared else []
            caches[key] = features_task.submit(key, root, wait_for=waits)
        return caches[key]

    def submit(key):
        if key not in trained:
            recipe = params["models"][key]
            init = recipe.get("init", RANDOM_INIT).split("/")
            waits = [prepared[recipe["dataset"]]] if recipe["dataset"] in prepared else []
            if init[0] == "models":
                waits.append(submit(init[1]))
            elif init[:2] == ["data", "features"]:
                waits.append(cache(init[2]))
            elif init[:2] == ["data", "weights"]:
                waits.append(fetched_weights(init[2]))
            trained[key] = train_task.submit(key, root, wait_for=waits)
        return trained[key]

    for key in params["models"]:
        evaluated = evaluate_task.submit(key, root, wait_for=[submit(key)])
        exported.append(export_task.submit(key, root, wait_for=[evaluated]))
    return report_task.submit(root, wait_for=exported).result()


def _markdown(summary: dict) -> str:
    rows = [f"| {k} | {c.get('train', 0):,} | {c.get('validation', 0):,} | {c.get('test', 0):,} |"
            for k, c in summary.items()]
    return "\n".join(["# tlpipe datasets", "", "| dataset | train | validation | test |",
                      "|---|---:|---:|---:|", *rows])
