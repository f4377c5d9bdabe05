"""Scores synthesised slices per target modality, and the two trivial baselines.

Used by training (validation PSNR/SSIM every epoch) and by `python -m dygan_tf.evaluate`.
A predictor is any `predict(image, task, target_names) -> fake` on [B, H, W, 1] arrays.
"""

import numpy as np

from dygan_tf.utils import backend, image_metrics

METRICS = ("psnr", "ssim", "psnr_brain", "ssim_brain", "ssim_tumor", "mae")
LUT_BINS = 256  # over [-1, 1]


def row_scores(target, fake, meta=None, metrics=METRICS):
    """{metric: per-row float array}; brain/tumour metrics need meta's masks."""
    out = {}
    brain = tumour = None
    if meta is not None:
        brain = meta["brain_mask"] > 0
        tumour = meta["seg"] > 0
    for name in metrics:
        if name == "psnr":
            value = image_metrics.psnr(target, fake)
        elif name == "ssim":
            value = image_metrics.ssim(target, fake)
        elif name == "psnr_brain":
            value = image_metrics.psnr(target, fake, brain)
        elif name == "ssim_brain":
            value = image_metrics.ssim(target, fake, brain)
        elif name == "ssim_tumor":
            value = image_metrics.ssim(target, fake, tumour)
        elif name == "mae":
            value = image_metrics.mae(target, fake)
        else:
            raise ValueError(f"Unknown metric {name!r}: expected one of {METRICS}")
        out[name] = np.asarray(value, dtype=np.float64)
    return out


class Accumulator:
    """Collects per-row scores by name (target or row key); `means()` gives NaN-aware
    means (names seen only, besides those given at the start)."""

    def __init__(self, targets):
        self.rows = {t: {} for t in targets}

    def add(self, names, scores):
        for i, name in enumerate(names):
            per = self.rows.setdefault(name, {})
            for metric, values in scores.items():
                per.setdefault(metric, []).append(float(values[i]))

    def means(self):
        out = {}
        for target, per in self.rows.items():
            out[target] = {}
            for metric, values in per.items():
                values = np.asarray(values, dtype=np.float64)
                finite = values[np.isfinite(values)]
                out[target][metric] = float(finite.mean()) if finite.size else None
        return out

    def count(self):
        return max((len(v) for per in self.rows.values() for v in per.values()), default=0)


def _strings(tensor):
    return [t.decode() if isinstance(t, bytes) else str(t) for t in tensor.numpy()]


def target_names(meta):
    """Each row's target modality ("flair", ...)."""
    return _strings(meta["target"])


def row_names(meta):
    """Each row's `conditions.row_key` ("t2->flair", "t1+t2->flair")."""
    return _strings(meta["row"])


def score_generator(generator, dataset, targets, metrics=METRICS):
    """Mean scores per target of a Keras generator over a dataset that yields meta."""
    predict = backend.inference_function(generator)
    acc = Accumulator(targets)
    for image, target, task, meta in dataset:
        fake = predict(image, task)
        acc.add(target_names(meta), row_scores(target, fake, meta, metrics))
    return acc.means()


class IntensityLUT:
    """Per target, a 1-D lookup table: source intensity bin -> mean target intensity,
    fitted on the training split (256 bins over [-1, 1]; empty bins interpolated)."""

    def __init__(self, targets, bins=LUT_BINS):
        self.bins = bins
        self.sums = {t: np.zeros(bins) for t in targets}
        self.counts = {t: np.zeros(bins) for t in targets}
        self.tables = {}

    def _index(self, image):
        index = np.floor((np.asarray(image) + 1.0) / 2.0 * self.bins).astype(np.int64)
        return np.clip(index, 0, self.bins - 1)

    def update(self, image, target, names):
        index = self._index(image)
        target = np.asarray(target)
        for i, name in enumerate(names):
            self.sums[name] += np.bincount(index[i].ravel(), target[i].ravel(), self.bins)
            self.counts[name] += np.bincount(index[i].ravel(), minlength=self.bins)

    def finish(self):
        centres = (np.arange(self.bins) + 0.5) / self.bins * 2.0 - 1.0
        for name, counts in self.counts.items():
            seen = counts > 0
            means = self.sums[name][seen] / counts[seen]
            self.tables[name] = (
                np.interp(centres, centres[seen], means) if seen.any() else centres
            ).astype(np.float32)
        return self

    def __call__(self, image, names):
        index = self._index(image)
        return np.stack([self.tables[n][index[i]] for i, n in enumerate(names)])
