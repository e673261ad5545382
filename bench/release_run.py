"""Run `dvc repro` and record the wall time of every stage it runs, and of the whole (issue 31's release run).

    TLPIPE_MIRROR=../shared/data python bench/release_run.py            # dvc repro, timed
    TLPIPE_MIRROR=../shared/data python bench/release_run.py -- -s X    # extra arguments go to dvc repro

Every line DVC (and the stages under it) prints goes to reports/bench/release_run.log with the seconds since
the run began; a stage's time runs from DVC's "Running stage 'X'" to the next stage's start (or the end),
so it includes DVC saving the stage's outputs to its cache and updating dvc.lock. The times go to
reports/bench/release_run.json with the machine, the commit and the command. A run stopped and resumed
(DVC skips the stages it already recorded) adds its stages to the same JSON, each under the run that
timed it; a stage stopped in one run and finished in the next counts both tries, a stage run again
later (`-f`) the later run; `dag_seconds` sums the stages (the whole DAG, each stage once),
`wall_seconds` the runs.

Each stage that finished is also written, the moment the next one starts, to
reports/bench/stage_seconds.json (bench/dag_cost.py's record: seconds, command, when, machine with its
CPU model and vector extensions): the report_page@ stages of the same run read it there
(tasks/stages/provenance.py) to name the machine their model trained on. A failed stage is not written.

Why a wrapper and not DVC: `dvc repro` times nothing itself, and `bench/dag_cost.py --run` starts one
`dvc repro -s` per stage (its start-up counted each time); this times the one run users start.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.core.io import write_json  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from dag_cost import cpu_model, machine, record_stage  # noqa: E402,F401  (stage_seconds.json's one writer)

OUT = ROOT / "reports" / "bench" / "release_run.json"
LOG = ROOT / "reports" / "bench" / "release_run.log"
STARTS = re.compile(r"Running stage '([^']+)'")


def totals(runs: list[dict]) -> tuple[dict[str, float], dict[str, float]]:
    """({stage: seconds}, {stage: seconds of tries not finished yet}) over `runs` in order: a stage stopped
    in one run (a failed run's last stage) and finished in a later one counts both tries; a stage run
    again later (dvc repro -f) counts the later run."""
    done, stopped = {}, {}
    for run in runs:
        items = list(run["stages"].items())
        for i, (name, seconds) in enumerate(items):
            if run["returncode"] != 0 and i == len(items) - 1:
                stopped[name] = stopped.get(name, 0.0) + seconds
            else:
                done[name] = round(seconds + stopped.pop(name, 0.0), 1)
    return done, stopped


def stage_times(lines: list[tuple[float, str]], end: float) -> dict[str, float]:
    """{stage: seconds} from (seconds since start, line) pairs: each stage from its start line to the
    next one's (or `end`)."""
    starts = [(t, m.group(1)) for t, line in lines if (m := STARTS.search(line))]
    return {name: round((starts[i + 1][0] if i + 1 < len(starts) else end) - t, 1)
            for i, (t, name) in enumerate(starts)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dvc_args", nargs="*", help="arguments after `--` go to dvc repro")
    args = ap.parse_args(argv)
    cmd = ["dvc", "repro", *args.dvc_args]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    LOG.parent.mkdir(parents=True, exist_ok=True)
    earlier = json.loads(OUT.read_text()) if OUT.exists() else {"runs": []}
    carried = totals(earlier["runs"])[1]  # a stage a stopped run was in and no run finished since: both tries
    began, lines = time.time(), []
    label = f"bench/release_run.py: {' '.join(cmd)} at {commit[:7]}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(LOG, "a", encoding="utf-8") as log:
        log.write(f"# {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(began))} {' '.join(cmd)} at {commit}\n")
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace", bufsize=1)
        current = None  # (stage, its start in seconds since `began`)
        for line in proc.stdout:
            t = time.time() - began
            lines.append((t, line.rstrip("\n")))
            log.write(f"{t:9.1f} {line}")
            log.flush()
            sys.stdout.write(line)
            if m := STARTS.search(line):
                if current:
                    record_stage(current[0], t - current[1] + carried.get(current[0], 0.0),
                                 began + current[1], label)
                current = (m.group(1), t)
        rc = proc.wait()
    end = time.time() - began
    if current and rc == 0:
        record_stage(current[0], end - current[1] + carried.get(current[0], 0.0), began + current[1], label)
    record = earlier
    record["runs"].append({"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(began)), "commit": commit,
                           "command": " ".join(cmd), "returncode": rc, "wall_seconds": round(end, 1),
                           "stages": stage_times(lines, end)})
    record["machine"] = machine()
    record["stages"] = totals(record["runs"])[0]
    record["dag_seconds"] = round(sum(record["stages"].values()), 1)  # the whole DAG, each stage once
    record["wall_seconds"] = round(sum(run["wall_seconds"] for run in record["runs"]), 1)
    write_json(OUT, record)
    print(f"release run: {len(record['stages'])} stages timed, {record['dag_seconds']:.0f} s for the DAG "
          f"({record['wall_seconds']:.0f} s of runs) -> "
          f"{OUT} (exit {rc})")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
