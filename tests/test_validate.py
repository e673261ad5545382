"""params.yaml is checked once, before any work: unknown keys name the nearest valid one, recipes
name what their stage interpolates, and code defaults agree with params.yaml."""
import pytest
import yaml

from imports import REPO
from project import with_retired_recipes
from tasks.stages.project import Project
from tasks.stages.validate import ParamsError, literal_keys, validate


def params() -> dict:
    """params.yaml with the retired cards recipes merged in: the specs of features@/teach@ entries and of
    cache-initialised students are checked on real entries (tests/retired_cards_recipes.yaml)."""
    return with_retired_recipes(yaml.safe_load((REPO / "params.yaml").read_text()))


def with_recipe(p: dict, key: str, recipe: dict, section: str = "models") -> dict:
    p[section] = {**(p.get(section) or {}), key: recipe}
    return p


def test_the_project_params_are_valid():
    validate(yaml.safe_load((REPO / "params.yaml").read_text()))  # as committed
    validate(params())  # and with the retired cards chain back in


@pytest.mark.parametrize("where, typo, hint", [
    ("models.emnist_cnn", "epoch", "epochs"),
    ("models.cards_ours_v2_100", "fine_tune_epoch", "fine_tune_epochs"),
    ("prepare.cards", "image_sise", "image_size"),
    ("prepare.mnist", "validation_percent", "validation_percentage"),
    ("evaluate", "top_kk", "top_k"),
    ("export", "latency_run", "latency_runs"),
    ("features.cards_v2_100", "batchsize", "batch_size"),
    ("fetch.emnist_letters", "fromat", "format"),
    ("weights.mobilenet_v2_035_224", "sha265", "sha256"),
    ("teach.cards_cut_v2_100_to_v2_035", "temprature", "temperature"),
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
    photo = {"dataset": "cards", "init": "data/features/cards_v2_100", "trainer": "tasks/photo"}
    with pytest.raises(ParamsError, match="models.p: unknown key `freeze`"):  # and a digits key on a photo one
        validate(with_recipe(params(), "p", {**photo, "freeze": "conv"}))
    student = {**photo, "init": "data/teach/cards_cut_v2_100_to_v2_035", "distill_weight": 0.5}
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
        p["teach"]["t"] = {**p["teach"]["cards_cut_v2_100_to_v2_035"], **change}
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
            if (section, k) == ("evaluate", "tta"):  # which datasets allow which views: data, not a default
                continue
            assert v == defaults[k], f"params.yaml {section}.{k} = {v!r}, code default {defaults[k]!r}"
    for key, entry in p["prepare"].items():
        defaults = FOLDER if is_image_folder(source(key, p)) else ARRAY_DEFAULTS
        for k, v in entry.items():
            if k in ("drop", "relabel"):  # a dataset's own fixes (check@'s findings), not a default
                continue
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


# ---------------------------------------------------------------- values: type, range, choices, references

def put(p: dict, path: str, value) -> dict:
    *parents, leaf = path.split(".")
    node = p
    for key in parents:
        node = node[key]
    node[leaf] = value
    return p


def error_of(p: dict) -> str:
    with pytest.raises(ParamsError) as e:
        validate(p)
    message = str(e.value)
    assert "\n" not in message and message.startswith("params.yaml "), message
    return message


@pytest.mark.parametrize("path, value, expected", [
    # measured by a user: all six passed; batch_size 0 ended in TensorFlow, "ten" wrote a backup first
    ("models.mnist_scratch.epochs", -1, "expected an integer >= 1, got -1"),
    ("models.mnist_scratch.epochs", 0, "expected an integer >= 1, got 0"),
    ("models.mnist_scratch.lr", -0.1, "expected a number > 0, got -0.1"),
    ("models.mnist_scratch.min_accuracy", 1.5, "expected a number in [0, 1], got 1.5"),
    ("models.mnist_scratch.patience", -3, "expected an integer >= 0, got -3"),
    ("prepare.mnist.validation_percentage", 150, "expected a number in [0, 100), got 150"),
    ("models.mnist_scratch.batch_size", 0, "expected an integer >= 1, got 0"),
    ("models.mnist_scratch.epochs", "ten", "expected an integer >= 1, got 'ten'"),
    # a bool is not an integer, a float not an integer, a string not a number
    ("models.mnist_scratch.epochs", True, "expected an integer >= 1, got True"),
    ("models.mnist_scratch.seed", 4.5, "expected an integer >= 0, got 4.5"),
    ("models.cards_ours_v2_100.head_lr", "1e-3", "expected a number > 0, got '1e-3'"),
    ("models.cards_ours_v2_100.dropout", 1.0, "expected a number in [0, 1) or null, got 1.0"),
    ("models.cards_ours_v2_100.augment", "yes", "expected true or false or a mapping {crop, scale, brightness, "
                                                "rotate, contrast, flip, turn180}, got 'yes'"),
    ("models.cards_ours_v2_100.augment.flip", 1, "expected true or false, got 1"),
    ("models.emnist_ours.augment.zoom", 1.5, "expected a number in [0, 1], got 1.5"),
    ("models.cards_phone_v2_035.augment.turn180", "yes", "expected true or false, got 'yes'"),
    ("evaluate.tta.cardz", ["turn180"], "no dataset `cardz`"),
    ("prepare.cards.image_size", 4, "expected an integer in 8..4096 or null, got 4"),
    ("prepare.cards.jpeg_quality", 0, "expected an integer in 1..100 or null, got 0"),
    ("download.retries", -1, "expected an integer >= 0, got -1"),
    ("runtime.workers", "all", "expected an integer >= 0, got 'all'"),
    ("evaluate.max_regression", 2, "expected a number in [0, 1], got 2"),
    ("export.metadata.version", 1.0, "expected a string, got 1.0"),
    ("weights.mobilenet_v2_035_224.sha256", "abc", "expected a sha256 (64 hex digits) or \"\" or null, got 'abc'"),
    ("fetch.mnist.sha256", "ab" * 32, "expected a mapping file name -> sha256 or null, got 'abab"),
    ("report.transfer.title", 3, "expected a string, got 3"),
])
def test_a_bad_value_fails_in_one_line_naming_its_key(path, value, expected):
    assert error_of(put(params(), path, value)).startswith(f"params.yaml {path}: {expected}")


@pytest.mark.parametrize("path, value, choices", [
    ("models.emnist_ours.schedule", "linear", "schedule must be one of constant, cosine, got 'linear'"),
    ("models.cards_ours_v2_100.fine_tune_schedule", "step", "fine_tune_schedule must be one of constant, cosine"),
    ("models.mnist_transfer_conv.freeze", "all", "freeze must be one of none, conv, conv_dense (FREEZE_CHOICES in "
                                                 "tasks/cnn/train.py), got 'all'"),
    ("models.emnist_cnn.arch", "resnet", "arch must be one of reference_cnn, bn_cnn, bn_cnn2, softmax, mlp, "
                                         "lecture_conv, lecture_conv_dense, lecture_conv_pool_dense (ARCHS in "
                                         "tasks/cnn/models.py)"),
    ("models.cards_ours_v2_100.head", "big", "head must be one of study_cards, study_banknotes, ours, spatial"),
    ("models.cards_study_v2_035.base", "resnet50", "base must be one of mobilenet, mobilenet_v2, "
                                                   "mobilenet_v3_small, mobilenet_v3_large, efficientnet_lite0, compact_cnn (BASES in"),
    ("features.cards_v2_100.base", "resnet50", "(BASES in tasks/photo/backbones.py), got 'resnet50'"),
    ("prepare.cards.resize", "stretch", "resize must be one of squash, crop (RESIZE in tasks/prepare/images.py)"),
    ("fetch.emnist_letters.format", "zip", "format must be one of mat, idx, auto"),
    ("fetch.cards.link", "symlink", "link must be one of copy, hardlink, got 'symlink'"),
    ("evaluate.tta.cards", "mirror", "turn180 (TTA_VIEWS in tasks/evaluate/metrics.py), got 'mirror'"),
    ("weights.mobilenet_v2_100_224.arch", "resnet50", "arch must be one of mobilenet_v2, mobilenet, "
                                                      "mobilenet_v3_small, mobilenet_v3_large, efficientnet_lite0 (ARCHS in tasks/fetch"),
])
def test_a_value_outside_its_choices_names_them(path, value, choices):
    if path == "evaluate.tta.cards":  # a list: the item is named
        message = error_of(put(params(), path, [value]))
        assert message.startswith(f"params.yaml {path}[0]: cards[0] must be one of ") and choices in message
        return
    message = error_of(put(params(), path, value))
    assert message.startswith(f"params.yaml {path}: {path.rsplit('.', 1)[1]} must be one of ") and choices in message


@pytest.mark.parametrize("path, value, problem", [
    ("models.mnist_scratch.dataset", "nope", "no dataset `nope`: not a key of `datasets` (mnist, emnist_letters, "
                                             "cards) and no module tasks/sources/nope.py"),
    ("features.cards_v2_100.dataset", "nope", "no dataset `nope`"),
    ("teach.cards_cut_v2_100_to_v2_035.dataset", "nope", "no dataset `nope`"),
    ("datasets.cards", "nope", "no module tasks/sources/nope.py"),
    ("models.mnist_transfer_conv.init", "models/nope/model.keras", "`models/nope/model.keras`: no recipe `nope`"),
    ("models.emnist_cnn.init", "models/emnist_cnn/model.keras", "is this recipe's own model"),
    ("models.cards_ours_v2_100.init", "data/features/nope", "no entry `nope` in `features` (cards_v2_100, "
                                                            "cards_v2_100_cut13, cards_v2_035_cut6)"),
    ("models.cards_study_v2_035.init", "data/weights/nope", "no entry `nope` in `weights`"),
    ("models.emnist_cnn.init", "tasks/cnn/nope.py", "`tasks/cnn/nope.py` is no file under tasks/"),
    ("models.emnist_cnn.init", "weights.h5", "expected tasks/<a file>, models/<another recipe>/model.keras, "
                                             "data/features/<a features key>"),
    ("features.cards_v2_100.weights", "nope", "no weights entry `nope` (mobilenet_v2_100_224, efficientnet_lite0_224, "
     "mobilenet_v2_035_224)"),
    ("teach.cards_cut_v2_100_to_v2_035.teacher", "models/cards_ours_v2_100/weights.h5", "expected models/<a recipe"),
    ("evaluate.min_accuracy", {"default": 0.5, "nope": 0.9}, "evaluate.min_accuracy.nope: `nope` is neither "
                                                             "`default` nor a recipe of `models`"),
])
def test_a_reference_to_nothing_names_the_key_and_what_is_missing(path, value, problem):
    message = error_of(put(params(), path, value))
    assert message.startswith(f"params.yaml {path.rsplit('.', 1)[0] if path.startswith('evaluate') else path}")
    assert problem in message


def test_the_recipes_report_names_exist():
    p = params()
    p["report"]["transfer"]["models"].append("nope")
    assert error_of(p) == "params.yaml report.transfer.models[5]: no such model `nope` (not a recipe of `models`)"
    p = params()
    p["report"]["tables"]["lecture"]["models"][0] = "mnist_softmx"
    assert error_of(p).startswith("params.yaml report.tables.lecture.models[0]: no such model `mnist_softmx`")
    validate(put(params(), "evaluate.min_accuracy", {"default": 0.5, "mnist_scratch": 0.99}))  # per-model gate


def test_rules_across_keys():
    assert error_of(put(put(params(), "prepare.mnist.validation_percentage", 60), "prepare.mnist.testing_percentage",
                        40)) == ("params.yaml prepare.mnist: validation_percentage + testing_percentage must be "
                                 "< 100, got 60 + 40")
    assert error_of(put(params(), "prepare.cards.max_pixels", 100)).startswith(
        "params.yaml prepare.cards.max_pixels: expected at least image_size**2 = 50176")
    photo = "models.cards_study_v2_035"
    assert error_of(put(params(), f"{photo}.head_epochs", 0)).startswith(
        f"params.yaml {photo}: head_epochs + fine_tune_epochs must be >= 1 (nothing would train), got 0 + 0")
    validate(put(params(), "models.cards_ours_v2_100.head_epochs", 0))  # fine-tuning only: allowed
    assert "a features cache (init data/features/cards_v2_100) trains the heads ours, spatial only" in error_of(
        put(params(), "models.cards_ours_v2_100.head", "study_cards"))
    assert error_of(put(params(), "weights.mobilenet_v2_035_224.url", "")) == (
        "params.yaml weights.mobilenet_v2_035_224: set `url` (upstream), `file` (a local weights file) or `package` "
        "(an installed registry package that ships the file)")
    p = params()
    del p["weights"]["mobilenet_v2_035_224"]["mirror_alternatives"][0]["sha256"]
    assert error_of(p).startswith("params.yaml weights.mobilenet_v2_035_224.mirror_alternatives[0]: missing `sha256`")
    assert error_of(put(params(), "features.cards_v2_100.dataset", None)).startswith(
        "params.yaml features.cards_v2_100: missing `dataset`")


def test_null_means_the_default_where_the_code_default_is_none():
    p = params()
    for path in ("models.cards_ours_v2_100.dropout", "models.cards_ours_v2_100.image_size",
                 "models.cards_study_v2_035.train_bn", "features.cards_v2_100.weights", "prepare.cards.image_size",
                 "weights.mobilenet_v2_035_224.sha256", "mirror"):
        put(p, path, None)
    validate(p)
    assert error_of(put(params(), "models.mnist_scratch.epochs", None)).startswith(
        "params.yaml models.mnist_scratch.epochs: expected an integer >= 1, got None")
    assert error_of(put(params(), "prepare.mnist.shard_mb", None)).startswith(
        "params.yaml prepare.mnist.shard_mb: expected a number > 0, got None")


def test_entry_keys_are_names():
    p = params()
    p["models"]["../escape"] = p["models"]["mnist_scratch"]
    assert error_of(p).startswith("params.yaml models: the key '../escape' is not a name")


def test_a_bad_value_stops_the_cli_before_any_work(tmp_path, monkeypatch, capsys):
    """The user's `epochs: "ten"` wrote models/<k>/backup.recipe.json before failing; now nothing is written."""
    from tasks.cli import main

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(put(params(), "models.mnist_scratch.epochs", "ten")))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TLPIPE_TRACEBACK", raising=False)
    assert main(["train", "mnist_scratch"]) == 1
    assert capsys.readouterr().err == ("tlpipe train: error: params.yaml models.mnist_scratch.epochs: expected an "
                                       "integer >= 1, got 'ten'\n")
    assert [p.name for p in tmp_path.iterdir()] == ["params.yaml"]


def test_every_key_the_code_reads_has_a_value_spec():
    from tasks.evaluate.export import EXPORT_DEFAULTS
    from tasks.evaluate.metrics import EVAL_DEFAULTS
    from tasks.fetch import PHOTO_KEYS
    from tasks.prepare.arrays import ARRAY_DEFAULTS
    from tasks.prepare.photos import DEFAULTS as FOLDER
    from tasks.stages import validate as v

    sections = [v.RUNTIME, v.DOWNLOAD, v.WEIGHTS, v.FEATURES, v.TEACH, v.REPORT, v.REPORT_TABLE, PHOTO_KEYS,
                *v.ARRAY_FETCH.values(), ARRAY_DEFAULTS, FOLDER, EVAL_DEFAULTS, EXPORT_DEFAULTS, *v.REPORT.values(),
                v.literal_keys("photo/features.py", "FEATURES_DEFAULTS"),
                v.literal_keys("photo/teach.py", "TEACH_DEFAULTS")]
    for keys in sections:
        assert set(v.fields(keys, v.FEATURES_VALUES)) == set(keys)  # a KeyError names a key without a spec
    for trainer in v.TRAINERS:  # a trainer's own specs (augment) first
        assert set(v.fields(v.recipe_keys(trainer), v.TRAINER_VALUES[trainer])) == set(v.recipe_keys(trainer))


def test_the_value_sets_are_the_codes():
    """What validate.py reads from the source as literals (or keeps, for the two the code spells inline) is
    what the code uses."""
    from tasks.cnn import models as cnn_models
    from tasks.cnn import train as cnn_train
    from tasks.evaluate.export import METADATA_DEFAULTS
    from tasks.fetch import weights
    from tasks.photo import augment, backbones, heads
    from tasks.photo import train as photo_train
    from tasks.prepare.images import RESIZE
    from tasks.sources import emnist_letters
    from tasks.stages import validate as v

    def options(key, specs=None):
        return set((specs or v.VALUES)[key].options())

    assert options("arch") == set(cnn_models.ARCHS) and options("arch", v.WEIGHTS_VALUES) == set(weights.ARCHS)
    assert options("head") == set(heads.HEADS)
    assert set(v.literal_names("photo/heads.py", "CACHE_HEADS")) == heads.CACHE_HEADS
    assert options("base") == set(backbones.BASES) and options("freeze") == set(cnn_train.FREEZE_CHOICES)
    assert options("resize") == set(RESIZE) and options("format") == {*emnist_letters.FORMATS, "auto"}
    assert v.literal_defaults("cnn/train.py", "AUGMENT_DEFAULTS") == cnn_train.AUGMENT_DEFAULTS
    assert v.literal_defaults("photo/augment.py", "AUGMENT_DEFAULTS") == augment.AUGMENT_DEFAULTS
    assert set(v.literal_keys("evaluate/export.py", "METADATA_DEFAULTS")) == set(METADATA_DEFAULTS)
    literal = v.literal_defaults("photo/train.py")
    assert {k: x for k, x in literal.items() if x is not v.NOT_LITERAL} == {
        k: x for k, x in photo_train.DEFAULTS.items() if literal[k] is not v.NOT_LITERAL}
    def spelled(names):
        return "(" + ", ".join(f'"{n}"' for n in names) + ")"

    assert f"if schedule not in {spelled(v.SCHEDULES)}:" in (REPO / "tasks/fit/__init__.py").read_text()
    assert f"if link not in {spelled(v.LINKS)}:" in (REPO / "tasks/fetch/photos.py").read_text()


@pytest.mark.parametrize("change,message", [
    ({"views": 4, "augment": False}, "views 4 with augment False: .*needs augment"),
    ({"views": 1}, "views 1 with augment \\{"),
    ({"views": 0}, "features.cards_v2_100_cut13.views"),
    ({"augment": {"crop": 0.1, "zoom": 0.2}}, "zoom"),
])
def test_a_cut_caches_views_and_augment_are_checked(change, message):
    p = params()
    p["features"]["cards_v2_100_cut13"] = {**p["features"]["cards_v2_100_cut13"], **change}
    with pytest.raises(ParamsError, match=message):
        validate(p)


@pytest.mark.parametrize("value, expected", [
    (["float32", "fp16"], "export.formats[1]: formats[1] must be one of float32, float16, dynamic, int8 (FORMATS in "
                          "tasks/evaluate/export.py), got 'fp16'"),
    ([], "export.formats: expected at least one of float32, float16, dynamic, int8, got []"),
    (["int8", "float16", "int8"], "export.formats[2]: int8 is listed twice"),
    ("int8", "export.formats: expected a list of some of float32, float16, dynamic, int8, got 'int8'"),
    (None, "export.formats: expected a list of some of float32, float16, dynamic, int8, got None"),
    ([["int8"]], "export.formats[0]: formats[0] must be one of"),
])
def test_export_formats_are_some_of_the_codes_formats(value, expected):
    """export.formats: a non-empty list of distinct formats of tasks/evaluate/export.py FORMATS; every format
    by default, in the code and in params.yaml."""
    from tasks.evaluate.export import EXPORT_DEFAULTS, FORMATS
    from tasks.stages import validate as v

    assert error_of(put(params(), "export.formats", value)).startswith(f"params.yaml {expected}")
    assert v.VALUES["formats"].item.options() == FORMATS == ("float32", "float16", "dynamic", "int8")
    assert EXPORT_DEFAULTS["formats"] == list(FORMATS) == params()["export"]["formats"]
    validate(put(params(), "export.formats", ["dynamic", "float32"]))  # any order, any subset
