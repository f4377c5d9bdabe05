"""How hard a phantom is, measured on its volumes: how much of one contrast a lookup
table from another carries from case to case, and how well one contrast separates a
tumour region from the rest of the tumour. Used by the phantom tests and by
`benchmarks/phantom_difficulty.py` (docs/results/benchmark-v2.md).
"""

import numpy as np
import scipy.stats


def normalised(volume, mask, percentile=99.5):
    """`volume` in the brain `mask` scaled by its robust maximum and clipped to [0, 1]
    (the shards' normalisation), as a 1-D float64 array of the mask's voxels."""
    values = volume[mask].astype(np.float64)
    top = np.percentile(values, percentile)
    return np.clip(values / top, 0.0, 1.0) if top > 0 else values


def lut_carry_r2(source_a, target_a, source_b, target_b, bins=256):
    """R² on case B of the source -> mean-target lookup table fitted on case A (1-D
    normalised arrays of the two brains): the share of B's target variance that a
    lookup from one case explains (bins never seen on A predict A's mean)."""
    index_a = np.minimum((source_a * bins).astype(int), bins - 1)
    sums = np.bincount(index_a, weights=target_a, minlength=bins)
    counts = np.bincount(index_a, minlength=bins)
    table = np.where(counts > 0, sums / np.maximum(counts, 1), target_a.mean())
    predicted = table[np.minimum((source_b * bins).astype(int), bins - 1)]
    residual = np.sum((target_b - predicted) ** 2)
    total = np.sum((target_b - target_b.mean()) ** 2)
    return float(1.0 - residual / total)


def auc(positive, negative):
    """Area under the ROC curve of `positive` against `negative` values (Mann-Whitney,
    ties counted half): 0.5 = not separable, 0 or 1 = perfectly separable."""
    positive, negative = np.ravel(positive), np.ravel(negative)
    ranks = scipy.stats.rankdata(np.concatenate([positive, negative]))
    n1, n2 = len(positive), len(negative)
    return float((ranks[:n1].sum() - n1 * (n1 + 1) / 2) / (n1 * n2))


def enhancing_auc(t2, seg, enhancing_label=4):
    """AUC of T2 for the enhancing tumour against the other tumour voxels (None when
    the case has no enhancing tumour)."""
    enhancing = seg == enhancing_label
    other = (seg > 0) & ~enhancing
    if not enhancing.any() or not other.any():
        return None
    return auc(t2[enhancing], t2[other])
