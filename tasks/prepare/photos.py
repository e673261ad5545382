"""prepare@<key> for image-folder datasets: data/raw/<key>/ -> JPEG TFRecord shards + manifest.

Layout: `root/<class>/**/<image>` (hash splits), or `root/train|valid|validation|test/<class>/...`
(the dataset's own splits kept; `valid` is called `validation`; a missing validation or test split is
carved from train by hash, so nothing that picks a checkpoint is ever scored). Class names are folder names, sorted, ids 0..K-1.

Split hashing uses the path RELATIVE to the dataset root (retrain.py's `_nohash_` rule: the part
of a file name from `_nohash_` on is ignored, so near-duplicates stay together), so splits never
depend on where the data sits. Two passes keep memory bounded: worker processes check and convert
every image (tasks/prepare/images.py) in a fixed order and the parent spools the JPEG bytes to one temp
file; then, with the good images and classes known, each split is written in its stable hashed
order from the spool. Output bytes do not depend on the worker count.
"""
from __future__ import annotations

import csv
import logging
import os
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tasks.core import parallel
from tasks.prepare.images import RESIZE, Options, convert_chunk
from tasks.core.io import atomic_dir
from tasks.core.progress import Progress
from tasks.records.shards import (example_bytes, manifest_head, ordered_map, shard_count, split_entry, write_manifest,
                          write_records)
from tasks.sources import fetch_record
from tasks.prepare.splits import SPLITS, carve, shuffle_order
from tasks.prepare.tfds_export import write_readers

log = logging.getLogger(__name__)
SPLIT_DIRS = {"train": "train", "valid": "validation", "validation": "validation", "test": "test"}
CHUNK = 32                       # images per worker task
RECORD_OVERHEAD = 160            # bytes an Example adds around the JPEG (estimate for shard sizing)
DEFAULTS = {"image_size": 224, "validation_percentage": 10, "testing_percentage": 10, "min_images_per_class": 2,
            "max_pixels": 40_000_000, "shard_mb": 64, "min_shards": 4, "jpeg_quality": 95, "resize": "squash",
            "drop": [], "relabel": {}}  # drop/relabel: source ids (check@'s findings), applied here, files untouched


@dataclass
class Item:
    """One candidate file: its path relative to the dataset root, class and own split (if any)."""

    rel: str
    class_name: str
    split: str | None
    offset: int = -1             # where its JPEG bytes sit in the spool (-1: skipped)
    length: int = 0
    info: dict | None = None     # what tasks.prepare.images.convert found (format, mode, passthrough, rotated)


def settings(p: dict, key: str) -> dict:
    """prepare.<key> over DEFAULTS (the one place they live; unknown keys: tasks/stages/validate.py), checked."""
    s = {**DEFAULTS, **{k: v for k, v in p.items() if v is not None}}
    for name in ("image_size", "min_images_per_class", "max_pixels", "min_shards", "jpeg_quality"):
        s[name] = int(s[name])
    for name in ("validation_percentage", "testing_percentage", "shard_mb"):
        s[name] = float(s[name])
    problems = []
    if not 8 <= s["image_size"] <= 4096:
        problems.append(f"image_size {s['image_size']} (expected 8..4096)")
    if not 1 <= s["jpeg_quality"] <= 100:
        problems.append(f"jpeg_quality {s['jpeg_quality']} (expected 1..100)")
    if s["validation_percentage"] < 0 or s["testing_percentage"] < 0 or \
            s["validation_percentage"] + s["testing_percentage"] >= 100:
        problems.append("validation_percentage + testing_percentage must be >= 0 and < 100")
    if s["resize"] not in RESIZE:
        problems.append(f"resize {s['resize']!r} (expected one of {RESIZE})")
    if s["max_pixels"] < s["image_size"] ** 2 or s["shard_mb"] <= 0 or s["min_shards"] < 1:
        problems.append("max_pixels >= image_size**2, shard_mb > 0 and min_shards >= 1 are required")
    if problems:
        raise ValueError(f"prepare.{key}: " + "; ".join(problems))
    return s


