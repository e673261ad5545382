"""A tiny tlpipe project on disk: params.yaml plus a mirror of real-format fixture files."""
from __future__ import annotations

from pathlib import Path

import yaml

from fixtures import write_emnist_gzip_dir, write_emnist_mat_zip, write_mnist_dir


def write_params(root: Path, *, mirror: str = "", emnist_format: str = "auto", pins: dict | None = None,
                 datasets=("mnist", "emnist_letters"), **prepare_overrides) -> Path:
    pins = pins or {}
    prepare = {"validation_percentage": 20, "testing_percentage": 20, "shard_mb": 128, "min_shards": 2}
    prepare.update(prepare_overrides)
    params = {
        "mirror": mirror,
        "runtime": {"workers": 1},
        "datasets": {k: k for k in datasets},
        "download": {"retries": 2, "backoff_s": 0.01, "timeout_s": 10},
        "fetch": {"mnist": {"sha256": pins.get("mnist", {})},
                  "emnist_letters": {"format": emnist_format, "sha256": pins.get("emnist_letters", {})}},
        "prepare": {"mnist": dict(prepare), "emnist_letters": dict(prepare)},
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root / "params.yaml"


def write_mirror(mirror: Path, *, mat: bool = True, idx: bool = True, test_images: bool = True) -> dict:
    """A mirror laid out like ../shared/data; returns the sha256 pins of what it holds."""
    pins = {"mnist": write_mnist_dir(mirror / "mnist", n_train=80, n_test=30), "emnist_letters": {}}
    if mat:
        info = write_emnist_mat_zip(mirror / "emnist" / "matlab.zip", n_train=104, n_test=52)
        pins["emnist_letters"]["matlab.zip"] = info["zip_sha256"]
    if idx:
        pins["emnist_letters"].update(write_emnist_gzip_dir(mirror / "emnist" / "gzip", n_train=104, n_test=52,
                                                            include_test_images=test_images))
    return pins


def serve_dir(server, directory: Path) -> str:
    """Serve every file under `directory` from the loopback server; returns the base URL."""
    for p in sorted(directory.rglob("*")):
        if p.is_file():
            server.add(p.relative_to(directory).as_posix(), p.read_bytes())
    return server.base


def mnist_mirror_params(tmp_path: Path, root: Path) -> dict:
    """An MNIST-only project at `root` reading a local mirror of fixture files under `tmp_path/mirror`:
    writes both, returns the project's params (to extend and write back)."""
    pins = write_mirror(tmp_path / "mirror", mat=False, idx=False)
    write_params(root, mirror=str(tmp_path / "mirror"), pins=pins, datasets=("mnist",))
    return yaml.safe_load((root / "params.yaml").read_text())


RETIRED = Path(__file__).with_name("retired_cards_recipes.yaml")


def with_retired_recipes(params: dict) -> dict:
    """`params` (a params.yaml dict) plus the cards recipes retired from the DAG in issue 29
    (tests/retired_cards_recipes.yaml: bottleneck and cut caches, a teach@ entry, cache-initialised and
    distilled students), so tests keep checking the stages and specs they exercise."""
    retired = yaml.safe_load(RETIRED.read_text())
    out = dict(params)
    for section, entries in retired.items():
        out[section] = {**(out.get(section) or {}), **entries}
    return out
