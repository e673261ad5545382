"""fetch_weights: pinned pretrained weights from upstream, a mirror (its upstream layout or an
alternative file), or a local file; real tiny MobileNetV2 weight files served over loopback HTTP."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from project import serve_dir
from tasks.stages.project import Project
from tasks.fetch.download import ChecksumError, ContentError, NotFound
from tasks.fetch.weights import KERAS3, LEGACY, weights_file
from tasks.stages.data import weights_stage as fetch_weights

UPSTREAM = ("tensorflow/keras-applications/mobilenet_v2/"
            "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5")
NAME = Path(UPSTREAM).name
ALT = "weights/reexported/mobilenet_v2_0.35_224_no_top.weights.h5"
SHAPE = (32, 32, 3)


def tiny_model():
    import keras

    return keras.applications.MobileNetV2(alpha=0.35, input_shape=SHAPE, include_top=False, weights=None)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """One random-init tiny MobileNetV2, saved as a legacy keras-applications .h5 and a Keras 3 .weights.h5."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    d = tmp_path_factory.mktemp("weights")
    model = tiny_model()
    legacy, keras3 = d / NAME, d / "tiny.weights.h5"
    with h5py.File(legacy, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    model.save_weights(keras3)
    values = [w.copy() for w in model.get_weights()]
    return {"legacy": legacy.read_bytes(), "keras3": keras3.read_bytes(), "values": values}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_project(root: Path, entry: dict, mirror: str = "", key: str = "mnv2") -> Project:
    params = {"mirror": mirror, "download": {"retries": 1, "backoff_s": 0.01, "timeout_s": 10},
              "weights": {key: {"arch": "mobilenet_v2", "alpha": 0.35, "sha256": None, "mirror_alternatives": [],
                                "file": "", "file_sha256": "", **entry}}}
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return Project(root)


@pytest.fixture(autouse=True)
def no_env_mirror(monkeypatch):
    monkeypatch.delenv("TLPIPE_MIRROR", raising=False)


def assert_loads(path: Path, values) -> None:
    """Keras builds the application from the fetched file and gets exactly the saved values."""
    import keras

    model = keras.applications.MobileNetV2(alpha=0.35, input_shape=SHAPE, include_top=False, weights=str(path))
    got = model.get_weights()
    assert len(got) == len(values)
    assert all(np.array_equal(a, b) for a, b in zip(got, values))


def test_upstream_download_pinned(tmp_path, http_server, files):
    url = http_server.add(UPSTREAM, files["legacy"])
    project = make_project(tmp_path, {"url": url, "sha256": sha(files["legacy"])})
    record = fetch_weights(project, "mnv2")
    assert record["source"] == "upstream" and record["pinned"] and record["url"] == url
    assert record["format"] == LEGACY and record["file"] == NAME
    assert record["bytes"] == len(files["legacy"]) and record["sha256"] == sha(files["legacy"])
    assert json.loads((project.weights_dir("mnv2") / "fetch.json").read_text()) == record
    assert weights_file(project.weights_dir("mnv2"), "mnv2").read_bytes() == files["legacy"]
    assert sorted(p.name for p in project.weights_dir("mnv2").iterdir()) == sorted([NAME, "fetch.json"])
    assert_loads(weights_file(project.weights_dir("mnv2"), "mnv2"), files["values"])


def test_mirror_upstream_layout_first(tmp_path, http_server, files):
    mirror = tmp_path / "mirror"
    (mirror / "weights/keras-applications/mobilenet_v2").mkdir(parents=True)
    (mirror / "weights/keras-applications/mobilenet_v2" / NAME).write_bytes(files["legacy"])
    (mirror / "weights/reexported").mkdir(parents=True)
    (mirror / ALT).write_bytes(files["keras3"])
    base = serve_dir(http_server, mirror)
    project = make_project(tmp_path / "p", {
        "url": "https://storage.googleapis.com/" + UPSTREAM, "sha256": sha(files["legacy"]),
        "mirror_alternatives": [{"path": ALT, "sha256": sha(files["keras3"])}]}, mirror=base)
    record = fetch_weights(project, "mnv2")
    assert record["source"] == "mirror" and record["format"] == LEGACY
    assert record["url"] == "$TLPIPE_MIRROR/weights/keras-applications/mobilenet_v2/" + NAME
    assert [r.path for r in http_server.requests] == ["/weights/keras-applications/mobilenet_v2/" + NAME]


def test_mirror_alternative(tmp_path, http_server, files, monkeypatch):
    mirror = tmp_path / "mirror"
    (mirror / "weights/reexported").mkdir(parents=True)
    (mirror / ALT).write_bytes(files["keras3"])
    monkeypatch.setenv("TLPIPE_MIRROR", serve_dir(http_server, mirror))
    project = make_project(tmp_path / "p", {
        "url": "https://storage.googleapis.com/" + UPSTREAM, "sha256": sha(files["legacy"]),
        "mirror_alternatives": [{"path": "weights/reexported/absent.weights.h5", "sha256": "0" * 64},
                                {"path": ALT, "sha256": sha(files["keras3"])}]})
    record = fetch_weights(project, "mnv2")
    assert record["source"] == "mirror_alternative" and record["pinned"]
    assert record["format"] == KERAS3 and record["file"] == Path(ALT).name
    assert record["url"] == "$TLPIPE_MIRROR/" + ALT and record["sha256"] == sha(files["keras3"])
    assert [r.status for r in http_server.requests] == [404, 404, 200]
    assert_loads(weights_file(project.weights_dir("mnv2"), "mnv2"), files["values"])


def test_local_file_wins_with_its_own_pin(tmp_path, files, monkeypatch):
    monkeypatch.setenv("TLPIPE_MIRROR", str(tmp_path / "no-such-mirror"))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine/ours.weights.h5").write_bytes(files["keras3"])
    project = make_project(tmp_path, {"url": "http://127.0.0.1:9/" + UPSTREAM, "sha256": sha(files["legacy"]),
                                      "file": "mine/ours.weights.h5", "file_sha256": sha(files["keras3"])})
    record = fetch_weights(project, "mnv2")
    assert record["source"] == "local" and record["url"] == "mine/ours.weights.h5" and record["pinned"]
    assert record["file"] == "ours.weights.h5" and record["format"] == KERAS3


def test_keras3_content_under_an_h5_name_is_renamed_so_keras_loads_it(tmp_path, files):
    (tmp_path / "mine.h5").write_bytes(files["keras3"])
    project = make_project(tmp_path, {"file": str(tmp_path / "mine.h5"), "file_sha256": sha(files["keras3"])})
    record = fetch_weights(project, "mnv2")
    assert record["file"] == "mine.weights.h5"
    assert_loads(weights_file(project.weights_dir("mnv2"), "mnv2"), files["values"])


def test_sha_mismatch_names_expected_and_got(tmp_path, http_server, files):
    url = http_server.add(UPSTREAM, files["legacy"])
    project = make_project(tmp_path, {"url": url, "sha256": "ab" * 32})
    with pytest.raises(ChecksumError, match=f"expected {'ab' * 32}, got {sha(files['legacy'])}"):
        fetch_weights(project, "mnv2")
    assert not project.weights_dir("mnv2").exists()
    assert not list((tmp_path / "data" / "weights").iterdir())  # no temp dir left behind


def test_mirror_copy_with_other_bytes_is_an_error_not_a_miss(tmp_path, files):
    mirror = tmp_path / "mirror"
    (mirror / "weights/keras-applications/mobilenet_v2").mkdir(parents=True)
    (mirror / "weights/keras-applications/mobilenet_v2" / NAME).write_bytes(files["keras3"])
    project = make_project(tmp_path / "p", {"url": "https://storage.googleapis.com/" + UPSTREAM,
                                            "sha256": sha(files["legacy"])}, mirror=str(mirror))
    with pytest.raises(ChecksumError, match="expected"):
        fetch_weights(project, "mnv2")


def test_html_page_instead_of_hdf5(tmp_path, http_server, files):
    page = b"<!DOCTYPE html><html><body>Sign in to continue</body></html>\n"
    url = http_server.add(UPSTREAM, page, content_type="text/html")
    project = make_project(tmp_path, {"url": url, "sha256": sha(files["legacy"])})
    with pytest.raises(ContentError, match=f"{NAME} from .* is not an HDF5 weights file: got an HTML page"):
        fetch_weights(project, "mnv2")
    assert not project.weights_dir("mnv2").exists()


def test_hdf5_that_is_not_keras_weights(tmp_path):
    import h5py

    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    data = (tmp_path / "other.h5").read_bytes()
    project = make_project(tmp_path / "p", {"file": str(tmp_path / "other.h5"), "file_sha256": sha(data)})
    with pytest.raises(ContentError, match="HDF5 but not a Keras weights file"):
        fetch_weights(project, "mnv2")


def test_missing_everywhere_lists_the_places_tried(tmp_path, http_server, files):
    base = http_server.base
    project = make_project(tmp_path, {"url": "https://storage.googleapis.com/" + UPSTREAM, "sha256": "cd" * 32,
                                      "mirror_alternatives": [{"path": ALT, "sha256": "ef" * 32}]}, mirror=base)
    with pytest.raises(NotFound) as e:
        fetch_weights(project, "mnv2")
    assert f"{base}/weights/keras-applications/mobilenet_v2/{NAME}" in str(e.value)
    assert f"{base}/{ALT}" in str(e.value)
    # Without a mirror: upstream's 404 as is.
    project = make_project(tmp_path / "q", {"url": http_server.url(UPSTREAM), "sha256": "cd" * 32})
    with pytest.raises(NotFound, match="404"):
        fetch_weights(project, "mnv2")


def test_missing_local_file(tmp_path):
    project = make_project(tmp_path, {"file": "nowhere.weights.h5", "file_sha256": "ab" * 32})
    with pytest.raises(FileNotFoundError, match="nowhere.weights.h5"):
        fetch_weights(project, "mnv2")


def test_unpinned_is_refused_unless_allowed(tmp_path, http_server, files):
    url = http_server.add(UPSTREAM, files["legacy"])
    project = make_project(tmp_path, {"url": url, "sha256": None})
    with pytest.raises(ValueError, match="no sha256 pin .* allow_unpinned"):
        fetch_weights(project, "mnv2")
    assert http_server.requests == []  # refused before any download
    project = make_project(tmp_path, {"url": url, "sha256": None, "allow_unpinned": True})
    record = fetch_weights(project, "mnv2")
    assert not record["pinned"] and record["sha256"] == sha(files["legacy"])


def test_unpinned_local_file_is_refused(tmp_path, files):
    (tmp_path / "w.weights.h5").write_bytes(files["keras3"])
    project = make_project(tmp_path, {"file": "w.weights.h5", "file_sha256": ""})
    with pytest.raises(ValueError, match="file_sha256 is empty"):
        fetch_weights(project, "mnv2")


def test_unpinned_upstream_layout_is_skipped_in_a_mirror(tmp_path, files):
    """The V2 1.0 case: no upstream pin, so only a pinned alternative in the mirror can serve it."""
    mirror = tmp_path / "mirror"
    (mirror / "weights/keras-applications/mobilenet_v2").mkdir(parents=True)
    (mirror / "weights/keras-applications/mobilenet_v2" / NAME).write_bytes(files["legacy"])
    project = make_project(tmp_path / "p", {"url": "https://storage.googleapis.com/" + UPSTREAM},
                           mirror=str(mirror))
    with pytest.raises(NotFound, match="skipped: no sha256 pin"):
        fetch_weights(project, "mnv2")
    (mirror / "weights/reexported").mkdir(parents=True)
    (mirror / ALT).write_bytes(files["keras3"])
    project = make_project(tmp_path / "p", {"url": "https://storage.googleapis.com/" + UPSTREAM,
                                            "mirror_alternatives": [{"path": ALT, "sha256": sha(files["keras3"])}]},
                           mirror=str(mirror))
    assert fetch_weights(project, "mnv2")["source"] == "mirror_alternative"


def test_bad_params(tmp_path):
    project = make_project(tmp_path, {"url": "x", "arch": "resnet50"})
    with pytest.raises(ValueError, match="arch must be one of"):
        fetch_weights(project, "mnv2")
    project = make_project(tmp_path / "valid", {"url": "x"})  # params.yaml is checked whole, before the key
    with pytest.raises(KeyError, match="no weights.other"):
        fetch_weights(project, "other")


def test_cli(tmp_path, http_server, files):
    import os
    import subprocess
    import sys

    url = http_server.add(UPSTREAM, files["legacy"])
    make_project(tmp_path, {"url": url, "sha256": sha(files["legacy"])})
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    run = [sys.executable, "-m", "tasks.cli", "fetch-weights"]
    ok = subprocess.run(run + ["mnv2", "--json"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    started, done, *result = ok.stdout.splitlines()  # a line when it starts, one when it ends, the JSON
    assert started == "tlpipe fetch-weights mnv2: started" and done.startswith("tlpipe fetch-weights mnv2: done in ")
    assert json.loads("\n".join(result))["sha256"] == sha(files["legacy"])
    bad = subprocess.run(run + ["nope"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert bad.returncode == 1 and "no weights.nope" in bad.stderr


def test_prefect_task_is_the_same_function(tmp_path, http_server, files):
    from flows.data import fetch_weights_task

    url = http_server.add(UPSTREAM, files["legacy"])
    make_project(tmp_path, {"url": url, "sha256": sha(files["legacy"])})
    assert fetch_weights_task.fn("mnv2", str(tmp_path))["file"] == NAME


# ---- opt-in: the real weights through ../shared/data as the mirror (`pytest -m realdata`)
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
KA = "https://storage.googleapis.com/tensorflow/keras-applications/"
REAL_WEIGHTS = yaml.safe_load(f"""
mobilenet_v2_100_224:
  arch: mobilenet_v2
  alpha: 1.0
  url: {KA}mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5
  sha256: null            # no published sum found; the mirror's approximate re-export serves it
  allow_unpinned: false
  mirror_alternatives:
    - path: weights/reexported/mobilenet_v2_1.0_224_no_top.approx.weights.h5
      sha256: b4a91f673a6b8c348c22b804b0766a5299e81446a025f97343dfd357100dca36
  file: ""
  file_sha256: ""
mobilenet_v2_035_224:
  arch: mobilenet_v2
  alpha: 0.35
  url: {KA}mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5
  sha256: df1c3db1d0d9193719c4c70f707c56f7021f999f825bdc57454c275cf6def19f
  allow_unpinned: false
  mirror_alternatives:
    - path: weights/reexported/mobilenet_v2_0.35_224_no_top.weights.h5
      sha256: c6b134e98bb340936c712fdba8f04f45d5065a73ed2d051064ce1468affa3eb8
  file: ""
  file_sha256: ""
mobilenet_025_224:
  arch: mobilenet
  alpha: 0.25
  url: {KA}mobilenet/mobilenet_2_5_224_tf_no_top.h5
  sha256: dbdb03ee2a22fd895301636cd328b234bb3a9952358f436d82f46b81e0d5b0bf
  allow_unpinned: false
  mirror_alternatives: []
  file: ""
  file_sha256: ""
""")


@pytest.mark.realdata
@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is absent")
def test_real_weights_from_the_shared_mirror(tmp_path, monkeypatch):
    import keras

    monkeypatch.setenv("TLPIPE_MIRROR", str(SHARED))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"weights": REAL_WEIGHTS}))
    project = Project(tmp_path)
    expect = {"mobilenet_v2_100_224": ("mirror_alternative", KERAS3, keras.applications.MobileNetV2, 2_257_984),
              "mobilenet_v2_035_224": ("mirror_alternative", KERAS3, keras.applications.MobileNetV2, 410_208),
              "mobilenet_025_224": ("mirror", LEGACY, keras.applications.MobileNet, 218_544)}
    for key, (source, fmt, build, n_params) in expect.items():
        record = fetch_weights(project, key)
        assert (record["source"], record["format"], record["pinned"]) == (source, fmt, True), key
        model = build(alpha=REAL_WEIGHTS[key]["alpha"], input_shape=(224, 224, 3), include_top=False,
                      weights=str(weights_file(project.weights_dir(key), key)))
        assert model.count_params() == n_params, key
        assert float(np.abs(model.get_weights()[0]).sum()) > 0, key
