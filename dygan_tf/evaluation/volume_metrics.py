"""Volume scores (numpy and scipy only, so `evaluate_volumes` needs no TensorFlow): ours
(percentile scaling over the brain to [0, 1], PSNR and 3-D SSIM over a region) and
BraSyn's own SSIM (its ssim.py with torchmetrics' SSIM, reproduced: `brasyn_ssim`)."""

import math

import numpy as np
import scipy.ndimage

from dygan_tf.data import preprocessing

# SSIM's constants (Wang et al. 2004) and PSNR's floor, shared with the slice metrics.
from dygan_tf.utils.image_metrics import MIN_MSE, SSIM_K1, SSIM_K2, SSIM_SIGMA, SSIM_WINDOW

PERCENTILES = (0.5, 99.5)  # BraSyn: each volume clipped to its own percentiles


def scale_to_unit(volume, brain):
    """`volume` clipped to its own 0.5 and 99.5 brain percentiles, scaled to [0, 1].

    Returns float32; a volume constant over the brain becomes 0 everywhere.
    """
    values = np.asarray(volume)[brain]
    low, high = (preprocessing.exact_percentile(values, q) for q in PERCENTILES)
    if not high > low:
        return np.zeros(np.shape(volume), np.float32)
    out = (np.asarray(volume, np.float32) - np.float32(low)) / np.float32(high - low)
    return np.clip(out, 0.0, 1.0, out=out)


def axial_axis(affine):
    """The array axis of a volume with this affine that runs along world z (inferior to
    superior): the axis its axial slices are taken across."""
    return int(np.argmax(np.abs(np.asarray(affine, np.float64)[2, :3])))


def through_plane_step(volume, brain, axis):
    """Mean |difference between consecutive slices along `axis`| over the voxel pairs
    whose two voxels are both in `brain`; NaN when no such pair exists. Of a [0, 1]
    volume: how much it changes from one axial slice to the next."""
    volume = np.moveaxis(np.asarray(volume, np.float32), axis, -1)
    brain = np.moveaxis(np.asarray(brain, bool), axis, -1)
    both = brain[..., 1:] & brain[..., :-1]
    if not both.any():
        return math.nan
    return float(np.abs(np.diff(volume, axis=-1))[both].mean(dtype=np.float64))


def _gaussian_weights():
    coords = np.arange(SSIM_WINDOW) - (SSIM_WINDOW - 1) / 2.0
    weights = np.exp(-(coords**2) / (2.0 * SSIM_SIGMA**2))
    return weights / weights.sum()


def _blur(volume):
    """The Gaussian window's mean around every voxel, filtered in float32: about 3x
    faster than float64 on a 240 x 240 x 155 volume here, and SSIM's terms on [0, 1]
    volumes lose nothing the scores show (the tests hold them to 1e-4 of float64
    references)."""
    volume = np.asarray(volume, np.float32)
    weights = _gaussian_weights().astype(np.float32)
    for axis in range(volume.ndim):
        volume = scipy.ndimage.correlate1d(volume, weights, axis=axis, mode="mirror")
    return volume


def ssim_map_3d(x, y):
    """Voxel-wise 3-D SSIM of two [0, 1] volumes, same shape as the input.

    Separable Gaussian window (11 voxels, sigma 1.5) with mirrored edges, as the
    BraSyn evaluation's torchmetrics SSIM on a 5-D volume with its full image.
    """
    x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    mu_x, mu_y = _blur(x), _blur(y)
    var_x = _blur(x * x) - mu_x**2
    var_y = _blur(y * y) - mu_y**2
    cov = _blur(x * y) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    return numerator / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))


def region_scores(truth, pred, region):
    """(PSNR, SSIM) of two [0, 1] volumes over the voxels of `region` (NaN if empty).

    SSIM is computed on both volumes set to 0 outside the region. Only the region's
    bounding box widened by the window's radius is filtered: every window centred in
    the region lies inside it, so the result equals the whole-volume computation.
    """
    if not region.any():
        return math.nan, math.nan
    error = float(np.mean((truth[region].astype(np.float64) - pred[region]) ** 2))
    psnr = 10.0 * math.log10(1.0 / max(error, MIN_MSE))
    radius = SSIM_WINDOW // 2
    box = tuple(
        slice(max(int(i.min()) - radius, 0), int(i.max()) + radius + 1) for i in np.nonzero(region)
    )
    inside = region[box]
    values = ssim_map_3d(truth[box] * inside, pred[box] * inside)
    return psnr, float(values[inside].mean(dtype=np.float64))


