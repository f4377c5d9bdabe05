"""Small builders shared by the generator and the discriminator: conv + norm + act."""

from keras import layers

from dygan_tf.config.run_config import NORMS, check_choice
from dygan_tf.layers.dyconv import DyConv2D
from dygan_tf.layers.instance_norm import InstanceNormalization


def normalization(norm, name):
    """Instance norm by default: a batch mixes tasks, so batch statistics would mix them.
    It is Keras's `GroupNormalization(groups=-1)` with a shorter gradient graph
    (`dygan_tf.layers.instance_norm`)."""
    check_choice("norm", norm, NORMS)
    if norm == "instance":
        return InstanceNormalization(epsilon=1e-5, name=name)
    if norm == "batch":
        return layers.BatchNormalization(name=name)
    return None


def conv(
    x, task, filters, kernel_size, strides=1, dynamic=False, num_experts=3, use_bias=True, name=None
):
    """A static Conv2D or a DyConv2D driven by `task`, He-initialised either way."""
    if dynamic:
        return DyConv2D(
            filters,
            kernel_size,
            strides=strides,
            num_experts=num_experts,
            use_bias=use_bias,
            name=name,
        )(x, task)
    return layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=use_bias,
        kernel_initializer="he_normal",
        name=name,
    )(x)


def conv_block(
    x,
    task,
    filters,
    kernel_size,
    strides=1,
    dynamic=False,
    num_experts=3,
    norm="instance",
    activation="relu",
    name="block",
):
    """conv -> norm -> activation, named `{name}_conv`, `{name}_norm`, `{name}_act`."""
    norm_layer = normalization(norm, f"{name}_norm")
    # A bias before instance norm is subtracted right away: it would never learn.
    x = conv(
        x,
        task,
        filters,
        kernel_size,
        strides,
        dynamic,
        num_experts,
        use_bias=norm_layer is None,
        name=f"{name}_conv",
    )
    if norm_layer is not None:
        x = norm_layer(x)
    if activation == "leaky_relu":
        return layers.LeakyReLU(0.2, name=f"{name}_act")(x)
    return layers.Activation(activation, name=f"{name}_act")(x)
