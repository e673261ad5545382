"""params.yaml, checked once before any work: every section, every recipe and every value. Each error
is one line that names the key path (`params.yaml models.m.epochs: expected an integer >= 1, got -1`).

Three kinds of check:
- keys: an unknown key is an error that names it and the nearest valid key (`epoch` -> did you mean
  `epochs`?); so is an entry without the keys its stage needs (a recipe's dataset, init and trainer).
- values: VALUES holds one spec per key name (its type, and a range or the valid choices), used in
  every section where that key appears; a section overrides a name that means something else there
  (a weights entry's `arch`, a fetch entry of an array dataset's `sha256`, a trainer's `augment`). A key
  whose code default is None takes null (the default). A bool is not an integer here (`epochs: true`).
- references: a recipe's dataset, init and trainer, a features entry's dataset and weights, a teach
  entry's features and teacher, the evaluate gate's per-model keys and the recipes `report` lists name
  things that exist. A dataset is a key of `datasets` or, as tasks/sources.module_name resolves it, a
  key with its own module tasks/sources/<key>.py (`cards` without a `datasets` entry).

The valid keys and value sets come from where they live (one place each): the trainers' `DEFAULTS`
(tasks/cnn/train.py, tasks/photo/train.py), tasks/cnn/models.py `ARCHS`, tasks/photo (heads, backbones,
augment), tasks/fetch/weights.py `ARCHS`, tasks/prepare/images.py `RESIZE`, tasks/sources/emnist_letters.py
`FORMATS`, ... read as literals from the source (`ast`), so checking params never imports TensorFlow;
tasks/evaluate (metrics, export), tasks/prepare (arrays, photos) and tasks/fetch are imported downwards
(none of those packages imports this one). The two value sets the code spells inline (SCHEDULES, LINKS)
are kept here; tests/test_validate.py checks every set against the code.
"""
from __future__ import annotations

import ast
import difflib
import math
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Callable

TASKS = Path(__file__).resolve().parents[1]
TOP = ("mirror", "runtime", "datasets", "download", "fetch", "prepare", "check", "weights", "features", "teach", "models",
       "evaluate", "export", "report")
RUNTIME = ("workers", "dask")
DOWNLOAD = ("retries", "backoff_s", "timeout_s")
ARRAY_FETCH = {"mnist": ("sha256",), "emnist_letters": ("format", "sha256")}
WEIGHTS = ("arch", "alpha", "url", "sha256", "allow_unpinned", "mirror_alternatives", "file", "file_sha256",
           "package", "package_file")
FEATURES = ("dataset", "seed")          # besides tasks/photo/features.py FEATURES_DEFAULTS
REPORT = {"transfer": ("models", "dashed", "title", "heading", "caption"), "tables": ()}
REPORT_TABLE = ("heading", "caption", "models", "retired")  # each entry of report.tables
# Keys every recipe names: DVC interpolates them into its train stage's deps, and cannot default them.
RECIPE_REQUIRED = ("dataset", "init", "trainer")
RECIPE_COMMON = (*RECIPE_REQUIRED, "min_accuracy")
TEACH = ("dataset", "features", "teacher")  # besides tasks/photo/teach.py TEACH_DEFAULTS; all required
TRAINERS = {"tasks/cnn": ("cnn/train.py", ()), "tasks/photo": ("photo/train.py", ())}
DERIVED = ("transfer_from", "teacher")  # set by the trainer from `init`, never in params
# Value sets the code spells inline, with no constant to read (tests/test_validate.py checks them).
SCHEDULES = ("constant", "cosine")      # tasks/fit/__init__.py learning_rate
LINKS = ("copy", "hardlink")            # tasks/fetch/photos.py, a folder source
# An entry's key (models.<k>, datasets.<k>, ...) is a folder name (models/<k>, data/raw/<k>) and a DVC stage name.
ENTRY_NAME = re.compile(r"[A-Za-z0-9_-]+")
MODULE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")  # tasks/sources/<module>.py
INIT_FORMS = ("tasks/<a file>, models/<another recipe>/model.keras, data/features/<a features key>, "
              "data/weights/<a weights key> or data/teach/<a teach key>")


class ParamsError(ValueError):
    """params.yaml does not fit what the pipeline reads; the message names the key."""


# ---------------------------------------------------------------- reading the code's literals

