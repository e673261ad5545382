"""Stable hash splits, as TensorFlow's retrain.py did them, but hashed on a source id.

The id never contains a checkout path, so an example lands in the same split on any machine, any
checkout location and any run; adding examples never moves existing ones between splits.
"""
from __future__ import annotations

import hashlib

import numpy as np

SPLITS = ("train", "validation", "test")  # the processed splits, in the order they are written
MAX_PER_CLASS = 2**27 - 1  # retrain.py's MAX_NUM_IMAGES_PER_CLASS: the hash's resolution


def percentage(source_id: str) -> float:
    """Where `source_id` falls in [0, 100], uniformly and stably."""
    digest = int(hashlib.sha1(source_id.encode("utf-8")).hexdigest(), 16)
    return (digest % (MAX_PER_CLASS + 1)) * (100.0 / MAX_PER_CLASS)


def split_of(source_id: str, validation_percentage: float, testing_percentage: float) -> str:
    pct = percentage(source_id)
    if pct < validation_percentage:
        return "validation"
    if pct < validation_percentage + testing_percentage:
        return "test"
    return "train"


def carve(source_ids: list[str], validation_percentage: float, testing_percentage: float) -> np.ndarray:
    """The split name of each id (object array), for ids from a source's train split."""
    return np.array([split_of(i, validation_percentage, testing_percentage) for i in source_ids], dtype=object)


def shuffle_order(source_ids: list[str]) -> np.ndarray:
    """A deterministic, well-mixed order of the ids (sorted by their hash), so shards mix classes."""
    keys = [hashlib.sha1(i.encode("utf-8")).digest() for i in source_ids]
    return np.array(sorted(range(len(keys)), key=keys.__getitem__), dtype=np.int64)
