"""One lever at a time on a cards recipe: train a variant, score it on the test split, record it.

    TLPIPE_MIRROR=../shared/data python bench/cards_levers.py NAME [--recipe cards_phone_v2_035] \
        [--set seed=7] [--set 'augment={crop: 0.1, turn180: false}'] ...

The variant is params.yaml's `models.<recipe>` with each `--set key=value` (a YAML value) over it,
validated like params.yaml itself, and trained by the same trainer a `train@` stage runs (tasks/photo),
into runs/levers/NAME/ (not a DVC output: a lever run is a measurement, the recipe that wins goes into
params.yaml and its DVC stage is what the reports show). It is then scored by evaluate@'s own function
(tasks.evaluate.metrics.evaluate, its reports in runs/levers/NAME/report/): Keras on the test split, which
picked nothing (validation picked the checkpoint), plus the test-time views of `evaluate.tta` (the half
turn where the dataset names none) reported apart. One entry per NAME in reports/bench/cards_levers.json: the overrides, test
and TTA accuracy, the best validation accuracy, fit seconds per phase, the machine and the command.
Run them one at a time: the fit times are CPU minutes on this machine only when nothing else runs.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OUT = ROOT / "reports" / "bench" / "cards_levers.json"


def variant(params: dict, recipe_key: str, sets: list[str]) -> dict:
    """The recipe with each `key=value` (YAML) over it; the result validated as a recipe of params.yaml."""
    import yaml

    from tasks.stages.validate import validate

    recipe = dict(params["models"][recipe_key])
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected key=value")
        recipe[key.strip()] = yaml.safe_load(value)
    validate({**params, "models": {**params["models"], recipe_key: recipe}})
    return recipe


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("name", help="this lever run's name (its row in reports/bench/cards_levers.json)")
    ap.add_argument("--recipe", default="cards_phone_v2_035", help="the params.yaml recipe it starts from")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a recipe key to change")
    args = ap.parse_args(argv)

    from tasks.core.io import write_json
    from tasks.evaluate.metrics import evaluate
    from tasks.photo import train as photo_train
    from tasks.stages.models import source_model
    from tasks.stages.project import Project

    project = Project(ROOT)
    params = project.params()
    recipe = variant(params, args.recipe, args.set)
    params = {**params, "models": {**params["models"], args.recipe: recipe}}
    out = ROOT / "runs" / "levers" / args.name
    out.mkdir(parents=True, exist_ok=True)
    data = project.processed_dir(recipe["dataset"])
    start = time.time()
    summary = photo_train.train(args.recipe, {"models": {args.recipe: recipe}}, data, out,
                                source_model(project, params, args.recipe))
    wall = time.time() - start
    views = (params.get("evaluate", {}).get("tta") or {}).get(recipe["dataset"]) or ["turn180"]
    scored = evaluate(out / "model.keras", data, out / "report",  # evaluate@'s own scoring, into the run's folder
                      {**params.get("evaluate", {}), "tta": {recipe["dataset"]: views}}, verdict=False)
    row = {
        "recipe": args.recipe, "set": args.set, "test_accuracy": scored["accuracy"],
        "test_count": scored["test_count"], "tta": scored["tta"],
        "best_val_accuracy": summary["best_val_accuracy"], "epochs_per_phase": summary["epochs_per_phase"],
        "fit_seconds": summary["fit_seconds"], "fit_seconds_per_phase": summary["fit_seconds_per_phase"],
        "wall_seconds": round(wall, 1), "params": summary["params"],
        "command": "python bench/cards_levers.py " + " ".join([args.name, "--recipe", args.recipe,
                                                               *[f"--set '{s}'" for s in args.set]]),
        "machine": {"cpus": os.cpu_count(), "processor": platform.machine()},
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    table = json.loads(OUT.read_text()) if OUT.exists() else {}
    table[args.name] = row
    write_json(OUT, dict(sorted(table.items())))
    print(f"{args.name}: test {row['test_accuracy']:.4f}, with the half turn {row['tta']['accuracy']:.4f}, "
          f"best val {row['best_val_accuracy']:.4f}, fit {row['fit_seconds']:.0f} s -> {OUT.relative_to(ROOT)}")
    return row


if __name__ == "__main__":
    main()
