"""A PyTorch state dict (legacy `torch.save` serialization) read into numpy arrays, without torch and
without unpickling arbitrary objects.

Why hand-written: `torch.load(weights_only=True)` is the safe reader, but it needs torch (a wheel of
hundreds of MB that nothing else here uses), and a plain `pickle.load` of downloaded bytes may call any
callable the file names. This reader allow-lists what a state dict is built from, refuses anything
else by name, and never imports torch:

- `collections.OrderedDict` (the dict, and the empty backward-hooks dict of each tensor);
- `torch._utils._rebuild_tensor_v2` (a tensor: storage, offset, size, stride), replaced by a recorder;
- the storage types `torch.<T>Storage` (their element type only), met as persistent ids.

The legacy layout (`torch.save(..., _use_new_zipfile_serialization=False)`): five pickles in a row
(magic number, protocol version, system info, the object whose tensors name storages by persistent id,
the list of storage keys), then each storage in that order as an int64 element count followed by its
raw little-endian bytes. The zip layout (PyTorch >= 1.6 default) is refused with a clear message.
"""
from __future__ import annotations

import collections
import io
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC = 0x1950A86A20F9469CFC6C
PROTOCOL = 1001
STORAGES = {  # torch.<name>Storage -> numpy little-endian dtype
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2", "BFloat16Storage": None,
    "LongStorage": "<i8", "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "?",
}


class StateDictError(ValueError):
    """The file is not a legacy PyTorch state dict this reader accepts (names the file and why)."""


@dataclass(frozen=True)
class _StorageType:
    name: str


@dataclass(frozen=True)
class _Storage:
    key: str
    dtype: str
    numel: int


@dataclass(frozen=True)
class _Tensor:
    storage: _Storage
    offset: int
    size: tuple
    stride: tuple


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError(f"a tensor whose storage is {type(storage).__name__}, not a storage")
    return _Tensor(storage, int(storage_offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


class _Unpickler(pickle.Unpickler):
    """Builds only what ALLOWED names; `find_class` of anything else raises, naming it."""

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in STORAGES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name}: a state dict holds only OrderedDict, "
                                     f"tensors and storages")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r:.80}")
        kind = pid[1].name
        if STORAGES[kind] is None:
            raise pickle.UnpicklingError(f"storage type {kind} has no numpy equivalent")
        return _Storage(str(pid[2]), STORAGES[kind], int(pid[4]))


def read_state_dict(path: Path | str) -> dict[str, np.ndarray]:
    """{name: array} of the legacy-format state dict at `path`, in the file's order (arrays are copies)."""
    path = Path(path)
    data = path.read_bytes()
    if data[:4] == b"PK\x03\x04":
        raise StateDictError(f"{path}: a zip-format torch.save file; expected the legacy serialization "
                             f"(five pickles then raw storages)")
    f = io.BytesIO(data)
    try:
        if _Unpickler(f).load() != MAGIC:
            raise StateDictError(f"{path}: not a PyTorch file (bad magic number)")
        if _Unpickler(f).load() != PROTOCOL:
            raise StateDictError(f"{path}: unsupported PyTorch legacy protocol version")
        _Unpickler(f).load()  # system info: endianness and type sizes
        state = _Unpickler(f).load()
        keys = _Unpickler(f).load()
    except StateDictError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise StateDictError(f"{path}: not a legacy PyTorch state dict this reader accepts: {e}") from None
    if not isinstance(state, dict):
        raise StateDictError(f"{path}: holds a {type(state).__name__}, expected a state dict")
    storages = _read_storages(path, f, keys, _storages_of(state))
    return {name: _materialize(path, name, t, storages) for name, t in state.items()}


def _storages_of(state: dict) -> dict[str, _Storage]:
    out = {}
    for name, t in state.items():
        if not isinstance(t, _Tensor):
            raise StateDictError(f"entry {name!r} is a {type(t).__name__}, expected a tensor")
        out[t.storage.key] = t.storage
    return out


def _read_storages(path: Path, f: io.BytesIO, keys, known: dict[str, _Storage]) -> dict[str, np.ndarray]:
    if not isinstance(keys, list):
        raise StateDictError(f"{path}: the storage key list is a {type(keys).__name__}")
    out = {}
    for key in keys:
        head = f.read(8)
        if len(head) < 8:
            raise StateDictError(f"{path}: truncated before storage {key} ({len(out)} of {len(keys)} read)")
        numel = struct.unpack("<q", head)[0]
        storage = known.get(key)
        if storage is None:
            raise StateDictError(f"{path}: storage {key} is not used by any tensor")
        if numel != storage.numel:
            raise StateDictError(f"{path}: storage {key} holds {numel} elements, the pickle says {storage.numel}")
        dtype = np.dtype(storage.dtype)
        raw = f.read(numel * dtype.itemsize)
        if len(raw) < numel * dtype.itemsize:
            raise StateDictError(f"{path}: truncated in storage {key}: {len(raw)} of {numel * dtype.itemsize} bytes")
        out[key] = np.frombuffer(raw, dtype=dtype)
    return out


def _materialize(path: Path, name: str, t: _Tensor, storages: dict[str, np.ndarray]) -> np.ndarray:
    flat = storages.get(t.storage.key)
    if flat is None:
        raise StateDictError(f"{path}: tensor {name} refers to storage {t.storage.key}, which is not in the file")
    if not t.size:
        return flat[t.offset:t.offset + 1].reshape(()).astype(flat.dtype.newbyteorder("="))
    last = t.offset + sum((n - 1) * s for n, s in zip(t.size, t.stride))
    if t.offset < 0 or last >= flat.size:
        raise StateDictError(f"{path}: tensor {name} {t.size} reaches past its storage ({flat.size} elements)")
    view = np.lib.stride_tricks.as_strided(flat[t.offset:], shape=t.size,
                                           strides=tuple(s * flat.itemsize for s in t.stride), writeable=False)
    return np.array(view, dtype=flat.dtype.newbyteorder("="))