def prepare_images(key: str, module, p: dict, *, raw_dir: Path, out_dir: Path, workers: int) -> dict:
    """Build `out_dir` (data/processed/<key>/) from the photos in `raw_dir` with settings `p` (params
    prepare.<key>); returns the manifest."""
    s = settings(p, key)
    root = raw_dir
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no fetched photos; run `tlpipe fetch {key}` "
                                f"(or `dvc repro fetch@{key}`) first")
    start = time.perf_counter()
    items, own_splits, notes, skipped = scan(root)
    all_classes = sorted({i.class_name for i in items})
    attributes = module.label_attributes(all_classes, root) if hasattr(module, "label_attributes") else None
    notes += module.notes(all_classes) if hasattr(module, "notes") else []
    if getattr(module, "INDEX_CSV", None):
        items, csv_skipped, csv_notes = cross_check(root, module.INDEX_CSV, items)
        skipped += csv_skipped
        notes += csv_notes
    items, edits, edit_skips = apply_edits(items, s["drop"], s["relabel"], key, root, all_classes)
    skipped += edit_skips
    fetched = fetch_record(root)
    opts = Options(size=s["image_size"], max_pixels=s["max_pixels"], quality=s["jpeg_quality"], resize=s["resize"])
    with atomic_dir(out_dir) as tmp:
        spool = tmp / ".spool"
        convert_all(root, items, opts, workers, spool, skipped, label=f"prepare {key}")
        duplicates = drop_duplicates(items, skipped)
        classes, class_skips = choose_classes(items, s["min_images_per_class"], root)
        kept = [i for i in items if i.offset >= 0 and i.class_name in classes]
        stats = image_stats(kept)
        splits, split_notes, origin = assign_splits(kept, own_splits, s["validation_percentage"],
                                                    s["testing_percentage"])
        check_train_covers(splits, classes, root)
        check_evaluation_splits(splits, root, key, s)
        label = {name: k for k, name in enumerate(classes)}
        shape = (s["image_size"], s["image_size"], 3)
        entries = write_splits(tmp, spool, splits, label, classes, shape, s["shard_mb"], s["min_shards"],
                               progress_label=f"prepare {key} shards")
        spool.unlink()
        manifest = {
            **manifest_head(
                classes, list(shape), "jpeg",
                {split: split_entry([label[i.class_name] for i in members], classes, entries[split])
                 for split, members in splits.items()},
                [{**e, "stage": "fetch"} for e in fetched.get("skipped", [])] + skipped,
                notes + split_notes + [
                    f"images: {stats['passthrough']} stored as they were (baseline RGB JPEG, "
                    f"{s['image_size']}x{s['image_size']}), {stats['reencoded']} converted "
                    f"({s['resize']} resize, JPEG quality {s['jpeg_quality']})"]),
            "dataset": key,
            "kind": "image_folder",
            "classes_skipped": class_skips,
            "duplicates": duplicates,
            "images": stats,
            **({"edits": edits} if edits["dropped"] or edits["relabelled"] else {}),
            "split_origin": {split: origin[split] for split in splits},
            **({"label_attributes": {c: attributes[c] for c in classes}} if attributes else {}),
            "source": {k: fetched.get(k) for k in ("kind", "format", "via", "source", "files", "file_count")},
            "params": {k: s[k] for k in sorted(s)},
        }
        write_manifest(tmp, manifest)
        write_readers(tmp, manifest, key)
    log.info("prepare %s: %s, %d skipped, in %.1f s", key, {k: v["count"] for k, v in manifest["splits"].items()},
             len(manifest["skipped"]), time.perf_counter() - start)
    return manifest


# ---------------------------------------------------------------- scanning


def _visible(p: Path) -> bool:
    return not p.name.startswith(".") and p.name != "__MACOSX"


def _subdirs(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_dir() and not p.is_symlink() and _visible(p))


