"""The data line's stage functions: fetch@, prepare@, check@, fetch_weights@, features@, teach@.

Each takes a Project and a key, reads that key's params (validated), resolves its folders and calls
the one entry of the package that does the work, with plain values: the packages below never see a
Project or params.yaml. DVC stages (through `tlpipe`) and Prefect tasks both call these.
"""
from __future__ import annotations

from tasks.stages.project import Project, mirror, workers


def _entry(params: dict, section: str, key: str) -> dict:
    entries = params.get(section) or {}
    if key not in entries:
        raise KeyError(f"no {section} entry {key!r} in params.yaml {section}: {sorted(entries)}")
    return dict(entries[key] or {})


def fetch_stage(project: Project, key: str) -> dict:
    """fetch@<key>: data/raw/<key>/ (+ fetch.json)."""
    from tasks.fetch import fetch
    from tasks.fetch.download import download_options
    from tasks.sources import source

    params = project.params()
    return fetch(key, source(key, params), (params.get("fetch") or {}).get(key) or {},
                 raw_dir=project.raw_dir(key), root=project.root, mirror=mirror(params),
                 options=download_options(params))


def prepare_stage(project: Project, key: str) -> dict:
    """prepare@<key>: data/processed/<key>/ from data/raw/<key>/."""
    from tasks.core import parallel
    from tasks.prepare import prepare
    from tasks.sources import source

    params = project.params()
    n = workers(params)
    with parallel.scheduler(params, n):  # Dask when params/env ask for it
        return prepare(key, source(key, params), (params.get("prepare") or {}).get(key) or {},
                       raw_dir=project.raw_dir(key), out_dir=project.processed_dir(key), workers=n)


def check_stage(project: Project, key: str) -> dict:
    """check@<key>: reports/data/<key>/ from data/processed/<key>/ (and data/raw/<key>/); params
    `check.<key>` over tasks/check/run.py CHECK_DEFAULTS. A failing verdict raises CheckFailed after
    the page and the table are written."""
    from tasks.check.run import check

    cfg = _entry(project.params(), "check", key)
    return check(key, project.processed_dir(key), project.raw_dir(key), project.check_dir(key), cfg)


def weights_stage(project: Project, key: str) -> dict:
    """fetch_weights@<key>: data/weights/<key>/ (+ fetch.json)."""
    from tasks.fetch.download import download_options
    from tasks.fetch.weights import fetch_weights, weights_params

    params = project.params()
    return fetch_weights(key, weights_params(params, key), out_dir=project.weights_dir(key), root=project.root,
                         mirror=mirror(params), options=download_options(params))


def features_stage(project: Project, key: str) -> dict:
    """features@<key>: params `features.<key>` = {dataset, base, alpha, image_size, weights: <weights
    key> (the single *.h5 in data/weights/<key>/; null = random init), batch_size, pool}; writes
    data/features/<key>/ and its speed to reports/features/<key>.json."""
    from tasks.photo.features import compute_features

    cfg = _entry(project.params(), "features", key)
    weights = project.weights_dir(cfg["weights"]) if cfg.get("weights") else None
    if weights is not None and not weights.is_dir():
        raise FileNotFoundError(f"{weights}: no weights dir for features {key!r} (weights: {cfg['weights']!r});"
                                f" fetch the weights first")
    return compute_features(project.processed_dir(cfg["dataset"]), weights, project.root / "data" / "features" / key,
                            cfg, speed_path=project.root / "reports" / "features" / f"{key}.json")


def teach_stage(project: Project, key: str) -> dict:
    """teach@<key>: params `teach.<key>` = {dataset, features, teacher, temperature} -> data/teach/<key>/,
    the targets a distilled student (`init: data/teach/<key>`) learns."""
    from tasks.photo.teach import teach

    cfg = _entry(project.params(), "teach", key)
    cache = f"data/features/{cfg['features']}"
    return teach(project.root / cfg["teacher"], project.processed_dir(cfg["dataset"]), project.root / cache,
                 project.root / "data" / "teach" / key, cfg, names={"teacher": cfg["teacher"], "features": cache})
