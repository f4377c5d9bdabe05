"""Discriminators: the paper's multi-scale DyConv discriminator and pix2pix's PatchGAN.

Both see the source image and a real or synthesised target, concatenated on channels,
and the task code; both return a patch map of shape (H/8, W/8, 1) scored by LSGAN.
"""

import contextlib

import keras
from keras import layers

from dygan_tf.config.run_config import check_discriminator
from dygan_tf.config.tasks import NUM_TASKS
from dygan_tf.models.blocks import conv, conv_block
from dygan_tf.models.precision import dtype_policy


def build_discriminator(
    image_size=256,
    kind="multiscale",
    base_filters=64,
    num_experts=3,
    dyconv=True,
    norm="instance",
    image_channels=1,
    condition_size=NUM_TASKS,
    name="discriminator",
    dtype=None,
):
    """The conditional discriminator scored by LSGAN.

    Args:
        image_size: side of the square inputs.
        kind: "multiscale" (the paper's: pix2pix trunk plus heads at several scales)
            or "patch" (pix2pix's 70x70 PatchGAN).
        base_filters: channels of the first layer.
        num_experts: experts K of every DyConv2D.
        dyconv: whether the convolutions are DyConv2D driven by the task code.
        norm: "instance", "batch" or "none".
        image_channels: channels of the source input (1, or 4 for multi-source).
        condition_size: length of the condition code (12, or 8 for multi-source).
        name: the model's name.
        dtype: a Keras dtype policy for every layer (e.g. "mixed_float16"); None: the
            global policy. The output layer stays float32 either way.

    Input shape:
        `{"image": (batch, H, W, image_channels), "target": (batch, H, W, 1), "task":
        (batch, condition_size)}`: the source(s), a real or synthesised target, the
        condition code.

    Output shape:
        `(batch, H/8, W/8, 1)`: one real/fake score per patch.

    Example:

    >>> d = build_discriminator(image_size=64, base_filters=4)
    >>> x = np.zeros((2, 64, 64, 1))
    >>> tuple(d({"image": x, "target": x, "task": np.eye(12)[:2]}).shape)
    (2, 8, 8, 1)
    """
    check_discriminator(image_size, kind)
    with dtype_policy(dtype) if dtype is not None else contextlib.nullcontext():
        image = keras.Input((image_size, image_size, image_channels), name="image")
        target = keras.Input((image_size, image_size, 1), name="target")
        task = keras.Input((condition_size,), name="task")
        x = layers.Concatenate(name="image_and_target")([image, target])
        block = dict(dynamic=dyconv, num_experts=num_experts, activation="leaky_relu")
        f = base_filters

        # pix2pix's C64-C128-C256 trunk (4x4, stride 2; no norm on the first layer).
        x = conv_block(x, task, f, 4, 2, norm="none", name="trunk1", **block)
        x = conv_block(x, task, 2 * f, 4, 2, norm=norm, name="trunk2", **block)
        x = conv_block(x, task, 4 * f, 4, 2, norm=norm, name="trunk3", **block)
        if kind == "patch":
            # C512 at stride 1 then a 1-channel conv: the 70x70 receptive field of pix2pix.
            x = conv_block(x, task, 8 * f, 4, 1, norm=norm, name="patch4", **block)
        else:
            x = _multiscale_head(x, task, f, norm, block)
        scores = conv(x, task, 1, 4, 1, dynamic=False, name="scores_conv")
        scores = layers.Activation("linear", dtype="float32", name="scores")(scores)
        return keras.Model({"image": image, "target": target, "task": task}, scores, name=name)


def _multiscale_head(x, task, f, norm, block):
    """Three branches at 1, 1/2 and 1/4 of the trunk's scale, resized back and fused."""
    branch1 = conv_block(x, task, 8 * f, 4, 1, norm=norm, name="scale1_out", **block)
    branch2 = conv_block(x, task, 8 * f, 4, 2, norm=norm, name="scale2_down1", **block)
    branch2 = conv_block(branch2, task, 16 * f, 4, 1, norm=norm, name="scale2_out", **block)
    branch2 = layers.UpSampling2D(2, interpolation="bilinear", name="scale2_resize")(branch2)
    branch3 = conv_block(x, task, 8 * f, 4, 2, norm=norm, name="scale3_down1", **block)
    branch3 = conv_block(branch3, task, 8 * f, 4, 2, norm=norm, name="scale3_down2", **block)
    branch3 = conv_block(branch3, task, 16 * f, 4, 1, norm=norm, name="scale3_out", **block)
    branch3 = layers.UpSampling2D(4, interpolation="bilinear", name="scale3_resize")(branch3)
    return layers.Concatenate(name="scales")([branch1, branch2, branch3])
