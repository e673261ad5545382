"""Kaggle datasets through the official `kaggle` package, imported only when a Kaggle source is used.

`import kaggle` authenticates at import time: without credentials it calls exit(1) (SystemExit)
or raises OSError, depending on the version. Both become one clear error that says what to do.
"""
from __future__ import annotations

import re
from pathlib import Path

SLUG = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")

HOW_TO = (
    "Provide Kaggle credentials (an API token from kaggle.com > Settings > API): set KAGGLE_API_TOKEN, "
    "or KAGGLE_USERNAME and KAGGLE_KEY, or put kaggle.json in ~/.kaggle/ (chmod 600); "
    "or set `fetch.{key}.source` in params.yaml to a local folder, a zip/tar archive or an http(s) URL "
    "of one instead (or set TLPIPE_MIRROR to a mirror that holds the dataset)."
)


def parse_slug(source: str) -> str:
    """'kaggle:owner/dataset' -> 'owner/dataset' (ValueError if malformed)."""
    slug = source.split(":", 1)[1].strip().strip("/") if source.startswith("kaggle:") else source
    if not SLUG.match(slug):
        raise ValueError(f"bad Kaggle source {source!r}: expected kaggle:<owner>/<dataset>, "
                         "e.g. kaggle:gpiosenka/cards-image-datasetclassification")
    return slug


def kaggle_api(key: str = "<key>"):
    """The authenticated `kaggle.api` object, or a RuntimeError saying how to get one."""
    try:
        import kaggle  # noqa: PLC0415 - lazy on purpose: it authenticates (or exits) at import
    except ModuleNotFoundError as e:
        if e.name != "kaggle":
            raise RuntimeError(f"the kaggle package is installed but cannot be imported ({e}); "
                               "reinstall it with `pip install kaggle`") from e
        raise RuntimeError("Kaggle source needs the `kaggle` package: `pip install kaggle`; "
                           + HOW_TO.format(key=key)) from e
    except ImportError as e:
        raise RuntimeError(f"the kaggle package cannot be imported ({e}); `pip install kaggle`; "
                           + HOW_TO.format(key=key)) from e
    except (SystemExit, OSError) as e:
        raise RuntimeError(f"Kaggle credentials not found or not usable ({type(e).__name__}: {e}). "
                           + HOW_TO.format(key=key)) from e
    return kaggle.api


def download_dataset(slug: str, dest: Path, *, key: str = "<key>", quiet: bool = True) -> Path:
    """Download dataset `slug` as one zip into the empty folder `dest`; returns the zip's path."""
    api = kaggle_api(key)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        api.dataset_download_files(slug, path=str(dest), unzip=False, quiet=quiet)
    except KeyboardInterrupt:
        raise
    except (Exception, SystemExit) as e:  # the client raises ApiException, requests errors, even exit()
        raise RuntimeError(f"Kaggle download of {slug} failed: {type(e).__name__}: {e} "
                           "(is the slug right, and have you accepted the dataset's terms on kaggle.com?)") from e
    zips = sorted(dest.glob("*.zip"))
    if len(zips) != 1:
        raise RuntimeError(f"Kaggle download of {slug}: expected one zip in {dest}, found "
                           f"{[p.name for p in dest.iterdir()]}")
    return zips[0]
