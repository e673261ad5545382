"""Hostile params.yaml, generated: Hypothesis mutates the project's own params.yaml, each mutation invalid by
construction (a wrong type at any node, zero and negative sizes, values out of range, epochs as strings,
a bad choice, a missing required key, an unknown key at any level, a reference to nothing). Through the
real CLI entry (in-process), every one ends in exit 1 and ONE stderr line that names params.yaml and
the key, never a traceback, and nothing written: the project folder holds only its params.yaml.

Which values are wrong is spelled here, independently of tasks/stages/validate.py: by the kind of
value params.yaml holds at that place (a number is never a string, a mapping or a bool there), plus
small tables of the keys with a range (ZERO_INVALID, FRACTIONS, ...) and of the required keys.
"""
from __future__ import annotations

import contextlib
import copy
import io
import tempfile
from collections import Counter
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from imports import REPO
from project import with_retired_recipes
from tasks.cli import main

BASE = with_retired_recipes(yaml.safe_load((REPO / "params.yaml").read_text()))  # real features/teach entries to break
LOADER, DUMPER = getattr(yaml, "CSafeLoader", yaml.SafeLoader), getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def dump(params) -> str:
    return yaml.dump(params, Dumper=DUMPER, sort_keys=False)  # what `==` misses (False == 0) a dump tells apart
RECIPES = list(BASE["models"])
COMMANDS = ([["train", k] for k in RECIPES] + [["evaluate", RECIPES[0]], ["export", RECIPES[-1]], ["report"],
            ["report", RECIPES[1]], ["fetch", "mnist"], ["prepare", "cards"]]
            + [[command, next(iter(BASE[section]))] for command, section in
               (("features", "features"), ("fetch-weights", "weights"), ("teach", "teach"))])

# Keys whose value 0 is wrong (sizes, rates, counts of at least one); every number but fine_tune_from is >= 0.
ZERO_INVALID = {"epochs", "batch_size", "image_size", "shard_mb", "min_shards", "max_pixels", "jpeg_quality", "top_k",
                "representative_samples", "representative_pool", "latency_runs", "num_threads", "lr", "head_lr",
                "fine_tune_lr", "alpha", "temperature", "timeout_s", "min_images_per_class", "steps_per_epoch"}
ANY_SIGN = {"fine_tune_from"}
FRACTIONS = {"min_accuracy", "max_regression", "dropout", "label_smoothing", "distill_weight", "translate", "rotate",
             "zoom", "crop", "scale", "brightness", "contrast"}
PERCENTS = {"validation_percentage", "testing_percentage"}
EPOCHS = {"epochs", "head_epochs", "fine_tune_epochs"}
CHOICES = {"arch", "head", "base", "schedule", "fine_tune_schedule", "freeze", "resize", "format", "link"}
REQUIRED = {"models": ("dataset", "init", "trainer"), "teach": ("dataset", "features", "teacher"),
            "features": ("dataset",), "weights": ("arch", "url")}  # url: of the entries that have one (no `file`, no `package`)
# Where a second kind of value is also valid, it is never generated as the wrong one.
ALSO_VALID = {"augment": {"bool", "mapping"}, "min_accuracy": {"number", "mapping"},
              "max_regression": {"number", "mapping"}, "sha256": {"null", "str", "mapping"}}


def kind(value) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "str", list: "list", dict: "mapping", type(None): "null"}[type(value)]


WORDS = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True)
VALUE_OF = {
    "bool": st.booleans(),
    "number": st.one_of(st.integers(-10, 10**6), st.floats(-1e6, 1e6, allow_nan=False)),
    "str": st.one_of(WORDS, st.sampled_from(["", "10", "0.5", "true", "null", "ten"])),
    "list": st.lists(st.integers(0, 9), max_size=3),
    "mapping": st.dictionaries(WORDS, st.integers(0, 9), max_size=2),
}
HOSTILE = {"zz_not_a_key": [[None]]}  # a value no key takes: its type or its own key is wrong everywhere


