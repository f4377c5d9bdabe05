"""Progress of a loop a user waits for: `keras.utils.Progbar` on a terminal, plain lines
(no ANSI codes, no carriage returns) when the output goes to a log file or a pipe.

Keras is imported on the first update on a terminal, never otherwise: the data
commands and their workers do not need TensorFlow for anything else. While a bar's line
is open, any other output (a message on stdout or stderr) first ends that line
(`messages_on_their_own_line`, installed by every command's runner), so no message is
glued to a bar.
"""

import contextlib
import sys
import time

LINES = 10  # plain lines per loop when the output is not a terminal

# The one terminal bar whose line is open (a bar is drawn in place on one line).
_open = {"stream": None, "drawing": False}


def is_terminal(stream):
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def end_line():
    """Ends an open bar's line, so what comes next starts on a line of its own."""
    stream, _open["stream"] = _open["stream"], None
    if stream is not None:
        stream.write("\n")
        stream.flush()


@contextlib.contextmanager
def _drawing(stream, done):
    """A bar writes to `stream`; afterwards its line is open unless `done`."""
    _open["drawing"] = True
    try:
        yield
    finally:
        _open["drawing"] = False
        _open["stream"] = None if done else stream


class _OwnLine:
    """A stream whose writes (other than a bar's own) first end an open bar's line."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        if text and _open["stream"] is not None and not _open["drawing"]:
            end_line()
        return self._stream.write(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


@contextlib.contextmanager
def messages_on_their_own_line():
    """For the block, sys.stdout and sys.stderr end an open bar's line before a message."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _OwnLine(sys.stdout), _OwnLine(sys.stderr)
    try:
        yield
    finally:
        end_line()
        sys.stdout, sys.stderr = saved


def _values_text(values):
    return "".join(f", {k} {float(v):.4g}" for k, v in (values or {}).items())


class Progress:
    """Counts finished units of work and shows them.

    On a terminal (`stream` is stdout and stdout is a tty) it draws a
    `keras.utils.Progbar`, which always writes ANSI codes and redraws in place. Anywhere
    else it prints one plain line each time another tenth of `total` is done, e.g.
    `3/6 cases (50%) 12.3s`.

    Args:
        total: how many units the loop has.
        unit: name of one unit ("case", "slice").
        stream: where plain lines go (default: `sys.stdout`).
        enabled: False prints nothing; `close()` still returns the rate.
        label: put in front of every plain line ("epoch 2/15").
        every_s: plain lines every `every_s` seconds (with the time left) instead of at
            each tenth of `total`.

    Example:

    >>> bar = Progress(4, unit="case", enabled=False)
    >>> for _ in range(4):
    ...     bar.add(1)
    >>> rate = bar.close()  # cases per second
    """

    def __init__(self, total, unit="case", stream=None, enabled=True, label=None, every_s=None):
        if total < 0:
            raise ValueError(f"total must be >= 0. Received: total={total}")
        self.total = total
        self.unit = unit
        self.stream = stream or sys.stdout  # stderr is for warnings and errors
        self.enabled = enabled
        self.done = 0
        self.start = time.perf_counter()
        self._terminal = enabled and self.stream is sys.stdout and is_terminal(self.stream)
        self._bar = None
        self._lines = 0  # plain lines printed so far
        self.prefix = f"{label}: " if label else ""
        self.every_s, self._last_line = every_s, self.start

    def add(self, n=1, values=None):
        """Records `n` more finished units; `values` ({name: number}, e.g. losses) are
        shown beside the count."""
        self.done += n
        if not self.enabled:
            return
        if self._terminal:
            self._draw(values, finalize=self.done >= self.total)
            return
        now = time.perf_counter()
        elapsed = now - self.start
        if self.every_s is not None:  # a line every every_s seconds, with the time left
            if now - self._last_line < self.every_s or self.done >= self.total:
                return
            self._last_line = now
            eta = elapsed / self.done * (self.total - self.done) if self.done else 0.0
            self._write(
                f"{self.prefix}{self.unit} {self.done}/{self.total}{_values_text(values)}, "
                f"{elapsed:.0f}s, ETA {eta:.0f}s\n"
            )
            return
        # A line each time done crosses the next tenth of total (and at the end).
        due = LINES if self.total <= 0 else min(LINES, self.done * LINES // self.total)
        if due > self._lines:
            self._lines = due
            percent = 100 if self.total <= 0 else min(100, 100 * self.done // self.total)
            self._write(
                f"{self.prefix}{self.done}/{self.total} {self.unit}s ({percent}%) "
                f"{elapsed:.1f}s{_values_text(values)}\n"
            )

    def _draw(self, values, finalize):
        if self._bar is None:
            import keras

            if self.prefix:
                self.stream.write(self.prefix.rstrip(" :") + "\n")

            self._bar = keras.utils.Progbar(
                self.total, unit_name=self.unit, stateless_metrics=set()
            )
        with _drawing(self.stream, done=finalize):
            self._bar.update(self.done, list((values or {}).items()), finalize=finalize)

    def close(self, values=None):
        """Ends the display with a line giving the rate (and `values`); returns units
        per second."""
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed if elapsed > 0 else float("inf")
        if self.enabled:
            if self._bar is not None and self.done < self.total:
                self._draw(values, finalize=True)
            self._write(
                f"{self.prefix}{self.done} {self.unit}s in {elapsed:.1f}s "
                f"({rate:.2f} {self.unit}/s){_values_text(values)}\n"
            )
        return rate

    def _write(self, text):
        end_line()
        self.stream.write(text)
        self.stream.flush()