# BraSyn's own scores: hongweilibran/BraSyn ssim.py (last changed 2024-07-03), copied
# step for step. Its SSIM is torchmetrics' `StructuralSimilarityIndexMeasure()` with
# defaults on (1, 1, X, Y, Z) volumes: Gaussian window 11 (sigma 1.5), reflected edges,
# data range max(range of prediction, range of truth), the map averaged over the whole
# array. torchmetrics >= 1.4.2 averages the full map (`crop=False`, what this copies);
# 1.4.1 and older cropped 5 voxels off every side first (`crop=True`).
BRASYN_PAD = (SSIM_WINDOW - 1) // 2


def brasyn_percentile_clip(volume):
    """BraSyn's `__percentile_clip`: the volume clipped to its own 0.5 and 99.5
    percentiles over the whole array (background included), the lower bound raised to
    0 if it is negative, then scaled to [0, 1] by (x - low) / (high - low)."""
    volume = np.asarray(volume, np.float64)
    low, high = np.percentile(volume, PERCENTILES)
    low = 0.0 if low < 0 else low
    with np.errstate(divide="ignore", invalid="ignore"):  # a constant volume: NaN, as BraSyn
        return (np.clip(volume, low, high) - low) / (high - low)


def torchmetrics_ssim_3d(pred, target, crop=False):
    """torchmetrics' default 3-D SSIM of two volumes (its `data_range=None`).

    Where both volumes are 0 in a whole window the map is exactly 1 ((c1 c2) / (c1 c2)).
    So the map is computed only on the box around their non-zero voxels widened by the
    window's radius (filtered inside that box widened once more, whose mirrored edges
    then only ever reflect zeros), and every voxel outside counts 1: the same mean as
    filtering the whole array.
    """
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    data_range = max(pred.max() - pred.min(), target.max() - target.min())
    shape = pred.shape
    nonzero = np.nonzero((pred != 0) | (target != 0))
    if data_range > 0 and nonzero[0].size:

        def widened(by):
            return tuple(
                (max(int(i.min()) - by, 0), min(int(i.max()) + by + 1, n))
                for i, n in zip(nonzero, shape)
            )

        outer, inner = widened(2 * BRASYN_PAD), widened(BRASYN_PAD)
        kept = [(BRASYN_PAD, n - BRASYN_PAD) if crop else (0, n) for n in shape]
        size = math.prod(max(stop - start, 0) for start, stop in kept)
        if not size:
            return math.nan  # cropped to nothing: undefined
        ssim = _ssim_map(pred[_box(outer)], target[_box(outer)], data_range)
        part = ssim[
            tuple(
                slice(max(i0, k0) - o0, max(min(i1, k1), max(i0, k0)) - o0)
                for (o0, _), (i0, i1), (k0, k1) in zip(outer, inner, kept)
            )
        ]
        return float((part.sum(dtype=np.float64) + (size - part.size)) / size)
    ssim = _ssim_map(pred, target, data_range)  # constant volumes: 1 or NaN everywhere
    if crop:
        ssim = ssim[(slice(BRASYN_PAD, -BRASYN_PAD),) * ssim.ndim]
    return float(ssim.mean(dtype=np.float64)) if ssim.size else math.nan  # cropped to nothing


def _box(bounds):
    return tuple(slice(start, stop) for start, stop in bounds)


def _ssim_map(pred, target, data_range):
    """torchmetrics' SSIM map of two volumes with this data range (float32)."""
    pred, target = np.asarray(pred, np.float32), np.asarray(target, np.float32)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    mu_p, mu_t = _blur(pred), _blur(target)
    var_p = np.maximum(_blur(pred * pred) - mu_p**2, 0.0)
    var_t = np.maximum(_blur(target * target) - mu_t**2, 0.0)
    cov = _blur(pred * target) - mu_p * mu_t
    with np.errstate(divide="ignore", invalid="ignore"):  # two constant volumes: NaN
        return ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / (
            (mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2)
        )


def brasyn_ssim(truth, pred, seg, crop=False):
    """(tumour SSIM, non-tumour SSIM) as BraSyn's `compute_metrics` scores a case: both
    volumes percentile-clipped, tumour = seg > 0 and non-tumour = everything else
    (background included), each volume multiplied by the integer mask, torchmetrics'
    SSIM of the masked volumes averaged over the whole array."""
    truth, pred = brasyn_percentile_clip(truth), brasyn_percentile_clip(pred)
    mask = (np.asarray(seg) > 0).astype(np.int64)
    tumour = torchmetrics_ssim_3d(pred * mask, truth * mask, crop)
    rest = torchmetrics_ssim_3d(pred * (1 - mask), truth * (1 - mask), crop)
    return tumour, rest
