"""What a run prints: the stage lines and our own logs, not the libraries' start-up noise.

Quiet (the default) means, before TensorFlow loads: its C++ log at FATAL only (no oneDNN notice, no
"Could not find cuda drivers", no `cuInit ... UNKNOWN ERROR (303)` at level E on a machine without a
GPU), the lines absl writes to stderr while TensorFlow's libraries load swallowed (kept and shown if
the import itself fails), and Keras' export printout (the SavedModel signature: hundreds of
`TensorSpec(...)` lines per TFLite conversion) off. `-v` / TLPIPE_VERBOSE=1 brings all of it back.

A long phase reports its progress (tasks/core/progress.py): a live bar on a terminal, a line about
every 30 s in a log. `-q` / TLPIPE_QUIET=1 keeps only a stage's start and end lines (and warnings and
errors): no progress, no epoch lines, no INFO lines of ours.
The settings travel in the environment, so `dvc repro`, the Prefect flow's stage subprocesses and
deployments (flows/__init__.py) behave the same.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile

from tasks.core import progress

VERBOSE_ENV = "TLPIPE_VERBOSE"
QUIET_ENV = progress.QUIET_ENV


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def quiet() -> bool:
    return progress.quiet()


def configure(verbose_flag: bool | None = None, quiet_flag: bool | None = None) -> bool:
    """Set the environment for this process and its children; returns whether the run is verbose."""
    if verbose_flag:
        os.environ[VERBOSE_ENV] = "1"
        os.environ.pop(QUIET_ENV, None)
    if quiet_flag:
        os.environ[QUIET_ENV] = "1"
        os.environ.pop(VERBOSE_ENV, None)
    if verbose():
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
        return True
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"   # FATAL only: read once, when TensorFlow's libraries load
    return False


@contextlib.contextmanager
def swallowed(fds=(2,)):
    """The file descriptors `fds` (C++ and Python writes alike) to a temp file for the block; the text
    is shown on stderr if the block fails. Progress lines (tasks/core/progress.py) still go to the
    real stderr."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in fds}
    with tempfile.TemporaryFile(mode="w+b") as tmp, contextlib.ExitStack() as stack:
        if 2 in saved:  # the real stderr, for progress lines
            real = stack.enter_context(os.fdopen(os.dup(saved[2]), "w", encoding=sys.stderr.encoding or "utf-8",
                                                 errors="replace"))
            stack.enter_context(progress.writing_to(real))
        for fd in fds:
            os.dup2(tmp.fileno(), fd)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            if failed:
                tmp.seek(0)
                sys.stderr.write(tmp.read().decode(errors="replace"))
                sys.stderr.flush()


def import_tensorflow() -> None:
    """Load TensorFlow now, quietly unless verbose (its loader's absl lines go to stderr directly)."""
    if "tensorflow" in sys.modules or verbose():
        return
    with swallowed():
        import tensorflow  # noqa: F401
        import keras  # noqa: F401


@contextlib.contextmanager
def native_quiet():
    """stderr's native (C++) lines off for the block unless verbose, e.g. LiteRT's delegate notice. What
    fails in the block raises as usual; the swallowed lines are not replayed (they are notices)."""
    if verbose():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@contextlib.contextmanager
def export_quiet():
    """What the TFLite conversion and its interpreters print, off for the block unless verbose: Keras'
    SavedModel printout (endpoints, TensorSpec captures), the calibrator's `fully_quantize: ...` and
    LiteRT's `Created TensorFlow Lite XNNPACK delegate` lines (C++ writes to fds 1 and 2). Shown if
    the block fails."""
    if verbose():
        yield
        return
    import keras

    was = keras.config.is_interactive_logging_enabled()
    keras.config.disable_interactive_logging()
    try:
        with swallowed((1, 2)):
            yield
    finally:
        if was:
            keras.config.enable_interactive_logging()


class Formatter(logging.Formatter):
    """Our own log lines: the message for INFO, `LEVEL name: message` above it."""

    def format(self, record):
        text = super().format(record)  # "%(message)s" (and the stack of an exception)
        return text if record.levelno <= logging.INFO else f"{record.levelname} {record.name}: {text}"


def one_line(result, limit: int = 200) -> str:
    """A stage's result as one line: its scalars and small dicts of scalars, `key=value` comma-separated."""
    if not isinstance(result, dict):
        return str(result)
    parts = []
    for key, value in result.items():
        if isinstance(value, float):
            parts.append(f"{key}={value:.4g}")
        elif isinstance(value, (int, str, bool)) or value is None:
            parts.append(f"{key}={value}")
        elif isinstance(value, list):
            parts.append(f"{key}={len(value)}")
        elif isinstance(value, dict) and value and all(isinstance(v, (int, float, str, bool)) for v in value.values()):
            parts.append(f"{key}=" + "/".join(f"{k}:{v:.4g}" if isinstance(v, float) else f"{k}:{v}"
                                              for k, v in value.items()))
    text = ", ".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "…"
