"""progress: what a long phase says while it runs, on a terminal or in a log.

Every long phase (features@'s and teach@'s images, export@'s calibration and parity passes, a fit's
batches within an epoch, check@'s scan and folds, prepare@'s photos and shards) counts its work
through one `Progress`:
- on a terminal (its stream, stderr, is a TTY): a live tqdm bar;
- in a log (a pipe or a file: `dvc repro > log`, the Prefect flow's stage commands, CI): one line at
  most every TLPIPE_PROGRESS_INTERVAL seconds (default 30: done/total, rate, ETA), and one at the end
  of a phase that printed any; never one per batch. The interval is shared by the phases of a process,
  so a run of short phases is not silent for longer than one interval either;
- quiet (`tlpipe -q`, TLPIPE_QUIET=1, which children inherit): nothing.
A Keras fit or predict reports through `keras_callback` (batches within an epoch, the validation
pass); on a terminal a fit shows Keras' own bar instead.

Progress only writes to its stream: no output file, no computation, no order and no random draw
depends on it. While tasks/stages/console swallows stderr (the TFLite converter's printout), it hands
the real stderr to `writing_to`, so the export's passes are not silenced with the converter.
"""
from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading
import time

QUIET_ENV = "TLPIPE_QUIET"                   # set by `tlpipe -q`: start and end lines only
INTERVAL_ENV = "TLPIPE_PROGRESS_INTERVAL"    # seconds between lines in a log
INTERVAL = 30.0

_streams: list = []  # the real stderr while the process's own is swallowed (innermost last)


def quiet() -> bool:
    return os.environ.get(QUIET_ENV, "") not in ("", "0")


def interval() -> float:
    """Seconds between progress lines in a log: TLPIPE_PROGRESS_INTERVAL, default 30."""
    text = os.environ.get(INTERVAL_ENV, "").strip()
    if not text:
        return INTERVAL
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"{INTERVAL_ENV}={text!r}: expected the seconds between progress lines in a log, "
                         f"a number >= 0 (default {INTERVAL:g})")
    return value


@contextlib.contextmanager
def writing_to(stream):
    """Progress goes to `stream` for the block (the real stderr while fd 2 is captured)."""
    _streams.append(stream)
    try:
        yield
    finally:
        _streams.remove(stream)


def default_stream():
    return _streams[-1] if _streams else sys.stderr


def mode(stream=None) -> str:
    """"off" when quiet, "bar" on a terminal, "log" otherwise."""
    if quiet():
        return "off"
    stream = default_stream() if stream is None else stream
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        tty = False
    return "bar" if tty else "log"


class Ticker:
    """When the next log line is due: `interval` seconds after the last line of any phase sharing it
    (or after the first phase began)."""

    def __init__(self, every: float | None = None, clock=time.monotonic):
        self.every, self.clock = every, clock
        self.last: float | None = None
        self.lock = threading.Lock()

    def interval(self) -> float:
        return interval() if self.every is None else float(self.every)

    def begin(self) -> float:
        now = self.clock()
        with self.lock:
            if self.last is None:
                self.last = now
        return now

    def due(self, now: float) -> bool:
        with self.lock:
            if self.last is None or now - self.last < self.interval():
                return False
            self.last = now
            return True

    def mark(self) -> None:
        """A line was just printed (Keras' epoch line): the next one is an interval away."""
        with self.lock:
            self.last = self.clock()


TICKER = Ticker()


def duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _rate(value: float) -> str:
    return f"{value:,.1f}" if value >= 10 else f"{value:.2f}"


