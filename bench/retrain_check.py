"""Is a code change output-neutral for a trained model? Retrain a recorded model with the tree's code into a
temp folder and compare it with models/<key>/ byte for byte (issue 31: "byte identity of a trained model's
weights under the old and the new code"; the old code's model is the one dvc.lock recorded).

    python bench/retrain_check.py mnist_softmax mnist_scratch [--out reports/bench/neutral_<name>.json]

The same trainer a train@ stage runs (tasks.stages.models.trainer), the recipe from params.yaml, the
processed data in data/. Prints one JSON line per model: weights identical (every array's bytes and dtype),
history.json identical, the weights' sha256 before and after.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def check(key: str) -> dict:
    import keras

    from tasks.stages.models import model_params, source_model, trainer
    from tasks.stages.project import Project

    project = Project(ROOT)
    params = project.params()
    recipe = model_params(params, key)
    out = Path(tempfile.mkdtemp(prefix=f"retrain-{key}-"))
    trainer(recipe).train(key, {"models": {key: recipe}}, project.processed_dir(recipe["dataset"]), out,
                          source_model(project, params, key))
    old = keras.models.load_model(ROOT / "models" / key / "model.keras").get_weights()
    new = keras.models.load_model(out / "model.keras").get_weights()
    digest = lambda ws: hashlib.sha256(b"".join(w.tobytes() for w in ws)).hexdigest()  # noqa: E731
    return {"model": key, "n_weight_arrays": len(old),
            "weights_identical": len(old) == len(new) and all(a.dtype == b.dtype and a.tobytes() == b.tobytes()
                                                              for a, b in zip(old, new)),
            "history_identical": (ROOT / "models" / key / "history.json").read_bytes() == (out / "history.json").read_bytes(),
            "weights_sha256_old": digest(old), "weights_sha256_new": digest(new)}


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--out", default=None, help="also write the rows here as JSON")
    args = ap.parse_args(argv)
    rows = []
    for key in args.models:
        rows.append(check(key))
        print(json.dumps(rows[-1]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"command": "python bench/retrain_check.py " + " ".join(args.models),
                                              "rows": rows}, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
