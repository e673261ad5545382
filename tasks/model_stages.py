"""The model line's stage functions: train@, evaluate@, export@ and report.

Each takes a Project and a model key, resolves its paths and params, and calls the plain functions
in train/evaluate/export/report. DVC stages (via `tlpipe`) and Prefect tasks both call these.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path

from tasks.config import Project

RANDOM_INIT = "tasks/models.py"  # `init` of a model trained from scratch: its architecture code
DEFAULT_TRAINER = "tasks/train.py"


def model_params(params: dict, key: str) -> dict:
    models = params.get("models") or {}
    if key not in models:
        raise KeyError(f"no model {key!r} in params.yaml models: {sorted(models)}")
    return models[key]


def source_model(project: Project, params: dict, key: str) -> Path | None:
    """The trained model a transfer recipe starts from (`init: models/<key>/model.keras`), or None."""
    init = model_params(params, key).get("init", RANDOM_INIT)
    if init == RANDOM_INIT:
        return None
    path = project.root / init
    if not path.exists():
        raise FileNotFoundError(f"{key}: init model {init} does not exist; train that model first")
    return path


def with_transfer_key(params: dict, key: str) -> dict:
    """params with models[key].transfer_from derived from its `init` path (for train and reports)."""
    recipe = dict(model_params(params, key))
    init = Path(recipe.get("init", RANDOM_INIT))
    recipe["transfer_from"] = init.parent.name if init.parts[:1] == ("models",) else None
    return {**params, "models": {**params["models"], key: recipe}}


def trainer(recipe: dict):
    """The module whose `train(key, params, data_dir, out_dir, init_path)` trains this recipe,
    named by its path in the recipe's `trainer` (a DVC dep of train@): tasks/train.py for the
    small CNNs, tasks/photo (a package) for the MobileNet recipes."""
    path = Path(recipe.get("trainer") or DEFAULT_TRAINER)
    if path.parts[:1] != ("tasks",):
        raise ValueError(f"trainer must be a module or package under tasks/, got {str(path)!r}")
    return importlib.import_module(".".join(path.with_suffix("").parts))


def train_stage(project: Project, key: str) -> dict:
    """Train `key` into models/<key>/, holding that folder's lock (a second training of the same model
    at once is refused, naming the first one's PID)."""
    from tasks.io import output_lock

    params = project.params()
    recipe = model_params(params, key)
    extra = {"teacher": project.root / recipe["teacher"]} if recipe.get("teacher") else {}
    with output_lock(project.root / "models" / key):
        return trainer(recipe).train(key, with_transfer_key(params, key), project.processed_dir(recipe["dataset"]),
                                     project.root / "models" / key, source_model(project, params, key), **extra)


def require_model(path: Path, key: str) -> Path:
    """`path` if it looks like a saved Keras model (a non-empty zip); else an error that says what is
    wrong with it and how to get a good one (Keras would say "File not found" for an empty file)."""
    import zipfile

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no trained model; run `tlpipe train {key}` (or `dvc repro`) first")
    if path.stat().st_size == 0 or not zipfile.is_zipfile(path):
        what = "empty (0 bytes)" if path.stat().st_size == 0 else "not a .keras zip (truncated or damaged)"
        raise ValueError(f"{path}: the model file is {what}; retrain it with `tlpipe train {key}`")
    return path


def gate(params: dict, key: str) -> dict:
    """The evaluate settings for `key`: shared ones plus the model's own `min_accuracy`."""
    cfg = dict(params.get("evaluate") or {})
    recipe = model_params(params, key)
    if "min_accuracy" in recipe:
        cfg["min_accuracy"] = recipe["min_accuracy"]
    return cfg


def evaluate_stage(project: Project, key: str) -> dict:
    from tasks.evaluate import evaluate

    params = project.params()
    return evaluate(require_model(project.root / "models" / key / "model.keras", key),
                    project.processed_dir(model_params(params, key)["dataset"]),
                    project.root / "reports" / key, gate(params, key), metrics_file="evaluation.json")


def export_stage(project: Project, key: str) -> dict:
    """TFLite float32 + int8 with parity; promote to models/<key>/current/ only if blessed.

    The regression half of the gate is checked here, against the last blessed model's metrics in
    models/<key>/current/ (this stage's own persistent output), so no stage reads a later one's.
    """
    from tasks.evaluate import bless
    from tasks.export import export
    from tasks.io import write_json

    params = project.params()
    reports, models = project.root / "reports" / key, project.root / "models" / key
    require_model(models / "model.keras", key)
    (models / "current").mkdir(parents=True, exist_ok=True)  # a declared output, even while empty
    evaluation = json.loads((reports / "evaluation.json").read_text())
    baseline = models / "current" / "metrics.json"
    evaluation.update(blessing=bless(evaluation, gate(params, key), baseline if baseline.exists() else None))
    evaluation["blessed"] = evaluation["blessing"]["blessed"]
    write_json(reports / "metrics.json", evaluation)
    result = export(models / "model.keras", project.processed_dir(model_params(params, key)["dataset"]),
                    models, params.get("export") or {}, metrics_path=reports / "metrics.json",
                    current_dir=models / "current")
    return {"model": key, "blessed": evaluation["blessed"], "current": result["current"],
            **{k: result[k] for k in ("float32", "int8", "keras_accuracy")}}


def report_stage(project: Project) -> dict:
    from tasks.report import write_report

    params = project.params()
    return write_report(project.root / "reports", list(params.get("models") or {}),
                        models_dir=project.root / "models")


def predict_images(model: str, images: list[str], top_k: int) -> str:
    from tasks.predict import format_predictions, predict

    return format_predictions(predict(Path(model), [Path(i) for i in images], top_k=top_k))
