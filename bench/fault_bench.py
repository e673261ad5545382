"""Fault injection: kill the pipeline at each write it makes, rerun, compare with an uninterrupted run.

    python bench/fault_bench.py [--only fetch prepare photo train]

Every kill is an `os._exit` at an exact call inside a fresh interpreter (tests/faults.py), on the test
fixtures (MNIST-format IDX files, a photo folder, a tiny CNN on synthetic 28x28 images), so each case
is deterministic. For each kill point it records what the killed run left, what the rerun did, and
whether the rerun's outputs are byte-identical to an uninterrupted run's (training: `history.json`
bytes and every weight of `model.keras`, whose zip also holds the save time). Prints a table (see
docs/reliability.md) and writes reports/bench/faults.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from faults import KILLED, leftovers, run_killed, tree_bytes  # noqa: E402

HEADER = """
import sys
from faults import _die, kill_at
"""


def _project(tmp: Path, name: str, mirror: Path, pins: dict):
    from project import write_params
    from tasks.stages.project import Project

    write_params(tmp / name, mirror=str(mirror), pins=pins, datasets=("mnist",))
    return Project(tmp / name)


def _left(parent: Path) -> str:
    names = leftovers(parent) if parent.is_dir() else []
    parts = sorted({n.split(".tmp-")[0] + ".tmp-*" if ".tmp-" in n else n for n in names})
    if parent.is_dir():
        parts += sorted(p.relative_to(parent).as_posix().split("/", 1)[0] + "/…/" + p.name
                        for p in parent.rglob("*.part"))
    return ", ".join(parts) or "nothing"


def kill(script: str, cwd: Path) -> None:
    run_killed(HEADER + textwrap.dedent(script), cwd=cwd)


def fetch_cases(tmp: Path, mirror: Path, pins: dict) -> list[dict]:
    from tasks.stages.data import fetch_stage as fetch

    clean = _project(tmp, "fetch-clean", mirror, pins)
    fetch(clean, "mnist")
    rows = []
    for point, patch in [("download: mid-file (after the 2nd 1 MiB block of a file)",
                          'kill_at("tasks.fetch.download:Sink.write", call=2, when="after")'),
                         ("download: after the last file, before fetch.json",
                          'kill_at("tasks.fetch.arrays:write_json", call=1)')]:
        p = _project(tmp, f"fetch-{len(rows)}", mirror, pins)
        kill(patch + "\nfrom tasks.stages.project import find_project\nfrom tasks.fetch.arrays import fetch\n"
             "fetch(find_project(), 'mnist')", p.root)
        left = _left(p.root / "data" / "raw")
        fetch(p, "mnist")
        rows.append({"stage": "fetch mnist", "kill point": point, "left after the kill": left,
                     "rerun": "removes the temp dir, fetches again",
                     "left after the rerun": _left(p.root / "data" / "raw"),
                     "identical": tree_bytes(p.raw_dir("mnist")) == tree_bytes(clean.raw_dir("mnist"))})
    return rows


def prepare_cases(tmp: Path, mirror: Path, pins: dict) -> list[dict]:
    from tasks.stages.data import fetch_stage as fetch
    from tasks.stages.data import prepare_stage as prepare

    clean = _project(tmp, "prep-clean", mirror, pins)
    fetch(clean, "mnist")
    prepare(clean, "mnist")
    rows = []
    for point, patch, rerun_over_old in [
            ("prepare: parsing the IDX files", 'kill_at("tasks.sources.mnist:load")', False),
            ("prepare: writing the first shard", 'kill_at("tasks.records.shards:write_records", when="after")', False),
            ("prepare: the last shard", 'kill_at("tasks.records.shards:write_records", call=4)', False),
            ("prepare: manifest.json / labels.json", 'kill_at("tasks.records.shards:write_json")', False),
            ("prepare: the swap over an older output", 'kill_at("tasks.core.io:exchange")', True)]:
        p = _project(tmp, f"prep-{len(rows)}", mirror, pins)
        fetch(p, "mnist")
        if rerun_over_old:
            prepare(p, "mnist")
        kill(patch + "\nfrom tasks.stages.project import find_project\nfrom tasks.prepare.arrays import prepare\n"
             "prepare(find_project(), 'mnist')", p.root)
        left = _left(p.root / "data" / "processed")
        prepare(p, "mnist")
        rows.append({"stage": "prepare mnist", "kill point": point, "left after the kill": left,
                     "rerun": "removes the temp dir, prepares again" if left != "nothing" else "prepares",
                     "left after the rerun": _left(p.root / "data" / "processed"),
                     "identical": tree_bytes(p.processed_dir("mnist")) == tree_bytes(clean.processed_dir("mnist"))})
    return rows


def photo_cases(tmp: Path) -> list[dict]:
    from photos import class_tree, small_prepare, write_params
    from tasks.stages.project import Project
    from tasks.stages.data import fetch_stage as fetch
    from tasks.stages.data import prepare_stage as prepare

    src = tmp / "photos"
    class_tree(src, {"red": 40, "green": 40, "blue": 40})

    def project(name):
        write_params(tmp / name, {"shapes": {"source": str(src)}},
                     {"shapes": small_prepare(shard_mb=0.05)}, workers=2)
        p = Project(tmp / name)
        fetch(p, "shapes")
        return p

    clean = project("photo-clean")
    prepare(clean, "shapes")
    rows = []
    for point, patch in [
            ("prepare (photos, 2 workers): converting, pool busy", """
import multiprocessing, json, tasks.prepare.photos as f
results = f._results
def dying(*a, **k):
    for n, r in enumerate(results(*a, **k)):
        if n == 50:
            open("pids.json", "w").write(json.dumps([c.pid for c in multiprocessing.active_children()]))
            _die()
        yield r
