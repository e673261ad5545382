"""params.yaml, checked once before any work: every section and every recipe, against the keys the
code reads. An unknown key is an error that names it and the nearest valid key (`epoch` -> did you
mean `epochs`?); so is a recipe without the keys its DVC stage interpolates.

The valid keys come from where the defaults live (one place each): the trainers' `DEFAULTS`
(tasks/cnn/train.py, tasks/photo/train.py; read as literals from the source, so checking params never
imports TensorFlow), tasks/evaluate/metrics.py, tasks/evaluate/export.py, tasks/photo/features.py,
tasks/photo/teach.py, tasks/prepare (arrays, photos) and tasks/fetch. The validator imports them
downwards; none of those packages imports this one.
"""
from __future__ import annotations

import ast
import difflib
from functools import lru_cache
from pathlib import Path

TASKS = Path(__file__).resolve().parents[1]
TOP = ("mirror", "runtime", "datasets", "download", "fetch", "prepare", "weights", "features", "teach", "models",
       "evaluate", "export", "report")
RUNTIME = ("workers", "dask")
DOWNLOAD = ("retries", "backoff_s", "timeout_s")
ARRAY_FETCH = {"mnist": ("sha256",), "emnist_letters": ("format", "sha256")}
WEIGHTS = ("arch", "alpha", "url", "sha256", "allow_unpinned", "mirror_alternatives", "file", "file_sha256")
FEATURES = ("dataset", "seed")          # besides tasks/photo/features.py FEATURES_DEFAULTS
REPORT = {"transfer": ("models", "dashed", "title", "heading", "caption"), "tables": ()}
REPORT_TABLE = ("heading", "caption", "models")  # each entry of report.tables
# Keys every recipe names: DVC interpolates them into its train stage's deps, and cannot default them.
RECIPE_REQUIRED = ("dataset", "init", "trainer")
RECIPE_COMMON = (*RECIPE_REQUIRED, "min_accuracy")
TEACH = ("dataset", "features", "teacher")  # besides tasks/photo/teach.py TEACH_DEFAULTS; all required
TRAINERS = {"tasks/cnn": ("cnn/train.py", ()), "tasks/photo": ("photo/train.py", ())}
DERIVED = ("transfer_from", "teacher")  # set by the trainer from `init`, never in params


class ParamsError(ValueError):
    """params.yaml does not fit what the pipeline reads; the message names the key."""


@lru_cache(maxsize=None)
def literal_keys(relpath: str, name: str = "DEFAULTS") -> tuple[str, ...]:
    """The string keys of the dict literal `name = {...}` in tasks/<relpath> (without importing it)."""
    tree = ast.parse((TASKS / relpath).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets) and isinstance(node.value, ast.Dict):
                return tuple(k.value for k in node.value.keys if isinstance(k, ast.Constant))
    raise LookupError(f"tasks/{relpath}: no dict literal {name} = {{...}}")


def check_keys(where: str, given, valid) -> None:
    """ParamsError for the first key of `given` not in `valid`, with the nearest valid key."""
    if given is None:
        return
    if not isinstance(given, dict):
        raise ParamsError(f"params.yaml {where}: expected a mapping of settings, got {given!r}")
    valid = sorted(set(valid))
    for key in given:
        if key not in valid:
            near = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
            hint = f"did you mean `{near[0]}`?" if near else f"valid keys: {', '.join(valid)}"
            raise ParamsError(f"params.yaml {where}: unknown key `{key}` ({hint})")


def recipe_keys(trainer: str) -> tuple[str, ...]:
    relpath, extra = TRAINERS[trainer]
    return tuple(k for k in literal_keys(relpath) if k not in DERIVED) + RECIPE_COMMON + extra


def check_recipe(where: str, recipe, teach: dict) -> None:
    if not isinstance(recipe, dict):
        raise ParamsError(f"params.yaml {where}: expected a recipe mapping, got {recipe!r}")
    missing = [k for k in RECIPE_REQUIRED if not recipe.get(k)]
    if missing:
        raise ParamsError(f"params.yaml {where}: missing `{missing[0]}` (every recipe names {', '.join(RECIPE_REQUIRED)}"
                          f": its train stage depends on them)")
    trainer = str(recipe["trainer"]).rstrip("/")
    if trainer not in TRAINERS:
        near = difflib.get_close_matches(trainer, list(TRAINERS), n=1, cutoff=0.6)
        raise ParamsError(f"params.yaml {where}.trainer: unknown trainer `{trainer}` "
                          f"({f'did you mean `{near[0]}`?' if near else 'valid: ' + ', '.join(TRAINERS)})")
    if "teacher" in recipe:
        raise ParamsError(f"params.yaml {where}: a recipe names its teacher through `init: data/teach/<t>` with "
                          f"`teach.<t>: {{dataset, features, teacher: {recipe['teacher']}}}` (teach@<t> makes the "
                          f"teacher's targets; a `teacher` key in the recipe is not read)")
    init = str(recipe["init"]).rstrip("/")
    if init.startswith("data/teach/") and init.split("/", 2)[2] not in teach:
        raise ParamsError(f"params.yaml {where}.init: {init} names no entry of `teach` ({sorted(teach) or 'none'})")
    if "distill_weight" in recipe and not init.startswith("data/teach/"):
        raise ParamsError(f"params.yaml {where}: `distill_weight` needs a teacher: `init: data/teach/<t>`")
    check_keys(where, recipe, recipe_keys(trainer))


