"""Builds networks, optimizers and the compiled DyGAN from a RunConfig.

`fit`, the lambda search and the tests all build through these functions, so there is
one copy of how a configuration becomes a model.
"""

import keras

from dygan_tf.conditions import condition_size, image_channels
from dygan_tf.discriminator import build_discriminator
from dygan_tf.distribute import dtype_policy, precision_policy
from dygan_tf.generator import build_generator
from dygan_tf.model import DyGAN


def build_networks(model):
    """(generator, discriminator) for a ModelConfig."""
    generator = build_generator(
        image_size=model.image_size,
        base_filters=model.base_filters,
        depth=model.depth,
        num_experts=model.num_experts,
        dyconv=model.dyconv,
        label_mode=model.label_mode,
        norm=model.norm,
        image_channels=image_channels(model.inputs),
        condition_size=condition_size(model.inputs),
    )
    discriminator = build_discriminator(
        image_size=model.image_size,
        kind=model.discriminator,
        base_filters=model.d_base_filters,
        num_experts=model.num_experts,
        dyconv=model.d_dyconv,
        norm=model.norm,
        image_channels=image_channels(model.inputs),
        condition_size=condition_size(model.inputs),
    )
    return generator, discriminator


def learning_rate_schedule(train, steps_per_epoch):
    """Adam's rate times lr_decay once per epoch (staircase), as in SPEC.md."""
    return keras.optimizers.schedules.ExponentialDecay(
        train.lr,
        decay_steps=max(1, int(steps_per_epoch)),
        decay_rate=train.lr_decay,
        staircase=True,
    )


def make_optimizer(train, steps_per_epoch, name, average=False):
    """Adam with SPEC.md's schedule; `average`: it also keeps a moving average of the
    weights it updates (momentum `train.ema`; Keras's `use_ema`)."""
    ema = dict(use_ema=True, ema_momentum=train.ema) if average and train.ema > 0 else {}
    return keras.optimizers.Adam(
        learning_rate=learning_rate_schedule(train, steps_per_epoch),
        beta_1=train.beta_1,
        name=name,
        **ema,
    )


def build_dygan(config, steps_per_epoch=1, lambda_l1=None):
    """A compiled DyGAN for `config`; `lambda_l1` overrides the config's (for the search).

    Layers are built under the config's precision policy (mixed_float16 also wraps both
    optimizers in loss scaling); outputs and losses stay float32.
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
