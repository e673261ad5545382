"""fetch: a dataset's files, or pretrained weights, from their public home (or a mirror) into
data/raw/<key>/ (data/weights/<key>/), checksummed, with a fetch.json record.

One entry, `fetch`, and two strategies: `arrays` (a source module's `file_sets`: files or zip members,
`download` and `remote_zip`) and `photos` (a folder, an archive, a URL or a Kaggle slug: `archives`,
`kaggle_api`). `weights` fetches ImageNet weights the same way. Both resolve a mirror with `mirrors`,
so records name it by a token and hash the same on every machine.
"""
from __future__ import annotations

from pathlib import Path

# fetch.<key> of a photo-folder dataset (the array datasets' keys are their source modules' own).
PHOTO_KEYS = ("source", "sha256", "link")


def fetch(key: str, module, settings: dict, *, raw_dir: Path, root: Path, mirror: str | None,
          options: dict) -> dict:
    """Fetch dataset `key` (source `module`, `settings` = params fetch.<key>) into `raw_dir`; returns
    the record written to fetch.json. `mirror` replaces upstream, `options` are the downloader's."""
    from tasks.sources import is_image_folder

    if is_image_folder(module):
        from tasks.fetch.photos import fetch_images

        return fetch_images(key, module, settings, raw_dir=raw_dir, root=root, mirror=mirror, options=options)
    from tasks.fetch.arrays import fetch_arrays

    return fetch_arrays(key, module, settings, raw_dir=raw_dir, mirror=mirror, options=options)
