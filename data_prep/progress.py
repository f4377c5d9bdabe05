"""A one-line progress bar for data commands, without importing Keras/TensorFlow.

Data preparation workers and the phantom maker never need TensorFlow; importing it
only for `keras.utils.Progbar` would cost seconds per command.
"""

import sys
import time


class Progress:
    """`Progress(total, unit="case")`; call `add(n)`; `close()` prints the rate."""

    def __init__(self, total, unit="case", stream=None, enabled=True):
        self.total = total
        self.unit = unit
        self.stream = stream or sys.stdout  # stderr is for warnings and errors
        self.enabled = enabled
        self.done = 0
        self.start = time.perf_counter()

    def add(self, n=1):
        self.done += n
        if self.enabled:
            width = 30
            filled = int(width * self.done / max(self.total, 1))
            elapsed = time.perf_counter() - self.start
            self.stream.write(
                f"\r{self.done}/{self.total} [{'=' * filled}{'.' * (width - filled)}] "
                f"{elapsed:.1f}s"
            )
            self.stream.flush()

    def close(self):
        """Ends the bar; returns the rate in units per second."""
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed if elapsed > 0 else float("inf")
        if self.enabled:
            self.stream.write(f" {rate:.2f} {self.unit}/s\n")
            self.stream.flush()
        return rate
