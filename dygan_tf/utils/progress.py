"""Progress of a loop a user waits for: `keras.utils.Progbar` on a terminal, plain lines
(no ANSI codes, no carriage returns) when the output goes to a log file or a pipe.

Keras is imported on the first update on a terminal, never otherwise: the data
commands and their workers do not need TensorFlow for anything else.
"""

import sys
import time

LINES = 10  # plain lines per loop when the output is not a terminal


def is_terminal(stream):
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


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

    Example:

    >>> bar = Progress(4, unit="case", enabled=False)
    >>> for _ in range(4):
    ...     bar.add(1)
    >>> rate = bar.close()  # cases per second
    """

    def __init__(self, total, unit="case", stream=None, enabled=True):
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

    def add(self, n=1):
        """Records `n` more finished units."""
        self.done += n
        if not self.enabled:
            return
        if self._terminal:
            if self._bar is None:
                import keras

                self._bar = keras.utils.Progbar(self.total, unit_name=self.unit)
            self._bar.update(self.done)
            return
        # A line each time done crosses the next tenth of total (and at the end).
        due = LINES if self.total <= 0 else min(LINES, self.done * LINES // self.total)
        if due > self._lines:
            self._lines = due
            percent = 100 if self.total <= 0 else min(100, 100 * self.done // self.total)
            self._write(
                f"{self.done}/{self.total} {self.unit}s ({percent}%) "
                f"{time.perf_counter() - self.start:.1f}s\n"
            )

    def close(self):
        """Ends the display with a line giving the rate; returns units per second."""
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed if elapsed > 0 else float("inf")
        if self.enabled:
            if self._bar is not None and self.done < self.total:
                self._bar.update(self.done, finalize=True)
            self._write(f"{self.done} {self.unit}s in {elapsed:.1f}s ({rate:.2f} {self.unit}/s)\n")
        return rate

    def _write(self, text):
        self.stream.write(text)
        self.stream.flush()