def walk(node, path=()):
    """(path, value) of every node below `node`: mapping keys and list indices."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        yield (*path, k), v
        yield from walk(v, (*path, k))


NODES = list(walk(BASE))
MAPPINGS = [((), BASE)] + [(p, v) for p, v in NODES if isinstance(v, dict)]
NUMBERS = [(p, v) for p, v in NODES if kind(v) == "number"]
LEAF_NAMED = {name: [p for p, v in NODES if p[-1] == name and kind(v) != "mapping"]
              for name in ZERO_INVALID | FRACTIONS | PERCENTS | EPOCHS | CHOICES | {"image_size", "jpeg_quality"}}


def text(path) -> str:
    """A path as the errors spell it: models.m.augment, report.transfer.models[2]."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else f".{p}" if out else str(p)
    return out


def at(params, path):
    for p in path:
        params = params[p]
    return params


def put(params, path, value):
    at(params, path[:-1])[path[-1]] = value


def named(*names):
    return [p for n in names for p in LEAF_NAMED.get(n, [])]


# Each mutator changes `p` (a deep copy of params.yaml) and returns what the error line must contain.
def wrong_type(draw, p):
    path, value = draw(st.sampled_from(NODES))
    valid = {kind(value)} | ALSO_VALID.get(path[-1], set())
    put(p, path, draw(st.sampled_from(sorted(set(VALUE_OF) - valid)).flatmap(VALUE_OF.get)))
    return [text(path)]


def zero(draw, p):
    path = draw(st.sampled_from(named(*ZERO_INVALID)))
    put(p, path, draw(st.sampled_from([0, 0.0])))
    return [text(path)]


def negative(draw, p):
    path = draw(st.sampled_from([q for q, _ in NUMBERS if q[-1] not in ANY_SIGN]))
    put(p, path, draw(st.one_of(st.integers(-10**6, -1), st.floats(-1e6, -1e-6))))
    return [text(path)]


def out_of_range(draw, p):
    path = draw(st.sampled_from(named(*FRACTIONS, *PERCENTS, "image_size", "jpeg_quality")))
    name = path[-1]
    bad = (st.floats(1.0001, 1e6) if name in FRACTIONS else st.integers(100, 10**6) if name in PERCENTS else
           st.one_of(st.integers(1, 7), st.integers(4097, 10**6)) if name == "image_size" else st.integers(101, 10**6))
    put(p, path, draw(bad))
    return [text(path)]


def split_sum(draw, p):
    key = draw(st.sampled_from(list(BASE["prepare"])))
    validation = draw(st.integers(1, 99))
    testing = draw(st.integers(100 - validation, 99))  # each < 100, together >= 100
    p["prepare"][key].update(validation_percentage=validation, testing_percentage=testing)
    return [f"prepare.{key}", "validation_percentage"]


def epochs_as_text(draw, p):
    path = draw(st.sampled_from(named(*EPOCHS)))
    put(p, path, draw(st.sampled_from(["ten", "5", "", "1e3", str(at(BASE, path))])))
    return [text(path)]


def bad_choice(draw, p):
    path = draw(st.sampled_from(named(*CHOICES) + [("fetch", "cards", "link")]))
    put(p, path, "no_such_" + draw(WORDS))
    return [text(path)]


def missing(draw, p):
    section = draw(st.sampled_from(sorted(REQUIRED)))
    key = draw(st.sampled_from([k for k in BASE[section] if set(REQUIRED[section]) <= set(BASE[section][k])]))
    name = draw(st.sampled_from(REQUIRED[section]))
    how = draw(st.sampled_from(["delete", None, ""]))
    if how == "delete":
        del p[section][key][name]
    else:
        p[section][key][name] = how
    return [f"{section}.{key}", f"`{name}`"]


def unknown_key(draw, p):
    path, node = draw(st.sampled_from(MAPPINGS))
    name = draw(WORDS.filter(lambda w: w not in node))
    at(p, path)[name] = copy.deepcopy(HOSTILE)
    return [text(path), name]


