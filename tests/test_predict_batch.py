"""`tlpipe predict MODEL DIR... --out FILE.parquet`: folders searched recursively, one Parquet row per image
(written atomically), an unreadable image a row with its reason, batches streamed with bounded memory,
what it prints on a terminal, in a log (a line about every TLPIPE_PROGRESS_INTERVAL, never one per batch) and with -q."""
import hashlib
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from predict_fixtures import BROKEN, GREY_LABELS, IMAGES, RGB_LABELS, grey_float32, photo_folder, rgb_int8
from tasks.cli import main
from tasks.evaluate import predict as P

REPO = Path(__file__).resolve().parents[1]
COLUMNS = ["path", "label", "score", "labels", "scores", "width", "height", "error", "model_sha256"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return {"int8": rgb_int8(d / "rgb"), "float32": grey_float32(d / "grey")}


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return photo_folder(tmp_path_factory.mktemp("photos") / "photos")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def quiet_run(model, inputs, out, **kw):
    lines = []
    summary = P.predict_to_parquet(model, inputs, out, progress="quiet", emit=lines.append, **kw)
    return summary, lines


def test_find_images_recurses_sniffs_and_skips(photos):
    found = [p.relative_to(photos).as_posix() for p in P.find_images([photos])]
    assert found == IMAGES
    named = [photos / "b/notes.txt", photos / "missing.jpg", photos / "a"]  # a named file is taken as it is
    assert [p.relative_to(photos).as_posix() for p in P.find_images(named)] == \
        ["b/notes.txt", "missing.jpg", "a/nested/deeper/wide.png", "a/red.jpg", "a/rgba.png"]


@pytest.mark.parametrize("kind", ["int8", "float32"])
def test_one_row_per_image_with_the_reason_for_the_unreadable_ones(models, photos, tmp_path, kind):
    model = models[kind]
    out = tmp_path / "deep" / "predictions.parquet"
    summary, lines = quiet_run(model, [photos], out, top_k=2, batch_size=4)
    table = pq.read_table(out)
    assert table.column_names == COLUMNS
    rows = table.to_pylist()
    assert [Path(r["path"]).relative_to(photos).as_posix() for r in rows] == IMAGES
    assert {r["model_sha256"] for r in rows} == {sha256(model)}
    labels = RGB_LABELS if kind == "int8" else GREY_LABELS
    for r in rows:
        name = Path(r["path"]).name
        if name in BROKEN:
            assert r["error"].startswith(BROKEN[name]), r
            assert r["label"] is r["score"] is r["labels"] is r["scores"] is r["width"] is None
            continue
        assert r["error"] is None, r
        assert len(r["labels"]) == 2 and set(r["labels"]) <= set(labels) and r["label"] == r["labels"][0]
        assert r["scores"] == sorted(r["scores"], reverse=True) and r["score"] == r["scores"][0]
        assert 0 <= r["scores"][-1] <= r["scores"][0] <= 1
    assert next(r for r in rows if r["path"].endswith("wide.png"))["width"] == 40
    assert next(r for r in rows if r["path"].endswith("broken.jpg"))["error"].endswith(
        "the file is bytes 74 68 69 73 20 69 73 20)")  # what its first bytes are: "this is "
    assert summary["images"] == len(IMAGES) and summary["failed"] == 2 and summary["classified"] == len(IMAGES) - 2
    assert summary["tiny"] == 1 and summary["model_sha256"] == sha256(model)
    meta = pq.read_schema(out).metadata[b"tlpipe"]
    assert sha256(model).encode() in meta and b'"top_k": 2' in meta
    assert len(lines) == 2 and lines[0].startswith(f"{len(IMAGES)} images -> {out}")
    assert "2 failed" in lines[1] and lines[1].startswith("done in ")
    assert sorted(os.listdir(out.parent)) == ["predictions.parquet"]  # no temp file left


def test_the_batch_path_agrees_with_the_one_image_at_a_time_path(models, photos, tmp_path):
    """Same pixels, same model: the Parquet's top-k is what `tlpipe predict MODEL IMAGE...` prints,
    whatever the batch size (a short last batch is padded) and the number of threads."""
    for kind, model in models.items():
        single = {r["image"]: r for r in P.predict(model, P.find_images([photos]), top_k=3)}
        for batch_size, threads in ((1, 1), (4, 2), (64, 3)):
            quiet_run(model, [photos], tmp_path / "p.parquet", top_k=3, batch_size=batch_size, threads=threads)
            for row in pq.read_table(tmp_path / "p.parquet").to_pylist():
                one = single[row["path"]]
                if row["error"]:
                    assert "error" in one
                    continue
                assert row["labels"] == [t["label"] for t in one["top"]], (kind, batch_size, row["path"])
                np.testing.assert_allclose(row["scores"], [t["score"] for t in one["top"]], atol=1e-6)


def test_memory_is_bounded_decoding_runs_at_most_a_few_batches_ahead(models, photos, tmp_path, monkeypatch):
    many = [photos / "broken.jpg"] * 3 + [photos / "a/red.jpg"] * 60  # every batch has an image to classify
    decoded, at_invoke = [], []
    real_read, real_out = P.read_image, P.dequantize_output
    monkeypatch.setattr(P, "read_image", lambda *a: (decoded.append(1), real_read(*a))[1])
    monkeypatch.setattr(P, "dequantize_output", lambda *a: (at_invoke.append(len(decoded)), real_out(*a))[1])
    summary, _ = quiet_run(models["int8"], many, tmp_path / "p.parquet", batch_size=4, threads=2)
    assert summary["images"] == 63 and summary["failed"] == 3
    assert len(at_invoke) == 16  # ceil(63 / 4) batches
    for i, n in enumerate(at_invoke):  # at the i-th invoke, at most AHEAD more batches were handed out
        assert n <= 4 * (i + 1 + P.AHEAD), (i, n, at_invoke)


def test_a_failed_run_leaves_the_old_file_and_no_temp(models, photos, tmp_path, monkeypatch):
    out = tmp_path / "predictions.parquet"
    out.write_bytes(b"the previous run's file")
    calls, real = [], P.dequantize_output

    def boom(*a):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("interpreter died")
        return real(*a)

    monkeypatch.setattr(P, "dequantize_output", boom)
    monkeypatch.setattr(P, "ROW_GROUP", 2)  # a first row group is already in the temp file when it fails
    with pytest.raises(RuntimeError, match="interpreter died"):
        quiet_run(models["int8"], [photos], out, batch_size=2)
    assert out.read_bytes() == b"the previous run's file"
    assert os.listdir(tmp_path) == ["predictions.parquet"]


def test_errors_before_any_work(models, photos, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such model file"):
        quiet_run(tmp_path / "missing.tflite", [photos], tmp_path / "p.parquet")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here\n")
    with pytest.raises(FileNotFoundError, match="no image files in"):
        quiet_run(models["int8"], [tmp_path / "empty"], tmp_path / "p.parquet")
    assert not (tmp_path / "p.parquet").exists()


def test_progress_lines_are_bounded_by_time_not_batches():
    """10 000 batches over 100 s (a fake clock): about one line per 30 s, however many batches."""
    now = [0.0]
    lines = []
    progress = P.Progress(10_000, "lines", lines.append, every_s=30, clock=lambda: now[0])
    for i in range(1, 10_001):
        now[0] = i / 100
        progress.update(i, i // 1000)
    progress.close()
    assert len(lines) == 3 and lines[0].startswith("3000/10000 images (30%), 100 images/s, 3 failed, about 70 s left")
    quiet = P.Progress(10, "quiet", lines.append, every_s=0, clock=lambda: now[0])
    for i in range(10):
        now[0] += 100
        quiet.update(i, 0)
    assert len(lines) == 3
    with pytest.raises(ValueError, match="progress must be one of"):
        P.Progress(1, "loud")


def test_cli_writes_the_parquet_and_says_how_many_failed(models, photos, tmp_path, capsys):
    out = tmp_path / "predictions.parquet"
    rc = main(["predict", str(models["int8"]), str(photos / "a"), str(photos / "broken.jpg"), "--out", str(out),
               "--top-k", "3", "--batch-size", "2", "--threads", "2"])
    stdout, stderr = capsys.readouterr()
    assert rc == 1
    lines = stdout.splitlines()
    sha = sha256(models["int8"])[:12]
    assert lines[0] == (f"tlpipe predict: 4 images -> {out} (model model_int8.tflite sha256 {sha}, "
                        "input 16x16x3 uint8, 3 labels, top 3, batches of 2, 2 threads)")
    assert re.fullmatch(rf"tlpipe predict: done in [\d.]+ s: 4 images, 3 classified, 1 failed, \d+ images/s -> {out}",
                        lines[-1])
    assert stderr.strip() == (f"tlpipe predict: error: 1 of 4 images could not be classified (their rows in {out} "
                              "give the reason in `error`)")
    assert pq.read_table(out).num_rows == 4
    rc = main(["predict", str(models["int8"]), str(photos / "a"), "--out", str(out), "-q"])
    stdout, stderr = capsys.readouterr()
    assert rc == 0 and len(stdout.splitlines()) == 2 and stderr == ""


def test_cli_without_out_still_prints_and_takes_folders(models, photos, capsys):
    rc = main(["predict", str(models["float32"]), str(photos / "a"), "--top-k", "1"])
    out = capsys.readouterr().out.splitlines()
    assert rc == 0 and out[0] == str(photos / "a/nested/deeper/wide.png") and len(out) == 3 * 2
    assert out[1].split()[0] in GREY_LABELS


SLOW = textwrap.dedent("""
    import sys, time
    from tasks.evaluate import predict as P
    real = P.read_image
    def slow(*a):
        time.sleep(0.02)
        return real(*a)
    P.read_image = slow
    from tasks.cli import main
    rc = main(sys.argv[1:])
    print("tensorflow loaded:", "tensorflow" in sys.modules, file=sys.stderr)
    sys.exit(rc)
""")


@pytest.mark.parametrize("quiet", [False, True])
def test_under_a_pipe_a_slow_run_prints_a_bounded_number_of_lines(models, photos, tmp_path, quiet):
    """Not a terminal: no bar, a progress line about every TLPIPE_PROGRESS_INTERVAL (0.3 s here) and never one per batch;
    -q: the start and end lines only."""
    images = [str(photos / "a/red.jpg")] * 120  # 60 batches of 2, about 1.2 s of decoding on 2 threads
    out = tmp_path / "p.parquet"
    cmd = [sys.executable, "-c", SLOW, "predict", str(models["int8"]), *images, "--out", str(out),
           "--batch-size", "2", "--threads", "2", *(["-q"] if quiet else [])]
    done = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300,
                          env={**os.environ, "TLPIPE_VERBOSE": "", "TLPIPE_PROGRESS_INTERVAL": "0.3"})
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("tlpipe predict: 120 images -> ") and "done in" in lines[-1], lines
    seconds = float(re.search(r"done in ([\d.]+) s", lines[-1]).group(1))
    progress = lines[1:-1]
    assert all(re.fullmatch(r"tlpipe predict: \d+/120 images \(\d+%\), \d+ images/s, 0 failed(, about .* left)?", x)
               for x in progress), progress
    if quiet:
        assert progress == []
    else:
        assert 1 <= len(progress) <= seconds / 0.3 + 1, (seconds, progress)
        assert len(progress) < 60  # fewer than the batches
    assert "\r" not in done.stdout + done.stderr and "img/s" not in done.stderr  # no bar
    assert done.stderr.strip() == "tensorflow loaded: False"  # LiteRT only: a quick start, no library noise
    assert pq.read_table(out).num_rows == 120
