"""Dask scale-out (tasks/core/parallel.py): shards and photo checks on a 2-worker LocalCluster are
byte-identical to the in-process and multiprocessing paths; inside a (daemonic) Dask worker the work
goes back to the cluster instead of a process pool."""
import multiprocessing
from pathlib import Path

import numpy as np

import pytest
import yaml

from project import write_mirror, write_params
from tasks.prepare import photos as image_folder
from tasks.core import parallel
from tasks.cli import main
from tasks.stages.project import Project
from tasks.stages.data import fetch_stage as fetch
from tasks.stages.data import prepare_stage as prepare
from tasks.records.shards import ShardJob, encoded_images

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    """One 2-worker LocalCluster for the module (single-threaded worker processes, loopback only)."""
    with parallel.local_cluster(2) as c, distributed.Client(c) as client:
        yield c, client


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in ("TLPIPE_MIRROR", "TLPIPE_WORKERS", "TLPIPE_DASK"):
        monkeypatch.delenv(var, raising=False)


def files_of(project, key):
    return {p.relative_to(project.processed_dir(key)).as_posix(): p.read_bytes()
            for p in sorted(project.processed_dir(key).rglob("*")) if p.is_file()}


@pytest.fixture
def mnist(tmp_path):
    mirror = tmp_path / "mirror"
    pins = write_mirror(mirror, mat=False, idx=False)
    root = tmp_path / "proj"
    write_params(root, mirror=str(mirror), pins=pins, datasets=("mnist",), min_shards=3)
    project = Project(root)
    fetch(project, "mnist")
    return project


def test_mnist_shards_are_byte_identical_through_dask_and_processes(mnist, cluster, monkeypatch):
    c, _ = cluster
    serial = prepare(mnist, "mnist")
    expected = files_of(mnist, "mnist")
    assert len([n for n in expected if n.endswith(".tfrecord")]) == 9

    monkeypatch.setenv("TLPIPE_WORKERS", "2")
    assert prepare(mnist, "mnist") == serial  # the spawned-process pool
    assert files_of(mnist, "mnist") == expected

    monkeypatch.delenv("TLPIPE_WORKERS")
    monkeypatch.setenv("TLPIPE_DASK", c.scheduler_address)  # an existing cluster, by address
    assert prepare(mnist, "mnist") == serial
    assert files_of(mnist, "mnist") == expected
    assert "encode_chunk" in c.scheduler.task_prefixes, \
        f"no encode_chunk task reached the cluster (task prefixes: {list(c.scheduler.task_prefixes)})"


def test_cli_with_a_local_cluster_of_its_own(mnist, monkeypatch, capsys):
    monkeypatch.chdir(mnist.root)
    prepare(mnist, "mnist")
    expected = files_of(mnist, "mnist")
    monkeypatch.setenv("TLPIPE_DASK", "local:2")  # `tlpipe prepare` starts and stops a LocalCluster
    assert main(["prepare", "mnist"]) == 0
    assert files_of(mnist, "mnist") == expected
    assert "test:30" in capsys.readouterr().out  # the stage's closing line: splits=train:../validation:../test:30


def test_photo_checks_are_byte_identical_through_dask(tmp_path, cluster, monkeypatch):
    from test_image_folder import messy_cards
    from photos import small_prepare, write_params as write_photo_params

    c, client = cluster
    src = tmp_path / "photos"
    messy_cards(src)
    root = tmp_path / "proj"
    write_photo_params(root, {"cards": {"source": str(src)}}, {"cards": small_prepare()})
    project = Project(root)
    monkeypatch.setattr(image_folder, "CHUNK", 3)  # many chunks, so the work really is split
    fetch(project, "cards")
    one = prepare(project, "cards")
    expected = files_of(project, "cards")
    with parallel.using(client):
        assert prepare(project, "cards") == one
    assert files_of(project, "cards") == expected
    assert "convert_chunk" in c.scheduler.task_prefixes


def test_inside_a_dask_task_the_work_goes_back_to_the_cluster(cluster):
    """A Prefect task under DaskTaskRunner runs in a daemonic worker process, where a process pool
    cannot start: the chunks are submitted to the same cluster (worker_client) instead."""
    c, client = cluster
    rng = np.random.default_rng(0)
    jobs = [ShardJob(Path(f"s{k}"), rng.integers(0, 256, (7, 8, 8), dtype=np.uint8), np.zeros(7, np.int64),
                     ["a"], [str(i) for i in range(7)]) for k in range(3)]
    expected = [list(parts) for parts in encoded_images(jobs, workers=1)]
    flags, got = client.submit(_encode_in_worker, jobs, pure=False).result()
    assert flags == (True, True)  # daemonic, and inside a Dask worker
    assert got == expected
    assert "encode_chunk" in c.scheduler.task_prefixes


def _encode_in_worker(jobs):
    flags = multiprocessing.current_process().daemon, parallel.in_dask_worker()
    return flags, [list(parts) for parts in encoded_images(jobs, workers=2, chunk=3)]


def test_any_other_daemonic_process_works_in_process(monkeypatch):
    class Daemon:
        daemon = True

    monkeypatch.setattr(multiprocessing, "current_process", lambda: Daemon())
    with parallel.pool(4) as p:
        assert isinstance(p, parallel._InlinePool)
        assert p.submit(sum, [1, 2, 3]).result() == 6
        with pytest.raises(ZeroDivisionError):
            p.submit(divmod, 1, 0).result()


def test_settings(monkeypatch):
    assert parallel.dask_setting({}) is None
    assert parallel.dask_setting({"runtime": {"dask": "local:3"}}) == "local:3"
    monkeypatch.setenv("TLPIPE_DASK", "tcp://10.0.0.5:8786")
    assert parallel.dask_setting({"runtime": {"dask": "local"}}) == "tcp://10.0.0.5:8786"  # env wins
    monkeypatch.setenv("TLPIPE_DASK", "off")
    assert parallel.dask_setting({"runtime": {"dask": "local"}}) is None
    assert parallel.parse_setting("local", 5) == (None, 5)
    assert parallel.parse_setting("local:2", 5) == (None, 2)
    assert parallel.parse_setting("127.0.0.1:8786", 5) == ("127.0.0.1:8786", 0)
    for bad in ("local:two", "my-cluster"):
        with pytest.raises(ValueError, match="TLPIPE_DASK="):
            parallel.parse_setting(bad, 1)
