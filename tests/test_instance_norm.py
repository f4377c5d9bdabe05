"""InstanceNormalization: Keras's GroupNormalization(groups=-1) forward, bit for bit, and a
closed-form gradient equal to TensorFlow's automatic one, in a smaller graph."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from dygan_tf.layers.instance_norm import InstanceNormalization


def _pair(dtype):
    ours = InstanceNormalization(epsilon=1e-5, dtype=dtype)
    theirs = keras.layers.GroupNormalization(groups=-1, epsilon=1e-5, dtype=dtype)
    rng = np.random.default_rng(0)
    gamma, beta = rng.normal(size=(2, 5)).astype("float32")
    for layer in (ours, theirs):
        layer.build((None, 8, 6, 5))
        layer.gamma.assign(gamma)
        layer.beta.assign(beta)
    return ours, theirs


def _forward_and_grads(layer, x, dy):
    """[y, dx, dgamma, dbeta] of the loss sum(y * dy)."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * dy)
    return [y] + tape.gradient(loss, [x, layer.gamma.value, layer.beta.value])


def _outputs_and_grads(layer, x, dy, jit_compile=False):
    run = tf.function(lambda x: _forward_and_grads(layer, x, dy), jit_compile=jit_compile)
    return [v.numpy().astype("float64") for v in run(x)]


@pytest.mark.parametrize("dtype", ["float32", "mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("jit_compile", [False, True])
def test_same_outputs_as_keras_and_the_same_gradients(dtype, jit_compile):
    rng = np.random.default_rng(1)
    # An offset and scale per example and channel, as after a convolution.
    x = rng.normal(size=(3, 8, 6, 5)) * rng.uniform(0.5, 4, (3, 1, 1, 5)) + rng.normal(
        size=(3, 1, 1, 5)
    )
    x, dy = tf.constant(x, tf.float32), tf.constant(rng.normal(size=(3, 8, 6, 5)), tf.float32)
    ours, theirs = _pair(dtype)
    got = _outputs_and_grads(ours, x, dy, jit_compile)
    want = _outputs_and_grads(theirs, x, dy, jit_compile)
    if not jit_compile:  # XLA may fuse either graph its own way
        np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-5)
    for name, a, b in zip(("dx", "dgamma", "dbeta"), got[1:], want[1:]):
        scale = np.abs(b).max()
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-6 * scale, err_msg=name)
    # The normalised output has zero mean and unit variance per example and channel.
    y = (got[0] - ours.beta.numpy()) / ours.gamma.numpy()
    tolerance = 2e-2 if "mixed" in dtype else 1e-4
    np.testing.assert_allclose(y.mean(axis=(1, 2)), 0, atol=tolerance)
    np.testing.assert_allclose(y.var(axis=(1, 2)), 1, atol=tolerance)


def test_gradient_graph_is_a_fraction_of_keras_autodiff():
    # The batch left unknown, as in a train step.
    spec = tf.TensorSpec([None, 8, 6, 5])
    counts = []
    for layer in _pair("float32"):
        run = tf.function(lambda x, layer=layer: _forward_and_grads(layer, x, tf.ones_like(x)))
        counts.append(len(run.get_concrete_function(spec).graph.get_operations()))
    ours, theirs = counts
    assert 2 * ours < theirs, counts  # measured 61 vs 143


def test_keras_file_round_trip_and_configs_of_a_built_group_norm(tmp_path):
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, InstanceNormalization(name="norm")(inputs))
    model.get_layer("norm").gamma.assign([0.5, 2.0, -1.0])
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)  # safe mode: the class is registered
    x = np.random.default_rng(2).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
    assert isinstance(loaded.get_layer("norm"), InstanceNormalization)
    assert loaded.get_layer("norm").get_config()["groups"] == -1
    # A built GroupNormalization(groups=-1) reports groups = its channels.
    built = keras.layers.GroupNormalization(groups=-1)
    built.build((None, 4, 4, 3))
    layer = InstanceNormalization.from_config(built.get_config())
    layer.build((None, 4, 4, 3))
    assert layer.groups == 3


@pytest.mark.parametrize(
    "kwargs,shape,message",
    [
        ({"axis": 1}, (None, 4, 4, 3), "`axis` must be -1. Received: axis=1"),
        ({"groups": 2}, (None, 4, 4, 4), "groups=2"),
        ({}, (None, 4, 3), "input_shape=(None, 4, 3)"),
    ],
)
def test_bad_arguments_name_what_was_received(kwargs, shape, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        InstanceNormalization(**kwargs).build(shape)
