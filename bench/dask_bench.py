"""Prepare throughput through Dask (a 2-worker LocalCluster) against the multiprocessing path (2 spawned
processes), in one run, on the real MNIST and the cards photo folder.

    TLPIPE_MIRROR=../shared/data nice python bench/dask_bench.py [--datasets mnist cards] [--rounds 2]

Works in a throwaway project (params.yaml copied from this repository, files fetched from the mirror
into a temp dir), so nothing lands in data/. The two paths alternate round by round (these machines
are noisy) and the median is kept; the cluster is started once, its start-up timed on its own. Both
paths must write byte-identical shards (checked from the manifests). Prints a table and writes
reports/bench/dask.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.core import parallel  # noqa: E402
from tasks.stages.project import MIRROR_ENV, WORKERS_ENV, Project  # noqa: E402
from tasks.fetch.arrays import fetch  # noqa: E402
from tasks.prepare.arrays import prepare  # noqa: E402


def shard_hashes(manifest: dict) -> dict:
    return {s["file"]: s["sha256"] for split in manifest["splits"].values() for s in split["shards"]}


def timed_prepare(project: Project, key: str) -> tuple[float, dict]:
    start = time.perf_counter()
    manifest = prepare(project, key)
    return time.perf_counter() - start, manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["mnist", "cards"])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "reports" / "bench" / "dask.json"))
    args = ap.parse_args()
    if not os.environ.get(MIRROR_ENV):
        sys.exit(f"set {MIRROR_ENV} (e.g. ../shared/data): the benchmark fetches the real files from it")
    os.environ.pop(parallel.DASK_ENV, None)
    result = {"machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                          "platform": platform.platform(), "load_avg_at_start": os.getloadavg()},
              "workers": args.workers, "rounds": args.rounds, "datasets": {}}
    with tempfile.TemporaryDirectory(prefix="tlpipe-dask-bench-") as tmp:
        project = Project(Path(tmp))
        shutil.copy(ROOT / "params.yaml", project.params_file)
        for key in args.datasets:
            fetch(project, key)
        start = time.perf_counter()
        from distributed import Client

        cluster = parallel.local_cluster(args.workers)
        client = Client(cluster)
        client.run(lambda: __import__("tasks.records.shards") and __import__("tasks.prepare.images"))  # warm imports
        result["dask_cluster_start_s"] = round(time.perf_counter() - start, 2)
        try:
            for key in args.datasets:
                times = {"processes": [], "dask": []}
                hashes = {}
                for _ in range(args.rounds):
                    os.environ[WORKERS_ENV] = str(args.workers)
                    seconds, manifest = timed_prepare(project, key)
                    times["processes"].append(seconds)
                    hashes.setdefault("processes", shard_hashes(manifest))
                    with parallel.using(client):
                        seconds, manifest = timed_prepare(project, key)
                    times["dask"].append(seconds)
                    hashes.setdefault("dask", shard_hashes(manifest))
                n = sum(s["count"] for s in manifest["splits"].values())
                med = {k: statistics.median(v) for k, v in times.items()}
                result["datasets"][key] = {
                    "images": n,
                    "processes": {"seconds": [round(t, 2) for t in times["processes"]],
                                  "images_per_s": round(n / med["processes"])},
                    "dask": {"seconds": [round(t, 2) for t in times["dask"]], "images_per_s": round(n / med["dask"])},
                    "dask_vs_processes": round(med["processes"] / med["dask"], 3),
                    "byte_identical": hashes["processes"] == hashes["dask"],
                }
                print(key, json.dumps(result["datasets"][key]), flush=True)
        finally:
            os.environ.pop(WORKERS_ENV, None)
            client.close()
            cluster.close()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tmp_out = Path(args.out).with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp_out, args.out)
    print(f"\n{'dataset':10} {'images':>8} {'processes img/s':>16} {'dask img/s':>11} {'dask/proc':>10} "
          f"{'identical':>10}   ({args.workers} workers each; cluster start {result['dask_cluster_start_s']} s)")
    for key, r in result["datasets"].items():
        print(f"{key:10} {r['images']:>8,} {r['processes']['images_per_s']:>16,} {r['dask']['images_per_s']:>11,} "
              f"{r['dask_vs_processes']:>10} {str(r['byte_identical']):>10}")


if __name__ == "__main__":
    main()
