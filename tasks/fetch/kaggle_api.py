"""Kaggle datasets through `kagglehub` (Kaggle's own library, a pinned dependency), imported lazily.

Why kagglehub and not the `kaggle` CLI package: kagglehub sends no credentials when it has none
and downloads public datasets anonymously, so a newcomer with internet and no Kaggle account gets
the cards dataset; `kaggle` (2.x) needs an account: its import prints "Authentication required"
and its downloads fail without a token (1.x exited the process at import). Both read the same
credentials: KAGGLE_API_TOKEN, KAGGLE_USERNAME + KAGGLE_KEY, or ~/.kaggle/kaggle.json.

kagglehub downloads the dataset's zip and extracts it (Python's zipfile: no `..`, no absolute
paths, no links) into the folder we give it; `fetch` then moves that tree into data/raw/<key>/.
A version is pinned Kaggle's way: `kaggle:<owner>/<dataset>/versions/<n>`.

Secrets never reach a log line or an error message: every message that passes through here, and
every record of the kagglehub loggers while a download runs, has the key and token values
(from the environment and ~/.kaggle/) replaced by `***`.
"""
from __future__ import annotations

import logging
import os
import re
from contextlib import contextmanager
from pathlib import Path

SLUG = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*(/versions/[0-9]+)?$")

HOW_TO = (
    "Public datasets download without an account; for one that needs it, provide Kaggle credentials "
    "(an API token from kaggle.com > Settings > API): set KAGGLE_API_TOKEN, or KAGGLE_USERNAME and "
    "KAGGLE_KEY, or put kaggle.json in ~/.kaggle/ (chmod 600), and accept the dataset's terms on its "
    "Kaggle page; or set `fetch.{key}.source` in params.yaml to a local folder, a zip/tar archive or an "
    "http(s) URL of one instead (or set TLPIPE_MIRROR to a mirror that holds the dataset)."
)


def parse_slug(source: str) -> str:
    """'kaggle:owner/dataset[/versions/N]' -> 'owner/dataset[/versions/N]' (ValueError if malformed)."""
    slug = source.split(":", 1)[1].strip().strip("/") if source.startswith("kaggle:") else source
    if not SLUG.match(slug) or ".." in slug:
        raise ValueError(f"bad Kaggle source {source!r}: expected kaggle:<owner>/<dataset> (or "
                         "kaggle:<owner>/<dataset>/versions/<n>), "
                         "e.g. kaggle:gpiosenka/cards-image-datasetclassification")
    return slug


def secrets() -> list[str]:
    """The Kaggle secret values this process could send: env vars and ~/.kaggle/ files."""
    import json

    found = [os.environ.get(name, "") for name in ("KAGGLE_KEY", "KAGGLE_API_TOKEN")]
    folder = Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle")
    try:
        found.append(str(json.loads((folder / "kaggle.json").read_text()).get("key") or ""))
    except (OSError, ValueError, AttributeError):
        pass
    try:
        found.append((folder / "access_token").read_text().strip())
    except OSError:
        pass
    return sorted({s for s in found if len(s) >= 4}, key=len, reverse=True)


def redact(text: str, values: list[str] | None = None) -> str:
    for value in secrets() if values is None else values:
        text = text.replace(value, "***")
    return text


class _Redact(logging.Filter):
    def __init__(self, values: list[str]):
        super().__init__()
        self.values = values

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message, self.values)
        if clean != message:
            record.msg, record.args = clean, None
        return True


@contextmanager
def _redacted_logs(names=("kagglehub", "kagglesdk")):
    """While a download runs, the kagglehub loggers' records pass through the redaction filter."""
    values = secrets()
    filt = _Redact(values)
    loggers = [logging.getLogger(n) for n in names]
    handlers = [h for lg in loggers for h in lg.handlers]
    for target in (*loggers, *handlers):
        target.addFilter(filt)
    try:
        yield values
    finally:
        for target in (*loggers, *handlers):
            target.removeFilter(filt)


def kagglehub_module(key: str = "<key>"):
    """The `kagglehub` module, or a RuntimeError saying how to get it."""
    try:
        import kagglehub  # noqa: PLC0415 - lazy: a Kaggle source is the only user
    except ImportError as e:
        raise RuntimeError(f"Kaggle source needs the `kagglehub` package ({e}): `pip install -c "
                           "requirements.lock -e .` installs it; or " + HOW_TO.format(key=key)) from e
    return kagglehub


def download_dataset(slug: str, dest: Path, *, key: str = "<key>") -> Path:
    """Download dataset `slug` into the empty folder `dest`, extracted; returns the folder of its files."""
    hub = kagglehub_module(key)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with _redacted_logs() as values:
        try:
            path = hub.dataset_download(slug, output_dir=str(dest), force_download=True)
        except KeyboardInterrupt:
            raise
        except (Exception, SystemExit) as e:  # HTTP errors, auth errors, even exit() from a client
            status = getattr(getattr(e, "response", None), "status_code", None)
            hint = (" The dataset needs a Kaggle account (or its terms accepted). " + HOW_TO.format(key=key)
                    if status in (401, 403) else " " + HOW_TO.format(key=key))
            raise RuntimeError(redact(f"Kaggle download of {slug} failed: {type(e).__name__}: {e}.", values)
                               + hint) from None
    path = Path(path or dest)
    if not path.is_dir() or not any(path.iterdir()):
        raise RuntimeError(f"Kaggle download of {slug}: expected the dataset's files in {path}, found none")
    return path