def scan(root: Path) -> tuple[list[Item], bool, list[str], list[dict]]:
    """(candidate files in a fixed order, has own splits, notes, skipped) for the tree at `root`."""
    top = _subdirs(root)
    own = {}
    for d in top:
        split = SPLIT_DIRS.get(d.name.lower())
        if split:
            if split in own:
                raise ValueError(f"{root}: both {own[split].name}/ and {d.name}/ hold the {split} split; keep one")
            own[split] = d
    notes, skipped, items = [], [], []
    if own and "train" not in own:
        raise ValueError(f"{root}: has {sorted(p.name for p in own.values())} split folders but no train/; "
                         "either add train/ or lay the photos out as <class>/<image> for hash splits")
    if own:
        ignored = [d.name for d in top if d not in own.values()]
        if ignored:
            notes.append(f"ignored top-level folders beside the split folders: {ignored}")
        for split in SPLITS:
            if split in own:
                items += _scan_classes(root, own[split], split, skipped)
        notes.append(f"own splits kept: {[own[s].name + '/' for s in SPLITS if s in own]}")
    else:
        items = _scan_classes(root, root, None, skipped)
    if not items:
        raise ValueError(f"{root}: no files in class folders; expected <class>/<image> or train/<class>/<image>")
    return items, bool(own), notes, skipped


def shown_name(rel: str) -> str:
    """A path as it can be written to JSON and shown: bytes that are not UTF-8 (kept by Python as
    surrogate escapes) appear as \\xNN."""
    return os.fsencode(rel).decode("utf-8", "backslashreplace")


def is_utf8(rel: str) -> bool:
    try:
        rel.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


NOT_UTF8 = ("file name is not valid UTF-8 (shown with \\xNN escapes); rename it to UTF-8 "
            "(e.g. `convmv -f latin1 -t utf8`) to include it")


def _scan_classes(root: Path, base: Path, split: str | None, skipped: list[dict]) -> list[Item]:
    """Files under each class folder of `base`, in a fixed order. A name that is not valid UTF-8 (a
    file's, or its class folder's) cannot become a source id or a label: skipped with the reason."""
    items = []
    if split:
        for p in sorted(base.iterdir()):
            if p.is_file() and _visible(p):
                skipped.append({"file": shown_name(p.relative_to(root).as_posix()),
                                "reason": "not inside a class folder"})
    for class_dir in _subdirs(base):
        for dirpath, dirnames, filenames in os.walk(class_dir):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__MACOSX")
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                rel = (Path(dirpath) / name).relative_to(root).as_posix()
                if not is_utf8(rel):
                    skipped.append({"file": shown_name(rel), "reason": NOT_UTF8})
                    continue
                items.append(Item(rel, class_dir.name, split))
    return items


def read_index(root: Path, name: str) -> tuple[dict[str, str], list[dict], list[str]]:
    """{relative path: label} from an index CSV such as cards.csv, plus rows naming missing files."""
    path = root / name
    if not path.is_file():
        return {}, [], [f"no {name} in the dataset: labels come from folder names only"]
    with open(path, newline="", encoding="utf-8-sig") as f:  # newline="": CRLF rows read cleanly
        reader = csv.reader(f)
        header = [h.strip().lower() for h in next(reader, [])]
        if "filepaths" not in header or "labels" not in header:
            raise ValueError(f"{path}: expected columns 'filepaths' and 'labels' "
                             f"(class index, filepaths, labels, card type, data set), got {header}")
        col_path, col_label = header.index("filepaths"), header.index("labels")
        index, skipped = {}, []
        for line, row in enumerate(reader, start=2):
            if not any(cell.strip() for cell in row):
                continue
            if len(row) <= max(col_path, col_label):
                skipped.append({"file": f"{name}:{line}", "reason": f"{name} line {line}: too few columns"})
                continue
            rel = row[col_path].strip().replace("\\", "/")
            if not (root / rel).is_file():
                skipped.append({"file": rel, "reason": f"listed in {name} (line {line}) but no such file"})
                continue
            index[rel] = row[col_label].strip()
    return index, skipped, []


