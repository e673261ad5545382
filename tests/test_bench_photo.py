"""Smoke test of bench/photo_bench.py on a tiny synthetic folder: it runs end to end and writes every
number it promises. Timings are never asserted (they are the benchmark's output, not a property)."""
import json
import sys
from pathlib import Path

import numpy as np

from tasks.records.shards import write_dataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

CLASSES = ["alpha", "beta", "gamma"]
SIZE = 32


def synthetic(tmp_path: Path, per_class: int = 12):
    """3 classes of 32px colour images, as a class-folder tree of JPEGs and as a processed dataset."""
    from PIL import Image

    rng = np.random.default_rng(0)
    images, labels = [], []
    for k, name in enumerate(CLASSES):
        (tmp_path / "folder" / name).mkdir(parents=True)
        for i in range(per_class):
            im = rng.integers(0, 80, (SIZE, SIZE, 3), dtype=np.uint8)
            im[..., k] += 150  # a class colour, so the head can learn something
            Image.fromarray(im).save(tmp_path / "folder" / name / f"{i:03d}.jpg", quality=95)
            images.append(im)
            labels.append(k)
    images, labels = np.stack(images), np.array(labels)
    order = rng.permutation(len(labels))
    train, val = order[: len(order) * 3 // 4], order[len(order) * 3 // 4:]
    write_dataset(tmp_path / "processed", {"train": (images[train], labels[train]),
                                           "validation": (images[val], labels[val])}, CLASSES)
    return tmp_path / "folder", tmp_path / "processed"


def tiny_weights(path: Path) -> Path:
    import keras

    keras.applications.MobileNetV2(alpha=0.35, input_shape=(SIZE, SIZE, 3), include_top=False,
                                   weights=None).save_weights(path)
    return path


def test_photo_bench_smoke(tmp_path):
    import photo_bench

    folder, processed = synthetic(tmp_path)
    weights = tiny_weights(tmp_path / "tiny.weights.h5")
    out = tmp_path / "photo.json"
    result = photo_bench.main(["--folder", str(folder), "--processed", str(processed), "--weights", str(weights),
                               "--alpha", "0.35", "--image-size", str(SIZE), "--epochs", "1", "--passes", "1",
                               "--out", str(out)])
    assert json.loads(out.read_text()) == result
    p = result["input_pipeline"]
    for key in ("shards_tf_data", "image_data_generator", "image_dataset_from_directory"):
        assert p[key]["images"] == 36 and p[key]["images_per_s"] > 0 and p[key]["seconds"] > 0, key
    assert set(p["ratio_vs_image_data_generator"]) == {"shards_tf_data", "image_dataset_from_directory"}
    assert all(r > 0 for r in p["ratio_vs_image_data_generator"].values())
    check_pass_costs(p, passes=1)
    t = result["head_training"]
    assert (t["train_images"], t["val_images"], t["classes"], t["epochs"]) == (27, 9, 3, 1)
    assert t["feature_width"] == 1280 and t["val_split"] == "validation"
    for key in ("cache_build_s", "cached_fit_s", "end_to_end_fit_s", "ratio_end_to_end_vs_cached_fit",
                "ratio_end_to_end_vs_cached_with_build"):
        assert t[key] > 0, key
    for key in ("cached_val_accuracy", "end_to_end_val_accuracy"):
        assert 0 <= t[key] <= 1, key


def check_pass_costs(p: dict, passes: int):
    """Per pass: CPU ms per image, the cores this process got, the cores the machine left idle."""
    for key in ("shards_tf_data", "image_data_generator", "image_dataset_from_directory"):
        r = p[key]
        assert len(r["rates"]) == len(r["cpu_ms_per_image"]) == len(r["process_cores"]) == passes, key
        assert all(x > 0 for x in r["cpu_ms_per_image"]) and r["median_cpu_ms_per_image"] > 0, key
        assert all(0 < c for c in r["process_cores"]), key
        assert len(r["machine_idle_cores"]) == passes, key
        # /proc/stat counts in clock ticks (10 ms), so a pass this short can read more idle cores than exist
        assert all(i is None or i >= 0 for i in r["machine_idle_cores"]), key
    if Path("/proc/stat").exists():
        assert None not in p["shards_tf_data"]["machine_idle_cores"]
    v = p["shards_vs_dataset_from_directory"]
    assert len(v["rates"]) == passes and all(x > 0 for x in v["rates"]) and v["cpu_per_image"] > 0


def test_photo_bench_limit(tmp_path):
    import photo_bench

    folder, processed = synthetic(tmp_path)
    weights = tiny_weights(tmp_path / "tiny.weights.h5")
    result = photo_bench.main(["--folder", str(folder), "--processed", str(processed), "--weights", str(weights),
                               "--image-size", str(SIZE), "--epochs", "1", "--passes", "2", "--limit", "8",
                               "--skip", "training", "--out", str(tmp_path / "photo.json")])
    # --limit caps each pipeline at the whole batches that cover 8 images (a shard split may end a batch early).
    for key in ("shards_tf_data", "image_data_generator", "image_dataset_from_directory"):
        assert 8 <= result["input_pipeline"][key]["images"] / 2 <= 32, key
    check_pass_costs(result["input_pipeline"], passes=2)
    assert "head_training" not in result
