"""Data-side benchmark on the real datasets: prepare throughput (1 process vs all cores),
tf.data read throughput from the shards vs the raw arrays, and per-stage orchestration overhead.

    TLPIPE_MIRROR=../shared/data python bench/data_bench.py [--datasets mnist emnist_letters]

Prints a table and writes reports/bench/data.json. Ratios compare runs made in the same process,
minutes apart, because these machines are noisy.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.stages.project import Project  # noqa: E402
from tasks.fetch.arrays import fetch  # noqa: E402
from tasks.prepare.arrays import assign_splits, formats  # noqa: E402
from tasks.records.shards import read_split, write_dataset  # noqa: E402
from tasks.sources import source  # noqa: E402


def prepare_throughput(project: Project, key: str, workers: int) -> dict:
    """Images/s of load + split + encode + write, as `prepare` does it, into a throwaway dir."""
    p = project.params()["prepare"][key]
    start = time.perf_counter()
    loaded = source(key).load(project.raw_dir(key), formats())
    splits, _ = assign_splits(loaded, p["validation_percentage"], p["testing_percentage"])
    with tempfile.TemporaryDirectory() as out:
        manifest = write_dataset(Path(out), splits, loaded.label_names, shard_mb=p["shard_mb"],
                                 min_shards=p["min_shards"], workers=workers)
    seconds = time.perf_counter() - start
    n = sum(s["count"] for s in manifest["splits"].values())
    return {"workers": workers, "images": n, "seconds": round(seconds, 2), "images_per_s": round(n / seconds)}


def read_throughput(project: Project, key: str, batch: int = 256) -> dict:
    """Images/s iterating the train split: from the shards vs from the raw arrays (parse + tf.data)."""
    import tensorflow as tf

    def drain(ds):
        start, n = time.perf_counter(), 0
        for images, _ in ds:
            n += int(images.shape[0])
        return n, time.perf_counter() - start

    shards = read_split(project.processed_dir(key), "train", batch_size=batch).prefetch(tf.data.AUTOTUNE)
    n_shards, t_shards = drain(shards)
    start = time.perf_counter()
    images, labels = source(key).load(project.raw_dir(key), formats()).splits["train"]
    raw = tf.data.Dataset.from_tensor_slices((images[..., None], labels)).batch(batch).prefetch(tf.data.AUTOTUNE)
    n_raw, t_iter = drain(raw)
    t_raw = time.perf_counter() - start
    return {"shards_images_per_s": round(n_shards / t_shards), "raw_images_per_s": round(n_raw / t_raw),
            "raw_parse_s": round(t_raw - t_iter, 2), "shards_vs_raw": round((n_shards / t_shards) / (n_raw / t_raw), 2)}


def orchestration_overhead() -> dict:
    """What a DVC stage pays before any work: the CLI start, vs a Prefect flow in ephemeral mode."""
    def wall(cmd, env=None):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=env)
        return round(time.perf_counter() - start, 2)

    cli = min(wall([sys.executable, "-m", "tasks.cli", "--help"]) for _ in range(3))
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "PREFECT_HOME": home, "DO_NOT_TRACK": "1", "PREFECT_API_URL": ""}
        code = "from prefect import flow\n@flow\ndef f(): return 1\nf()"
        prefect_flow = wall([sys.executable, "-c", code], env)
    return {"tlpipe_cli_start_s": cli, "prefect_ephemeral_flow_s": prefect_flow,
            "ratio": round(prefect_flow / cli, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--datasets", nargs="+", default=["mnist", "emnist_letters"])
    ap.add_argument("--out", default=str(ROOT / "reports" / "bench" / "data.json"))
    args = ap.parse_args()
    project = Project(ROOT)
    cores = os.cpu_count() or 1
    result = {"machine": {"cores": cores, "python": platform.python_version(), "platform": platform.platform()},
              "datasets": {}}
    for key in args.datasets:
        if not (project.raw_dir(key) / "fetch.json").exists():
            fetch(project, key)
        if not (project.processed_dir(key) / "manifest.json").exists():
            from tasks.stages.data import prepare_stage as prepare
            prepare(project, key)
        single = prepare_throughput(project, key, 1)
        parallel = prepare_throughput(project, key, cores)
        result["datasets"][key] = {
            "prepare_1_process": single, f"prepare_{cores}_processes": parallel,
            "prepare_speedup": round(parallel["images_per_s"] / single["images_per_s"], 2),
            "read_train": read_throughput(project, key)}
    result["orchestration"] = orchestration_overhead()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print_table(result, cores)


def print_table(result: dict, cores: int) -> None:
    print(f"\n{'dataset':16} {'prep 1 proc':>12} {f'prep {cores} proc':>12} {'speedup':>8} "
          f"{'read shards':>12} {'read raw':>10} {'ratio':>6}   (images/s)")
    for key, r in result["datasets"].items():
        rd = r["read_train"]
        print(f"{key:16} {r['prepare_1_process']['images_per_s']:>12,} "
              f"{r[f'prepare_{cores}_processes']['images_per_s']:>12,} {r['prepare_speedup']:>8} "
              f"{rd['shards_images_per_s']:>12,} {rd['raw_images_per_s']:>10,} {rd['shards_vs_raw']:>6}")
    o = result["orchestration"]
    print(f"\nper-stage start: tlpipe CLI {o['tlpipe_cli_start_s']} s, "
          f"Prefect ephemeral flow {o['prefect_ephemeral_flow_s']} s ({o['ratio']}x)")


if __name__ == "__main__":
    main()
