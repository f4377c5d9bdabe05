"""Builds the networks and the compiled DyGAN from a RunConfig.

`fit`, the lambda search and the tests all build through these functions, so there is
one copy of how a configuration becomes a model.
"""

from dygan_tf.config.conditions import condition_size, image_channels
from dygan_tf.models.discriminator import build_discriminator
from dygan_tf.models.dygan import DyGAN
from dygan_tf.models.generator import build_generator
from dygan_tf.models.optimizers import make_optimizer
from dygan_tf.models.precision import dtype_policy, precision_policy


def build_networks(model):
    """(generator, discriminator) for a ModelConfig."""
    shared = dict(
        image_size=model.image_size,
        num_experts=model.num_experts,
        norm=model.norm,
        image_channels=image_channels(model.inputs, model.context),
        condition_size=condition_size(model.inputs),
    )
    generator = build_generator(
        base_filters=model.base_filters,
        depth=model.depth,
        dyconv=model.dyconv,
        label_mode=model.label_mode,
        **shared,
    )
    discriminator = build_discriminator(
        kind=model.discriminator,
        base_filters=model.d_base_filters,
        dyconv=model.d_dyconv,
        **shared,
    )
    return generator, discriminator


def build_dygan(config, steps_per_epoch=1, lambda_l1=None):
    """A compiled DyGAN for `config`; `lambda_l1` overrides the config's (for the search).

    Layers are built under the config's precision policy (mixed_float16 also wraps both
    optimizers in loss scaling); outputs and losses stay float32.

    Example:

    ```python
    from dygan_tf.config import get_preset
    from dygan_tf.models import build_dygan

    gan = build_dygan(get_preset("tiny"), steps_per_epoch=10)
    gan.generator.summary()
    ```
    """
    with dtype_policy(precision_policy(config.train.mixed_precision)):
        generator, discriminator = build_networks(config.model)
        gan = DyGAN(
            generator,
            discriminator,
            lambda_l1=config.train.lambda_l1 if lambda_l1 is None else lambda_l1,
        )
        gan.compile(
            g_optimizer=make_optimizer(config.train, steps_per_epoch, "g_optimizer", average=True),
            d_optimizer=make_optimizer(config.train, steps_per_epoch, "d_optimizer"),
            jit_compile=config.train.jit_compile,
        )
    return gan
