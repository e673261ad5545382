"""The model line's stage functions: train@, evaluate@, export@, report_page@ and report.

Each takes a Project and a model key, resolves its paths and params, and calls the plain functions of
the trainers (tasks/cnn, tasks/photo), tasks/evaluate and tasks/report. DVC stages (via `tlpipe`) and
Prefect tasks both call these.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from tasks.stages.console import export_quiet
from tasks.stages.project import Project

RANDOM_INIT = "tasks/cnn/models.py"  # `init` of a model trained from scratch: its architecture code
DEFAULT_TRAINER = "tasks/cnn"


def recipes(params: dict) -> dict:
    """Every model recipe: params.yaml `models`, each written once (train@, evaluate@, export@,
    report_page@ and a row of the report)."""
    return params.get("models") or {}


def model_params(params: dict, key: str) -> dict:
    models = recipes(params)
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


def trainer(recipe: dict):
    """The module whose `train(key, params, data_dir, out_dir, init_path)` trains this recipe,
    named by its package in the recipe's `trainer` (a DVC dep of train@): tasks/cnn for the small
    CNNs, tasks/photo for the MobileNet recipes (each package's `train` module)."""
    path = Path(recipe.get("trainer") or DEFAULT_TRAINER)
    if path.parts[:1] != ("tasks",):
        raise ValueError(f"trainer must be a module or package under tasks/, got {str(path)!r}")
    name = ".".join(path.with_suffix("").parts)
    module = importlib.import_module(name)
    if hasattr(module, "__path__"):  # a package: its train module trains (the package imports nothing)
        module = importlib.import_module(f"{name}.train")
    return module


def train_stage(project: Project, key: str) -> dict:
    """Train `key` into models/<key>/, holding that folder's lock (a second training of the same model
    at once is refused, naming the first one's PID)."""
    from tasks.core.io import output_lock

    params = project.params()
    recipe = model_params(params, key)
    with output_lock(project.root / "models" / key):
        return trainer(recipe).train(key, {"models": {key: recipe}}, project.processed_dir(recipe["dataset"]),
                                     project.root / "models" / key, source_model(project, params, key))


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
    from tasks.evaluate.metrics import evaluate

    params = project.params()
    return evaluate(require_model(project.root / "models" / key / "model.keras", key),
                    project.processed_dir(model_params(params, key)["dataset"]),
                    project.root / "reports" / key, gate(params, key), metrics_file="evaluation.json",
                    verdict=False)  # the one verdict is export@'s, in metrics.json


def export_stage(project: Project, key: str) -> dict:
    """TFLite in each format of `export.formats` (models/<key>/tflite/) with parity; promote them to
    models/<key>/current/ only if blessed.

    The regression half of the gate is checked here, against the last blessed model's metrics in
    models/<key>/current/ (this stage's own persistent output), so no stage reads a later one's.
    """
    from tasks.evaluate.export import bless_evaluation, export

    params = project.params()
    reports, models = project.root / "reports" / key, project.root / "models" / key
    require_model(models / "model.keras", key)
    (models / "current").mkdir(parents=True, exist_ok=True)  # a declared output, even while empty
    metrics = bless_evaluation(reports / "evaluation.json", reports / "metrics.json", gate(params, key),
                               models / "current" / "metrics.json")
    with export_quiet():  # the converter's printout: hundreds of TensorSpec lines per conversion
        result = export(models / "model.keras", project.processed_dir(model_params(params, key)["dataset"]),
                        models, params.get("export") or {}, metrics_path=reports / "metrics.json",
                        current_dir=models / "current", info=model_description(params, key))
    return {"model": key, "blessed": metrics["blessed"], "current": result["current"],
            **{k: result[k] for k in (*result["formats"], "keras_accuracy")}}


def model_description(params: dict, key: str) -> dict:
    """name and description of a model for its TFLite metadata, from its recipe."""
    recipe = model_params(params, key)
    start = recipe.get("init", RANDOM_INIT)
    how = (recipe.get("arch") or "reference_cnn") if start == RANDOM_INIT else f"from {start}"
    return {"name": key, "description": f"{key}: {recipe['dataset']} image classifier ({how}), "
                                       f"recipe {key} of tlpipe's params.yaml"}


def report_page_stage(project: Project, key: str) -> dict:
    """report_page@<key>: the model's page and its row of the index (reports/summaries/<key>.json), with
    what made it: train@<key>'s code hashes as dvc.lock records them and the machine where a record
    names it (tasks/stages/provenance.py). Both are read at report time and are not deps in dvc.yaml:
    dvc.lock is rewritten by every stage DVC runs (as a dep no page would stay up to date), and the
    train@ entry changes only with a new train.json, which is a dep; the page says so, and whether the
    entry recorded the train.json beside the model."""
    from tasks.report.pages import write_page
    from tasks.stages.provenance import train_provenance

    model_params(project.params(), key)  # an unknown key fails here, not with a missing file
    return write_page(project.root / "reports", key, models_dir=project.root / "models",
                      provenance=train_provenance(project, key))


def report_stage(project: Project) -> dict:
    """report: reports/README.md from every model's page summary, in params order; what made each model
    (code id, hashes, machine) comes from the summaries its page wrote, so the index reads no dvc.lock."""
    from tasks.report.pages import write_index

    params = project.params()
    return write_index(project.root / "reports", list(recipes(params)), params.get("report") or {},
                       checks=list(params.get("check") or {}))


def predict_images(model: str, images: list[str], top_k: int) -> str:
    from tasks.evaluate.predict import format_predictions, predict

    return format_predictions(predict(Path(model), [Path(i) for i in images], top_k=top_k))
