"""The labels.json form of a dataset's class names (what prepare writes and every model stage reads)."""
from __future__ import annotations


def label_map(names) -> dict[str, str]:
    """``{"0": names[0], "1": names[1], ...}`` (string keys, id -> name)."""
    return {str(i): str(name) for i, name in enumerate(names)}


def label_names(manifest: dict) -> list[str]:
    """The class names of a manifest's `labels` map, in id order."""
    labels = manifest["labels"]
    return [labels[str(i)] for i in range(len(labels))]
