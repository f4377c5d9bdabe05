import numpy as np
import pytest
import tensorflow as tf
from scipy import ndimage

from dygan_tf.utils import image_metrics as metrics


def _pair(seed=0, shape=(2, 48, 48, 1)):
    rng = np.random.RandomState(seed)
    a = ndimage.gaussian_filter(rng.uniform(-1, 1, shape), (0, 2, 2, 0)).clip(-1, 1)
    b = (a + rng.normal(0, 0.1, shape)).clip(-1, 1)
    return a.astype("float32"), b.astype("float32")


def numpy_ssim_map(x, y):
    """Wang et al. 2004 on [0,1] images, Gaussian window 11 / sigma 1.5, valid windows."""
    x, y = (x + 1) / 2, (y + 1) / 2
    coords = np.arange(11) - 5
    g = np.exp(-(coords**2) / (2 * 1.5**2))
    g /= g.sum()
    window = np.outer(g, g)

    def blur(img):
        out = np.zeros((img.shape[0] - 10, img.shape[1] - 10))
        for i in range(out.shape[0]):
            for j in range(out.shape[1]):
                out[i, j] = (img[i : i + 11, j : j + 11] * window).sum()
        return out

    c1, c2 = 0.01**2, 0.03**2
    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    return ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))


def test_psnr_equals_formula_and_tf_image():
    a, b = _pair()
    mse = (((a + 1) / 2 - (b + 1) / 2) ** 2).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(metrics.psnr(a, b).numpy(), 10 * np.log10(1 / mse), rtol=1e-5)
    np.testing.assert_allclose(
        metrics.psnr(a, b).numpy(), tf.image.psnr((a + 1) / 2, (b + 1) / 2, 1.0).numpy(), rtol=1e-5
    )
    assert metrics.psnr(a, a).numpy()[0] == pytest.approx(100.0)


def test_ssim_equals_numpy_reference_and_tf_image():
    a, b = _pair(1)
    reference = [
        numpy_ssim_map(a[i, ..., 0].astype("float64"), b[i, ..., 0].astype("float64")).mean()
        for i in range(2)
    ]
    np.testing.assert_allclose(metrics.ssim(a, b).numpy(), reference, rtol=1e-4)
    np.testing.assert_allclose(
        metrics.ssim(a, b).numpy(), tf.image.ssim((a + 1) / 2, (b + 1) / 2, 1.0).numpy(), rtol=1e-4
    )
    np.testing.assert_allclose(metrics.ssim(a, a).numpy(), [1.0, 1.0], rtol=1e-6)


def test_masked_metrics_average_inside_the_mask_only():
    a, b = _pair(2)
    mask = np.zeros_like(a)
    mask[0, 10:30, 12:40] = 1
    inside = (((a + 1) / 2 - (b + 1) / 2) ** 2)[0][mask[0] > 0].mean()
    assert metrics.psnr(a, b, mask).numpy()[0] == pytest.approx(10 * np.log10(1 / inside), rel=1e-5)
    ssim_map = numpy_ssim_map(a[0, ..., 0].astype("float64"), b[0, ..., 0].astype("float64"))
    assert metrics.ssim(a, b, mask).numpy()[0] == pytest.approx(
        ssim_map[mask[0, 5:-5, 5:-5, 0] > 0].mean(), rel=1e-4
    )
    mae_inside = np.abs((a - b) / 2)[0][mask[0] > 0].mean()
    assert metrics.mae(a, b, mask).numpy()[0] == pytest.approx(mae_inside, rel=1e-5)
    # An empty mask gives NaN, never a made-up number.
    assert np.isnan(metrics.psnr(a, b, mask).numpy()[1])
    assert np.isnan(metrics.ssim(a, b, mask).numpy()[1])
