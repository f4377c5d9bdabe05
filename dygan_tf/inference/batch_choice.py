"""How many axial slices `translate` feeds the model per call: a fixed number, or `auto`:
the fastest of 4, 8, 16 and 32, timed on the first case's own slices (`BatchChoice`).

The outputs do not depend on the choice: each row of a call is computed on its own.
"""

import time

import numpy as np

from dygan_tf.utils.errors import UserError

AUTO = "auto"
CANDIDATES = (4, 8, 16, 32)  # slices per call that `auto` times
# Rounds over the candidates, each candidate's best kept: on a shared machine one pass
# can be slowed by another process (measured: one pass put 8 slices per call last, at
# under half the rate it had in the other runs).
ROUNDS = 2


def parse_batch_slices(value):
    """A positive int, or AUTO, from what a caller or a flag gives ("16", 16, "auto")."""
    text = str(value).strip().lower()
    if text == AUTO:
        return AUTO
    if text.isdecimal() and int(text) >= 1:
        return int(text)
    raise UserError(f"expected a positive number of slices or {AUTO}, found {value!r}")


class BatchChoice:
    """The slices per model call of one run over cases, fixed or chosen once (`auto`).

    `for_case(predictor, rows_per_slice, case)` gives what `synthesize_case` takes. A
    fixed number is handed on as it is. Before `auto` has chosen, it hands on the
    largest candidate and a predictor whose first call (the case's first slices) runs
    each candidate that fits there: one warm-up call of that size (tracing, first-call
    allocation), then `ROUNDS` rounds of the same slices in calls of each size, timed.
    It keeps the candidate of the best rate, prints one line with every rate
    (`verbose`), returns its outputs and splits every later call into calls of that
    size; the next cases get that number as a fixed one. The timing costs about two
    cases of extra model calls (BraTS's ~140 brain slices), once.

    Args:
        batch_slices: a positive int or "auto" (`parse_batch_slices`).
        verbose: print the line saying what `auto` chose.
        candidates: the sizes `auto` times, each a multiple of the one before.
        clock: seconds, for the timing (`time.perf_counter`).
    """

    def __init__(self, batch_slices, verbose=True, candidates=CANDIDATES, clock=time.perf_counter):
        try:
            value = parse_batch_slices(batch_slices)
        except UserError:
            raise ValueError(
                f"batch_slices must be a positive int or {AUTO!r}. "
                f"Received: batch_slices={batch_slices!r}"
            ) from None
        self.size = None if value == AUTO else value  # None until auto has chosen
        self.auto = value == AUTO
        self.candidates, self.verbose, self.clock = tuple(candidates), verbose, clock
        self.slices_per_s = {}  # auto's measured rate of each candidate

    def for_case(self, predictor, rows_per_slice, case=""):
        """`(predictor, slices per call)` for `synthesize_case` on `case`, whose every
        slice is `rows_per_slice` consecutive rows of a call (one per target)."""
        if self.size is not None:
            return predictor, self.size
        return _Timed(self, predictor, rows_per_slice, case), max(self.candidates)

    def _time(self, predictor, images, conditions, rows_per_slice, case):
        """The outputs of `images`'s first slices, each candidate timed on them."""
        slices = len(images) // rows_per_slice
        fitting = [c for c in self.candidates if c <= slices]
        if not fitting:  # a case too small to time: the next call or case tries
            return predictor(images, conditions)
        timed = fitting[-1] * rows_per_slice  # a multiple of every fitting candidate
        for size in fitting:
            rows = size * rows_per_slice
            predictor(images[:rows], conditions[:rows])  # warm-up: not timed
        outputs, seconds = {}, {size: [] for size in fitting}
        for _ in range(ROUNDS):
            for size in fitting:
                start = self.clock()
                outputs[size] = _calls(
                    predictor, images[:timed], conditions[:timed], size * rows_per_slice
                )
                seconds[size].append(self.clock() - start)
        for size in fitting:
            self.slices_per_s[size] = fitting[-1] / max(min(seconds[size]), 1e-9)
        self.size = max(self.slices_per_s, key=self.slices_per_s.get)
        if self.verbose:
            rates = ", ".join(f"{c} -> {r:.1f}" for c, r in self.slices_per_s.items())
            where = f"{case}'s" if case else "the"
            print(
                f"batch auto: {self.size} slices per model call (slices/s timed on {where} "
                f"first {fitting[-1]} slices: {rates})",
                flush=True,
            )
        if timed == len(images):
            return outputs[self.size]
        rest = _calls(predictor, images[timed:], conditions[timed:], self.size * rows_per_slice)
        return np.concatenate([outputs[self.size], rest])


def _calls(predictor, images, conditions, rows):
    """`predictor` over `images` in calls of `rows` rows (the last may be shorter)."""
    starts = range(0, len(images), rows)
    return np.concatenate(
        [predictor(images[i : i + rows], conditions[i : i + rows]) for i in starts]
    )


class _Timed:
    """A predictor that times `BatchChoice`'s candidates on its first call and then
    calls its predictor with the chosen number of slices (everything else is the
    predictor's own: `inputs`, `image_size`, ...)."""

    def __init__(self, choice, predictor, rows_per_slice, case):
        self._choice, self._predictor = choice, predictor
        self._rows_per_slice, self._case = rows_per_slice, case

    def __getattr__(self, name):
        return getattr(self._predictor, name)

    def __call__(self, images, conditions):
        choice, per_slice = self._choice, self._rows_per_slice
        if choice.size is None:
            return choice._time(self._predictor, images, conditions, per_slice, self._case)
        return _calls(self._predictor, images, conditions, choice.size * per_slice)
