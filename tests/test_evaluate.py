"""Evaluation metrics on hand-made confusions, the blessing gate, and the evaluate outputs."""
import json

import keras
import numpy as np
import pytest

from tasks.evaluate.metrics import (bless, confusion_matrix, evaluate, gate_params, most_confused, per_class_metrics,
                            top_k_accuracy)
from tasks.cnn.models import build
from tasks.report.pages import write_report
from tasks.records.shards import write_dataset


def test_metrics_on_a_hand_made_confusion():
    # actual a: 3 right, 1 taken for b; actual b: 2 right; actual c: 1 right, 2 taken for b, 1 for a
    y_true = [0, 0, 0, 0, 1, 1, 2, 2, 2, 2]
    y_pred = [0, 0, 0, 1, 1, 1, 2, 1, 1, 0]
    cm = confusion_matrix(y_true, y_pred, 3)
    np.testing.assert_array_equal(cm, [[3, 1, 0], [0, 2, 0], [1, 2, 1]])
    m = per_class_metrics(cm, ["a", "b", "c"])
    assert m["a"] == pytest.approx({"precision": 3 / 4, "recall": 3 / 4, "f1": 3 / 4, "support": 4})
    assert m["b"]["precision"] == pytest.approx(2 / 5) and m["b"]["recall"] == 1.0
    assert m["b"]["f1"] == pytest.approx(2 * 0.4 / 1.4)
    assert m["c"] == pytest.approx({"precision": 1.0, "recall": 1 / 4, "f1": 0.4, "support": 4})
    assert most_confused(cm, ["a", "b", "c"], 2) == [{"actual": "c", "predicted": "b", "count": 2},
                                                     {"actual": "c", "predicted": "a", "count": 1}]


