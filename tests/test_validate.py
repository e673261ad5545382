"""params.yaml is checked once, before any work: unknown keys name the nearest valid one, recipes
name what their stage interpolates, and code defaults agree with params.yaml."""
import pytest
import yaml

from imports import REPO
from tasks.stages.project import Project
from tasks.stages.validate import ParamsError, literal_keys, validate


def params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def with_recipe(p: dict, key: str, recipe: dict, section: str = "models") -> dict:
    p[section] = {**(p.get(section) or {}), key: recipe}
    return p


def test_the_project_params_are_valid():
    validate(params())


@pytest.mark.parametrize("where, typo, hint", [
    ("models.emnist_cnn", "epoch", "epochs"),
    ("models.cards_ours_v2_100", "fine_tune_epoch", "fine_tune_epochs"),
    ("prepare.cards", "image_sise", "image_size"),
    ("prepare.mnist", "validation_percent", "validation_percentage"),
    ("evaluate", "top_kk", "top_k"),
    ("export", "latency_run", "latency_runs"),
    ("features.cards_v2_035", "batchsize", "batch_size"),
    ("fetch.emnist_letters", "fromat", "format"),
    ("weights.mobilenet_v2_035_224", "sha265", "sha256"),
    ("teach.cards_v2_100_to_v2_035", "temprature", "temperature"),
])
def test_an_unknown_key_fails_naming_it_and_the_nearest_valid_key(where, typo, hint):
    p = params()
    section, _, key = where.partition(".")
    target = p[section][key] if key else p[section]
    target[typo] = 3
    with pytest.raises(ParamsError, match=rf"params.yaml {where}: unknown key `{typo}` \(did you mean `{hint}`\?\)"):
        validate(p)


def test_a_typo_fails_before_any_work(tmp_path):
    p = with_recipe(params(), "m", {"dataset": "mnist", "init": "tasks/cnn/models.py", "trainer": "tasks/cnn",
                                    "epoch": 3})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    with pytest.raises(ParamsError, match="models.m: unknown key `epoch` \\(did you mean `epochs`\\?\\)"):
        Project(tmp_path).params()


def test_sections_that_do_not_exist_are_errors_with_where_the_defaults_live():
    for section in ("train", "photo"):
        with pytest.raises(ParamsError, match=rf"`{section}`: there is no such section.*DEFAULTS"):
            validate({**params(), section: {"epochs": 3}})
    with pytest.raises(ParamsError, match=r"\(top level\): unknown key `modles` \(did you mean `models`\?\)"):
        validate({**params(), "modles": {}})


def test_a_recipe_names_its_dataset_init_and_trainer():
    for missing in ("dataset", "init", "trainer"):
        recipe = {"dataset": "mnist", "init": "tasks/cnn/models.py", "trainer": "tasks/cnn"}
        del recipe[missing]
        with pytest.raises(ParamsError, match=f"models.m: missing `{missing}`"):
            validate(with_recipe(params(), "m", recipe))
    with pytest.raises(ParamsError, match="unknown trainer `tasks/trian` \\(did you mean `tasks/cnn`\\?\\)"):
        validate(with_recipe(params(), "m", {"dataset": "mnist", "init": "tasks/cnn/models.py", "trainer": "tasks/trian"}))


def test_recipe_keys_follow_the_trainer():
    digits = {"dataset": "mnist", "init": "tasks/cnn/models.py", "trainer": "tasks/cnn"}
    for arch in ("softmax", "mlp", "lecture_conv", "lecture_conv_dense", "lecture_conv_pool_dense", "bn_cnn2"):
        validate(with_recipe(params(), "m", {**digits, "arch": arch, "epochs": 2, "min_accuracy": 0.9}))
    with pytest.raises(ParamsError, match="models.m: unknown key `head_epochs`"):  # a photo key on a digits recipe
        validate(with_recipe(params(), "m", {**digits, "head_epochs": 3}))
    photo = {"dataset": "cards", "init": "data/features/cards_v2_035", "trainer": "tasks/photo"}
    with pytest.raises(ParamsError, match="models.p: unknown key `freeze`"):  # and a digits key on a photo one
        validate(with_recipe(params(), "p", {**photo, "freeze": "conv"}))
    student = {**photo, "init": "data/teach/cards_v2_100_to_v2_035", "distill_weight": 0.5}
    validate(with_recipe(params(), "s", student))
    with pytest.raises(ParamsError, match="models.s: a recipe names its teacher through `init: data/teach/<t>`"):
        validate(with_recipe(params(), "s", {**student, "teacher": "models/cards_ours_v2_100/model.keras"}))
    with pytest.raises(ParamsError, match=r"models.s.init: data/teach/nope names no entry of `teach`"):
        validate(with_recipe(params(), "s", {**student, "init": "data/teach/nope"}))
    with pytest.raises(ParamsError, match="models.s: `distill_weight` needs a teacher"):
        validate(with_recipe(params(), "s", {**photo, "distill_weight": 0.5}))


