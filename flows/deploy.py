"""The pipeline flow as prefect.yaml deploys it (entrypoint `flows/deploy.py:pipeline`).

It is flows/pipeline.py's flow, under the same name and with the same parameters, plus what a run on
a work pool needs:

- after a successful run, `dvc push` when the project has a default DVC remote (.dvc/config, or
  `dvc remote modify --local`), so the artifacts leave the machine that made them;
  `TLPIPE_DVC_PUSH=0` turns it off;
- before the run, `dvc pull --allow-missing` when `TLPIPE_DVC_PULL=1` (a fresh `git_clone` checkout
  then starts from the remote's outputs instead of recomputing them);
- the task runner: `TLPIPE_DASK` (`local`, `local:N` or a scheduler address) runs the flow's tasks on
  Dask through prefect-dask's DaskTaskRunner; otherwise the pipeline's own thread pool.
"""
from __future__ import annotations

import functools
import inspect
import os
import subprocess
import sys
from pathlib import Path

from prefect import flow, get_run_logger

from flows.pipeline import pipeline as _pipeline
from tasks.stages.project import find_project
from tasks.core.parallel import DASK_ENV, parse_setting

PUSH_ENV = "TLPIPE_DVC_PUSH"
PULL_ENV = "TLPIPE_DVC_PULL"


def default_remote(root: Path) -> tuple[str, str] | None:
    """(name, url) of the project's default DVC remote, or None when it has none."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        config = repo.config
        name = config["core"].get("remote")
        if not name:
            return None
        url = (config["remote"].get(name) or {}).get("url")
        if url is None:
            raise RuntimeError(f"{root}/.dvc/config: core.remote names '{name}', which is not a remote; "
                               "expected a [remote \"" + name + "\"] section with a url")
        return name, url


def dvc(root: Path, *args: str) -> str:
    """Run `dvc ARGS` in the project; its output, or an error naming the command and what DVC said."""
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"`dvc {' '.join(args)}` in {root} failed (exit {done.returncode}):\n"
                           f"{(done.stdout + done.stderr).strip()}")
    return done.stdout


def _on(var: str, default: bool) -> bool:
    value = os.environ.get(var, "").strip().lower()
    return default if not value else value not in ("0", "false", "no", "off")


def task_runner():
    """DaskTaskRunner when $TLPIPE_DASK asks for Dask, else a copy of the pipeline's own runner."""
    setting = os.environ.get(DASK_ENV, "").strip()
    if not setting or setting.lower() in ("0", "false", "no", "off", "none"):
        return _pipeline.task_runner.duplicate()
    from prefect_dask import DaskTaskRunner

    address, n_workers = parse_setting(setting, os.cpu_count() or 1)
    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(cluster_class="distributed.LocalCluster",
                          cluster_kwargs={"n_workers": n_workers, "threads_per_worker": 1, "processes": True,
                                          "dashboard_address": None})


@functools.wraps(_pipeline.fn)
def _deployed(*args, **kwargs):
    bound = inspect.signature(_pipeline.fn).bind(*args, **kwargs)
    root = find_project(bound.arguments.get("root")).root
    logger = get_run_logger()
    remote = default_remote(root)
    if remote and _on(PULL_ENV, False):
        logger.info("dvc pull --allow-missing from %s (%s)", *remote)
        dvc(root, "pull", "--allow-missing")
    result = _pipeline.fn(*args, **kwargs)
    if remote is None:
        logger.info("no default DVC remote in %s: outputs stay in this checkout's cache", root)
    elif not _on(PUSH_ENV, True):
        logger.info("%s=0: not pushing to %s (%s)", PUSH_ENV, *remote)
    else:
        logger.info("dvc push to %s (%s)", *remote)
        try:
            out = dvc(root, "push")
        except RuntimeError as e:
            raise RuntimeError(f"{e}\nSet the remote's url for this checkout with `dvc remote modify --local "
                               f"{remote[0]} url s3://<bucket>/<path>` (and credentials), or run with "
                               f"{PUSH_ENV}=0") from None
        logger.info("%s", out.strip().splitlines()[-1] if out.strip() else "pushed")
    return result


pipeline = flow(name=_pipeline.name, description=_pipeline.description, task_runner=task_runner(),
                retries=_pipeline.retries, log_prints=_pipeline.log_prints)(_deployed)