f._results = dying"""),
            ("prepare (photos): writing the first shard", 'kill_at("tasks.prepare.photos:write_records", when="after")'),
            ("prepare (photos): manifest.json", 'kill_at("tasks.prepare.photos:write_json", call=2)')]:
        p = project(f"photo-{len(rows)}")
        kill(patch + "\nfrom tasks.stages.project import find_project\nfrom tasks.prepare.arrays import prepare\n"
             "prepare(find_project(), 'shapes')", p.root)
        left = _left(p.root / "data" / "processed")
        workers = ""
        if (p.root / "pids.json").exists():
            import time

            pids = json.loads((p.root / "pids.json").read_text())
            deadline = time.monotonic() + 30
            while any(_alive(q) for q in pids) and time.monotonic() < deadline:
                time.sleep(0.05)
            workers = f"; its {len(pids)} worker processes: {sum(_alive(q) for q in pids)} alive after the kill"
        prepare(p, "shapes")
        rows.append({"stage": "prepare photos", "kill point": point, "left after the kill": left + workers,
                     "rerun": "removes the temp dir, prepares again",
                     "left after the rerun": _left(p.root / "data" / "processed"),
                     "identical": tree_bytes(p.processed_dir("shapes")) == tree_bytes(clean.processed_dir("shapes"))})
    return rows


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def dying_write(module: str, condition: str) -> str:
    """A patch: `module`'s write_json kills the process when `condition` (on path, data) holds."""
    return f"""
import {module} as t
write = t.write_json
def dying(path, data):
    if {condition}:
        _die()
    write(path, data)
t.write_json = dying"""


def train_cases(tmp: Path) -> list[dict]:
    import keras
    import numpy as np
    from test_train import RECIPE, processed

    from tasks.cnn.train import train

    data = processed(tmp / "data")
    rows = []
    for epochs in (1, 2):
        recipe = {**RECIPE, "epochs": epochs}
        clean = tmp / f"clean-{epochs}"
        train("m", recipe, data, clean)
        last = epochs  # kills at the last epoch's writes
        for point, patch in [
                ("model.keras (half written)", """
import keras
def half(self, path, *a, **k):
    open(path, "wb").write(b"PK\\x03\\x04"); _die()
keras.Model.save = half"""),
                ("backup weights (half written)", f"""
import keras
save = keras.Model.save_weights
def half(self, path, *a, **k):
    if "epoch-{last:04d}" in str(path):
        open(path, "wb").write(b"\\x89HDF"); _die()
    save(self, path, *a, **k)
keras.Model.save_weights = half"""),
                ("backup metadata (the epoch's commit)",
                 dying_write("tasks.fit", f'path.name == "training_metadata.json" and data.get("epoch") == {last}')),
                ("history.json", dying_write("tasks.cnn.train", 'path.name == "history.json"')),
                ("train.json", dying_write("tasks.cnn.train", 'path.name == "train.json"'))]:
            out = tmp / f"m-{epochs}-{len(rows)}"
            kill(patch + f"\nfrom tasks.cnn.train import train\ntrain('m', {recipe!r}, {str(data)!r}, {str(out)!r})", tmp)
            from tasks.fit import has_backup

            state = "a backup (epoch %s)" % json.loads((out / "backup" / "training_metadata.json").read_text())["epoch"] \
                if has_backup(out / "backup") else "no backup"
            left = ", ".join(filter(None, [state, "model.keras" if (out / "model.keras").exists() else "",
                                           _left(out).replace("nothing", "")]))
            seen = []

            class Seen(keras.callbacks.Callback):
                def on_epoch_begin(self, epoch, logs=None):
                    seen.append(epoch)

            summary = train("m", recipe, data, out, extra_callbacks=[Seen()])
            same_weights = all(np.array_equal(a, b) for a, b in zip(
                keras.models.load_model(out / "model.keras").get_weights(),
                keras.models.load_model(clean / "model.keras").get_weights()))
            same_history = (out / "history.json").read_bytes() == (clean / "history.json").read_bytes()
            rerun = (f"resumes, redoes epoch(s) {seen}" if summary["resumed"] and seen else
                     "resumes, nothing left to train: checks model.keras, finishes" if summary["resumed"] else
                     f"trains afresh, epoch(s) {seen}")
            rows.append({"stage": f"train ({epochs} epoch{'s' * (epochs > 1)})", "kill point": point,
                         "left after the kill": left, "rerun": rerun, "left after the rerun": _left(out),
                         "identical": same_weights and same_history,
                         "detail": {"weights": same_weights, "history": same_history}})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=["fetch", "prepare", "photo", "train"])
    args = ap.parse_args()
    from project import write_mirror

    rows = []
    with tempfile.TemporaryDirectory(prefix="tlpipe-faults-") as d:
        tmp = Path(d)
        pins = write_mirror(tmp / "mirror", mat=False, idx=False)
        if "fetch" in args.only:
            rows += fetch_cases(tmp, tmp / "mirror", pins)
        if "prepare" in args.only:
            rows += prepare_cases(tmp, tmp / "mirror", pins)
        if "photo" in args.only:
            rows += photo_cases(tmp)
        if "train" in args.only:
            rows += train_cases(tmp)
    cols = ["stage", "kill point", "left after the kill", "rerun", "left after the rerun", "identical"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(("yes" if r[c] else "**no**") if c == "identical" else str(r[c]) for c in cols) + " |")
    out = ROOT / "reports" / "bench" / "faults.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"killed_exit_code": KILLED, "cases": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