def test_every_recipe_lives_once_under_models_and_a_teach_entry_names_real_things():
    """No second copy of the recipes (the YAML merge `all_models` made `dvc exp run -S models...` a
    no-op): the old sections are errors that say where recipes go."""
    for old in ("distill", "all_models"):
        with pytest.raises(ParamsError, match=rf"`{old}`: every recipe lives once under `models`"):
            validate({**params(), old: {}})
    for change, message in (({"features": "nope"}, "teach.t.features: no features entry `nope`"),
                            ({"teacher": "models/nope/model.keras"}, "teach.t.teacher: expected models/<a recipe"),
                            ({"teacher": ""}, "teach.t: missing `teacher`")):
        p = params()
        p["teach"]["t"] = {**p["teach"]["cards_v2_100_to_v2_035"], **change}
        with pytest.raises(ParamsError, match=message):
            validate(p)


def test_datasets_name_their_source_module():
    with pytest.raises(ParamsError, match="datasets: expected a mapping dataset key -> source module"):
        validate({**params(), "datasets": ["mnist"]})
    with pytest.raises(ParamsError, match=r"no module tasks/sources/trash.py.*datasets: \{trash: folder\}"):
        validate({**params(), "fetch": {**params()["fetch"], "trash": {"source": "x"}}})
    p = params()
    p["datasets"]["trash"] = "folder"
    p["fetch"]["trash"] = {"source": "photos/trash"}
    validate(p)
    p["fetch"]["trash"]["kind"] = "folder"  # the source module is named once, in `datasets`
    with pytest.raises(ParamsError, match="fetch.trash: unknown key `kind`"):
        validate(p)


def test_code_defaults_and_params_never_disagree():
    """Where params.yaml sets a key that also has a code default, the two hold the same value (the
    code default is what an omitted key means; params.yaml is not a second, different default)."""
    from tasks.fetch.download import download_options
    from tasks.evaluate.metrics import EVAL_DEFAULTS
    from tasks.evaluate.export import EXPORT_DEFAULTS
    from tasks.prepare.photos import DEFAULTS as FOLDER
    from tasks.prepare.arrays import ARRAY_DEFAULTS
    from tasks.sources import is_image_folder, source

    p = params()
    for section, defaults in (("evaluate", EVAL_DEFAULTS), ("export", EXPORT_DEFAULTS),
                              ("download", download_options({}))):
        for k, v in p[section].items():
            assert v == defaults[k], f"params.yaml {section}.{k} = {v!r}, code default {defaults[k]!r}"
    for key, entry in p["prepare"].items():
        defaults = FOLDER if is_image_folder(source(key, p)) else ARRAY_DEFAULTS
        for k, v in entry.items():
            assert v == defaults[k], f"params.yaml prepare.{key}.{k} = {v!r}, code default {defaults[k]!r}"
    assert "train" not in p and "photo" not in p   # the trainers' defaults live in their DEFAULTS only


def test_trainer_defaults_are_read_without_importing_tensorflow():
    assert "epochs" in literal_keys("cnn/train.py") and "head_epochs" in literal_keys("photo/train.py")
    import subprocess
    import sys
    code = ("import sys, yaml; from tasks.stages.validate import validate; "
            f"validate(yaml.safe_load(open({str(REPO / 'params.yaml')!r}))); "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'imported TF'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
