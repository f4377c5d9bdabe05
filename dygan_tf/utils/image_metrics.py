"""PSNR and SSIM for images in [-1, 1], computed on [0, 1] with MAX = 1 (docs/method.md).

SSIM follows Wang et al. 2004: Gaussian window 11, sigma 1.5, k1 = 0.01, k2 = 0.03,
"valid" windows only (as tf.image.ssim). A mask restricts the average to its pixels;
an image whose mask is empty gets NaN. Every function returns one value per image.
Written in `keras.ops`: the same numbers on every Keras backend. The one home of the
constants: the numpy volume scores (`evaluation.volume_metrics`) import them, so importing
this module imports Keras only on the first metric computed.
"""

import importlib

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
MIN_MSE = 1e-10  # caps PSNR at 100 dB for identical images and volumes


class _KerasOps:
    """`keras.ops`, imported when first used."""

    def __getattr__(self, name):
        return getattr(importlib.import_module("keras.ops"), name)


ops = _KerasOps()


def to_unit_range(x):
    """[-1, 1] -> [0, 1], as float32."""
    return (ops.cast(x, "float32") + 1.0) / 2.0


def _masked_mean(values, mask):
    """Mean over axes 1..3 of `values` [B,H,W,1], weighted by `mask` (NaN when empty)."""
    if mask is None:
        return ops.mean(values, axis=(1, 2, 3))
    mask = ops.cast(mask, "float32")
    total = ops.sum(values * mask, axis=(1, 2, 3))
    count = ops.sum(mask, axis=(1, 2, 3))
    return ops.where(count > 0, total / ops.maximum(count, 1.0), float("nan"))


def _as_images(x):
    x = ops.convert_to_tensor(x)
    if len(x.shape) == 3:
        x = x[..., None]
    return x


def mse(y_true, y_pred, mask=None):
    """Mean squared error on [0, 1] images, per image."""
    y_true, y_pred = to_unit_range(_as_images(y_true)), to_unit_range(_as_images(y_pred))
    return _masked_mean(ops.square(y_true - y_pred), None if mask is None else _as_images(mask))


def mae(y_true, y_pred, mask=None):
    """Mean absolute error on [0, 1] images, per image."""
    y_true, y_pred = to_unit_range(_as_images(y_true)), to_unit_range(_as_images(y_pred))
    return _masked_mean(ops.abs(y_true - y_pred), None if mask is None else _as_images(mask))


def psnr(y_true, y_pred, mask=None):
    """10 * log10(1 / MSE) on [0, 1] images, per image (dB)."""
    error = mse(y_true, y_pred, mask)
    return 10.0 * ops.log(1.0 / ops.maximum(error, MIN_MSE)) / ops.log(10.0)


def _gaussian_window():
    coords = ops.arange(SSIM_WINDOW, dtype="float32") - (SSIM_WINDOW - 1) / 2.0
    g = ops.exp(-ops.square(coords) / (2.0 * SSIM_SIGMA**2))
    g = g / ops.sum(g)
    return ops.reshape(g, (SSIM_WINDOW, 1, 1, 1)), ops.reshape(g, (1, SSIM_WINDOW, 1, 1))


def _blur(x, window):
    column, row = window
    x = ops.conv(x, column, strides=1, padding="valid")
    return ops.conv(x, row, strides=1, padding="valid")


def ssim_map(y_true, y_pred):
    """Per-pixel SSIM of [0, 1]-mapped images over valid 11x11 windows, [B,H-10,W-10,1]."""
    x = to_unit_range(_as_images(y_true))
    y = to_unit_range(_as_images(y_pred))
    window = _gaussian_window()
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    mu_x, mu_y = _blur(x, window), _blur(y, window)
    var_x = _blur(x * x, window) - mu_x**2
    var_y = _blur(y * y, window) - mu_y**2
    cov = _blur(x * y, window) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    denominator = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return numerator / denominator


def ssim(y_true, y_pred, mask=None):
    """Mean SSIM per image; with `mask`, over the windows centred on mask pixels."""
    values = ssim_map(y_true, y_pred)
    if mask is not None:
        half = SSIM_WINDOW // 2
        mask = _as_images(mask)[:, half:-half, half:-half, :]
    return _masked_mean(values, mask)
