"""The report: a page per model leaves its row in reports/summaries/, the index is built from that
folder in params order, and the comparison figure shows the models params.yaml names."""
import json

import pytest
import yaml

from tasks.stages.project import Project
from tasks.stages.models import report_page_stage, report_stage


def fake_model(root, key, dataset, acc, init="tasks/cnn/models.py"):
    """What train@, evaluate@ and export@ leave for a model (enough for its page)."""
    history = [{"epoch": e, "accuracy": 0.5 + 0.1 * e, "loss": 1.0 - 0.1 * e, "val_accuracy": acc - 0.1 + 0.05 * e,
                "val_loss": 1.1 - 0.1 * e} for e in range(3)]
    recipe = {"dataset": dataset, "arch": "reference_cnn", "init": init, "freeze": "none",
              "transfer_from": init.split("/")[1] if init.startswith("models/") else None}
    (root / "models" / key).mkdir(parents=True)
    (root / "models" / key / "history.json").write_text(json.dumps(history))
    (root / "models" / key / "train.json").write_text(json.dumps({"recipe": recipe, "epochs_run": 3, "fit_seconds": 9.5,
                                                                 "best_val_accuracy": acc}))
    (root / "reports" / key).mkdir(parents=True)
    tflite = {k: {"accuracy": acc, "agreement": 1.0, "bytes": 1000, "latency_ms": 0.5} for k in ("float32", "int8")}
    (root / "reports" / key / "metrics.json").write_text(json.dumps(
        {"accuracy": acc, "split": "test", "blessed": acc > 0.9, "blessing": {"reason": "r"}, "tflite": tflite}))
    (root / "reports" / key / "per_class.json").write_text(json.dumps({"per_class": {}, "most_confused": []}))


