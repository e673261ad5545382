"""What the whole DAG costs from nothing, from the times its stages recorded when they last ran.

    python bench/dag_cost.py                               # sum what is recorded -> reports/bench/dag_cost.json
    TLPIPE_MIRROR=../shared/data python bench/dag_cost.py --run prepare@cards fetch@mnist ...
                                                           # run those stages (`dvc repro -s`), time them, record

Every stage of `dvc.yaml`'s expansion (DVC's own index, so a recipe added to params.yaml is counted) gets
the seconds it recorded, from the file its run wrote:
  - train@<m>:   models/<m>/train.json `fit_seconds` (the trainer's own clock: head + fine-tune);
  - features@<f>: reports/features/<f>.json `seconds`;
  - any stage timed by `--run`: reports/bench/stage_seconds.json (wall time of `dvc repro -s <stage>`,
    DVC's own start-up included), which also keeps the command and the machine.
A stage with none of these is listed as unrecorded, not guessed: the sum is then a lower bound, and says
so. The times are those of the runs that made the committed numbers, on the machine that ran them (2 cores
here); a recipe's time moves with its train split (the cards test split, carved from train/ since issue 27,
takes ~10 % of it) and with the load other jobs put on the machine.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.core.io import write_json  # noqa: E402

TIMED = ROOT / "reports" / "bench" / "stage_seconds.json"
OUT = ROOT / "reports" / "bench" / "dag_cost.json"


def stage_names(root: Path) -> list[str]:
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return sorted(s.addressing for s in repo.index.stages)


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def recorded(root: Path, stage: str, timed: dict) -> tuple[float | None, str | None]:
    """(seconds, where they come from) of one stage's last recorded run, or (None, None)."""
    group, _, key = stage.partition("@")
    if stage in timed:
        return float(timed[stage]["seconds"]), f"{TIMED.relative_to(ROOT)} ({timed[stage]['command']})"
    if group == "train":
        seconds = _json(root / "models" / key / "train.json").get("fit_seconds")
        return (float(seconds), f"models/{key}/train.json fit_seconds") if seconds is not None else (None, None)
    if group == "features":
        seconds = _json(root / "reports" / "features" / f"{key}.json").get("seconds")
        return (float(seconds), f"reports/features/{key}.json seconds") if seconds is not None else (None, None)
    return None, None


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name and its widest vector extension (AVX-512 / AVX2 / AVX; a float result
    can move between them), e.g. "Intel(R) Xeon(R) Processor (AVX-512)"; Linux's /proc/cpuinfo, else
    what platform knows."""
    name, flags = None, set()
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name is None:
                name = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    name = name or platform.processor() or platform.machine()
    simd = next((label for flag, label in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"))
                 if flag in flags), None)
    return f"{name} ({simd})" if simd else name


@functools.lru_cache(maxsize=None)
def machine() -> dict:
    """This machine as a stage record names it (tasks/stages/provenance.py reads it for the model pages)."""
    return {"cpus": os.cpu_count(), "processor": platform.machine(), "cpu_model": cpu_model(),
            "python": platform.python_version()}


def record_stage(stage: str, seconds: float, started: float, command: str) -> None:
    """One finished stage into TIMED (merged; written atomically, as report stages may read it meanwhile):
    its seconds, the command that timed it, when it started (UTC) and the machine. The one writer of
    stage_seconds.json, for `--run` here and for bench/release_run.py."""
    timed = _json(TIMED)
    timed[stage] = {"seconds": round(seconds, 1), "command": command,
                    "mirror": "$TLPIPE_MIRROR" if os.environ.get("TLPIPE_MIRROR") else None,
                    "machine": dict(machine()), "when": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(started))}
    write_json(TIMED, dict(sorted(timed.items())))


def run_stages(root: Path, stages: list[str]) -> None:
    """`dvc repro -s <stage>` for each, one at a time, its wall time merged into stage_seconds.json."""
    for stage in stages:
        command = f"dvc repro -s {stage}"
        began, start = time.time(), time.perf_counter()
        done = subprocess.run(["dvc", "repro", "-s", stage], cwd=root)
        seconds = round(time.perf_counter() - start, 1)
        if done.returncode:  # a failed stage (a check's fail verdict) is not a recorded time; the next ones run
            print(f"{stage}: failed (exit {done.returncode}) after {seconds} s; not recorded", flush=True)
            continue
        record_stage(stage, seconds, began, command)
        print(f"{stage}: {seconds} s", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", nargs="+", metavar="STAGE", help="run and time these stages first (dvc repro -s)")
    args = ap.parse_args(argv)
    if args.run:
        run_stages(ROOT, args.run)
    timed = _json(TIMED)
    rows, unrecorded = [], []
    for stage in stage_names(ROOT):
        seconds, source = recorded(ROOT, stage, timed)
        if seconds is None:
            unrecorded.append(stage)
        else:
            rows.append({"stage": stage, "seconds": seconds, "source": source})
    total = sum(r["seconds"] for r in rows)
    by_group: dict[str, float] = {}
    for r in rows:
        group = r["stage"].partition("@")[0]
        by_group[group] = by_group.get(group, 0.0) + r["seconds"]
    result = {"what": "sum of the recorded stage times of dvc.yaml's DAG (a lower bound while stages are unrecorded)",
              "stages": len(rows) + len(unrecorded), "recorded": len(rows), "recorded_seconds": round(total, 1),
              "recorded_hours": round(total / 3600, 2), "by_group_seconds": {k: round(v, 1) for k, v in sorted(by_group.items())},
              "unrecorded": unrecorded, "rows": sorted(rows, key=lambda r: -r["seconds"])}
    write_json(OUT, result)
    for r in result["rows"]:
        print(f"{r['seconds']:>9.1f} s  {r['stage']:<42} {r['source']}")
    print(f"recorded: {len(rows)} of {result['stages']} stages, {total:,.0f} s = {total / 3600:.2f} h; "
          f"unrecorded ({len(unrecorded)}): {', '.join(unrecorded)}")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
