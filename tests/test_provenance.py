"""A model's page and the index say what made its numbers: train@'s code hashes as dvc.lock recorded
them (and whether that entry is this model's run), and the machine where a record names it, or "not
recorded"; nothing is guessed."""
import hashlib
import json

import yaml

from tasks.stages.models import report_page_stage, report_stage
from tasks.stages.provenance import code_id, train_provenance
from test_report import project

CODE = {"tasks/cnn": "dcc9889c582e872bf7345432bafed341.dir", "tasks/cnn/models.py": "ee6bebb2601073e9ba5b77c34f5e223e",
        "tasks/core": "e548b13f939787c805fc80b98df41149.dir"}


def write_lock(root, key):
    """dvc.lock as `dvc repro` leaves it after train@<key>: its deps (data and code) and its outs."""
    train_json = (root / "models" / key / "train.json").read_bytes()
    entry = {"cmd": f"tlpipe train {key}",
             "deps": [{"path": "data/processed/mnist", "hash": "md5", "md5": "5f69ec56c587f4668b5c9d3f126e88eb.dir"},
                      *({"path": p, "hash": "md5", "md5": m} for p, m in CODE.items())],
             "params": {"params.yaml": {f"models.{key}": {"dataset": "mnist"}}},
             "outs": [{"path": f"models/{key}/model.keras", "hash": "md5", "md5": "0" * 32},
                      {"path": f"models/{key}/train.json", "hash": "md5", "md5": hashlib.md5(train_json).hexdigest()}]}
    (root / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {f"train@{key}": entry}}))


def test_the_page_and_the_index_name_the_code_from_dvc_lock_and_say_the_machine_is_not_recorded(tmp_path):
    p = project(tmp_path, ["a_model", "b_model"], [])
    write_lock(tmp_path, "a_model")
    page = report_page_stage(p, "a_model")["page"].read_text()
    assert "## What made these numbers" in page
    assert f"code id `{code_id(CODE)}`" in page
    for path, md5 in CODE.items():
        assert f"| {path} | `{md5}` |" in page
    assert "data/processed/mnist" not in page   # data deps are not code
    assert "it is the run that made these numbers" in page
    assert "**Machine:** not recorded (the trainer records none)." in page
    # a model that no DVC run recorded: said, not guessed
    page_b = report_page_stage(p, "b_model")["page"].read_text()
    assert "**Code:** not recorded: `dvc.lock` has no `train@b_model` entry" in page_b
    summary = json.loads((tmp_path / "reports/summaries/a_model.json").read_text())
    assert summary["provenance"]["code"] == CODE
    assert "provenance" not in json.loads((tmp_path / "reports/a_model/scores.json").read_text())  # metrics stay flat
    index = report_stage(p)["markdown"]
    assert (f"| a_model | `{code_id(CODE)}` | tasks/cnn `dcc9889c`, tasks/cnn/models.py `ee6bebb2`, "
            "tasks/core `e548b13f` | not recorded |") in index
    assert "| b_model | – | not recorded | not recorded |" in index
    # a retired row the tables keep is listed apart: an earlier run, not this dvc.lock's
    old = tmp_path / "reports/retired/old_model"
    old.mkdir(parents=True)
    (old / "summary.json").write_text(json.dumps(
        {"key": "old_model", "arch": "a", "split": "validation", "accuracy": 0.9, "tflite": {}, "epochs_run": 3,
         "seconds": 10}))
    tables = {"t": {"heading": "T", "models": ["a_model"], "retired": ["old_model"]}}
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**params, "report": {**params["report"], "tables": tables}}))
    assert "| old_model (*retired*) | – | not recorded | not recorded |" in report_stage(p)["markdown"]


def test_a_lock_entry_of_another_run_is_flagged_and_a_bench_record_names_the_machine(tmp_path):
    p = project(tmp_path, ["a_model"], [])
    train = json.loads((tmp_path / "models/a_model/train.json").read_text())
    (tmp_path / "models/a_model/train.json").write_text(json.dumps({**train, "gpus": 0}))
    write_lock(tmp_path, "a_model")
    bench = tmp_path / "reports/bench/stage_seconds.json"
    bench.parent.mkdir(parents=True)
    timed = {"seconds": 12.0, "command": "dvc repro -s train@a_model", "machine": {"cpus": 2, "processor": "x86_64"},
             "when": "2026-12-06 05:02:21"}
    bench.write_text(json.dumps({"train@a_model": timed}))
    prov = train_provenance(p, "a_model")
    assert prov["train_json"]["matches"] is True
    assert prov["machine"] == {"recorded": True, "gpus": 0, "source": "reports/bench/stage_seconds.json",
                               "command": "dvc repro -s train@a_model", "when": "2026-12-06 05:02:21",
                               "seconds": 12.0, "fit_seconds": 9.5, "cpus": 2, "processor": "x86_64"}
    page = report_page_stage(p, "a_model")["page"].read_text()
    assert ("**Machine:** 2 CPUs, x86_64 (CPU model not recorded), from `reports/bench/stage_seconds.json`'s timed "
            "`dvc repro -s train@a_model` of 2026-12-06 05:02:21 (12.0 s wall, this model's fit 9.5 s); "
            "the trainer records only the GPUs it used: 0.") in page
    # bench/release_run.py's record also names the CPU model and its vector extension
    release = {**timed, "command": "bench/release_run.py: dvc repro at 6ec29ce",
               "machine": {"cpus": 2, "processor": "x86_64", "cpu_model": "Intel(R) Xeon(R) Processor (AVX-512)"}}
    bench.write_text(json.dumps({"train@a_model": release}))
    assert train_provenance(p, "a_model")["machine"]["cpu_model"] == "Intel(R) Xeon(R) Processor (AVX-512)"
    page = report_page_stage(p, "a_model")["page"].read_text()
    assert ("**Machine:** 2 CPUs, x86_64 (Intel(R) Xeon(R) Processor (AVX-512)), from "
            "`reports/bench/stage_seconds.json`'s timed `bench/release_run.py: dvc repro at 6ec29ce` of") in page
    # a timed run shorter than this model's fit did not make it: not used
    bench.write_text(json.dumps({"train@a_model": {**timed, "seconds": 3.0}}))
    assert train_provenance(p, "a_model")["machine"] == {"recorded": False, "gpus": 0}
    # the model retrained by hand after the lock was written: the entry is not this model's run
    (tmp_path / "models/a_model/train.json").write_text(json.dumps({**train, "fit_seconds": 11.0}))
    page = report_page_stage(p, "a_model")["page"].read_text()
    assert "**Warning:** that entry recorded another `models/a_model/train.json`" in page
    assert "(**another train.json**)" in report_stage(p)["markdown"]
