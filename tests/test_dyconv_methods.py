"""Every DyConv method against autodiff of a per-example loop: values and gradients."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from dygan_tf.config.tasks import task_code
from dygan_tf.layers import dyconv_dispatch, dyconv_methods
from dygan_tf.layers.dyconv import DyConv2D
from dygan_tf.layers.dyconv_methods import METHODS, dynamic_conv2d, mix_kernels

T2_TASKS = np.stack([task_code("t2", t) for t in ("flair", "t1", "t1ce")]).astype("float32")


def _reference(x, alpha, experts, stride, padding):
    """Mixes and convolves one example at a time (the definition)."""
    outputs = []
    for b in range(x.shape[0]):
        kernel = tf.tensordot(alpha[b], experts, axes=1)
        outputs.append(tf.nn.conv2d(x[b : b + 1], kernel, stride, padding))
    return tf.concat(outputs, 0)


def _inputs(batch, size, k, channels=3, filters=5, experts=3, seed=0):
    rng = np.random.RandomState(seed)
    x = tf.constant(rng.randn(batch, size[0], size[1], channels).astype("float32"))
    alpha = tf.constant(rng.uniform(size=(batch, experts)).astype("float32"))
    kernel = tf.constant(rng.randn(experts, k, k, channels, filters).astype("float32"))
    return x, alpha, kernel


def _value_and_grads(conv, x, alpha, experts):
    with tf.GradientTape() as tape:
        tape.watch([x, alpha, experts])
        y = conv(x, alpha, experts)
        weights = tf.reshape(tf.cos(tf.range(tf.size(y), dtype=tf.float32)), tf.shape(y))
        loss = tf.reduce_sum(y * weights)
    return y, tape.gradient(loss, [x, alpha, experts])


def _check(method, x, alpha, experts, stride, padding, function=None):
    """The method (inside `function`, if given) against the eager per-example reference."""

    def run(x, alpha, experts):
        conv = lambda *a: dynamic_conv2d(*a, stride, padding, method)  # noqa: E731
        return _value_and_grads(conv, x, alpha, experts)

    y, grads = (function or (lambda f: f))(run)(x, alpha, experts)
    ref, ref_grads = _value_and_grads(lambda *a: _reference(*a, stride, padding), x, alpha, experts)
    np.testing.assert_allclose(y.numpy(), ref.numpy(), rtol=1e-4, atol=1e-4)
    for got, want, name in zip(grads, ref_grads, ("x", "alpha", "experts")):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=2e-4, err_msg=name)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "k,stride,padding,size",
    [
        ((3, 1, "SAME", (8, 8))),
        ((3, 2, "SAME", (9, 7))),  # odd, non-square
        ((4, 2, "SAME", (8, 8))),  # the discriminator's 4x4 stride-2
        ((4, 1, "SAME", (5, 5))),  # even kernel at stride 1, odd map
        ((4, 2, "VALID", (11, 11))),
        ((4, 2, "SAME", (2, 2))),  # tiny map: 1x1 output
        ((1, 1, "SAME", (5, 5))),
    ],
)
def test_method_matches_per_example_reference(method, k, stride, padding, size):
    _check(method, *_inputs(3, size, k), stride, padding)


@pytest.mark.parametrize("method", METHODS)
def test_unknown_batch_in_a_compiled_function(method):
    x, alpha, experts = _inputs(3, (6, 6), 3, seed=1)
    signature = [
        tf.TensorSpec([None, 6, 6, 3]),
        tf.TensorSpec([None, 3]),
        tf.TensorSpec(experts.shape),
    ]
    _check(
        method, x, alpha, experts, 2, "SAME", lambda f: tf.function(f, input_signature=signature)
    )


@pytest.mark.parametrize("method", ["loop", "stacked_inputs", "stacked_outputs", "dense_map"])
def test_unknown_batch_under_xla(method):
    x, alpha, experts = _inputs(2, (6, 6), 3, seed=2)
    signature = [
        tf.TensorSpec([None, 6, 6, 3]),
        tf.TensorSpec([None, 3]),
        tf.TensorSpec(experts.shape),
    ]
    _check(
        method,
        x,
        alpha,
        experts,
        1,
        "SAME",
        lambda f: tf.function(f, input_signature=signature, jit_compile=True),
    )


def test_mix_kernels_is_the_weighted_sum_of_experts():
    _, alpha, experts = _inputs(3, (4, 4), 3, seed=3)
    want = np.einsum("bk,khwcf->bhwcf", alpha.numpy(), experts.numpy())
    np.testing.assert_allclose(mix_kernels(alpha, experts).numpy(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_layer_gives_the_same_output_with_every_method(method):
    keras.utils.set_random_seed(4)
    reference = DyConv2D(6, 4, strides=2, conv_method="grouped", use_bias=True)
    x = np.random.RandomState(5).randn(3, 9, 9, 4).astype("float32")
    want = reference(x, T2_TASKS).numpy()
    layer = DyConv2D.from_config(reference.get_config() | {"conv_method": method})
    layer(x[:1], T2_TASKS[:1])
    layer.set_weights(reference.get_weights())
    np.testing.assert_allclose(layer(x, T2_TASKS).numpy(), want, rtol=1e-4, atol=1e-4)
    assert layer.get_config()["conv_method"] == method


def test_choose_method_reads_the_table_and_falls_back_to_the_nearest_shape():
    table = {(64, 16, 16, 3, 1): "loop", (16, 128, 256, 4, 1): "stacked_inputs"}
    assert dyconv_dispatch.table_method((64, 16, 16, 3, 1), table) == ("loop", "table")
    assert dyconv_dispatch.table_method((16, 120, 256, 4, 1), table) == (
        "stacked_inputs",
        "nearest table shape",
    )
    assert dyconv_dispatch.table_method((4096, 16, 16, 3, 1), table)[0] == "loop"
    assert all(m in METHODS for m in dyconv_dispatch.TENSORFLOW_CPU_TABLE.values())


def test_bad_method_names_what_was_received():
    x, alpha, experts = _inputs(1, (4, 4), 3)
    with pytest.raises(ValueError, match="Received: method='im2row'"):
        dynamic_conv2d(x, alpha, experts, 1, "SAME", "im2row")
    with pytest.raises(ValueError, match="Received: conv_method='im2row'"):
        DyConv2D(4, 3, conv_method="im2row")


@pytest.mark.parametrize(
    "size,k,stride,expected",
    [
        ((2, 2), 4, 1, True),  # the multi-scale D's scale3_out at 64 px: every pair meets
        ((4, 4), 4, 1, False),  # scale2_out: the matrix would be 16x the taps
        ((4, 4), 4, 2, False),  # scale3_down2, 4x4 -> 2x2: 4x the taps
        ((8, 8), 4, 1, False),  # a quarter of the pairs meet: a convolution is cheaper
        ((8, 8), 4, 2, False),
        ((16, 16), 3, 1, False),  # too large for one matrix
    ],
)
def test_auto_takes_dense_map_where_the_kernel_covers_a_tiny_map(size, k, stride, expected):
    layer = DyConv2D(4, k, strides=stride)
    x = np.zeros((1, *size, 2), "float32")
    layer(x, T2_TASKS[:1])
    assert (layer.conv_method_for(x.shape) == "dense_map") is expected


def test_tap_index_joins_pixels_as_a_convolution_does():
    """Convolving a one-hot input pixel with a kernel whose taps are numbered 1..k*k puts
    tap numbers exactly where tap_index says."""
    for size, k, stride, padding in [
        ((3, 5), 3, 2, "SAME"),
        ((4, 4), 4, 1, "SAME"),
        ((6, 5), 3, 2, "VALID"),
    ]:
        index, out_size = dyconv_methods.tap_index(size, (k, k), stride, padding)
        kernel = np.arange(1, k * k + 1, dtype="float32").reshape(k, k, 1, 1)
        for pixel in range(size[0] * size[1]):
            x = np.zeros((1, size[0] * size[1], 1), "float32")
            x[0, pixel] = 1
            y = tf.nn.conv2d(x.reshape(1, *size, 1), kernel, stride, padding).numpy()
            assert y.shape[1:3] == out_size
            want = np.where(index[pixel] < k * k, index[pixel] + 1, 0)
            np.testing.assert_array_equal(y.reshape(-1), want)
