"""flows/deploy.py: the deployed flow is the pipeline flow (same name and parameters), on the task runner
TLPIPE_DASK asks for, and knows the project's default DVC remote."""
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_same_flow_name_and_parameters_as_the_pipeline():
    from flows.deploy import pipeline
    from flows.pipeline import pipeline as base

    assert pipeline.name == base.name
    assert pipeline.parameters.properties.keys() == base.parameters.properties.keys()


def test_task_runner_follows_tlpipe_dask(monkeypatch):
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from flows import deploy

    monkeypatch.delenv("TLPIPE_DASK", raising=False)
    assert isinstance(deploy.task_runner(), ThreadPoolTaskRunner)
    monkeypatch.setenv("TLPIPE_DASK", "local:2")
    runner = deploy.task_runner()
    assert isinstance(runner, DaskTaskRunner) and runner.cluster_kwargs["n_workers"] == 2
    assert runner.cluster_kwargs["processes"] is True and runner.cluster_kwargs["threads_per_worker"] == 1
    monkeypatch.setenv("TLPIPE_DASK", "tcp://10.1.2.3:8786")
    assert deploy.task_runner().address == "tcp://10.1.2.3:8786"
    monkeypatch.setenv("TLPIPE_DASK", "no")
    assert isinstance(deploy.task_runner(), ThreadPoolTaskRunner)


def test_the_repository_names_a_default_s3_remote():
    pytest.importorskip("dvc_s3")  # the dvc[s3] dependency
    from flows.deploy import default_remote

    name, url = default_remote(REPO)
    assert name == "storage" and url.startswith("s3://")


def test_no_remote_is_none(tmp_path):
    import subprocess
    import sys

    from flows.deploy import default_remote

    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    assert default_remote(tmp_path) is None
