"""bench/release_run.py times each stage of the one `dvc repro` users start, from DVC's own lines; a
resumed run adds its stages. Run against a stand-in `dvc` on PATH (a script printing what DVC prints)."""
import json
import os
import stat
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import dag_cost  # noqa: E402
import release_run  # noqa: E402


def test_stage_times_run_from_one_start_to_the_next():
    lines = [(0.0, "Verifying data sources"), (1.0, "Running stage 'fetch@mnist':"), (1.5, "> tlpipe fetch mnist"),
             (4.0, "Stage 'prepare@x' didn't change, skipping"), (6.0, "Running stage 'prepare@mnist':"),
             (9.0, "Updating lock file 'dvc.lock'")]
    assert release_run.stage_times(lines, 10.0) == {"fetch@mnist": 5.0, "prepare@mnist": 4.0}
    assert release_run.stage_times([(0.0, "Data and pipelines are up to date.")], 1.0) == {}


def test_a_run_and_its_resumption_are_recorded_together(tmp_path, monkeypatch):
    fake = tmp_path / "bin" / "dvc"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho \"Running stage '$2':\"\necho '> tlpipe'\nsleep 0.2\nexit $3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(release_run, "OUT", tmp_path / "release_run.json")
    monkeypatch.setattr(release_run, "LOG", tmp_path / "release_run.log")
    monkeypatch.setattr(dag_cost, "TIMED", tmp_path / "stage_seconds.json")  # its one writer
    (tmp_path / "stage_seconds.json").write_text(json.dumps({"old@0": {"seconds": 1.0}}))
    assert release_run.main(["a@1", "3"]) == 3  # the stand-in exits 3: stopped halfway
    assert release_run.main(["a@1", "0"]) == 0  # resumed: a@1 finishes
    assert release_run.main(["b@2", "0"]) == 0
    assert release_run.main(["b@2", "0"]) == 0  # run again (dvc repro -f): the later run's time counts
    record = json.loads((tmp_path / "release_run.json").read_text())
    assert [r["returncode"] for r in record["runs"]] == [3, 0, 0, 0]
    assert set(record["stages"]) == {"a@1", "b@2"} and all(s >= 0.2 for s in record["stages"].values())
    assert record["stages"]["a@1"] == round(record["runs"][0]["stages"]["a@1"] + record["runs"][1]["stages"]["a@1"], 1)
    assert record["wall_seconds"] == round(sum(r["wall_seconds"] for r in record["runs"]), 1)
    assert record["stages"]["b@2"] == record["runs"][3]["stages"]["b@2"]
    assert record["dag_seconds"] == round(sum(record["stages"].values()), 1) < record["wall_seconds"] + 0.1
    assert record["machine"]["cpus"] == os.cpu_count()
    timed = json.loads((tmp_path / "stage_seconds.json").read_text())
    assert set(timed) == {"old@0", "a@1", "b@2"}  # a@1 written once finished, with both tries' time
    assert timed["a@1"]["seconds"] >= 0.4
    assert release_run.main(["a@1", "0"]) == 0  # run again: its own time only, the stopped try is spent
    timed = json.loads((tmp_path / "stage_seconds.json").read_text())
    again = json.loads((tmp_path / "release_run.json").read_text())
    assert timed["a@1"]["seconds"] == again["stages"]["a@1"] == again["runs"][-1]["stages"]["a@1"]
    assert timed["b@2"]["seconds"] >= 0.2 and timed["b@2"]["machine"] == release_run.machine()
    assert timed["b@2"]["command"].startswith("bench/release_run.py: dvc repro b@2 0 at ")
    log = (tmp_path / "release_run.log").read_text().splitlines()
    assert sum(line.startswith("# ") for line in log) == 5 and any("Running stage 'b@2'" in line for line in log)


def test_the_cpu_model_names_its_widest_vector_extension(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Some CPU @ 2GHz\nflags\t\t: fpu sse avx avx2 fma\n\n"
                    "processor\t: 1\nmodel name\t: Some CPU @ 2GHz\nflags\t\t: fpu avx512f\n")
    assert release_run.cpu_model(info) == "Some CPU @ 2GHz (AVX2)"  # the first CPU's flags
    info.write_text("model name\t: Other\nflags\t: avx avx2 avx512f avx512bw\n")
    assert release_run.cpu_model(info) == "Other (AVX-512)"
    assert release_run.cpu_model(tmp_path / "missing")  # no /proc/cpuinfo: platform's answer
