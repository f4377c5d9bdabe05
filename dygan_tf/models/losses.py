"""The GAN's objectives, in one place: the names of the terms every step logs, the
LSGAN + lambda * L1 arithmetic (docs/method.md), the validation terms, and the loss
scaling of float16 optimizers. Written in `keras.ops`: the same on every backend.
"""

import keras
from keras import ops

from dygan_tf.utils import image_metrics

# What a train step logs (history.csv's columns, the divergence check's inputs).
LOSS_NAMES = ("d_loss", "g_gan_loss", "g_l1_loss", "g_loss")
# What a test step logs.
VALIDATION_NAMES = ("l1", "psnr", "ssim")


def gan_losses(d_real, d_fake, target, fake, lambda_l1):
    """{LOSS_NAMES: scalar means}: D pushes real scores to 1 and fake ones to 0 (the
    fake target 0: the paper's eq. 3 typo is not copied); G pushes fake scores to 1 and
    its output towards the target, weighted by `lambda_l1`. All in float32."""
    d_real, d_fake, target, fake = (ops.cast(v, "float32") for v in (d_real, d_fake, target, fake))
    d_loss = 0.5 * ops.mean(ops.square(d_real - 1.0)) + 0.5 * ops.mean(ops.square(d_fake))
    g_gan_loss = 0.5 * ops.mean(ops.square(d_fake - 1.0))
    g_l1_loss = ops.mean(ops.abs(target - fake))
    return {
        "d_loss": d_loss,
        "g_gan_loss": g_gan_loss,
        "g_l1_loss": g_l1_loss,
        "g_loss": g_gan_loss + lambda_l1 * g_l1_loss,
    }


def validation_terms(target, fake):
    """{VALIDATION_NAMES}: L1 (a scalar), PSNR and SSIM per image, in float32."""
    fake, target = ops.cast(fake, "float32"), ops.cast(target, "float32")
    return {
        "l1": ops.mean(ops.abs(target - fake)),
        "psnr": image_metrics.psnr(target, fake),
        "ssim": image_metrics.ssim(target, fake),
    }


def scaled(optimizer, loss):
    """`loss` as `optimizer` differentiates it: multiplied by a LossScaleOptimizer's
    dynamic scale (its `apply` divides the gradients back), unchanged otherwise."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer.scale_loss(loss)
    return loss


def with_loss_scaling(optimizer, name):
    """`optimizer` wrapped in Keras's dynamic loss scaling (float16 gradients underflow
    without it), unless it already is."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer
    return keras.optimizers.LossScaleOptimizer(optimizer, name=name)