def cross_check(root: Path, name: str, items: list[Item]) -> tuple[list[Item], list[dict], list[str]]:
    """Drop files whose index label disagrees with their folder; the index is a check, not the list."""
    index, skipped, notes = read_index(root, name)
    if not index:
        return items, skipped, notes
    kept, unlisted = [], 0
    for item in items:
        label = index.get(item.rel)
        if label is None:
            unlisted += 1
        elif label.lower() != item.class_name.lower():
            skipped.append({"file": item.rel, "reason": f"{name} labels it {label!r} but it is in folder "
                                                        f"{item.class_name!r}"})
            continue
        kept.append(item)
    notes.append(f"{name}: {len(index)} rows matched files and were cross-checked against folder names"
                 + (f"; {unlisted} files are not listed in it (kept, labelled by folder)" if unlisted else ""))
    return kept, skipped, notes


def apply_edits(items: list[Item], drop, relabel, key: str, root: Path,
                classes: list[str]) -> tuple[list[Item], dict, list[dict]]:
    """params prepare.<key>.drop (source ids to leave out) and .relabel ({source id: class}): the fixes a
    check@ finding asks for, applied here and recorded (manifest `edits`, `skipped`); the user's files
    are never touched. An id that is no file of the dataset, or a class that is no folder, is an error."""
    drop, relabel = list(drop or []), dict(relabel or {})
    known = {i.rel for i in items}
    for where, ids in (("drop", drop), ("relabel", list(relabel))):
        missing = [i for i in ids if i not in known]
        if missing:
            raise ValueError(f"prepare.{key}.{where}: {missing[0]!r} is no file of {root} (a source_id is the path "
                             f"relative to it, as in reports/data/{key}/findings.parquet)")
    bad = sorted({c for c in relabel.values() if c not in classes})
    if bad:
        raise ValueError(f"prepare.{key}.relabel: {bad[0]!r} is no class of {root} (classes: {', '.join(classes)})")
    dropped = set(drop)
    kept, skipped, relabelled = [], [], []
    for item in items:
        if item.rel in dropped:
            skipped.append({"file": item.rel, "reason": f"dropped by prepare.{key}.drop"})
            continue
        if item.rel in relabel and relabel[item.rel] != item.class_name:
            relabelled.append({"source_id": item.rel, "from": item.class_name, "to": relabel[item.rel]})
            item.class_name = relabel[item.rel]
        kept.append(item)
    return kept, {"dropped": sorted(dropped), "relabelled": relabelled}, skipped


# ---------------------------------------------------------------- converting


def convert_all(root: Path, items: list[Item], opts: Options, n_workers: int, spool: Path,
                skipped: list[dict], label: str = "prepare") -> None:
    """Check and convert every item, in order, spooling the JPEG bytes; marks items and fills `skipped`.
    The photos done are reported as `label` (tasks/core/progress.py)."""
    paths = [str(root / i.rel) for i in items]
    chunks = [paths[k:k + CHUNK] for k in range(0, len(paths), CHUNK)]
    position = 0
    with open(spool, "wb") as out, Progress(label, len(items), "photos") as done:
        for item, (data, reason, info) in done.iterate(zip(items, _results(chunks, opts, n_workers), strict=True)):
            if data is None:
                skipped.append({"file": item.rel, "reason": reason})
                continue
            item.offset, item.length, item.info = position, len(data), info
            out.write(data)
            position += len(data)


def image_stats(items: list[Item]) -> dict:
    """How the stored images were obtained: bytes kept as they were vs converted, rotations, inputs."""
    infos = [i.info for i in items]
    return {"passthrough": sum(i["passthrough"] for i in infos),
            "reencoded": sum(not i["passthrough"] for i in infos),
            "rotated": sum(i["rotated"] for i in infos),
            "formats": dict(sorted(Counter(i["format"] for i in infos).items())),
            "modes": dict(sorted(Counter(i["mode"] for i in infos).items()))}


def _results(chunks: list[list[str]], opts: Options, n_workers: int):
    """Per-file results in input order: in-process for one worker, else a spawned pool (no TF in it),
    or Dask tasks when Dask is asked for (tasks/core/parallel.py)."""
    if (n_workers <= 1 and not parallel.distributed()) or len(chunks) <= 1:
        for chunk in chunks:
            yield from convert_chunk(chunk, opts)
        return
    with parallel.pool(n_workers) as pool:
        for part in ordered_map(pool, chunks, ahead=4 * getattr(pool, "width", n_workers), fn=convert_chunk,
                                  args=(opts,)):
            yield from part