def dangling(draw, p):
    """A reference to nothing: a missing source module, init, teacher, features, weights or model."""
    nothing = "no_such_" + draw(WORDS)
    recipe = draw(st.sampled_from(RECIPES))
    target = draw(st.sampled_from(["module", "new module", "dataset", "init", "init self", "teacher", "teach features",
                                   "features weights", "features dataset", "report"]))
    if target in ("module", "new module"):
        key = draw(st.sampled_from(list(BASE["datasets"]))) if target == "module" else nothing.replace("such", "set")
        p["datasets"][key] = nothing
        return [f"datasets.{key}"]
    if target == "dataset":
        p["models"][recipe]["dataset"] = nothing
        return [f"models.{recipe}.dataset"]
    if target.startswith("init"):
        init = (f"models/{recipe}/model.keras" if target == "init self" else draw(st.sampled_from(
            [f"models/{nothing}/model.keras", f"data/features/{nothing}", f"data/weights/{nothing}",
             f"data/teach/{nothing}", f"tasks/{nothing}.py", f"{nothing}/x", f"models/{RECIPES[0]}/weights.h5"])))
        p["models"][recipe]["init"] = init
        return [f"models.{recipe}.init"]
    if target == "report":
        where = draw(st.sampled_from([("report", "transfer", "models"), ("report", "transfer", "dashed"),
                                      *[("report", "tables", t, "models") for t in BASE["report"]["tables"]]]))
        at(p, where).append(nothing)
        return [text(where)]
    section, field = {"teacher": ("teach", "teacher"), "teach features": ("teach", "features"),
                      "features weights": ("features", "weights"), "features dataset": ("features", "dataset")}[target]
    key = draw(st.sampled_from(list(BASE[section])))
    p[section][key][field] = f"models/{nothing}/model.keras" if field == "teacher" else nothing
    return [f"{section}.{key}.{field}"]


MUTATORS = {f.__name__: f for f in (wrong_type, zero, negative, out_of_range, split_sum, epochs_as_text, bad_choice,
                                    missing, unknown_key, dangling)}


@st.composite
def mutations(draw):
    p = copy.deepcopy(BASE)
    name = draw(st.sampled_from(sorted(MUTATORS)))
    expect = MUTATORS[name](draw, p)
    assert dump(p) != dump(BASE)
    return name, p, expect


def test_hostile_params_end_in_one_line_naming_the_key_and_write_nothing(monkeypatch, tmp_path):
    monkeypatch.delenv("TLPIPE_TRACEBACK", raising=False)
    monkeypatch.delenv("TLPIPE_VERBOSE", raising=False)
    monkeypatch.setenv("TLPIPE_MIRROR", str(Path(tempfile.gettempdir()) / "tlpipe-no-mirror"))  # nothing to fetch
    seen = Counter()

    @settings(max_examples=500, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(mutation=mutations(), command=st.sampled_from(COMMANDS))
    def hostile(mutation, command):
        name, params, expect = mutation
        seen[name] += 1
        with tempfile.TemporaryDirectory(prefix="tlpipe-fuzz-") as d, pytest.MonkeyPatch.context() as mp:
            root = Path(d)
            (root / "params.yaml").write_text(dump(params))
            assert dump(yaml.load((root / "params.yaml").read_text(), Loader=LOADER)) == dump(params)  # survives YAML
            mp.chdir(root)
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                rc = main(command)
            left = sorted(str(q.relative_to(root)) for q in root.rglob("*") if q.name != "params.yaml")
        err = err.getvalue()
        assert rc == 1, (name, command, err)
        assert err.count("\n") == 1 and err.endswith("\n"), f"{name}: not one line: {err!r}"
        assert "Traceback" not in err and "params.yaml" in err, err
        assert all(e in err for e in expect), f"{name}: {expect} not in {err!r}"
        assert left == [], f"{name} {command}: wrote {left} ({err!r})"

    set_hypothesis_home_dir(tmp_path / "hypothesis")  # no .hypothesis/ in the repository (its constants cache)
    try:
        hostile()
    finally:
        set_hypothesis_home_dir(None)
    assert sum(seen.values()) >= 500 and set(seen) == set(MUTATORS), seen