def _assigned(relpath: str, name: str, kinds: tuple) -> ast.expr:
    tree = ast.parse((TASKS / relpath).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets) and isinstance(node.value, kinds):
                return node.value
    what = "dict literal" if kinds == (ast.Dict,) else "literal"
    raise LookupError(f"tasks/{relpath}: no {what} {name} = {{...}}")


@lru_cache(maxsize=None)
def literal_keys(relpath: str, name: str = "DEFAULTS") -> tuple[str, ...]:
    """The string keys of the dict literal `name = {...}` in tasks/<relpath> (without importing it)."""
    node = _assigned(relpath, name, (ast.Dict,))
    return tuple(k.value for k in node.keys if isinstance(k, ast.Constant))


@lru_cache(maxsize=None)
def literal_names(relpath: str, name: str) -> tuple[str, ...]:
    """The names `name` holds in tasks/<relpath>: a dict literal's keys, or a tuple/list/set of strings."""
    node = _assigned(relpath, name, (ast.Dict, ast.Tuple, ast.List, ast.Set))
    items = node.keys if isinstance(node, ast.Dict) else node.elts
    return tuple(k.value for k in items if isinstance(k, ast.Constant) and isinstance(k.value, str))


NOT_LITERAL = object()  # a default that is an expression (e.g. `dict(aug.AUGMENT_DEFAULTS)`)


@lru_cache(maxsize=None)
def literal_defaults(relpath: str, name: str = "DEFAULTS") -> dict:
    """key -> value of the dict literal `name` in tasks/<relpath> (NOT_LITERAL where it is an expression)."""
    node = _assigned(relpath, name, (ast.Dict,))
    out = {}
    for k, v in zip(node.keys, node.values):
        if isinstance(k, ast.Constant):
            try:
                out[k.value] = ast.literal_eval(v)
            except ValueError:
                out[k.value] = NOT_LITERAL
    return out


# ---------------------------------------------------------------- value specs

