"""End to end under Prefect: a photo folder (zip over HTTP) and pretrained weights (HTTP, pinned)
-> prepare -> bottleneck cache -> head + fine-tune -> evaluate -> TFLite export -> report,
on a tiny MobileNetV2 (alpha 0.35, 32 px)."""
import hashlib
import json

import pytest
import yaml

from dvcproject import REPO, dvc_status, init_dvc_project
from photos import shape_tree, small_prepare, zip_tree


@pytest.fixture(autouse=True)
def no_env_mirror(monkeypatch):
    monkeypatch.delenv("TLPIPE_MIRROR", raising=False)


def tiny_weights(path):
    import keras

    base = keras.applications.MobileNetV2(alpha=0.35, input_shape=(32, 32, 3), include_top=False, weights=None)
    base.save_weights(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def photo_project(tmp_path, http_server):
    photos = tmp_path / "photos"  # the cards layout: train/ and valid/, no test/ (test is carved from train/)
    shape_tree(photos, {"red": 9, "green": 9, "blue": 9}, prefix="train", size=32)
    shape_tree(photos, {"red": 3, "green": 3, "blue": 3}, prefix="valid", size=32)
    archive = zip_tree(photos, tmp_path / "shapes.zip")
    weights_sha = tiny_weights(tmp_path / "tiny.weights.h5")
    http_server.add("shapes.zip", archive.read_bytes())
    http_server.add("tiny.weights.h5", (tmp_path / "tiny.weights.h5").read_bytes())
    root = tmp_path / "proj"
    root.mkdir()
    params = {
        "mirror": "", "runtime": {"workers": 1}, "datasets": {"shapes": "folder"},
        "download": {"retries": 1, "backoff_s": 0.01, "timeout_s": 10},
        "fetch": {"shapes": {"source": f"{http_server.base}/shapes.zip",
                             "sha256": hashlib.sha256(archive.read_bytes()).hexdigest()}},
        "prepare": {"shapes": small_prepare()},
        "weights": {"tiny": {"arch": "mobilenet_v2", "alpha": 0.35, "url": f"{http_server.base}/tiny.weights.h5",
                             "sha256": weights_sha, "mirror_alternatives": [], "file": "", "file_sha256": ""}},
        "features": {"shapes_tiny": {"dataset": "shapes", "base": "mobilenet_v2", "alpha": 0.35, "image_size": 32,
                                     "weights": "tiny", "batch_size": 16}},
        "models": {"shapes_ours": {"dataset": "shapes", "init": "data/features/shapes_tiny", "trainer": "tasks/photo",
                                   "head": "ours", "head_epochs": 3, "head_lr": 0.01, "fine_tune_epochs": 1,
                                   "fine_tune_from": -10, "batch_size": 8, "patience": 5, "min_accuracy": 0.0}},
        "evaluate": {"top_k": 2, "max_regression": 1.0, "grid": 4, "most_confused": 3, "batch_size": 16},
        "export": {"representative_samples": 8, "representative_pool": 2, "latency_runs": 3, "num_threads": 1,
                   "batch_size": 16, "seed": 0},
    }
    params.update({"check": {"shapes": {"image_size": 32}}, "teach": {}, "report": {}})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    init_dvc_project(root, keep_params=True)  # the repository's dvc.yaml: it grows from params alone
    return root


def fixture_dvc_yaml(models: dict) -> dict:
    """The repository's dvc.yaml, with the report stage's per-model files (listed by hand for the
    repository's models) written for the fixture's models instead."""
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())
    report = spec["stages"].get("report")
    if report:
        ours = list(yaml.safe_load((REPO / "params.yaml").read_text())["models"])

        def remap(entries):
            out = []
            for entry in entries:
                path = next(iter(entry)) if isinstance(entry, dict) else entry
                if path == "reports/transfer.png":
                    continue  # the transfer figure is drawn for the repository's digits models only
                hit = next((k for k in ours if f"/{k}/" in path), None)
                for key in (list(models) if hit else [None]):
                    new = path.replace(f"/{hit}/", f"/{key}/") if hit else path
                    item = {new: entry[path]} if isinstance(entry, dict) else new
                    if item not in out:
                        out.append(item)
            return out

        report["deps"], report["outs"] = remap(report.get("deps", [])), remap(report.get("outs", []))
    return spec


def test_photo_pipeline_flow_end_to_end(tmp_path, http_server, prefect_harness):
    from flows.pipeline import pipeline

    root = photo_project(tmp_path, http_server)
    result = pipeline(root=str(root), models=True)
    summary = result["datasets"]

    assert sum(summary["shapes"].values()) == 36
    assert {"fetch@shapes", "prepare@shapes", "check@shapes", "fetch_weights@tiny", "features@shapes_tiny", "train@shapes_ours",
            "evaluate@shapes_ours", "export@shapes_ours", "report"} <= set(result["ran"])
    assert dvc_status(root) == {}  # the whole DAG, models included, recorded in dvc.lock
    cache = json.loads((root / "data/features/shapes_tiny/features.json").read_text())
    assert cache["base"] == "mobilenet_v2" and cache["image_size"] == 32 and "speed" not in cache
    speed = json.loads((root / "reports/features/shapes_tiny.json").read_text())  # kept out of the cache
    assert speed["count"] == 36 and speed["images_per_s"] > 0
    history = json.loads((root / "models/shapes_ours/history.json").read_text())
    assert [h["phase"] for h in history] == ["head"] * 3 + ["fine_tune"]
    metrics = json.loads((root / "reports/shapes_ours/metrics.json").read_text())
    assert metrics["tflite"]["float32"]["agreement"] >= 0.99
    assert list(metrics["tflite"]) == ["float32", "float16", "dynamic", "int8"]  # export.formats' default
    tflite = root / "models/shapes_ours/tflite"  # one DVC output: each format of export.formats, labels.txt
    assert sorted(p.name for p in tflite.iterdir()) == ["labels.txt", "model_dynamic.tflite", "model_float16.tflite",
                                                        "model_float32.tflite", "model_int8.tflite"]
    assert (tflite / "model_int8.tflite").stat().st_size < (tflite / "model_float32.tflite").stat().st_size
    assert (tflite / "labels.txt").read_text().split() == ["blue", "green", "red"]
    assert "shapes_ours" in (root / "reports/README.md").read_text()
    # scored on the test split carved from train/, which nothing picked; validation (valid/) only picked epochs
    manifest = json.loads((root / "data/processed/shapes/manifest.json").read_text())
    n_test = manifest["splits"]["test"]["count"]
    assert n_test > 0 and manifest["splits"]["validation"]["count"] == 9
    assert metrics["split"] == "test" and metrics["test_count"] == n_test
    assert metrics["split_origin"] == "20% of train/, carved by a stable hash of the relative path"
    assert json.loads((root / "models/shapes_ours/tflite.json").read_text())["split"] == "test"  # export's parity
    assert metrics["blessing"]["reason"].startswith(f"accuracy {metrics['accuracy']:.4f} >=")  # the gate: test
    page = (root / "reports/shapes_ours/README.md").read_text()
    assert (f"**Scored on:** the test split ({n_test} examples: 20% of train/, carved by a stable hash of the "
            "relative path). Validation (9 examples) only picked the checkpoint") in page
    row = next(ln for ln in (root / "reports/README.md").read_text().splitlines() if ln.startswith("| shapes_ours |"))
    assert row.split(" | ")[2] == "test"  # the index's side-by-side row says which split
