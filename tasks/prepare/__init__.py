"""prepare: a dataset's fetched files (data/raw/<key>/) -> data/processed/<key>/: stable hash splits,
sharded TFRecords, manifest.json, labels.json, the Parquet index and the TFDS metadata.

One entry, `prepare`, and two strategies: `arrays` (a source module's `load` returns arrays: MNIST,
EMNIST, read with tasks.formats) and `photos` (photos in class folders: checked, resized, deduplicated
in parallel, `images`). Both write through tasks.records (the shard format) and `splits`.
"""
from __future__ import annotations

from pathlib import Path


def prepare(key: str, module, settings: dict, *, raw_dir: Path, out_dir: Path, workers: int) -> dict:
    """Build `out_dir` from `raw_dir` for dataset `key` (source `module`, `settings` = params
    prepare.<key>); returns the manifest."""
    from tasks.sources import is_image_folder

    if is_image_folder(module):
        from tasks.prepare.photos import prepare_images as run
    else:
        from tasks.prepare.arrays import prepare_arrays as run
    return run(key, module, settings, raw_dir=raw_dir, out_dir=out_dir, workers=workers)
