"""The two baselines every whole-volume score is printed beside (numpy only): copy-source
(the case's own source volume as the prediction) and an intensity lookup table (source
intensity -> mean target intensity over the brain), fitted on whole training volumes in
the scorer's percentile scaling, never on the cases scored.

`dygan_tf.evaluation.volumes` reads the volumes and scores the baselines' volumes exactly
as it scores a prediction; this module holds the arrays' side.
"""

import numpy as np

from dygan_tf.config.conditions import SOURCE_PREFERENCE
from dygan_tf.config.tasks import MODALITIES

BASELINES = ("copy_source", "intensity_lut")
LUT_BINS = 256  # over [0, 1], the scorer's scale
LUT_CASES = 50  # training cases read at most (evenly spread over the sorted ids)


class VolumeLUT:
    """Per (source, target), a 1-D table: bin of the source's unit-scaled intensity ->
    mean unit-scaled target intensity, over the brain voxels of the volumes it is
    updated with (empty bins interpolated). `error[(source, target)]` is the table's
    mean squared error on those voxels: the source whose table fits best is the one the
    baselines use (`source_for`)."""

    def __init__(self, bins=LUT_BINS):
        self.bins = bins
        self.sums, self.counts, self.squares = {}, {}, {}
        self.tables, self.error = {}, {}
        self.cases = 0

    def _index(self, values):
        index = np.floor(np.asarray(values, np.float64) * self.bins).astype(np.int64)
        return np.clip(index, 0, self.bins - 1)

    def update(self, unit, brain):
        """Adds one case: `unit` {modality: volume scaled to [0, 1]}, `brain` its mask."""
        inside = {m: np.asarray(v, np.float64)[brain] for m, v in unit.items()}
        index = {m: self._index(v) for m, v in inside.items()}
        for source in inside:
            for target in inside:
                if source == target:
                    continue
                key = (source, target)
                for store, weights in (
                    (self.sums, inside[target]),
                    (self.squares, inside[target] ** 2),
                    (self.counts, None),
                ):
                    add = np.bincount(index[source], weights, self.bins)
                    store[key] = store.get(key, 0) + add
        self.cases += 1

    def finish(self):
        centres = (np.arange(self.bins) + 0.5) / self.bins
        for key, counts in self.counts.items():
            seen = counts > 0
            means = self.sums[key][seen] / counts[seen]
            self.tables[key] = np.interp(centres, centres[seen], means).astype(np.float32)
            # sum over bins of (sum of y^2 - n * mean^2): the table's squared error
            residual = self.squares[key][seen].sum() - (counts[seen] * means**2).sum()
            self.error[key] = float(max(residual, 0.0) / counts.sum())
        return self

    def __call__(self, unit_source, source, target):
        """The table's prediction of `target` from a unit-scaled `source` volume."""
        return self.tables[(source, target)][self._index(unit_source)]


def source_for(target, available, lut=None):
    """The source the baselines use for `target`: among `available` (not the target),
    the one whose training LUT fits best; without a LUT, the first of t2, t1, flair,
    t1ce (translate's own preference)."""
    options = [m for m in MODALITIES if m in available and m != target]
    if lut is not None and all((m, target) in lut.error for m in options):
        return min(options, key=lambda m: (lut.error[(m, target)], SOURCE_PREFERENCE.index(m)))
    return next(m for m in SOURCE_PREFERENCE if m in options)


def lut_case_ids(train_ids, truth_ids, scored_ids, limit=LUT_CASES):
    """(the training cases the LUT is fitted on, what was left out and why): those of
    `train_ids` found in the truth root and not scored, at most `limit`, evenly spread
    over the sorted ids."""
    train = set(train_ids)
    usable = sorted(train & set(truth_ids) - set(scored_ids))
    step = max(1, -(-len(usable) // limit)) if usable else 1
    chosen = usable[::step][:limit]
    left = {
        "training_cases": len(train),
        "not_in_truth": len(train - set(truth_ids)),
        "scored_so_left_out": len(train & set(scored_ids)),
        "not_read": len(usable) - len(chosen),
    }
    return chosen, left


def baseline_volumes(real, unit, brain, target, source, lut=None):
    """{baseline: predicted volume} of `target` from `source`: copy-source is the real
    source volume; the LUT maps its unit-scaled brain voxels (0 elsewhere)."""
    out = {"copy_source": real[source]}
    if lut is not None:
        predicted = lut(unit[source], source, target)
        out["intensity_lut"] = np.where(brain, predicted, 0.0).astype(np.float32)
    return out
