"""The DyGAN generator: a U-Net whose decoder convolutions are task-driven DyConv2D.

`dyconv` places the dynamic convolutions as in the paper's Table 4 ("none" is the
pix2pix U-Net); `label_mode="input"` is the MGAN/StarGAN-style baseline that feeds the
task as 12 constant planes beside the image and uses static kernels.
"""

import contextlib

import keras
from keras import layers

from dygan_tf.config.run_config import check_generator
from dygan_tf.config.tasks import NUM_TASKS
from dygan_tf.models.blocks import conv, conv_block
from dygan_tf.models.precision import dtype_policy


def build_generator(
    image_size=256,
    base_filters=64,
    depth=4,
    num_experts=3,
    dyconv="up",
    label_mode="kernel",
    norm="instance",
    image_channels=1,
    condition_size=NUM_TASKS,
    name="generator",
    dtype=None,
):
    """The DyGAN generator: a U-Net steered by the task code.

    Args:
        image_size: side of the square input (a multiple of `2**depth`).
        base_filters: channels of the first level (doubled at each level below).
        depth: down-sampling steps (the paper's 4; 16x16 bottleneck at 256 px).
        num_experts: experts K of every DyConv2D.
        dyconv: where the convolutions are DyConv2D: "none" (pix2pix), "down", "up"
            (the paper's) or "both".
        label_mode: "kernel" (the task code drives the DyConv routing) or "input"
            (12 constant planes beside the image; static kernels, MGAN-style).
        norm: "instance", "batch" or "none".
        image_channels: 1 (one source slice, the paper's) or 4 (multi-source: every
            modality a channel, missing ones filled; see `dygan_tf.config.conditions`),
            times 2K + 1 with K axial neighbours a side (`--context`).
        condition_size: length of the condition: 12 (task code) or 8 (availability
            mask + target one-hot, multi-source).
        name: the model's name.
        dtype: a Keras dtype policy for every layer (e.g. "mixed_float16"); None: the
            global policy. The output layer stays float32 either way.

    Input shape:
        `{"image": (batch, image_size, image_size, image_channels), "task": (batch,
        condition_size)}`: the source slice(s) in [-1, 1] and the condition code
        (`dygan_tf.config.tasks.task_code` or `dygan_tf.config.conditions.condition_code`).

    Output shape:
        `(batch, image_size, image_size, 1)`: the synthesised target in [-1, 1] (tanh).

    Example:

    >>> g = build_generator(image_size=64, base_filters=4, depth=3)
    >>> tuple(g({"image": np.zeros((2, 64, 64, 1)), "task": np.eye(12)[:2]}).shape)
    (2, 64, 64, 1)
    """
    check_generator(image_size, base_filters, depth, dyconv, label_mode)
    with dtype_policy(dtype) if dtype is not None else contextlib.nullcontext():
        image = keras.Input((image_size, image_size, image_channels), name="image")
        task = keras.Input((condition_size,), name="task")
        block = dict(num_experts=num_experts, norm=norm, activation="relu")
        x = image
        if label_mode == "input":
            planes = layers.Reshape((1, 1, condition_size))(task)
            planes = layers.UpSampling2D(size=image_size, name="task_planes")(planes)
            x = layers.Concatenate(name="image_and_task")([x, planes])
        x, skips = _encoder(x, task, base_filters, depth, dyconv in ("down", "both"), block)
        x = _decoder(x, task, skips, base_filters, dyconv in ("up", "both"), block)
        # float32 output under mixed precision: losses and metrics need full precision.
        output = layers.Activation("tanh", dtype="float32", name="output")(x)
        return keras.Model({"image": image, "task": task}, output, name=name)


def _encoder(x, task, base_filters, depth, dynamic, block):
    """The contracting half and the bottleneck: two blocks per level, each level's
    output kept for its skip connection, then max pooling. Returns (x, skips)."""
    skips = []
    for level in range(depth):
        filters = base_filters * 2**level
        for i in (1, 2):
            x = conv_block(x, task, filters, 3, dynamic=dynamic, name=f"down{level}_{i}", **block)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"down{level}_pool")(x)
    for i in (1, 2):
        x = conv_block(
            x, task, base_filters * 2**depth, 3, dynamic=dynamic, name=f"bottleneck_{i}", **block
        )
    return x, skips


def _decoder(x, task, skips, base_filters, dynamic, block):
    """The expanding half: upsample, concatenate the level's skip, two blocks; then the
    1x1 output convolution (before the tanh)."""
    for level in reversed(range(len(skips))):
        filters = base_filters * 2**level
        x = layers.UpSampling2D(2, name=f"up{level}_upsample")(x)
        x = layers.Concatenate(name=f"up{level}_skip")([x, skips[level]])
        for i in (1, 2):
            x = conv_block(x, task, filters, 3, dynamic=dynamic, name=f"up{level}_{i}", **block)
    num_experts = block["num_experts"]
    return conv(x, task, 1, 1, dynamic=dynamic, num_experts=num_experts, name="output_conv")
