"""The model line's stage functions wired end to end on a tiny MNIST-format fixture."""
import json

import yaml

from project import write_mirror, write_params
from tasks.stages.project import Project
from tasks.stages.data import fetch_stage as fetch
from tasks.stages.models import evaluate_stage, export_stage, report_page_stage, report_stage, train_stage
from tasks.stages.data import prepare_stage as prepare


SMALL = {"arch": "reference_cnn", "epochs": 1, "batch_size": 16, "seed": 1, "patience": 2}


def tiny_project(tmp_path):
    pins = write_mirror(tmp_path / "mirror", mat=False, idx=False)
    root = tmp_path / "proj"
    write_params(root, mirror=str(tmp_path / "mirror"), pins=pins, datasets=("mnist",))
    params = yaml.safe_load((root / "params.yaml").read_text())
    params.update({
        "check": {"mnist": {}},
        "models": {
            "mnist_scratch": {"dataset": "mnist", "init": "tasks/cnn/models.py", "trainer": "tasks/cnn", **SMALL,
                              "min_accuracy": 0.0},
            "mnist_transfer_conv": {"dataset": "mnist", "init": "models/mnist_scratch/model.keras",
                                    "trainer": "tasks/cnn", **SMALL, "freeze": "conv", "min_accuracy": 0.0},
        },
        "evaluate": {"top_k": 3, "max_regression": 1.0, "grid": 4, "most_confused": 3},
        "export": {"representative_samples": 16, "latency_runs": 3, "batch_size": 32},
    })
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    project = Project(root)
    fetch(project, "mnist")
    prepare(project, "mnist")
    return project


def test_train_evaluate_export_report_in_dependency_order(tmp_path):
    project = tiny_project(tmp_path)
    for key in ("mnist_scratch", "mnist_transfer_conv"):
        summary = train_stage(project, key)
        assert summary["epochs_run"] == 1
        evaluate_stage(project, key)
        result = export_stage(project, key)
        assert result["blessed"] and result["current"]
    metrics = json.loads((project.root / "reports/mnist_transfer_conv/metrics.json").read_text())
    assert {"accuracy", "blessed", "tflite"} <= metrics.keys()
    assert list(metrics["tflite"]) == ["float32", "float16", "dynamic", "int8"]  # export.formats' default
    assert (project.root / "models/mnist_transfer_conv/current/model_int8.tflite").exists()
    train = json.loads((project.root / "models/mnist_transfer_conv/train.json").read_text())
    assert train["recipe"]["transfer_from"] == "mnist_scratch"
    for key in ("mnist_scratch", "mnist_transfer_conv"):
        report_page_stage(project, key)
    index = report_stage(project)["markdown"]
    assert "mnist_transfer_conv" in index and (project.root / "reports/mnist_scratch/README.md").exists()