# ---------------------------------------------------------------- duplicates

SPLIT_PRIORITY = {"test": 0, "validation": 1, None: 2, "train": 3}  # which copy of a duplicate is kept


def drop_duplicates(items: list[Item], skipped: list[dict]) -> list[dict]:
    """Find byte-identical source files; returns the groups for the manifest (`duplicates`).

    - Copies in one class: one is kept (an evaluation split's copy before a train copy, so no image
      is both trained and evaluated on; then the first path), the others are skipped as duplicates.
    - Copies in different classes (upstream label noise: at least one label is wrong, and which one
      cannot be told from the bytes): every copy is skipped; the model neither learns nor is scored
      on a contradiction.
    """
    groups: dict[str, list[Item]] = {}
    for item in items:
        if item.offset >= 0:
            groups.setdefault(item.info["sha256"], []).append(item)
    out = []
    for digest, members in groups.items():
        if len(members) < 2:
            continue
        members = sorted(members, key=lambda i: (SPLIT_PRIORITY[i.split], i.rel))
        classes = sorted({i.class_name for i in members})
        files = [i.rel for i in members]
        if len(classes) > 1:
            drop, kept = members, None
            reason = f"byte-identical files labelled {classes}: {files} (conflicting labels, every copy skipped)"
        else:
            kept, drop = members[0], members[1:]
            reason = f"byte-identical to {kept.rel} (kept)"
        for item in drop:
            item.offset = -1
            skipped.append({"file": item.rel, "reason": f"duplicate: {reason}"})
        out.append({"sha256": digest, "files": files, "classes": classes, "kept": kept.rel if kept else None})
    return sorted(out, key=lambda g: g["files"])


# ---------------------------------------------------------------- classes and splits


def choose_classes(items: list[Item], min_images: int, root: Path) -> tuple[list[str], list[dict]]:
    """Classes with at least `min_images` good images (all splits), sorted; the rest listed as skipped."""
    good = Counter(i.class_name for i in items if i.offset >= 0)
    names = sorted({i.class_name for i in items})
    kept = [c for c in names if good[c] >= min_images]
    dropped = [{"class": c, "images": good[c], "reason": f"fewer than min_images_per_class={min_images} usable images"}
               for c in names if good[c] < min_images]
    if len(kept) < 2:
        raise ValueError(f"{root}: {len(kept)} class(es) left with at least min_images_per_class={min_images} "
                         f"usable images (need 2); usable images per class: {dict(sorted(good.items()))}")
    return kept, dropped


def hash_key(rel: str) -> str:
    """The relative path, with retrain.py's `_nohash_` suffix rule applied to the file name."""
    head, _, name = rel.rpartition("/")
    return f"{head}/{re.sub(r'_nohash_.*$', '', name)}" if head else re.sub(r"_nohash_.*$", "", name)


