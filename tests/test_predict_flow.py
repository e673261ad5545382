"""The Prefect side of batch prediction: flows/predict.py's flow runs the function `tlpipe predict --out` runs
(in-process on a fixture folder), and prefect.yaml's `predict-folder` deployment end to end as users run it:
a real Prefect server on 127.0.0.1 (its own PREFECT_HOME), the process work pool, `tlpipe deploy`, a
worker, a run with parameters; every process started here is stopped by its PID (tests/test_deploy.py)."""
import shutil
from pathlib import Path

import pyarrow.parquet as pq

from predict_fixtures import BROKEN, IMAGES, photo_folder, rgb_int8
from test_deploy import BIN, api, logs_of, prefect_server, run, start, stop, tail, wait_for, wait_for_log  # noqa: F401

REPO = Path(__file__).resolve().parents[1]


def test_the_flow_calls_the_cli_function_and_resolves_paths_under_root(tmp_path, prefect_harness, monkeypatch):
    from flows import predict as flow_module
    from flows.predict import predict_folder
    from tasks.evaluate import predict as P

    root = tmp_path / "project"
    model = rgb_int8(root / "models" / "tiny")
    photo_folder(root / "incoming")
    assert flow_module.predict_to_parquet is P.predict_to_parquet  # what `tlpipe predict --out` calls
    calls = []
    real = P.predict_to_parquet
    monkeypatch.setattr(flow_module, "predict_to_parquet", lambda *a, **k: (calls.append(k), real(*a, **k))[1])
    summary = predict_folder(model="models/tiny/model_int8.tflite", inputs=["incoming"], out="out/p.parquet",
                             batch_size=4, root=str(root))
    assert calls and calls[0]["progress"] == "lines" and calls[0]["batch_size"] == 4
    out = root / "out" / "p.parquet"
    assert summary["out"] == str(out) and summary["images"] == len(IMAGES) and summary["failed"] == len(BROKEN)
    rows = pq.read_table(out).to_pylist()
    assert [Path(r["path"]).relative_to(root / "incoming").as_posix() for r in rows] == IMAGES
    assert {r["model_sha256"] for r in rows} == {summary["model_sha256"]}
    assert summary["model"] == str(model)


def test_predict_folder_deployment_runs_on_a_process_worker(prefect_server, tmp_path):
    url, env = prefect_server
    repo = tmp_path / "checkout"
    repo.mkdir()
    shutil.copy(REPO / "prefect.yaml", repo)
    for name in ("tasks", "flows"):
        shutil.copytree(REPO / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    rgb_int8(repo / "models" / "tiny")
    photo_folder(repo / "incoming")
    env = {**env, "PWD": str(repo)}  # what a shell sets after `cd checkout`
    prefect = str(BIN / "prefect")
    run([prefect, "work-pool", "create", "tlpipe-process", "--type", "process"], repo, env)
    out = run([str(BIN / "tlpipe"), "deploy", "--name", "predict-folder"], repo, env)
    assert "Deployment 'tlpipe-predict/predict-folder' successfully created" in out, out
    deployment = api(url, "GET", "/deployments/name/tlpipe-predict/predict-folder")
    assert deployment["entrypoint"] == "flows/predict.py:predict_folder"
    assert deployment["work_pool_name"] == "tlpipe-process"
    assert deployment["pull_steps"] == [{"prefect.deployments.steps.set_working_directory": {"directory": str(repo)}}]
    assert set(deployment["parameter_openapi_schema"]["required"]) == {"model", "inputs", "out"}

    worker_log = tmp_path / "worker.log"
    worker = start([prefect, "worker", "start", "--pool", "tlpipe-process", "--limit", "1"], tmp_path, env, worker_log)
    try:
        params = {"model": "models/tiny/model_int8.tflite", "inputs": ["incoming"], "out": "out/predictions.parquet",
                  "batch_size": 4}
        flow_run = api(url, "POST", f"/deployments/{deployment['id']}/create_flow_run", json={"parameters": params})
        done = wait_for(url, flow_run["id"], worker, worker_log)
        assert done["state"]["type"] == "COMPLETED", \
            f"{done['state']}\n{logs_of(url, flow_run['id'])}\n{tail(worker_log)}"
        expected = [f"{len(IMAGES)} images -> out/predictions.parquet (model model_int8.tflite",
                    f"{len(IMAGES)} images, {len(IMAGES) - 2} classified, 2 failed",
                    "2 of 9 images could not be classified"]
        logs = wait_for_log(url, flow_run["id"], *expected)
    finally:
        stop(worker)
    rows = pq.read_table(repo / "out" / "predictions.parquet").to_pylist()  # relative to the checkout
    assert [Path(r["path"]).as_posix() for r in rows] == [f"incoming/{p}" for p in IMAGES]
    assert sum(r["error"] is not None for r in rows) == len(BROKEN)
    for line in expected:
        assert line in logs, logs
