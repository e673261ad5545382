"""bench/cache_bench.py's three cache formats hold the same arrays, and the memory-mapped ones are read
without a copy: what the benchmark's numbers stand on. Timings are never asserted."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import cache_bench  # noqa: E402


@pytest.mark.parametrize("shape,dtype", [((16,), np.float32), ((3, 3, 8), np.float16)])
@pytest.mark.parametrize("fmt", cache_bench.FORMATS)
def test_formats_round_trip(tmp_path, fmt, shape, dtype):
    rng = np.random.default_rng(1)
    arrays = {"features": rng.standard_normal((37, *shape)).astype(dtype),
              "labels": rng.integers(0, 5, 37).astype(np.int64), "ids": np.array([f"id{i}" for i in range(37)])}
    path = cache_bench.write(fmt, arrays, tmp_path / "train")
    x, y = cache_bench.open_split(fmt, path)
    assert x.dtype == dtype and x.shape == (37, *shape)
    np.testing.assert_array_equal(x, arrays["features"])
    np.testing.assert_array_equal(y, arrays["labels"])
    if fmt != "npz":  # a view of the mapped file, not a copy in memory
        assert not x.flags.owndata


def test_child_reads_the_same_values(tmp_path):
    arrays = {"features": np.arange(64 * 4, dtype=np.float32).reshape(64, 4), "labels": np.arange(64) % 3,
              "ids": np.array([str(i) for i in range(64)])}
    checks = set()
    for fmt in cache_bench.FORMATS:
        path = cache_bench.write(fmt, arrays, tmp_path / fmt)
        for case in ("load", "sample"):
            got = cache_bench.child(fmt, case, path)
            assert got["seconds"] >= 0 and json.dumps(got)
            checks.add((case, got["check"]))
    assert len(checks) == 2  # one value per case, whatever the format