def assign_splits(items: list[Item], own_splits: bool, validation_percentage: float,
                  testing_percentage: float) -> tuple[dict[str, list[Item]], list[str], dict[str, str]]:
    """({split: items in their stored order}, notes, {split: how it was made}).

    Own split folders are kept; a split the dataset has no folder for (validation, test) is carved from
    train/ by a stable hash of the relative path, so every dataset gets a test split that nothing is
    selected on: validation picks checkpoints and stops training, test scores. Without own folders all
    three are carved from the whole tree."""
    has = {s: any(i.split == s for i in items) for s in ("validation", "test")}
    if own_splits:
        val_pct = 0.0 if has["validation"] else validation_percentage
        test_pct = 0.0 if has["test"] else testing_percentage
        to_carve = [i for i in items if i.split == "train"] if val_pct or test_pct else []
        carved = carve([hash_key(i.rel) for i in to_carve], val_pct, test_pct)
        names = {id(i): str(n) for i, n in zip(to_carve, carved)}
        split_of = {id(i): names.get(id(i), i.split) for i in items}
        folder = {"train": "train/", "validation": "the valid/ folder", "test": "the test/ folder"}
        origin = {"train": "train/" + (" less the splits carved from it" if val_pct or test_pct else "")}
        notes = []
        for split, pct in (("validation", val_pct), ("test", test_pct)):
            if has[split]:
                origin[split] = f"{folder[split]} (the dataset's own)"
            else:
                origin[split] = f"{pct:g}% of train/, carved by a stable hash of the relative path"
                notes.append(f"{split}: {origin[split]} (the dataset has no {split} folder)")
    else:
        carved = carve([hash_key(i.rel) for i in items], validation_percentage, testing_percentage)
        split_of = {id(i): str(n) for i, n in zip(items, carved)}
        notes = [f"splits by a stable hash of the path relative to the dataset root: validation "
                 f"{validation_percentage:g}%, test {testing_percentage:g}%"]
        origin = {"train": "the rest of the class folders",
                  "validation": f"{validation_percentage:g}% of the class folders by a stable hash of the relative path",
                  "test": f"{testing_percentage:g}% of the class folders by a stable hash of the relative path"}
    notes.append("validation only picks checkpoints and stops training early; the test split, which nothing "
                 "is selected on, scores every model")
    out = {}
    for split in SPLITS:
        members = [i for i in items if split_of[id(i)] == split]
        if members:
            order = shuffle_order([i.rel for i in members])
            out[split] = [members[k] for k in order]
    return out, notes, origin


def check_train_covers(splits: dict[str, list[Item]], classes: list[str], root: Path) -> None:
    in_train = {i.class_name for i in splits.get("train", [])}
    missing = [c for c in classes if c not in in_train]
    if missing:
        where = sorted({f"{i.rel.split('/')[0]}/{i.class_name}" for s in splits.values() for i in s
                        if i.class_name in missing})
        raise ValueError(f"{root}: classes with no usable image in the train split: {missing} "
                         f"(found only in {where}); add train images or remove those folders")


def check_evaluation_splits(splits: dict[str, list[Item]], root: Path, key: str, s: dict) -> None:
    """Training picks its best epoch on validation and every model is scored on test: refuse a dataset
    without either here, not after the shards are written and a training has started."""
    counts = {name: len(m) for name, m in splits.items()}
    for split, knob, folder in (("validation", "validation_percentage", "valid/"), ("test", "testing_percentage", "test/")):
        if not splits.get(split):
            raise ValueError(f"{root}: the {split} split is empty (usable images per split: {counts}; "
                             f"prepare.{key}.{knob}={s[knob]:g}): add images (a {folder} folder, or more per "
                             f"class) or raise prepare.{key}.{knob}")


# ---------------------------------------------------------------- writing


def write_splits(out_dir: Path, spool: Path, splits: dict[str, list[Item]], label: dict[str, int],
                 classes: list[str], shape: tuple, shard_mb: float, min_shards: int,
                 progress_label: str = "prepare shards") -> dict[str, list[dict]]:
    """Every split's shards (contiguous runs of its stored order), read back from the spool; the
    images written are reported as `progress_label` (tasks/core/progress.py)."""
    entries = {}
    total = sum(len(members) for members in splits.values())
    with open(spool, "rb") as f, Progress(progress_label, total, "images") as done:
        for split, members in splits.items():
            n = shard_count(len(members), sum(i.length + RECORD_OVERHEAD for i in members), shard_mb, min_shards)
            bounds = [len(members) * k // n for k in range(n + 1)]
            entries[split] = []
            for k in range(n):
                chunk = members[bounds[k]:bounds[k + 1]]
                path = out_dir / f"{split}-{k:05d}-of-{n:05d}.tfrecord"
                records = (example_bytes(_read(f, i), shape, label[i.class_name], i.class_name, i.rel, fmt=b"jpeg")
                           for i in done.iterate(chunk))
                entries[split].append(write_records(path, records))
    return entries


def _read(f, item: Item) -> bytes:
    f.seek(item.offset)
    return f.read(item.length)