def show(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def fail(where: str, what: str) -> ParamsError:
    return ParamsError(f"params.yaml {where}: {what}")


@dataclass(frozen=True)
class Refs:
    """What references resolve against: the params being checked, and the recipe being checked (if any)."""

    params: dict
    owner: str | None = None

    def section(self, name: str) -> dict:
        value = self.params.get(name)
        return value if isinstance(value, dict) else {}


class Spec:
    """What one value may be. `shape`: its type fits; `fits`: and its range/choices/reference;
    `check` raises a one-line ParamsError naming `where`."""

    null_ok = False

    def shape(self, value) -> bool:
        raise NotImplementedError

    def fits(self, value, refs: Refs) -> bool:
        return self.shape(value)

    def describe(self) -> str:
        raise NotImplementedError

    def check(self, where: str, value, refs: Refs) -> None:
        if value is None and self.null_ok:
            return
        if not self.fits(value, refs):
            raise fail(where, f"expected {self.describe()}{' or null' if self.null_ok else ''}, got {show(value)}")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Int(Spec):
    lo: int | None = None
    hi: int | None = None
    null_ok: bool = False

    def shape(self, value):
        return isinstance(value, int) and not isinstance(value, bool)

    def fits(self, value, refs):
        return self.shape(value) and (self.lo is None or value >= self.lo) and (self.hi is None or value <= self.hi)

    def describe(self):
        if self.lo is not None and self.hi is not None:
            return f"an integer in {self.lo}..{self.hi}"
        return f"an integer >= {self.lo}" if self.lo is not None else "an integer"


@dataclass(frozen=True)
class Num(Spec):
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    null_ok: bool = False

    def shape(self, value):
        return _is_number(value)

    def fits(self, value, refs):
        if not self.shape(value) or (isinstance(value, float) and not math.isfinite(value)):
            return False
        above = self.lo is None or (value > self.lo if self.lo_open else value >= self.lo)
        below = self.hi is None or (value < self.hi if self.hi_open else value <= self.hi)
        return above and below

    def describe(self):
        if self.lo is not None and self.hi is not None:
            return f"a number in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"a number {'>' if self.lo_open else '>='} {self.lo:g}"
        return "a number"


@dataclass(frozen=True)
class Bool(Spec):
    null_ok: bool = False

    def shape(self, value):
        return isinstance(value, bool)

    def describe(self):
        return "true or false"


@dataclass(frozen=True)
class Str(Spec):
    pattern: str | None = None
    what: str = "a string"
    null_ok: bool = False

    def shape(self, value):
        return isinstance(value, str)

    def fits(self, value, refs):
        return self.shape(value) and (self.pattern is None or re.fullmatch(self.pattern, value) is not None)

    def describe(self):
        return self.what


@dataclass(frozen=True)
class Choice(Spec):
    """One of a set of names: read from the code (`origin`: tasks/<relpath>, the constant's name) and/or given."""

    origin: tuple[str, str] | None = None
    names: tuple[str, ...] = ()
    null_ok: bool = False

    def options(self) -> tuple[str, ...]:
        return (literal_names(*self.origin) if self.origin else ()) + self.names

    def shape(self, value):
        return isinstance(value, str)

    def fits(self, value, refs):
        return self.shape(value) and value in self.options()

    def describe(self):
        return f"one of {', '.join(self.options())}"

    def check(self, where, value, refs):
        if (value is None and self.null_ok) or self.fits(value, refs):
            return
        origin = f" ({self.origin[1]} in tasks/{self.origin[0]})" if self.origin else ""
        raise fail(where, f"{where.rsplit('.', 1)[-1]} must be one of {', '.join(self.options())}{origin}"
                          f"{' or null' if self.null_ok else ''}, got {show(value)}")


@dataclass(frozen=True)
class Seq(Spec):
    item: Spec
    null_ok: bool = False

    def shape(self, value):
        return isinstance(value, list)

    def describe(self):
        return "a list"

    def check(self, where, value, refs):
        super().check(where, value, refs)
        for i, v in enumerate(value or []):
            self.item.check(f"{where}[{i}]", v, refs)


@dataclass(frozen=True)
class Subset(Seq):
    """Some of a set of names (`item`: a Choice), at least one, none twice (export.formats)."""

    def describe(self):
        return f"a list of some of {', '.join(self.item.options())}"

    def check(self, where, value, refs):
        super().check(where, value, refs)
        if value is None:
            return
        if not value:
            raise fail(where, f"expected at least one of {', '.join(self.item.options())}, got []")
        for i, v in enumerate(value):
            if v in value[:i]:
                raise fail(f"{where}[{i}]", f"{v} is listed twice")


@dataclass(frozen=True)
class Table(Spec):
    """A mapping of known keys (`fields()`: key -> Spec): an unknown key names the nearest valid one."""

    fields: Callable[[], dict]
    required: tuple[str, ...] = ()
    why: str = ""                       # why the required keys are required, for the message
    null_ok: bool = False
    expected: str = "a mapping of settings"

    def shape(self, value):
        return isinstance(value, dict)

    def describe(self):
        return "a mapping {" + ", ".join(self.fields()) + "}"

    def check(self, where, value, refs):
        if value is None and self.null_ok:
            return
        if not isinstance(value, dict) and not (value is None and self.required):
            raise fail(where, f"expected {self.expected}, got {show(value)}")
        value = value or {}
        missing = [k for k in self.required if value.get(k) in (None, "")]
        if missing:
            raise fail(where, f"missing `{missing[0]}`" + (f" ({self.why})" if self.why else ""))
        fields = self.fields()
        check_keys(where, value, fields)
        for key, v in value.items():
            fields[key].check(f"{where}.{key}", v, refs)


@dataclass(frozen=True)
class OpenMap(Spec):
    """A mapping of any keys (`key` checks each), each value a `value`."""

    value: Spec
    key: Spec | None = None
    what: str = "a mapping"
    null_ok: bool = False

    def shape(self, value):
        return isinstance(value, dict)

    def describe(self):
        return self.what

    def check(self, where, value, refs):
        super().check(where, value, refs)
        for k, v in (value or {}).items():
            if self.key is not None:
                self.key.check(f"{where}.{k}", k, refs)
            self.value.check(f"{where}.{k}", v, refs)


@dataclass(frozen=True)
class AnyOf(Spec):
    """The first alternative whose type fits checks the value (augment: true/false or a mapping)."""

    alternatives: tuple[Spec, ...]
    null_ok: bool = False

    def shape(self, value):
        return any(a.shape(value) for a in self.alternatives)

    def describe(self):
        return " or ".join(a.describe() for a in self.alternatives)

    def check(self, where, value, refs):
        if value is None and self.null_ok:
            return
        for alternative in self.alternatives:
            if alternative.shape(value):
                return alternative.check(where, value, refs)
        super().check(where, value, refs)


def _problem_dataset(name: str, refs: Refs) -> str | None:
    datasets = refs.section("datasets")
    if name in datasets or (MODULE_NAME.fullmatch(name) and (TASKS / "sources" / f"{name}.py").is_file()):
        return None  # a key of `datasets`, or (as tasks/sources.module_name falls back) a dataset with its own module
    return (f"no dataset `{name}`: not a key of `datasets` ({', '.join(datasets) or 'none'}) and no module "
            f"tasks/sources/{name}.py")


def _problem_init(init: str, refs: Refs) -> str | None:
    parts = init.rstrip("/").split("/")
    if parts[0] == "tasks":
        if ".." in parts or not (TASKS.parent / "/".join(parts)).is_file():
            return f"`{init}` is no file under tasks/ (expected {INIT_FORMS})"
        return None
    if parts[0] == "models" and len(parts) == 3 and parts[2] == "model.keras":
        if parts[1] == refs.owner:
            return f"`{init}` is this recipe's own model (a recipe starts from another one's)"
        if parts[1] not in refs.section("models"):
            return f"`{init}`: no recipe `{parts[1]}` in `models`"
        return None
    if parts[0] == "data" and len(parts) == 3 and parts[1] in ("features", "weights", "teach"):
        entries = refs.section(parts[1])
        if parts[2] in entries:
            return None
        return f"`{init}`: no entry `{parts[2]}` in `{parts[1]}` ({', '.join(entries) or 'none'})"
    return f"expected {INIT_FORMS}, got {show(init)}"


REFERENCES = {  # kind -> (what a value is, its problem or None)
    "dataset": ("a dataset key", _problem_dataset),
    "init": ("a path", _problem_init),
    "weights": ("a key of `weights`", lambda v, refs: None if v in refs.section("weights") else
                f"no weights entry `{v}` ({', '.join(refs.section('weights')) or 'none'})"),
    "recipe": ("a key of `models`", lambda v, refs: None if v in refs.section("models") else
               f"no such model `{v}` (not a recipe of `models`)"),
    "gate": ("`default` or a key of `models`", lambda v, refs: None if v == "default" or v in refs.section("models")
             else f"`{v}` is neither `default` nor a recipe of `models`"),
}


@dataclass(frozen=True)
class Ref(Spec):
    """A string that names something else in params (REFERENCES[kind])."""

    kind: str
    null_ok: bool = False

    def shape(self, value):
        return isinstance(value, str)

    def describe(self):
        return f"{REFERENCES[self.kind][0]} (a string)"

    def check(self, where, value, refs):
        super().check(where, value, refs)
        problem = None if value is None else REFERENCES[self.kind][1](value, refs)
        if problem:
            raise fail(where, problem)


def augment_spec(relpath: str, name: str = "AUGMENT_DEFAULTS") -> Spec:
    """A trainer's `augment`: true/false, or a mapping of its AUGMENT_DEFAULTS' keys (fractions; flags)."""
    return AnyOf((Bool(), Table(lambda: {k: Bool() if isinstance(v, bool) else FRACTION
                                         for k, v in literal_defaults(relpath, name).items()})))


FRACTION = Num(0, 1)
PERCENT = Num(0, 100, hi_open=True)
POSITIVE = Num(0, lo_open=True)
SIZE = Int(1)
COUNT = Int(0)
TEXT = Str()
HEX = Str(r"(?:[0-9a-fA-F]{64})?", 'a sha256 (64 hex digits) or ""', null_ok=True)
MODEL_LIST = Seq(Ref("recipe"))
GATE = AnyOf((FRACTION, OpenMap(FRACTION, Ref("gate"), "a mapping {default or a recipe: a number in [0, 1]}")))

# One spec per key name, used in every section where the key appears (sections override below).
VALUES: dict[str, Spec] = {
    # top level, runtime, download
    "mirror": Str(null_ok=True), "workers": COUNT, "dask": Str(null_ok=True),
    "retries": COUNT, "backoff_s": Num(0), "timeout_s": POSITIVE,
    # fetch (a photo folder's; an array dataset's `sha256` is ARRAY_FETCH_VALUES')
    "source": Str(null_ok=True), "sha256": HEX, "link": Choice(names=LINKS),
    "format": Choice(("sources/emnist_letters.py", "FORMATS"), ("auto",)),
    # prepare
    "validation_percentage": PERCENT, "testing_percentage": PERCENT, "shard_mb": POSITIVE, "min_shards": SIZE,
    "image_size": Int(8, 4096), "min_images_per_class": SIZE, "max_pixels": SIZE, "jpeg_quality": Int(1, 100),
    "resize": Choice(("prepare/images.py", "RESIZE")),
    "drop": Seq(Str(what="a source_id"), null_ok=True),
    "relabel": OpenMap(Str(what="a class name"), Str(what="a source_id"), "a mapping source_id -> class name",
                       null_ok=True),
    # check (image_size, batch_size, seed: as elsewhere)
    "phash_max": Int(0, 64), "cosine_min": FRACTION, "pixel_max": POSITIVE, "pixel_diff_max": FRACTION,
    "pca_dims": SIZE, "neighbours": SIZE, "folds": Int(2), "outlier_z": POSITIVE, "min_side": Int(1, null_ok=True),
    "max_aspect": Num(1), "fail_on_label_conflicts": Bool(), "fail_on_leaks": Bool(), "max_label_issues": FRACTION,
    "max_outliers": FRACTION, "notes": Str(null_ok=True),
    # weights
    "alpha": POSITIVE, "url": Str(null_ok=True), "allow_unpinned": Bool(null_ok=True), "file": Str(null_ok=True),
    "file_sha256": HEX, "package": Str(null_ok=True), "package_file": Str(null_ok=True),
    "mirror_alternatives": Seq(Table(lambda: {"path": TEXT, "sha256": HEX}, ("path", "sha256"),
                                     "each alternative names its path and its sha256"), null_ok=True),
    # features, teach
    "dataset": Ref("dataset"), "base": Choice(("photo/backbones.py", "BASES")), "weights": Ref("weights"),
    "pool": Bool(), "cut": Str(null_ok=True), "views": SIZE, "features": TEXT, "teacher": TEXT,
    "temperature": POSITIVE,
    # recipes, both trainers (`augment`: TRAINER_VALUES)
    "init": Ref("init"), "trainer": TEXT, "min_accuracy": FRACTION, "seed": COUNT, "batch_size": SIZE,
    "patience": COUNT,
    # tasks/cnn
    "arch": Choice(("cnn/models.py", "ARCHS")), "epochs": SIZE, "lr": POSITIVE, "schedule": Choice(names=SCHEDULES),
    "freeze": Choice(("cnn/train.py", "FREEZE_CHOICES")),
    # tasks/photo
    "head": Choice(("photo/heads.py", "HEADS")), "dropout": Num(0, 1, hi_open=True), "head_epochs": COUNT,
    "head_lr": POSITIVE, "freeze_base": Bool(), "fine_tune_epochs": COUNT, "fine_tune_lr": POSITIVE,
    "fine_tune_from": Int(), "fine_tune_schedule": Choice(names=SCHEDULES), "train_bn": Bool(),
    "bn_momentum": Num(0, 1, hi_open=True, null_ok=True),
    "steps_per_epoch": SIZE, "label_smoothing": FRACTION, "cache_images": Bool(), "distill_weight": FRACTION,
    # evaluate (min_accuracy/max_regression: EVALUATE_VALUES), export
    "top_k": SIZE, "max_regression": FRACTION, "grid": COUNT, "most_confused": COUNT,
    "tta": OpenMap(Seq(Choice(("evaluate/metrics.py", "TTA_VIEWS"))), Ref("dataset"),
                   "a mapping dataset -> [test-time views]", null_ok=True),
    "formats": Subset(Choice(("evaluate/export.py", "FORMATS"))),
    "representative_samples": SIZE, "representative_pool": SIZE, "latency_runs": SIZE, "num_threads": SIZE,
    "int8_float_layers": COUNT, "int8_float_above": POSITIVE, "int8_debug_samples": SIZE,
    "metadata": Table(lambda: {k: TEXT for k in literal_keys("evaluate/export.py", "METADATA_DEFAULTS")},
                      null_ok=True),
    # report
    "transfer": Table(lambda: fields(REPORT["transfer"]), null_ok=True),
    "tables": OpenMap(Table(lambda: fields(REPORT_TABLE)), Str(ENTRY_NAME.pattern, "a name"),
                      "a mapping name -> {heading, caption, models}", null_ok=True),
    "models": MODEL_LIST, "dashed": MODEL_LIST, "title": TEXT, "heading": TEXT, "caption": TEXT,
    "retired": Seq(Str(ENTRY_NAME.pattern, "a retired model key (reports/retired/<key>/)"), null_ok=True),
}
# Where a key name means something else.
WEIGHTS_VALUES = {"arch": Choice(("fetch/weights.py", "ARCHS"))}
ARRAY_FETCH_VALUES = {"sha256": OpenMap(HEX, TEXT, "a mapping file name -> sha256", null_ok=True)}
EVALUATE_VALUES = {"min_accuracy": GATE, "max_regression": GATE}
FEATURES_VALUES = {"augment": augment_spec("photo/augment.py")}  # the train split's views 1..V-1
TRAINER_VALUES = {"tasks/cnn": {"augment": augment_spec("cnn/train.py")},
                  "tasks/photo": {"augment": augment_spec("photo/augment.py")}}


def fields(valid, specs: dict | None = None, nullable=()) -> dict[str, Spec]:
    """key -> its spec (`specs` first, then VALUES) for each valid key; those in `nullable` also take null."""
    out = {}
    for key in valid:
        spec = (specs or {}).get(key) or VALUES[key]
        out[key] = replace(spec, null_ok=True) if key in nullable else spec
    return out


def check_keys(where: str, given, valid) -> None:
    """ParamsError for the first key of `given` not in `valid`, with the nearest valid key."""
    if given is None:
        return
    if not isinstance(given, dict):
        raise ParamsError(f"params.yaml {where}: expected a mapping of settings, got {show(given)}")
    valid = sorted(set(valid))
    for key in given:
        if key not in valid:
            near = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
            hint = f"did you mean `{near[0]}`?" if near else f"valid keys: {', '.join(valid)}"
            raise ParamsError(f"params.yaml {where}: unknown key `{key}` ({hint})")


def check_entry(where: str, entry, valid, refs: Refs, *, specs: dict | None = None, nullable=(),
                required=(), why: str = "", null_ok: bool = True, expected: str = "a mapping of settings") -> None:
    """One section or entry: required keys present, no unknown key, every value fits its spec."""
    Table(lambda: fields(valid, specs, nullable), tuple(required), why, null_ok and not required,
          expected).check(where, entry, refs)


def nulls(defaults: dict) -> set:
    """The keys whose code default is None: null there means the default."""
    return {k for k, v in defaults.items() if v is None}


# ---------------------------------------------------------------- rules across keys

def check_percentages(where: str, entry: dict, defaults: dict) -> None:
    s = {**defaults, **{k: v for k, v in entry.items() if v is not None}}
    total = s["validation_percentage"] + s["testing_percentage"]
    if total >= 100:
        raise fail(where, f"validation_percentage + testing_percentage must be < 100, got "
                          f"{s['validation_percentage']:g} + {s['testing_percentage']:g}")


def check_photo_prepare(where: str, entry: dict, defaults: dict) -> None:
    check_percentages(where, entry, defaults)
    s = {**defaults, **{k: v for k, v in entry.items() if v is not None}}
    if s["max_pixels"] < s["image_size"] ** 2:
        raise fail(f"{where}.max_pixels", f"expected at least image_size**2 = {s['image_size'] ** 2} "
                                          f"(image_size {s['image_size']}), got {s['max_pixels']}")


def check_photo_recipe(where: str, recipe: dict) -> None:
    s = {**literal_defaults("photo/train.py"), **recipe}
    if s["head_epochs"] + s["fine_tune_epochs"] < 1:
        raise fail(where, f"head_epochs + fine_tune_epochs must be >= 1 (nothing would train), got "
                          f"{s['head_epochs']} + {s['fine_tune_epochs']}")
    init = str(recipe["init"])
    cached = literal_names("photo/heads.py", "CACHE_HEADS")
    if init.startswith(("data/features/", "data/teach/")) and s["head"] not in cached:
        raise fail(f"{where}.head", f"a features cache (init {init}) trains the heads {', '.join(sorted(cached))} "
                                    f"only (the others have layers inside the cached part), got {show(s['head'])}")


TRAINER_RULES = {"tasks/photo": check_photo_recipe}


def check_weights(where: str, entry: dict) -> None:
    if not (entry.get("file") or entry.get("url") or entry.get("package")):
        raise fail(where, "set `url` (upstream), `file` (a local weights file) or `package` (an installed registry "
                          "package that ships the file)")
    if entry.get("package") and not (entry.get("package_file") and entry.get("sha256")):
        raise fail(where, "`package` needs `package_file` (the file's path inside it) and `sha256` (its pin)")


# ---------------------------------------------------------------- sections

def recipe_keys(trainer: str) -> tuple[str, ...]:
    relpath, extra = TRAINERS[trainer]
    return tuple(k for k in literal_keys(relpath) if k not in DERIVED) + RECIPE_COMMON + extra


def check_recipe(where: str, recipe, refs: Refs) -> None:
    if not isinstance(recipe, dict):
        raise ParamsError(f"params.yaml {where}: expected a recipe mapping, got {show(recipe)}")
    missing = [k for k in RECIPE_REQUIRED if recipe.get(k) in (None, "")]
    if missing:
        raise ParamsError(f"params.yaml {where}: missing `{missing[0]}` (every recipe names {', '.join(RECIPE_REQUIRED)}"
                          f": its train stage depends on them)")
    for key in RECIPE_REQUIRED:
        TEXT.check(f"{where}.{key}", recipe[key], refs)
    trainer = recipe["trainer"].rstrip("/")
    if trainer not in TRAINERS:
        near = difflib.get_close_matches(trainer, list(TRAINERS), n=1, cutoff=0.6)
        raise ParamsError(f"params.yaml {where}.trainer: unknown trainer `{trainer}` "
                          f"({f'did you mean `{near[0]}`?' if near else 'valid: ' + ', '.join(TRAINERS)})")
    if "teacher" in recipe:
        raise ParamsError(f"params.yaml {where}: a recipe names its teacher through `init: data/teach/<t>` with "
                          f"`teach.<t>: {{dataset, features, teacher: {recipe['teacher']}}}` (teach@<t> makes the "
                          f"teacher's targets; a `teacher` key in the recipe is not read)")
    init, teach = recipe["init"].rstrip("/"), refs.section("teach")
    if init.startswith("data/teach/") and init.split("/", 2)[2] not in teach:
        raise ParamsError(f"params.yaml {where}.init: {init} names no entry of `teach` ({sorted(teach) or 'none'})")
    VALUES["init"].check(f"{where}.init", recipe["init"], refs)  # what it starts from, before what that implies
    if "distill_weight" in recipe and not init.startswith("data/teach/"):
        raise ParamsError(f"params.yaml {where}: `distill_weight` needs a teacher: `init: data/teach/<t>`")
    relpath = TRAINERS[trainer][0]
    check_entry(where, recipe, recipe_keys(trainer), refs, specs=TRAINER_VALUES.get(trainer),
                nullable=nulls(literal_defaults(relpath)))
    if trainer in TRAINER_RULES:
        TRAINER_RULES[trainer](where, recipe)


def _entries(params: dict, section: str) -> dict:
    value = params.get(section)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ParamsError(f"params.yaml {section}: expected a mapping (key -> settings), got {show(value)}")
    for key in value:
        if not isinstance(key, str) or not ENTRY_NAME.fullmatch(key):
            raise ParamsError(f"params.yaml {section}: the key {show(key)} is not a name (letters, digits, _ and -: "
                              f"it names a folder and a DVC stage)")
    return value


def validate(params: dict) -> dict:
    """Check every section present in `params` (a section absent is not checked); returns params."""
    from tasks.evaluate.export import EXPORT_DEFAULTS
    from tasks.evaluate.metrics import EVAL_DEFAULTS
    from tasks.fetch import PHOTO_KEYS
    from tasks.prepare.arrays import ARRAY_DEFAULTS
    from tasks.prepare.photos import DEFAULTS as FOLDER_PREPARE
    from tasks.sources import is_image_folder, module_name, source

    if not isinstance(params, dict):
        raise ParamsError(f"params.yaml: expected a mapping of sections, got {show(params)}")
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
    refs = Refs(params)
    VALUES["mirror"].check("mirror", params.get("mirror"), refs)
    check_entry("runtime", params.get("runtime"), RUNTIME, refs)
    check_entry("download", params.get("download"), DOWNLOAD, refs)
    datasets = params.get("datasets")
    if datasets is not None and not isinstance(datasets, dict):
        raise ParamsError(f"params.yaml datasets: expected a mapping dataset key -> source module "
                          f"(e.g. `mnist: mnist`, `flowers: folder`), got {show(datasets)}")
    datasets = _entries(params, "datasets")
    for key, name in datasets.items():
        Str(MODULE_NAME.pattern, "a source module name (tasks/sources/<name>.py)").check(f"datasets.{key}", name, refs)
    fetch, prepare = _entries(params, "fetch"), _entries(params, "prepare")
    for key in dict.fromkeys([*datasets, *fetch, *prepare]):
        where = "datasets" if key in datasets else "fetch" if key in fetch else "prepare"
        try:
            folder = is_image_folder(source(key, params))
        except KeyError as e:
            raise ParamsError(f"params.yaml {where}.{key}: {e.args[0]}") from None
        name = module_name(key, params)
        check_entry(f"fetch.{key}", fetch.get(key), PHOTO_KEYS if folder else ARRAY_FETCH.get(name, ("sha256",)),
                    refs, specs=None if folder else ARRAY_FETCH_VALUES)
        defaults = FOLDER_PREPARE if folder else ARRAY_DEFAULTS
        # tasks/prepare/photos.py settings() reads a null as the default; the arrays' prepare does not
        check_entry(f"prepare.{key}", prepare.get(key), defaults, refs, nullable=defaults if folder else ())
        (check_photo_prepare if folder else check_percentages)(f"prepare.{key}", prepare.get(key) or {}, defaults)
    check_defaults = literal_defaults("check/run.py", "CHECK_DEFAULTS")
    checks = _entries(params, "check")
    for key, entry in checks.items():
        problem = _problem_dataset(key, refs)
        if problem:
            raise ParamsError(f"params.yaml check.{key}: a check entry is named after its dataset: {problem}")
        check_entry(f"check.{key}", entry, check_defaults, refs, nullable=nulls(check_defaults))
    for key, entry in _entries(params, "weights").items():
        check_entry(f"weights.{key}", entry, WEIGHTS, refs, specs=WEIGHTS_VALUES, required=("arch",),
                    why="a weights entry names its arch, one of ARCHS in tasks/fetch/weights.py")
        check_weights(f"weights.{key}", entry)
    features_defaults = literal_defaults("photo/features.py", "FEATURES_DEFAULTS")
    for key, entry in _entries(params, "features").items():
        check_entry(f"features.{key}", entry, (*features_defaults, *FEATURES), refs, nullable=nulls(features_defaults),
                    specs=FEATURES_VALUES, required=("dataset",),
                    why="a features entry names its dataset: its stage depends on it")
        views = int(entry.get("views") or 1)
        if (views > 1) != bool(entry.get("augment")):
            raise fail(f"features.{key}", f"views {views} with augment {show(entry.get('augment'))}: views 1.. of the "
                                          f"train split are the augmented ones, so views >= 2 needs augment and "
                                          f"augment needs views >= 2")
    models, teach = _entries(params, "models"), _entries(params, "teach")
    for key, entry in teach.items():
        check_entry(f"teach.{key}", entry, (*TEACH, *literal_keys("photo/teach.py", "TEACH_DEFAULTS")), refs,
                    required=TEACH, why=f"a teach entry names {', '.join(TEACH)}: its stage depends on them")
        if entry["features"] not in _entries(params, "features"):
            raise ParamsError(f"params.yaml teach.{key}.features: no features entry `{entry['features']}`")
        teacher = entry["teacher"].split("/")
        if len(teacher) != 3 or teacher[0] != "models" or teacher[2] != "model.keras" or teacher[1] not in models:
            raise ParamsError(f"params.yaml teach.{key}.teacher: expected models/<a recipe of models>/model.keras, "
                              f"got {entry['teacher']!r}")
    for key, recipe in models.items():
        check_recipe(f"models.{key}", recipe, replace(refs, owner=key))
        dataset = recipe["dataset"]
        if dataset not in checks:
            raise ParamsError(f"params.yaml models.{key}.dataset: dataset `{dataset}` has no `check.{dataset}` "
                              f"entry; training waits for check@{dataset}'s verdict: add `check: {{{dataset}: {{}}}}` "
                              f"(defaults: tasks/check/run.py CHECK_DEFAULTS)")
    check_entry("evaluate", params.get("evaluate"), EVAL_DEFAULTS, refs, specs=EVALUATE_VALUES,
                nullable=nulls(EVAL_DEFAULTS))
    check_entry("export", params.get("export"), EXPORT_DEFAULTS, refs, nullable=nulls(EXPORT_DEFAULTS))
    check_entry("report", params.get("report"), REPORT, refs)
    return params
