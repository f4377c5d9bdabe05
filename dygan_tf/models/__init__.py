"""The networks and the GAN: blocks, the U-Net generator, the discriminators, the DyGAN
train step, the optimizers and precision policies, and the builders from a config.

    from dygan_tf.models import DyGAN, build_discriminator, build_dygan, build_generator
"""

import importlib

# name -> module that defines it; imported on first use, so that importing this package
# starts neither Keras nor TensorFlow (the commands check their flags before that).
_EXPORTS = {
    "DyGAN": "dygan_tf.models.dygan",
    "build_generator": "dygan_tf.models.generator",
    "build_discriminator": "dygan_tf.models.discriminator",
    "build_dygan": "dygan_tf.models.builders",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