def test_undefined_precision_is_zero_not_nan():
    m = per_class_metrics(confusion_matrix([0, 0], [0, 0], 2), ["x", "y"])
    assert m["y"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_top_k_accuracy():
    probs = np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
    y = np.array([1, 2, 2])
    assert top_k_accuracy(probs, y, 1) == pytest.approx(1 / 3)
    assert top_k_accuracy(probs, y, 2) == pytest.approx(2 / 3)
    assert top_k_accuracy(probs, y, 5) == 1.0


def test_blessing_gate(tmp_path):
    params = {"min_accuracy": 0.9, "max_regression": 0.01}
    assert bless({"accuracy": 0.95}, params, None)["blessed"] is True
    assert bless({"accuracy": 0.85}, params, None)["blessed"] is False
    base = tmp_path / "blessed.json"
    base.write_text(json.dumps({"accuracy": 0.97}))
    assert bless({"accuracy": 0.965}, params, base)["blessed"] is True
    gate = bless({"accuracy": 0.95}, params, base)
    assert gate["blessed"] is False and "regressed" in gate["reason"]
    assert bless({"accuracy": 0.95}, params, tmp_path / "missing.json")["blessed"] is True


def test_evaluate_writes_reports(tmp_path):
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (40, 28, 28), dtype=np.uint8), rng.integers(0, 3, 40)
    write_dataset(tmp_path / "data", {"test": (images, labels)}, ["a", "b", "c"])
    keras.utils.set_random_seed(0)
    model = build("reference_cnn", 3)
    model.save(tmp_path / "model.keras")
    expected = model.predict(images[..., None], verbose=0).argmax(axis=1)

    out = tmp_path / "reports"
    m = evaluate(tmp_path / "model.keras", tmp_path / "data", out, {"min_accuracy": 0.99, "top_k": 2})
    assert m["accuracy"] == pytest.approx(np.mean(expected == labels))
    assert m["blessed"] is False and "min_accuracy" in m["blessing"]["reason"]
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["accuracy"] == m["accuracy"] and "top2_accuracy" in saved
    rows = json.loads((out / "confusion.json").read_text())
    assert len(rows) == 40 and set(rows[0]) == {"actual", "predicted"}
    assert sum(r["actual"] != r["predicted"] for r in rows) == int(np.sum(expected != labels))
    cm = np.loadtxt(out / "confusion_matrix.csv", delimiter=",", skiprows=1)
    assert cm.sum() == 40 and np.trace(cm) == np.sum(expected == labels)
    for png in ("confusion_matrix.png", "misclassified.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_gate_params_resolve_per_model_thresholds():
    section = {"top_k": 3, "min_accuracy": {"default": 0.9, "m": 0.99}, "max_regression": 0.01}
    assert gate_params(section, "m")["min_accuracy"] == 0.99
    assert gate_params(section, "other")["min_accuracy"] == 0.9
    assert gate_params({"min_accuracy": 0.5}, "m")["min_accuracy"] == 0.5


def test_report_pages_and_index(tmp_path):
    reports, models = tmp_path / "reports", tmp_path / "models"
    history = [{"epoch": e, "accuracy": 0.5 + e / 10, "loss": 1 - e / 10, "val_accuracy": 0.6 + e / 10,
                "val_loss": 0.9 - e / 10} for e in range(3)]
    for key in ("mnist_scratch", "mnist_transfer_conv"):
        (models / key).mkdir(parents=True)
        (models / key / "history.json").write_text(json.dumps(history))
        (models / key / "train.json").write_text(json.dumps(
            {"recipe": {"dataset": "mnist", "arch": "reference_cnn"}, "epochs_run": 3, "best_val_accuracy": 0.8}))
        (reports / key).mkdir(parents=True)
        (reports / key / "metrics.json").write_text(json.dumps(
            {"accuracy": 0.991, "blessed": True, "blessing": {"reason": "ok"},
             "tflite": {k: {"accuracy": 0.99, "agreement": 1.0, "bytes": 1000, "latency_ms": 0.2}
                        for k in ("float32", "int8")}}))
    out = write_report(reports, ["mnist_scratch", "mnist_transfer_conv"], models_dir=models,
                       config={"transfer": {"models": ["mnist_scratch", "mnist_transfer_conv"]}})
    assert "99.10 %" in out["markdown"] and "transfer.png" in out["markdown"]
    assert "| mnist_scratch | reference_cnn | test | 99.10 % | 99.00 % | – | 1000 | 1000 | 0.20 |" in out["markdown"]
    assert (reports / "transfer.png").exists() and (reports / "mnist_scratch" / "curves.png").exists()
    page = (reports / "mnist_scratch" / "README.md").read_text()
    assert any(line.startswith("| int8 | ") and line.endswith("| 99.00 % | 100.00 % | 1,000 | 0.200 |")
               for line in page.splitlines()) and "blessed" in page


def test_misclassified_grid_captions_do_not_overlap(tmp_path, monkeypatch):
    """Long class names (the cards') wrap inside their cell: no caption touches another caption or
    another cell's image."""
    import matplotlib.pyplot as plt

    from tasks.evaluate.metrics import plot_examples

    figures = []
    monkeypatch.setattr(plt, "close", lambda fig=None: figures.append(fig))
    names = ["ace of clubs", "queen of hearts", "king of hearts", "eight of diamonds", "ten of diamonds",
             "joker", "six of spades", "seven of spades", "two of clubs", "three of clubs"]
    rng = np.random.default_rng(0)
    true = rng.integers(0, 10, 12)
    pred = (true + 1 + rng.integers(0, 8, 12)) % 10
    plot_examples(rng.integers(0, 255, (12, 64, 64, 3), dtype=np.uint8), true, pred, names, tmp_path / "grid.png")
    assert (tmp_path / "grid.png").stat().st_size > 0
    fig = figures[0]
    renderer = fig.canvas.get_renderer()
    used = [ax for ax in fig.axes if ax.images]
    titles = [ax.title.get_window_extent(renderer) for ax in used]
    images = [ax.get_window_extent(renderer) for ax in used]
    assert len(titles) == 12
    for i, box in enumerate(titles):
        assert box.x0 >= images[i].x0 - 12 and box.x1 <= images[i].x1 + 12  # within its own column
        for j, other in enumerate(titles):
            assert i == j or not box.overlaps(other), (i, j)
        for j, image in enumerate(images):
            assert i == j or not box.overlaps(image), (i, j)
    plt.close(fig)


def test_tta_averages_the_image_and_its_half_turn():
    from tasks.evaluate.metrics import tta_scores, tta_view

    # a "model" that reads the top-left pixel: right on the stored image, wrong on its half turn
    images = np.zeros((4, 3, 3, 1), np.uint8)
    images[:, 0, 0, 0] = [0, 1, 0, 1]
    images[:, -1, -1, 0] = [1, 0, 1, 1]
    y = np.array([0, 1, 0, 1])
    predict = lambda x: np.eye(2)[x[:, 0, 0, 0]] * 0.6 + 0.2  # noqa: E731
    np.testing.assert_array_equal(tta_view(images, "turn180")[:, 0, 0, 0], images[:, -1, -1, 0])
    scores = tta_scores(predict, images, y, predict(images), ["turn180"])
    assert scores["views"] == ["as stored", "turn180"]
    assert scores["per_view_accuracy"] == {"turn180": 0.25}  # only the last image reads the same turned
    # the mean is a tie (0.5/0.5 -> class 0) on images 0-2 and class 1 on image 3: 3 of 4 right
    assert scores["accuracy"] == 0.75
    with pytest.raises(ValueError, match="unknown view 'mirror'"):
        tta_view(images, "mirror")


def test_evaluate_reports_tta_apart_for_a_dataset_that_allows_it(tmp_path):
    rng = np.random.default_rng(1)
    images, labels = rng.integers(0, 256, (24, 28, 28), dtype=np.uint8), rng.integers(0, 3, 24)
    write_dataset(tmp_path / "data", {"test": (images, labels)}, ["a", "b", "c"], extra={"dataset": "toy"})
    keras.utils.set_random_seed(0)
    model = build("reference_cnn", 3)
    model.save(tmp_path / "model.keras")
    plain = model.predict(images[..., None], verbose=0)
    turned = model.predict(images[:, ::-1, ::-1, None], verbose=0)

    m = evaluate(tmp_path / "model.keras", tmp_path / "data", tmp_path / "r", {"tta": {"toy": ["turn180"]}})
    assert m["accuracy"] == pytest.approx(np.mean(plain.argmax(1) == labels))  # the headline stays plain
    assert m["tta"]["accuracy"] == pytest.approx(np.mean(((plain + turned) / 2).argmax(1) == labels))
    assert m["tta"]["per_view_accuracy"]["turn180"] == pytest.approx(np.mean(turned.argmax(1) == labels))
    other = evaluate(tmp_path / "model.keras", tmp_path / "data", tmp_path / "r2", {"tta": {"cards": ["turn180"]}})
    assert "tta" not in other  # views are a dataset's property: another dataset's setting does not apply
