"""Is input resolution a lever for the cards models? The head phase of a photo recipe at several sizes.

    python bench/resolution_bench.py [--recipe cards_ours_v2_100] [--sizes 224 320] [--features cards_v2_100]

For each size: the bottleneck cache of the recipe's base at that input size (tasks.photo.features
.compute_features with the `features.<f>` entry's base, alpha and ImageNet weights, `image_size` changed;
the 224 px source photos are resized up inside the model, as a recipe with `image_size` would) and then the
recipe's head phase on it (tasks.photo.train.train with `fine_tune_epochs: 0`: the same code, epochs,
learning rate and early stopping as phase 1 of the DAG's model). Reported per size: the head's best
validation accuracy, the cache's images/s and the head's fit seconds. The head phase is a cheap proxy for
the fine-tuned model (it sees the features the fine-tune starts from); the fine-tune's cost scales with the
pixels (x (S/224)^2). Prints a table and writes reports/bench/resolution_<recipe>.json.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.core.io import write_json  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="cards_ours_v2_100")
    ap.add_argument("--features", default="cards_v2_100", help="the features entry the recipe's cache comes from")
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 320])
    ap.add_argument("--out")
    args = ap.parse_args()
    from tasks.photo.features import compute_features
    from tasks.photo.train import train

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    entry = dict(params["features"][args.features])
    recipe = {**params["models"][args.recipe], "fine_tune_epochs": 0, "fine_tune_schedule": "constant"}
    recipe.pop("init", None)
    processed = ROOT / "data" / "processed" / entry["dataset"]
    weights = ROOT / "data" / "weights" / entry["weights"]
    report = {"recipe": args.recipe, "features": args.features, "load_1min_at_start": round(os.getloadavg()[0], 2),
              "head": {k: recipe[k] for k in ("head", "head_epochs", "head_lr", "dropout", "label_smoothing")},
              "sizes": {}}
    print(f"{'size':>5} {'head val acc':>13} {'cache img/s':>12} {'cache s':>8} {'head s':>7}")
    with tempfile.TemporaryDirectory(prefix="resolution_bench_") as tmp:
        for size in args.sizes:
            cache = Path(tmp) / f"features_{size}"
            info = compute_features(processed, weights, cache, {**entry, "image_size": size})
            start = time.perf_counter()
            summary = train(args.recipe, {**recipe, "image_size": size}, processed, Path(tmp) / f"model_{size}",
                            init_path=cache)
            row = {"head_val_accuracy": summary["best_val_accuracy"], "head_epochs_run": summary["epochs_run"],
                   "head_fit_s": summary["fit_seconds"], "wall_s": round(time.perf_counter() - start, 1),
                   "cache_images_per_s": info["speed"]["images_per_s"], "cache_s": info["speed"]["seconds"]}
            report["sizes"][str(size)] = row
            print(f"{size:>5} {row['head_val_accuracy']:>13.4f} {row['cache_images_per_s']:>12} "
                  f"{row['cache_s']:>8} {row['head_fit_s']:>7}", flush=True)
    out = Path(args.out or ROOT / "reports" / "bench" / f"resolution_{args.recipe}.json")
    write_json(out, report)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
