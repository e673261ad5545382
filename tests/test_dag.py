"""One DAG: the Prefect flow runs dvc.yaml's stages as DVC sees them (flows/dag.py, flows/pipeline.py),
on a fixture DVC project whose downloads come from the loopback HTTP server."""
import json
import os
import subprocess
import sys

import pytest
import yaml

from dvcproject import REPO, dvc_env, dvc_status, init_dvc_project, sh
from project import serve_dir, write_mirror, write_params

DATA_STAGES = {"fetch@mnist", "fetch@emnist_letters", "prepare@mnist", "prepare@emnist_letters", "check@mnist",
               "check@emnist_letters"}


@pytest.fixture
def dvc_project(tmp_path, http_server, monkeypatch):
    monkeypatch.delenv("TLPIPE_MIRROR", raising=False)
    pins = write_mirror(tmp_path / "mirror", mat=False, test_images=False)
    root = tmp_path / "proj"
    write_params(root, mirror=serve_dir(http_server, tmp_path / "mirror"), pins=pins)
    return init_dvc_project(root)


def lock_stages(root):
    return set(yaml.safe_load((root / "dvc.lock").read_text())["stages"])


def test_stages_come_from_dvc_yaml_with_their_upstream(dvc_project):
    from flows import dag

    data = {s.name: s for s in dag.stages(dvc_project, ["mnist", "emnist_letters"])}
    assert set(data) == DATA_STAGES
    assert data["prepare@mnist"].upstream == ("fetch@mnist",) and data["fetch@mnist"].upstream == ()
    assert data["prepare@mnist"].cmd == "tlpipe prepare mnist"
    assert dag.command(data["prepare@mnist"])[1:] == ["-m", "tasks.cli", "prepare", "mnist"]
    compound = dag.Stage("x", "tlpipe fetch a && tlpipe prepare a", "/", (), ())
    assert dag.command(compound) == compound.cmd  # a shell line runs in a shell, as DVC runs it

    everything = {s.name: s for s in dag.stages(dvc_project)}
    models = yaml.safe_load((REPO / "params.yaml").read_text())["models"]
    assert {f"train@{k}" for k in models} | {"report"} <= set(everything)
    order = list(everything)
    for stage in everything.values():  # upstream first
        assert all(order.index(u) < order.index(stage.name) for u in stage.upstream)
    transfer = next(k for k, m in models.items() if m["init"].startswith("models/"))
    source = models[transfer]["init"].split("/")[1]
    assert f"train@{source}" in everything[f"train@{transfer}"].upstream
    with pytest.raises(KeyError, match="no stage matches 'nope'"):
        dag.stages(dvc_project, ["nope"])