def project(tmp_path, keys, transfer_models):
    recipes = {k: {"dataset": "mnist", "init": "tasks/cnn/models.py", "trainer": "tasks/cnn", "min_accuracy": 0.5}
               for k in keys}
    params = {"models": recipes, "check": {"mnist": {}}, "teach": {},
              "report": {"transfer": {"models": transfer_models, "dashed": [], "title": "t", "caption": "c"}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for i, k in enumerate(keys):
        fake_model(tmp_path, k, "mnist", 0.95 - 0.01 * i)
    return Project(tmp_path)


def test_a_model_added_in_params_gets_a_page_and_a_row(tmp_path):
    p = project(tmp_path, ["a_model", "b_model", "new_model"], ["a_model", "new_model"])
    for key in ("a_model", "b_model", "new_model"):
        report_page_stage(p, key)
        assert (tmp_path / "reports" / key / "README.md").exists() and (tmp_path / "reports" / key / "curves.png").exists()
        assert json.loads((tmp_path / f"reports/summaries/{key}.json").read_text())["key"] == key
    index = report_stage(p)["markdown"]
    rows = [line for line in index.splitlines() if line.startswith("| [")]
    assert [r.split("]")[0][3:] for r in rows] == ["a_model", "b_model", "new_model"]   # params order
    assert "| [new_model](new_model/README.md) | mnist | reference_cnn |" in index
    assert (tmp_path / "reports/transfer.png").exists() and "## Transfer learning" in index and "\nc\n" in index


def test_the_index_names_a_missing_page_and_skips_the_figure_when_unconfigured(tmp_path):
    p = project(tmp_path, ["a_model", "b_model"], [])
    report_page_stage(p, "a_model")
    with pytest.raises(FileNotFoundError, match=r"summaries/b_model.json: no page summary .* report_page@b_model"):
        report_stage(p)
    report_page_stage(p, "b_model")
    index = report_stage(p)["markdown"]
    assert "transfer.png" not in index and (tmp_path / "reports/transfer.png").exists()  # the declared out, empty
    with pytest.raises(KeyError, match="no model 'nope'"):
        report_page_stage(p, "nope")


def test_a_params_table_lists_its_models_with_parameters_and_int8_numbers():
    from tasks.report.pages import model_table

    rows = {"a": {"key": "a", "arch": "softmax", "params": 7850, "split": "test", "accuracy": 0.9259, "epochs_run": 10,
                  "seconds": 59.4, "tflite": {"int8": {"accuracy": 0.9257, "agreement": 0.9957}}},
            "b": {"key": "b", "arch": "mlp", "params": None, "accuracy": None, "epochs_run": None,
                  "seconds": None, "tflite": {}}}
    lines = model_table({"heading": "Lecture baselines", "caption": "c", "models": ["b", "a"]}, rows)
    assert lines[0] == "## Lecture baselines"
    assert lines[6] == "| [b](b/README.md) | mlp | – | – | – | – | – | – | – |"
    assert lines[7] == "| [a](a/README.md) | softmax | 7,850 | test | 92.59 % | 92.57 % | 99.57 % | 10 | 59.4 |"


def test_test_time_augmentation_is_said_apart_from_the_headline():
    from tasks.report.pages import model_page, model_table, scores

    metrics = {"accuracy": 0.9, "split": "test", "test_count": 10, "tta": {
        "views": ["as stored", "turn180"], "accuracy": 0.95, "per_view_accuracy": {"turn180": 0.8}}}
    page = model_page("m", metrics, {"recipe": {"dataset": "cards"}}, {})
    assert ("**Test-time augmentation** (apart from the headline; the exported model does not do it): the softmax "
            "averaged over as stored + turn180: 95.00 % (turn180 alone 80.00 %).") in page
    assert "| accuracy | 0.9000 |" in page and "| tta |" not in page
    row = {"key": "m", "arch": "a", "params": 1, "split": "test", "accuracy": 0.9, "tta_accuracy": 0.95,
           "epochs_run": 1, "seconds": 1.0, "tflite": {}, "blessed": True}
    assert "| 90.00 % (TTA 95.00 %) |" in model_table({"models": ["m"]}, {"m": row})[-2]
    assert scores(row)["tta_accuracy"] == 0.95 and "tta_accuracy" not in scores({**row, "tta_accuracy": None})


def test_every_exported_format_gets_a_page_row_and_flat_scores():
    """metrics.json's `tflite` of four formats: a row each on the page's TFLite table, and scores.json keeps its
    float32/int8 columns and adds float16_* and dynamic_* ones (`dvc metrics show` compares them)."""
    from tasks.report.pages import model_page, scores

    tflite = {"float32": {"accuracy": 0.99, "agreement": 1.0, "bytes": 4096, "latency_ms": 0.5},
              "float16": {"accuracy": 0.99, "agreement": 1.0, "bytes": 2048, "latency_ms": 0.6},
              "dynamic": {"accuracy": 0.98, "agreement": 0.995, "bytes": 1126, "latency_ms": 0.4},
              "int8": {"accuracy": 0.97, "agreement": 0.99, "bytes": 1024, "latency_ms": 0.2}}
    page = model_page("m", {"accuracy": 0.99, "split": "test", "tflite": tflite}, {"recipe": {"dataset": "mnist"}}, {})
    rows = [line for line in page.splitlines() if line.startswith(("| float", "| dynamic", "| int8"))]
    assert [r.split(" | ")[0][2:] for r in rows] == ["float32", "float16", "dynamic", "int8"]
    assert rows[2] == ("| dynamic | dynamic range: int8 weights (a quarter of the bytes), float32 in and out | 98.00 % | "
                       "99.50 % | 1,126 | 0.400 |")
    assert "float inside" not in page  # every layer int8: no line
    kept = [{"tensor": "m_1/base_1/block_2_depthwise_relu_1/Relu6;m_1/base_1/block_2_depthwise_BN_1/mul",
             "op": "DEPTHWISE_CONV_2D", "rmse_steps": 0.8654}]
    mixed = model_page("m", {"accuracy": 0.99, "split": "test", "tflite": {**tflite, "int8": {**tflite["int8"],
                       "float_layers": kept}}}, {"recipe": {"dataset": "mnist"}}, {})
    assert "int8 keeps 1 layer float inside" in mixed and "block_2_depthwise_relu_1 (DEPTHWISE_CONV_2D, 0.87)" in mixed
    row = {"accuracy": 0.99, "tflite": tflite, "seconds": 3.0, "epochs_run": 2, "blessed": True}
    assert scores(row) == {"accuracy": 0.99, "int8_accuracy": 0.97, "int8_agreement": 0.99, "float32_kb": 4.0,
                           "int8_kb": 1.0, "int8_latency_ms": 0.2, "float16_accuracy": 0.99, "float16_agreement": 1.0,
                           "float16_kb": 2.0, "float16_latency_ms": 0.6, "dynamic_accuracy": 0.98,
                           "dynamic_agreement": 0.995, "dynamic_kb": 1.1, "dynamic_latency_ms": 0.4, "train_s": 3.0,
                           "epochs": 2, "blessed": True}
    two = {k: tflite[k] for k in ("float32", "int8")}  # a model exported before: the columns it always had
    assert set(scores({**row, "tflite": two})) == {"accuracy", "int8_accuracy", "int8_agreement", "float32_kb",
                                                   "int8_kb", "int8_latency_ms", "train_s", "epochs", "blessed"}


def test_a_table_shows_retired_rows_from_their_kept_records(tmp_path):
    from tasks.report.pages import write_index

    reports = tmp_path / "reports"
    row = {"key": "new", "dataset": "d", "arch": "a", "transfer_from": None, "freeze": None, "epochs_run": 3,
           "best_val_accuracy": 0.9, "split": "test", "accuracy": 0.91, "tflite": {}, "seconds": 5.0, "blessed": True,
           "params": 10, "val_accuracy": []}
    (reports / "summaries").mkdir(parents=True)
    (reports / "summaries" / "new.json").write_text(json.dumps(row))
    (reports / "retired" / "old").mkdir(parents=True)
    (reports / "retired" / "old" / "summary.json").write_text(json.dumps({**row, "key": "old", "split": "validation",
                                                                          "accuracy": 0.95}))
    table = {"heading": "T", "caption": "c", "models": ["new"], "retired": ["old"]}
    text = write_index(reports, ["new"], {"tables": {"t": table}})["markdown"]
    assert "| [new](new/README.md) | a | 10 | test | 91.00 % |" in text
    assert "| [old](retired/old/README.md) | a | 10 | validation, retired | 95.00 % |" in text
    assert text.index("[new](new/README.md) | a") < text.index("[old](retired/old/README.md)")
    with pytest.raises(FileNotFoundError, match="retired model 'gone'"):
        write_index(reports, ["new"], {"tables": {"t": {**table, "retired": ["gone"]}}})
