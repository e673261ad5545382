"""Generic image-folder dataset: `root/<class>/*.jpg` (or root/train|valid|test/<class>/...), as
TensorFlow's retrain.py took it. Used for any key with `fetch.<key>: {kind: folder, source: ...}`;
the source (a folder, a zip/tar archive, an http(s) URL of one, or kaggle:<owner>/<slug>) must be given.
"""
from __future__ import annotations

KIND = "image_folder"
UPSTREAM = None
MIRROR_PATH = None
INDEX_CSV = None


def label_attributes(class_names, root):
    return None