class Progress:
    """The work done in one phase, `label` (e.g. "features cards_v2_100_cut13"), counted in `unit`
    out of `total` (None: unknown). `update(n)` / `update_to(done)` as work finishes; `close()` (or
    the end of a `with` block) ends it, with a closing line in a log when it printed any."""

    def __init__(self, label: str, total: int | None = None, unit: str = "items", *, stream=None,
                 how: str | None = None, ticker: Ticker | None = None):
        self.label, self.total, self.unit = label, (None if total is None else int(total)), unit
        self.stream = default_stream() if stream is None else stream
        self.how = how or mode(self.stream)
        self.ticker = ticker or TICKER
        self.done, self.lines, self.closed = 0, 0, False
        self.lock = threading.Lock()
        self.start = self.ticker.begin() if self.how == "log" else time.monotonic()
        self.bar = None
        if self.how == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, desc=label, unit=f" {unit}", file=self.stream, leave=True,
                            dynamic_ncols=True)
        if self.how == "log":  # the interval is read now: a bad value fails before any work
            self.ticker.interval()

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        self.close(end_line=kind is None)

    def update(self, n: int = 1) -> None:
        with self.lock:
            self._advance(self.done + int(n))

    def update_to(self, done: int) -> None:
        """The count is now `done` (never goes back: Keras may report batches from a thread, late)."""
        with self.lock:
            self._advance(max(self.done, int(done)))

    def iterate(self, items, size=None):
        """`items`, counting each (or `size(item)` of each) once the caller has finished with it."""
        for item in items:
            yield item
            self.update(1 if size is None else size(item))

    def _advance(self, done: int) -> None:
        if self.closed:
            return
        step, self.done = done - self.done, done
        if self.bar is not None:
            self.bar.update(step)
        elif self.how == "log":
            now = self.ticker.clock()
            if self.ticker.due(now):
                self._line(self._status(now))

    def _status(self, now: float) -> str:
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        if self.total:
            eta = f", ETA {duration((self.total - self.done) / rate)}" if rate > 0 else ""
            return (f"{self.label}: {self.done:,}/{self.total:,} {self.unit} ({100 * self.done // self.total}%), "
                    f"{_rate(rate)} {self.unit}/s{eta}")
        return f"{self.label}: {self.done:,} {self.unit}, {_rate(rate)} {self.unit}/s"

    def _line(self, text: str) -> None:
        self.lines += 1
        try:
            self.stream.write(text + "\n")
            self.stream.flush()
        except (OSError, ValueError, AttributeError):  # a closed, broken or absent stream: never worth a failure
            pass

    def close(self, end_line: bool = True) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
            if self.bar is not None:
                self.bar.close()
            elif self.how == "log" and self.lines and end_line:
                now = self.ticker.clock()
                elapsed = now - self.start
                self._line(f"{self.label}: {self.done:,} {self.unit} in {duration(elapsed)}, "
                           f"{_rate(self.done / max(elapsed, 1e-9))} {self.unit}/s")
                self.ticker.mark()


def keras_callback(label: str, unit: str = "batches", *, stream=None, ticker: Ticker | None = None):
    """A Keras callback reporting a fit's batches within each epoch and its validation pass, or a
    predict's batches, as `Progress` does (`label` epoch e/E: done/steps batches, rate, ETA). A fit that
    shows Keras' own bar (verbose=1 on a terminal) is left to it. It reads no logs and changes nothing:
    Keras dispatches the batch ends as it would without it (async_safe)."""
    return _callback_class()(label, unit, stream, ticker)


@functools.lru_cache(maxsize=1)
def _callback_class():
    import keras

    class KerasProgress(keras.callbacks.Callback):
        async_safe = True  # our batch hooks do not make Keras wait for each batch's logs

        def __init__(self, label, unit, stream, ticker):
            super().__init__()
            self.label, self.unit, self.stream, self.ticker = label, unit, stream, ticker or TICKER
            self.phase: Progress | None = None
            self.epoch = self.seen = None

        def _open(self, label, total):
            self._close()
            if mode(self.stream) == "bar" and (self.params or {}).get("verbose") == 1:
                return None  # Keras draws its own bar
            self.phase = Progress(label, total, self.unit, stream=self.stream, ticker=self.ticker)
            return self.phase

        def _close(self, end_line=False):
            phase, self.phase = self.phase, None
            if phase is not None:
                phase.close(end_line=end_line)
                return phase.done
            return None

        def _update(self, batch):
            phase = self.phase
            if phase is not None:
                phase.update_to(batch + 1)

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
            epochs = (self.params or {}).get("epochs")
            self._open(f"{self.label} epoch {epoch + 1}/{epochs}", (self.params or {}).get("steps") or self.seen)

        def on_train_batch_end(self, batch, logs=None):
            self._update(batch)

        def on_test_begin(self, logs=None):
            if self.epoch is not None:  # the validation pass of a fit's epoch
                done = self._close()
                self.seen = self.seen or done
                epochs = (self.params or {}).get("epochs")
                self._open(f"{self.label} epoch {self.epoch + 1}/{epochs} validation", None)

        def on_test_batch_end(self, batch, logs=None):
            self._update(batch)

        def on_test_end(self, logs=None):
            self._close()

        def on_epoch_end(self, epoch, logs=None):
            done = self._close()
            self.seen = self.seen or done
            if mode(self.stream) == "log":
                self.ticker.mark()  # Keras printed the epoch's line

        def on_train_end(self, logs=None):
            self._close()
            self.epoch = None

        def on_predict_begin(self, logs=None):
            self._open(self.label, (self.params or {}).get("steps"))

        def on_predict_batch_end(self, batch, logs=None):
            self._update(batch)

        def on_predict_end(self, logs=None):
            self._close(end_line=True)

    return KerasProgress
