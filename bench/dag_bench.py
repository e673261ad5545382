"""No-op cost of the one DAG: a Prefect run of dvc.yaml's stages when nothing changed, against a
no-op `dvc repro` of the same stages, in one run (same machine, minutes apart).

    python bench/dag_bench.py [--rounds 3]                          # a fixture project (the data DAG)
    python bench/dag_bench.py --project . --models --rounds 1       # an existing, up-to-date project

The fixture is tests/project.py's tiny MNIST + EMNIST mirror in a fresh git + DVC repo with this
repository's dvc.yaml; it is built once by `dvc repro`, so the Prefect runs also show that they
accept what DVC made. Measured, each a median over `--rounds`:
  - `dvc repro <targets>`            (a subprocess, as a user types it)
  - `tlpipe pipeline`                (a subprocess: imports, Prefect's ephemeral API start, the flow)
  - `tlpipe pipeline` against a running Prefect server (`prefect server start`, PREFECT_API_URL set:
                                     how a scheduled deployment runs; `--no-server` leaves it out)
  - the `pipeline` flow in-process   (the API already up, imports done: the flow's own cost)
Prints a table and writes reports/bench/dag.json.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from tasks.core.io import write_json  # noqa: E402


def env(prefect_home: str) -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "DVC_NO_ANALYTICS": "1", "DO_NOT_TRACK": "1", "PREFECT_HOME": prefect_home,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "TF_CPP_MIN_LOG_LEVEL": "2",
            # a loaded machine can take longer than Prefect's default 20 s to start the ephemeral API
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS":
                os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")}


def timed(cmd: list[str], cwd: Path, environ: dict) -> tuple[float, str]:
    """Seconds a command took and its stdout (then stderr)."""
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=environ, capture_output=True, text=True, timeout=3600)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return seconds, done.stdout + "\n" + done.stderr


def cli_result(out: str) -> dict:
    """The JSON `tlpipe pipeline` prints last on stdout (its logs go to stderr)."""
    text = "\n" + out
    start = text.rfind("\n{\n")
    end = text.find("\n}", start)
    return json.loads(text[start + 1:end + 2]) if start >= 0 and end >= 0 else {}


@contextlib.contextmanager
def prefect_server(environ: dict, home: Path):
    """`prefect server start` on a free loopback port with its own PREFECT_HOME; yields its API URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    home.mkdir(parents=True, exist_ok=True)
    log = open(home / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                             "--port", str(port)], env={**environ, "PREFECT_HOME": str(home)},
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"prefect server did not start (see {home / 'server.log'})")
            time.sleep(1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def fixture_project(where: Path, environ: dict) -> Path:
    """tests/project.py's fixture in a DVC repo, built by `dvc repro` of its data stages."""
    from dvcproject import init_dvc_project
    from project import write_mirror, write_params

    pins = write_mirror(where / "mirror", mat=False, test_images=False)
    root = where / "proj"
    write_params(root, mirror=str(where / "mirror"), pins=pins)
    init_dvc_project(root)
    seconds, out = timed(["dvc", "repro", "fetch", "prepare"], root, environ)
    print(f"fixture built by dvc repro in {seconds:.1f} s ({out.count('Running stage')} stages)")
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--project", help="an existing DVC project, up to date for the targets (default: a fixture)")
    ap.add_argument("--models", action="store_true", help="the whole DAG (tlpipe pipeline --models; dvc repro)")
    ap.add_argument("--no-server", action="store_true", help="skip the run against a started Prefect server")
    ap.add_argument("--out", default=str(ROOT / "reports" / "bench" / "dag.json"))
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="tlpipe-dag-bench-") as tmp:
        environ = env(str(Path(tmp) / "prefect-home"))
        os.environ.update({k: environ[k] for k in ("PREFECT_HOME", "DO_NOT_TRACK", "DVC_NO_ANALYTICS",
                                                    "PREFECT_SERVER_ANALYTICS_ENABLED",
                                                    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS")})
        root = Path(args.project).resolve() if args.project else fixture_project(Path(tmp), environ)
        dvc_targets = [] if args.models else ["fetch", "prepare"]
        tlpipe = [sys.executable, "-m", "tasks.cli", "pipeline", *(["--models"] if args.models else [])]
        status = subprocess.run(["dvc", "status", "--json", *dvc_targets], cwd=root, env=environ,
                                capture_output=True, text=True)
        if status.returncode != 0 or json.loads(status.stdout.strip().splitlines()[-1] or "{}"):
            raise SystemExit(f"{root}: `dvc status {' '.join(dvc_targets)}` is not clean, a no-op run would "
                             f"do work:\n{status.stdout[-2000:]}{status.stderr[-2000:]}")
        from flows import dag
        from flows.pipeline import pipeline

        import yaml

        datasets = list(yaml.safe_load((root / "params.yaml").read_text()).get("datasets") or [])
        n_stages = len(dag.stages(root, None if args.models else datasets))
        served = "tlpipe pipeline (subprocess, Prefect server running)"
        times = {"dvc repro": [], "tlpipe pipeline (subprocess, ephemeral API)": [], served: [],
                 "pipeline flow (in-process)": []}
        server = contextlib.nullcontext() if args.no_server else prefect_server(environ, Path(tmp) / "server-home")
        with server as api_url:
            for r in range(args.rounds):
                seconds, out = timed(["dvc", "repro", *dvc_targets], root, environ)
                assert "Running stage" not in out, f"dvc repro was not a no-op:\n{out[-2000:]}"
                times["dvc repro"].append(seconds)
                runs = [("tlpipe pipeline (subprocess, ephemeral API)", environ)]
                runs += [(served, {**environ, "PREFECT_API_URL": api_url})] if api_url else []
                for name, run_env in runs:
                    seconds, out = timed(tlpipe, root, run_env)
                    result = cli_result(out)
                    assert result.get("ran") == [] and result.get("restored") == [], f"not a no-op:\n{out[-2000:]}"
                    times[name].append(seconds)
                start = time.perf_counter()
                result = pipeline(root=str(root), models=args.models)
                seconds = time.perf_counter() - start
                assert result["ran"] == [] and result["restored"] == [], result
                if r > 0 or args.rounds == 1:  # the first in-process call also starts the ephemeral API
                    times["pipeline flow (in-process)"].append(seconds)
                print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items() if v))

    base = statistics.median(times["dvc repro"])
    rows = {k: {"median_s": round(statistics.median(v), 2), "runs_s": [round(x, 2) for x in v],
                "ratio_to_dvc_repro": round(statistics.median(v) / base, 2)} for k, v in times.items() if v}
    report = {"what": "no-op run of the same DVC stages", "project": "fixture" if not args.project else str(root),
              "stages": n_stages, "models": args.models, "rounds": args.rounds,
              "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                          "load_1min": round(os.getloadavg()[0], 2)},
              "results": rows}
    print(f"\nno-op run of {n_stages} DVC stages ({report['project']}), median of {args.rounds}:\n")
    print("| run | median s | x dvc repro |\n|---|---:|---:|")
    for k, v in rows.items():
        print(f"| {k} | {v['median_s']:.2f} | {v['ratio_to_dvc_repro']:.2f} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_json(Path(args.out), report)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
