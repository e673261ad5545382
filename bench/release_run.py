"""Run `dvc repro` and record the wall time of every stage it runs, and of the whole (issue 31's release run).

    TLPIPE_MIRROR=../shared/data python bench/release_run.py            # dvc repro, timed
    TLPIPE_MIRROR=../shared/data python bench/release_run.py -- -s X    # extra arguments go to dvc repro

Every line DVC (and the stages under it) prints goes to reports/bench/release_run.log with the seconds since
the run began; a stage's time runs from DVC's "Running stage 'X'" to the next stage's start (or the end),
so it includes DVC saving the stage's outputs to its cache and updating dvc.lock. The times go to
reports/bench/release_run.json with the machine, the commit and the command. A run stopped and resumed
(DVC skips the stages it already recorded) adds its stages to the same JSON, each under the run that
timed it; `wall_seconds` sums the runs.

Why a wrapper and not DVC: `dvc repro` times nothing itself, and `bench/dag_cost.py --run` starts one
`dvc repro -s` per stage (its start-up counted each time); this times the one run users start.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.core.io import write_json  # noqa: E402

OUT = ROOT / "reports" / "bench" / "release_run.json"
LOG = ROOT / "reports" / "bench" / "release_run.log"
STARTS = re.compile(r"Running stage '([^']+)'")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
    began, lines = time.time(), []
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(LOG, "a", encoding="utf-8") as log:
        log.write(f"# {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(began))} {' '.join(cmd)} at {commit}\n")
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace", bufsize=1)
        for line in proc.stdout:
            t = time.time() - began
            lines.append((t, line.rstrip("\n")))
            log.write(f"{t:9.1f} {line}")
            log.flush()
            sys.stdout.write(line)
        rc = proc.wait()
    end = time.time() - began
    record = json.loads(OUT.read_text()) if OUT.exists() else {"runs": []}
    record["runs"].append({"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(began)), "commit": commit,
                           "command": " ".join(cmd), "returncode": rc, "wall_seconds": round(end, 1),
                           "stages": stage_times(lines, end)})
    record["machine"] = {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()}
    record["stages"] = {name: s for run in record["runs"] for name, s in run["stages"].items()}
    record["wall_seconds"] = round(sum(run["wall_seconds"] for run in record["runs"]), 1)
    write_json(OUT, record)
    print(f"release run: {len(record['stages'])} stages timed, {record['wall_seconds']:.0f} s in all -> "
          f"{OUT} (exit {rc})")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
