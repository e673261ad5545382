"""The Prefect pipeline flow runs the same functions as the DVC stages, datasets concurrently."""
import json

from dvcproject import dvc_status, init_dvc_project
from project import write_mirror, write_params


def test_pipeline_flow_fetches_and_prepares_every_dataset(tmp_path, prefect_harness):
    from flows.pipeline import pipeline

    mirror = tmp_path / "mirror"
    pins = write_mirror(mirror, mat=False, test_images=False)
    root = tmp_path / "proj"
    write_params(root, mirror=str(mirror), pins=pins)
    init_dvc_project(root)

    summary = pipeline(root=str(root))["datasets"]

    assert set(summary) == {"mnist", "emnist_letters"}
    assert summary["mnist"]["test"] == 30
    assert sum(summary["emnist_letters"].values()) == 104
    for key in summary:
        manifest = json.loads((root / "data/processed" / key / "manifest.json").read_text())
        assert {s: v["count"] for s, v in manifest["splits"].items()} == summary[key]
    assert dvc_status(root, "fetch", "prepare") == {}


def test_flow_task_retries_a_failed_fetch(tmp_path, prefect_harness, monkeypatch):
    from flows import data

    calls = []
    real = data.data_stages.fetch_stage

    def flaky(project, key):
        calls.append(key)
        if len(calls) == 1:
            raise ConnectionError("simulated outage")
        return real(project, key)

    monkeypatch.setattr(data.data_stages, "fetch_stage", flaky)
    mirror = tmp_path / "mirror"
    pins = write_mirror(mirror, mat=False, idx=False)
    root = tmp_path / "proj"
    write_params(root, mirror=str(mirror), pins=pins, datasets=("mnist",))

    record = data.fetch_task.with_options(retry_delay_seconds=0)("mnist", str(root))
    assert calls == ["mnist", "mnist"] and record["format"] == "idx"


def test_stage_flows_run_alone(tmp_path, prefect_harness):
    from flows.data import fetch_flow, prepare_flow

    mirror = tmp_path / "mirror"
    pins = write_mirror(mirror, mat=False, idx=False)
    root = tmp_path / "proj"
    write_params(root, mirror=str(mirror), pins=pins, datasets=("mnist",))

    assert fetch_flow(root=str(root)) == {"mnist": "idx"}
    assert prepare_flow(root=str(root))["mnist"]["test"] == 30
