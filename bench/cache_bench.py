"""Bottleneck-cache formats: today's `.npz` against memory-mapped Arrow IPC (and numpy's own `.npy` memory map).

    python bench/cache_bench.py [--cache data/features/cards_v2_100] [--maps 2000] [--rounds 5]

The cache a photo head trains on (tasks/photo/features.py) is one file per split: features float32 N x D
(pooled) or float16 N x H x W x D (`pool: false`, feature maps), labels int64, ids. Each format holds the
same arrays, uncompressed:
- npz: `np.savez` (today's); a zip, so numpy cannot memory-map it: every read copies the whole array;
- npy: `np.save` per array, opened with `np.load(mmap_mode="r")`;
- arrow: one Arrow IPC file (features as FixedSizeList rows, labels, ids; the shape in the schema's
  metadata), opened with `pa.memory_map` + `pa.ipc.open_file`, features viewed zero-copy as numpy.
Cases, each timed in a fresh child process (so memory is that read's alone):
- `load`: open the split and touch every value (`x.sum()`): what `features.load_split` does for a head;
- `tf_epoch`: one shuffled epoch of batches of 64 through `tf.data.Dataset.from_tensor_slices`, as the head
  trainer feeds them (TF imported before the clock starts; `from_tensor_slices` copies the arrays into a
  tensor in every format);
- `sample`: 200 random batches of 64 rows, each gathered into a new array: what a reader of a cache larger
  than memory does.
Reported per case: median seconds over `--rounds` (the formats take turns within a round, so a slow spell
of this noisy machine hits all of them), the child's peak anonymous memory growth (RssAnon: memory that is
not page cache), the file size and the ratio to npz. The files are in the page cache (they were just
written and read once to warm up): a cold read is a disk read of the same bytes in every format.
Inputs: the real pooled cache `--cache` (its train split) and a synthetic feature-maps cache of `--maps`
images of MobileNetV2's 7 x 7 x 1280 float16 maps (the values do not matter to uncompressed I/O).
Prints a table and writes reports/bench/cache.json. Nothing here asserts on a time.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FORMATS = ("npz", "npy", "arrow")
CASES = ("load", "sample", "tf_epoch")
BATCHES, BATCH = 200, 64


def write(fmt: str, arrays: dict, path: Path) -> Path:
    """`arrays` (features, labels, ids) as `fmt` under `path` (a file stem); returns the path written."""
    if fmt == "npz":
        np.savez(path.with_suffix(".npz"), **arrays)
        return path.with_suffix(".npz")
    if fmt == "npy":
        path.mkdir(parents=True, exist_ok=True)
        for name, a in arrays.items():
            np.save(path / f"{name}.npy", a)
        return path
    import pyarrow as pa

    x = arrays["features"]
    flat = pa.array(x.reshape(-1))
    rows = pa.FixedSizeListArray.from_arrays(flat, int(np.prod(x.shape[1:])))
    table = pa.table({"features": rows, "labels": arrays["labels"], "ids": arrays["ids"]},
                     metadata={"shape": json.dumps(list(x.shape[1:]))})
    out = path.with_suffix(".arrow")
    with pa.OSFile(str(out), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=len(x))  # one record batch: one contiguous buffer to map
    return out


def open_split(fmt: str, path: Path):
    """(features, labels) of a written split: npz copies into memory, npy and arrow map the file."""
    if fmt == "npz":
        with np.load(path) as f:
            return f["features"], f["labels"]
    if fmt == "npy":
        return np.load(path / "features.npy", mmap_mode="r"), np.load(path / "labels.npy", mmap_mode="r")
    import pyarrow as pa

    table = pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()
    shape = json.loads(table.schema.metadata[b"shape"])
    col = table.column("features").chunk(0)
    x = col.values.to_numpy(zero_copy_only=True).reshape(len(col), *shape)
    return x, table.column("labels").chunk(0).to_numpy(zero_copy_only=True)


def rss_anon_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    return 0


def child(fmt: str, case: str, path: Path) -> dict:
    """One timed read in this (fresh) process."""
    if fmt == "arrow":
        import pyarrow  # noqa: F401  (import time is not the format's read time)
    if case == "tf_epoch":
        import tensorflow as tf
    before = rss_anon_kb()
    peak = before
    start = time.perf_counter()
    x, y = open_split(fmt, path)
    if case == "load":
        total = float(x.sum(dtype=np.float64)) + float(y.sum())
        peak = max(peak, rss_anon_kb())
    elif case == "tf_epoch":
        ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(y), seed=0).batch(BATCH)
        total = 0.0
        for xb, yb in ds:
            total += float(tf.reduce_sum(tf.cast(xb, tf.float64))) + float(tf.reduce_sum(yb))
            peak = max(peak, rss_anon_kb())
    else:
        rng = np.random.default_rng(0)
        total = 0.0
        for _ in range(BATCHES):
            idx = np.sort(rng.integers(0, len(y), BATCH))
            batch = np.array(x[idx])
            total += float(batch[:, 0].sum(dtype=np.float64)) + float(y[idx].sum())
            peak = max(peak, rss_anon_kb())
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rss_anon_mb": (peak - before) / 1024, "check": total}


def run_child(fmt: str, case: str, path: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", fmt, case, str(path)], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir()) if path.is_dir() else path.stat().st_size


def measure(name: str, arrays: dict, tmp: Path, rounds: int) -> dict:
    result = {"count": int(len(arrays["labels"])), "shape": list(arrays["features"].shape[1:]),
              "dtype": str(arrays["features"].dtype), "formats": {}}
    paths = {}
    for fmt in FORMATS:
        start = time.perf_counter()
        paths[fmt] = write(fmt, arrays, tmp / f"{name}_{fmt}")
        result["formats"][fmt] = {"write_s": round(time.perf_counter() - start, 3), "bytes": size_of(paths[fmt])}
    for case in CASES:
        runs = {fmt: [] for fmt in FORMATS}
        checks = set()
        for r in range(rounds + 1):  # round 0 warms the page cache
            for fmt in FORMATS:
                got = run_child(fmt, case, paths[fmt])
                checks.add(round(got["check"], 3))
                if r:
                    runs[fmt].append(got)
        if len(checks) != 1:
            raise AssertionError(f"{name}/{case}: the formats read different values: {checks}")
        for fmt in FORMATS:
            result["formats"][fmt][case] = {
                "seconds": round(statistics.median(g["seconds"] for g in runs[fmt]), 4),
                "rss_anon_mb": round(max(g["rss_anon_mb"] for g in runs[fmt]), 1)}
        base = result["formats"]["npz"][case]["seconds"]
        for fmt in FORMATS:
            result["formats"][fmt][case]["vs_npz"] = round(result["formats"][fmt][case]["seconds"] / base, 3)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", default=str(ROOT / "data" / "features" / "cards_v2_100"))
    ap.add_argument("--maps", type=int, default=2000, help="images in the synthetic feature-maps cache (0: none)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "reports" / "bench" / "cache.json"))
    ap.add_argument("--child", nargs=3, metavar=("FORMAT", "CASE", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        fmt, case, path = args.child
        print(json.dumps(child(fmt, case, Path(path))))
        return
    report = {"machine": {"cores": os.cpu_count(), "load_average_at_start": list(os.getloadavg()),
                          "python": platform.python_version(), "platform": platform.platform()},
              "args": {"cache": args.cache, "maps": args.maps, "rounds": args.rounds,
                       "sample": {"batches": BATCHES, "batch": BATCH}}, "caches": {}}
    with tempfile.TemporaryDirectory(prefix="cache_bench_") as tmp:
        with np.load(Path(args.cache) / "train.npz") as f:
            pooled = {k: f[k] for k in ("features", "labels", "ids")}
        report["caches"]["pooled"] = measure("pooled", pooled, Path(tmp), args.rounds)
        if args.maps:
            rng = np.random.default_rng(0)
            n = args.maps
            maps = {"features": rng.standard_normal((n, 7, 7, 1280), dtype=np.float32).astype(np.float16),
                    "labels": rng.integers(0, 53, n).astype(np.int64), "ids": np.array([f"{i:06d}" for i in range(n)])}
            report["caches"]["maps"] = measure("maps", maps, Path(tmp), args.rounds)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    head = f"{'cache':8} {'format':6} {'MB':>7} {'write s':>8}"
    for case in CASES:
        head += f" {case + ' s':>11} {'x npz':>6} {'MB':>6}"
    print(head)
    for name, c in report["caches"].items():
        for fmt, r in c["formats"].items():
            line = f"{name:8} {fmt:6} {r['bytes'] / 1e6:>7.1f} {r['write_s']:>8.3f}"
            for case in CASES:
                line += f" {r[case]['seconds']:>11.4f} {r[case]['vs_npz']:>6} {r[case]['rss_anon_mb']:>6.1f}"
            print(line)


if __name__ == "__main__":
    main()