def _entries(params: dict, section: str) -> dict:
    value = params.get(section)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ParamsError(f"params.yaml {section}: expected a mapping (key -> settings), got {value!r}")
    return value


def validate(params: dict) -> dict:
    """Check every section present in `params` (a section absent is not checked); returns params."""
    from tasks.evaluate.export import EXPORT_DEFAULTS
    from tasks.evaluate.metrics import EVAL_DEFAULTS
    from tasks.fetch import PHOTO_KEYS
    from tasks.prepare.arrays import ARRAY_DEFAULTS
    from tasks.prepare.photos import DEFAULTS as FOLDER_PREPARE
    from tasks.sources import is_image_folder, module_name, source

    for old in ("train", "photo"):
        if old in params:
            raise ParamsError(f"params.yaml `{old}`: there is no such section; a trainer's defaults live in one "
                              f"place, its DEFAULTS (tasks/cnn/train.py, tasks/photo/train.py): set what differs "
                              f"in each recipe of `models`")
    for old in ("distill", "all_models"):
        if old in params:
            raise ParamsError(f"params.yaml `{old}`: every recipe lives once under `models` (a distilled one with "
                              f"`init: data/teach/<t>` and a `teach` entry); remove `{old}`")
    check_keys("(top level)", params, TOP)
    check_keys("runtime", params.get("runtime"), RUNTIME)
    check_keys("download", params.get("download"), DOWNLOAD)
    datasets = params.get("datasets")
    if datasets is not None and not isinstance(datasets, dict):
        raise ParamsError(f"params.yaml datasets: expected a mapping dataset key -> source module "
                          f"(e.g. `mnist: mnist`, `flowers: folder`), got {datasets!r}")
    for key in {*_entries(params, "fetch"), *_entries(params, "prepare"), *(datasets or {})}:
        try:
            folder = is_image_folder(source(key, params))
        except KeyError as e:
            raise ParamsError(f"params.yaml datasets/fetch/prepare `{key}`: {e.args[0]}") from None
        name = module_name(key, params)
        check_keys(f"fetch.{key}", _entries(params, "fetch").get(key),
                   PHOTO_KEYS if folder else ARRAY_FETCH.get(name, ("sha256",)))
        check_keys(f"prepare.{key}", _entries(params, "prepare").get(key),
                   FOLDER_PREPARE if folder else ARRAY_DEFAULTS)
    for key, entry in _entries(params, "weights").items():
        check_keys(f"weights.{key}", entry, WEIGHTS)
    for key, entry in _entries(params, "features").items():
        check_keys(f"features.{key}", entry, (*literal_keys("photo/features.py", "FEATURES_DEFAULTS"), *FEATURES))
    models, teach = _entries(params, "models"), _entries(params, "teach")
    for key, entry in teach.items():
        check_keys(f"teach.{key}", entry, (*TEACH, *literal_keys("photo/teach.py", "TEACH_DEFAULTS")))
        missing = [k for k in TEACH if not (entry or {}).get(k)]
        if missing:
            raise ParamsError(f"params.yaml teach.{key}: missing `{missing[0]}` (a teach entry names "
                              f"{', '.join(TEACH)}: its stage depends on them)")
        if entry["features"] not in _entries(params, "features"):
            raise ParamsError(f"params.yaml teach.{key}.features: no features entry `{entry['features']}`")
        teacher = str(entry["teacher"]).split("/")
        if len(teacher) != 3 or teacher[0] != "models" or teacher[2] != "model.keras" or teacher[1] not in models:
            raise ParamsError(f"params.yaml teach.{key}.teacher: expected models/<a recipe of models>/model.keras, "
                              f"got {entry['teacher']!r}")
    for key, recipe in models.items():
        check_recipe(f"models.{key}", recipe, teach)
    check_keys("evaluate", params.get("evaluate"), EVAL_DEFAULTS)
    check_keys("export", params.get("export"), EXPORT_DEFAULTS)
    report = params.get("report")
    check_keys("report", report, REPORT)
    for name, keys in REPORT.items():
        if name != "tables":
            check_keys(f"report.{name}", (report or {}).get(name), keys)
    for name, table in ((report or {}).get("tables") or {}).items():
        check_keys(f"report.tables.{name}", table, REPORT_TABLE)
        unknown = [k for k in (table or {}).get("models") or [] if k not in models]
        if unknown:
            raise ParamsError(f"params.yaml report.tables.{name}.models: no such model {unknown}")
    return params
