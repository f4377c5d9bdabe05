"""The networks and the GAN: blocks, the U-Net generator, the discriminators, the DyGAN
train step, the optimizers and precision policies, and the builders from a config.

    from dygan_tf.models import DyGAN, build_discriminator, build_dygan, build_generator
"""

from dygan_tf.utils.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "DyGAN": "dygan_tf.models.dygan",
        "build_generator": "dygan_tf.models.generator",
        "build_discriminator": "dygan_tf.models.discriminator",
        "build_dygan": "dygan_tf.models.builders",
    },
)
