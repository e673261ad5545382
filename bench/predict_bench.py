"""Batch prediction speed: `tlpipe predict --out` (the batch path) against the one-image-at-a-time loop.

    python bench/predict_bench.py models/cards_phone_v2_035/current/model_int8.tflite ../shared/data/cards/train --limit 2000

Takes `--limit` images spread evenly over the folder's images (tasks.evaluate.predict.find_images: recursive,
sorted), reads each file once so that both paths find them in the page cache, then times, in the same
process and alternating `--rounds` times:

- baseline: `tasks.evaluate.predict.predict` (what `tlpipe predict MODEL IMAGE...` runs): one image per
  interpreter call, one interpreter thread, decoding in the same thread;
- batch: `tasks.evaluate.predict.predict_to_parquet` (what `tlpipe predict ... --out` and the Prefect
  deployment predict-folder run): batches of `--batch-size`, decoding in a thread pool while the
  interpreter (num_threads = `--threads`, default every core) runs the batch before, Parquet written.

Each path's best round counts (a shared machine only ever slows a run down); both include loading the
model, the batch path also its Parquet file. The CPU time per image (every thread of the process) is
reported too: on a machine shared with other work it says more than the wall clock, and with it what
each path would do on idle cores (an estimate). Also reported: decoding alone (the thread pool, no
model) and the interpreter alone (random pixels, the same batch) in images/s, the top-1 agreement of
the two paths (the same pixels: expected 1.0), the 1-minute load average before and after. Prints a
table and writes reports/bench/predict.json (or --out). Nothing here asserts on a time; the target is
200 images/s for the int8 MobileNetV2 0.35 phone model on 2 cores.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.core.io import write_json  # noqa: E402

TARGET = 200.0  # images/s, int8 MobileNetV2 0.35 at 224 px on 2 cores


def spread(paths: list, limit: int) -> list:
    """`limit` paths evenly spaced over `paths` (all of them when there are fewer)."""
    if limit <= 0 or len(paths) <= limit:
        return list(paths)
    return [paths[int(i * len(paths) / limit)] for i in range(limit)]


def decode_rate(paths, shape, threads: int) -> float:
    from tasks.evaluate.predict import read_image

    h, w, c = shape
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(lambda p: read_image(p, h, w, c), paths, chunksize=1):
            pass
    return len(paths) / (time.perf_counter() - start)


def invoke_rate(model: Path, batch: int, threads: int, seconds: float = 3.0) -> float:
    from tasks.evaluate.predict import open_model

    interp = open_model(model, threads)
    inp = interp.get_input_details()[0]
    interp.resize_tensor_input(inp["index"], [batch, *inp["shape"][1:]])
    interp.allocate_tensors()
    x = np.random.default_rng(0).integers(0, 256, (batch, *inp["shape"][1:])).astype(inp["dtype"])
    interp.set_tensor(inp["index"], x)
    interp.invoke()  # warm-up
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        n += batch
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a .tflite classifier (labels.txt beside it or in its metadata)")
    ap.add_argument("folder", nargs="+", help="folders (or image files) to classify")
    ap.add_argument("--limit", type=int, default=2000, help="images to time (spread over the folder; 0: all)")
    ap.add_argument("--batch-size", type=int, default=16, help="the batch path's (tlpipe predict --out default: 16)")
    ap.add_argument("--threads", type=int, default=None, help="default: every core this process may use")
    ap.add_argument("--top-k", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds of baseline and batch; best counts")
    ap.add_argument("--out", default=str(ROOT / "reports" / "bench" / "predict.json"))
    args = ap.parse_args()

    from tasks.stages import console

    console.configure()
    import pyarrow.parquet as pq

    from tasks.core.hashing import sha256_file
    from tasks.evaluate.predict import cores, find_images, open_model, predict, predict_to_parquet

    model = Path(args.model)
    threads = args.threads or cores()
    paths = spread(find_images(args.folder), args.limit)
    if not paths:
        raise SystemExit(f"no images in {args.folder}")
    for p in paths:  # the page cache: neither path pays for the first read from disk
        Path(p).read_bytes()
    with console.native_quiet():
        interp = open_model(model)
    detail = interp.get_input_details()[0]
    shape = tuple(int(d) for d in detail["shape"][1:])
    load_before = os.getloadavg()[0]
    print(f"{model} ({shape[0]}x{shape[1]}x{shape[2]} {np.dtype(detail['dtype']).name}) on {len(paths)} images, "
          f"{threads} threads of {cores()} cores, batches of {args.batch_size}, load {load_before:.2f}", flush=True)

    base_s, batch_s, base_cpu, batch_cpu, base_top, batch_top = [], [], [], [], None, None
    with tempfile.TemporaryDirectory(prefix="predict-bench-") as tmp:
        out = Path(tmp) / "predictions.parquet"
        for r in range(args.rounds):
            start, cpu = time.perf_counter(), time.process_time()
            with console.native_quiet():
                results = predict(model, paths, top_k=args.top_k)
            base_s.append(time.perf_counter() - start)
            base_cpu.append(time.process_time() - cpu)
            base_top = [x["top"][0]["label"] if "top" in x else None for x in results]
            start, cpu = time.perf_counter(), time.process_time()
            summary = predict_to_parquet(model, paths, out, top_k=args.top_k, batch_size=args.batch_size,
                                         threads=threads, progress="quiet", emit=lambda line: None,
                                         setup=console.native_quiet)
            batch_s.append(time.perf_counter() - start)
            batch_cpu.append(time.process_time() - cpu)
            batch_top = pq.read_table(out, columns=["label"]).column("label").to_pylist()
            print(f"round {r + 1}: baseline {len(paths) / base_s[-1]:7.1f} images/s "
                  f"({1000 * base_cpu[-1] / len(paths):.2f} ms CPU each), batch {len(paths) / batch_s[-1]:7.1f} "
                  f"images/s ({1000 * batch_cpu[-1] / len(paths):.2f} ms CPU each), load {os.getloadavg()[0]:.2f}",
                  flush=True)
    with console.native_quiet():
        decode = decode_rate(paths[:500], shape, threads)
        invoke = invoke_rate(model, args.batch_size, threads)
        invoke_1 = invoke_rate(model, 1, 1)
    load_after = os.getloadavg()[0]
    baseline, batch = len(paths) / min(base_s), len(paths) / min(batch_s)
    agree = float(np.mean([a == b for a, b in zip(base_top, batch_top)]))
    report = {"model": str(model), "model_sha256": sha256_file(model), "input": list(shape),
              "input_dtype": np.dtype(detail["dtype"]).name, "folders": [str(f) for f in args.folder],
              "images": len(paths), "failed": summary["failed"], "cores": cores(), "threads": threads,
              "batch_size": args.batch_size, "top_k": args.top_k, "rounds": args.rounds,
              "baseline": {"what": "tasks.evaluate.predict.predict: one image per call, 1 interpreter thread",
                           "images_per_s": round(baseline, 1), "seconds": [round(s, 3) for s in base_s],
                           "cpu_ms_per_image": round(1000 * min(base_cpu) / len(paths), 3)},
              "batch": {"what": "tasks.evaluate.predict.predict_to_parquet (tlpipe predict --out)",
                        "images_per_s": round(batch, 1), "seconds": [round(s, 3) for s in batch_s],
                        "cpu_ms_per_image": round(1000 * min(batch_cpu) / len(paths), 3)},
              "ratio": round(batch / baseline, 2),
              "decode_only_images_per_s": round(decode, 1),
              "invoke_only_images_per_s": {f"batch_{args.batch_size}_threads_{threads}": round(invoke, 1),
                                           "batch_1_threads_1": round(invoke_1, 1)},
              # what the CPU time per image allows on idle cores (an estimate, not a measurement: the baseline
              # runs in one thread; the batch path on `threads` cores, assuming they scale)
              "estimate_idle_images_per_s": {"baseline": round(1000 / (1000 * min(base_cpu) / len(paths)), 1),
                                             "batch": round(min(threads, cores()) * len(paths) / min(batch_cpu), 1)},
              "top1_agreement": agree, "target_images_per_s": TARGET, "meets_target": batch >= TARGET,
              "load_1min": {"before": round(load_before, 2), "after": round(load_after, 2)},
              "python": sys.version.split()[0]}
    print(f"{'path':<10} {'images/s':>9}\n{'baseline':<10} {baseline:9.1f}\n{'batch':<10} {batch:9.1f}\n"
          f"ratio {batch / baseline:.2f}x; decoding alone {decode:.0f}/s, interpreter alone {invoke:.0f}/s "
          f"(batch {args.batch_size}, {threads} threads), {invoke_1:.0f}/s (batch 1, 1 thread); top-1 agreement "
          f"{agree:.4f}; target {TARGET:.0f}/s {'met' if batch >= TARGET else 'NOT met'}; load {load_after:.2f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_json(Path(args.out), report)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