def test_prefect_run_builds_the_data_stages_and_agrees_with_dvc(dvc_project, http_server, prefect_harness):
    from flows.pipeline import pipeline

    # A first run builds every data stage; dvc status is clean after it and dvc.lock holds them all.
    first = pipeline(root=str(dvc_project))
    assert set(first["ran"]) == DATA_STAGES and first["skipped"] == []
    assert first["datasets"]["mnist"]["test"] == 30
    manifest = json.loads((dvc_project / "data/processed/mnist/manifest.json").read_text())
    assert {s: v["count"] for s, v in manifest["splits"].items()} == first["datasets"]["mnist"]
    assert dvc_status(dvc_project, "fetch", "prepare") == {}
    assert lock_stages(dvc_project) == DATA_STAGES
    assert "Data and pipelines are up to date" in sh(["dvc", "repro", "prepare"], dvc_project)

    # A second run does no work: nothing downloaded, no output rewritten.
    requests = len(http_server.requests)
    shards = {p: p.stat().st_mtime_ns for p in (dvc_project / "data/processed").rglob("*") if p.is_file()}
    lock = (dvc_project / "dvc.lock").read_bytes()
    second = pipeline(root=str(dvc_project))
    assert second["ran"] == [] and set(second["skipped"]) == DATA_STAGES
    assert len(http_server.requests) == requests
    assert {p: p.stat().st_mtime_ns for p in shards} == shards
    assert (dvc_project / "dvc.lock").read_bytes() == lock

    # A params change reruns exactly what dvc status lists, and leaves it clean.
    params = yaml.safe_load((dvc_project / "params.yaml").read_text())
    params["prepare"]["mnist"]["validation_percentage"] = 35
    (dvc_project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    stale = set(dvc_status(dvc_project, "fetch", "prepare"))
    assert stale == {"prepare@mnist"}
    third = pipeline(root=str(dvc_project))
    assert set(third["ran"]) == stale | {"check@mnist"} and third["restored"] == []  # the check follows its data
    assert dvc_status(dvc_project, "fetch", "prepare") == {}
    assert third["datasets"]["mnist"]["validation"] > first["datasets"]["mnist"]["validation"]

    # Back to the first value: DVC's run cache has that run, so the outs come back without the command.
    params["prepare"]["mnist"]["validation_percentage"] = 20
    (dvc_project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert set(dvc_status(dvc_project, "fetch", "prepare")) == {"prepare@mnist"}
    fourth = pipeline(root=str(dvc_project))
    # check@ reruns: its outputs are git-tracked reports (cache: false), which DVC's run cache does not keep
    assert fourth["restored"] == ["prepare@mnist"] and fourth["ran"] == ["check@mnist"], fourth
    assert fourth["datasets"]["mnist"] == first["datasets"]["mnist"]
    assert dvc_status(dvc_project, "fetch", "prepare") == {}


def test_network_stages_are_retried_and_a_failed_stage_is_not_recorded(dvc_project, http_server,
                                                                        prefect_harness, monkeypatch):
    from flows import pipeline as flow_module
    from flows.dag import Stage

    options = flow_module.stage_options(Stage("fetch@mnist", "tlpipe fetch mnist", "/", (), ()))
    assert options["retries"] == 2 and options["task_run_name"] == "fetch@mnist"
    assert "retries" not in flow_module.stage_options(Stage("prepare@mnist", "tlpipe prepare mnist", "/", (), ()))
    monkeypatch.setattr(flow_module, "RETRY_DELAYS_S", [0, 0])

    # One file answers 500 three times: the downloader's own 3 attempts fail, Prefect's retry succeeds.
    http_server.add("mnist/t10k-labels-idx1-ubyte.gz",
                    (dvc_project.parent / "mirror/mnist/t10k-labels-idx1-ubyte.gz").read_bytes(), fail_times=3)
    result = flow_module.pipeline(datasets=["mnist"], root=str(dvc_project))
    assert set(result["ran"]) == {"fetch@mnist", "prepare@mnist", "check@mnist"}
    assert sum(r.path.endswith("t10k-labels-idx1-ubyte.gz") and r.status == 500 for r in http_server.requests) == 3

    # A stage that keeps failing fails the flow, naming it; it and its downstream stay unrecorded.
    http_server.add("emnist/gzip/emnist-letters-train-labels-idx1-ubyte.gz", b"x", status=404)
    with pytest.raises(RuntimeError, match="fetch@emnist_letters"):
        flow_module.pipeline(datasets=["emnist_letters"], root=str(dvc_project))
    assert lock_stages(dvc_project) == {"fetch@mnist", "prepare@mnist", "check@mnist"}
    assert not (dvc_project / "data/processed/emnist_letters").exists()


def test_commits_from_two_processes_wait_for_the_repo_lock_and_both_land(dvc_project):
    """Two processes record their stage at once while a third holds DVC's repo lock longer than
    DVC's own 3 s lock timeout: both wait, then both entries are in dvc.lock and dvc status is clean."""
    from flows import dag

    for key in ("mnist", "emnist_letters"):
        sh([sys.executable, "-m", "tasks.cli", "fetch", key], dvc_project)
    code = "import sys; from flows.dag import commit; commit(sys.argv[1], sys.argv[2])"
    env = dvc_env(PYTHONPATH=str(REPO))
    with dag.locked_repo(dvc_project):
        procs = [subprocess.Popen([sys.executable, "-c", code, str(dvc_project), f"fetch@{key}"], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for key in ("mnist", "emnist_letters")]
        try:
            procs[0].wait(timeout=6)
        except subprocess.TimeoutExpired:
            pass
        assert [p.poll() for p in procs] == [None, None], "a commit went through while the lock was held"
    for p in procs:
        out = p.communicate(timeout=120)[0]
        assert p.returncode == 0, out
    assert lock_stages(dvc_project) == {"fetch@mnist", "fetch@emnist_letters"}
    assert dvc_status(dvc_project, "fetch") == {}


def test_a_project_without_dvc_says_so(tmp_path):
    from flows import dag

    write_params(tmp_path / "plain")
    with pytest.raises(FileNotFoundError, match="not a DVC project"):
        dag.stages(tmp_path / "plain")


def shell_project(root):
    """A DVC project with one shell stage, `copy`: in.txt -> out/copy.txt."""
    write_params(root, datasets=())
    (root / "in.txt").write_text("hello\n")
    return init_dvc_project(root, keep_params=True, dvc_yaml={"stages": {
        "copy": {"cmd": "mkdir -p out && cp in.txt out/copy.txt", "deps": ["in.txt"], "outs": ["out"]}}})


@pytest.mark.skipif(os.name != "posix", reason="a shell command stage")
def test_any_stage_command_runs_and_is_committed(tmp_path):
    """A stage that is not a `tlpipe` command runs as DVC runs it (in a shell, in its wdir)."""
    from flows import dag

    root = shell_project(tmp_path / "p")
    (stage,) = dag.stages(root)
    assert dag.changed(root, "copy")
    lines = []
    dag.run(root, stage, log=lines.append)
    dag.commit(root, "copy")
    assert (root / "out/copy.txt").read_text() == "hello\n" and dag.changed(root, "copy") == []
    (root / "in.txt").write_text("changed\n")
    assert dag.changed(root, "copy")
    bad = dag.Stage("copy", "exit 3", str(root), (), ())
    with pytest.raises(dag.StageFailed, match="copy.*exited 3"):
        dag.run(root, bad, log=lines.append)


@pytest.mark.skipif(os.name != "posix", reason="a shell command stage")
def test_cli_pipeline_keeps_third_party_info_logs_out_unless_verbose(tmp_path, prefect_harness):
    """`tlpipe pipeline` against a Prefect server: no `httpx: HTTP Request` line per API call by
    default, the pipeline's own messages still there; `--verbose` brings the library logs back."""
    from prefect.settings import PREFECT_API_URL

    root = shell_project(tmp_path / "p")
    env = dvc_env(PREFECT_API_URL=PREFECT_API_URL.value(), PYTHONPATH=str(REPO))
    quiet = sh([sys.executable, "-m", "tasks.cli", "pipeline", "copy"], root, env)
    assert "HTTP Request" not in quiet and "httpx" not in quiet
    assert "copy: running" in quiet and '"ran": [\n    "copy"' in quiet
    loud = sh([sys.executable, "-m", "tasks.cli", "pipeline", "copy", "--verbose"], root, env)
    assert "HTTP Request" in loud and "copy is up to date" in loud


def test_serve_without_a_server_says_how_to_start_one(tmp_path):
    env = dvc_env(PREFECT_HOME=str(tmp_path / "home"), PYTHONPATH=str(REPO))
    env.pop("PREFECT_API_URL", None)
    done = subprocess.run([sys.executable, "-m", "tasks.cli", "serve"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert "prefect server start" in done.stderr and "PREFECT_API_URL" in done.stderr
    assert "--ephemeral" in done.stderr


@pytest.mark.skipif(os.name != "posix", reason="shell command stages")
def test_a_stage_up_to_date_at_the_start_reruns_when_its_upstream_changes_it(tmp_path, prefect_harness):
    """The run asks DVC once for the whole graph; `upper` is up to date then (its dep, out/copy.txt, has
    not changed yet), but `copy` reruns first and changes it, so `upper` is asked again and reruns."""
    from flows.pipeline import pipeline

    root = tmp_path / "p"
    write_params(root, datasets=())
    (root / "in.txt").write_text("hello\n")
    init_dvc_project(root, keep_params=True, dvc_yaml={"stages": {
        "copy": {"cmd": "mkdir -p out && cp in.txt out/copy.txt", "deps": ["in.txt"], "outs": ["out"]},
        "upper": {"cmd": "mkdir -p up && tr a-z A-Z < out/copy.txt > up/upper.txt", "deps": ["out/copy.txt"],
                  "outs": ["up"]}}})
    assert set(pipeline(root=str(root), targets=["upper"])["ran"]) == {"copy", "upper"}
    assert pipeline(root=str(root), targets=["upper"])["ran"] == []
    (root / "in.txt").write_text("changed\n")
    assert set(dvc_status(root, "copy", "upper")) == {"copy"}  # upper's own deps have not changed yet
    assert pipeline(root=str(root), targets=["upper"])["ran"] == ["copy", "upper"]
    assert (root / "up/upper.txt").read_text() == "CHANGED\n" and dvc_status(root, "copy", "upper") == {}
