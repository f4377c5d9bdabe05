import keras
import numpy as np
import pytest
import tensorflow as tf

from dygan_tf.config.tasks import task_code
from dygan_tf.layers import dyconv_methods, tf_dyconv
from dygan_tf.layers.dyconv import DyConv2D
from dygan_tf.layers.dyconv_methods import METHODS, method_function

T2_TASKS = np.stack([task_code("t2", t) for t in ("flair", "t1", "t1ce")])


def numpy_conv2d(x, w, stride, padding):
    """Reference 2-D cross-correlation of one image x[H,W,C] with w[kh,kw,C,F]."""
    kh, kw, _, f = w.shape
    h, wd, _ = x.shape
    if padding == "same":
        oh, ow = -(-h // stride), -(-wd // stride)
        ph = max((oh - 1) * stride + kh - h, 0)
        pw = max((ow - 1) * stride + kw - wd, 0)
        x = np.pad(x, [(ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)])
    else:
        oh, ow = (h - kh) // stride + 1, (wd - kw) // stride + 1
    out = np.zeros((oh, ow, f))
    for i in range(oh):
        for j in range(ow):
            patch = x[i * stride : i * stride + kh, j * stride : j * stride + kw, :]
            out[i, j] = np.tensordot(patch, w, axes=3)
    return out


def sigmoid(v):
    return 1 / (1 + np.exp(-v))


@pytest.mark.parametrize("conv_method", ("auto",) + METHODS)
@pytest.mark.parametrize(
    "kernel_size,strides,padding", [(3, 1, "same"), (3, 2, "same"), (4, 2, "same"), (4, 1, "valid")]
)
def test_matches_explicit_per_example_reference(kernel_size, strides, padding, conv_method):
    keras.utils.set_random_seed(1)
    layer = DyConv2D(
        6,
        kernel_size,
        strides=strides,
        padding=padding,
        num_experts=3,
        bias_initializer="random_normal",
        conv_method=conv_method,
    )
    x = np.random.RandomState(0).randn(3, 9, 9, 4).astype("float32")
    y = layer(x, T2_TASKS).numpy()
    kernel, bias = layer.kernel.numpy(), layer.bias.numpy()
    dense_w, dense_b = (w.numpy() for w in layer.routing.weights)
    for b in range(3):
        features = np.concatenate([x[b].mean(axis=(0, 1)), T2_TASKS[b]])
        alpha = sigmoid(features @ dense_w + dense_b)
        np.testing.assert_allclose(layer.routing_weights(x, T2_TASKS).numpy()[b], alpha, rtol=1e-5)
        expected = numpy_conv2d(x[b], np.tensordot(alpha, kernel, axes=1), strides, padding)
        expected += alpha @ bias
        np.testing.assert_allclose(y[b], expected, rtol=1e-4, atol=1e-4)


def test_weights_have_the_documented_shapes():
    layer = DyConv2D(5, 3, num_experts=4)
    layer(np.zeros((2, 8, 8, 7), "float32"), np.zeros((2, 12), "float32"))
    assert tuple(layer.kernel.shape) == (4, 3, 3, 7, 5)
    assert tuple(layer.bias.shape) == (4, 5)
    assert tuple(layer.routing.kernel.shape) == (7 + 12, 4)
    # He init per expert: std of one expert ~ sqrt(2 / fan_in), fan_in = 3*3*7.
    assert abs(layer.kernel.numpy().std() / np.sqrt(2 / 63) - 1) < 0.25


def test_experts_start_from_different_kernels_each_with_one_experts_fan_in():
    # A Keras initializer returns the same values at every call with its one seed: all
    # experts used to start identical (a static conv in K copies).
    keras.utils.set_random_seed(0)
    layer = DyConv2D(16, 3, num_experts=3)
    layer.build((None, 8, 8, 8), (None, 12))
    kernel = keras.ops.convert_to_numpy(layer.kernel).reshape(3, -1)
    correlation = np.corrcoef(kernel)[np.triu_indices(3, 1)]
    assert np.all(np.abs(correlation) < 0.2), correlation
    # He normal over one expert's fan-in (3 * 3 * 8 = 72), not the K experts' together.
    np.testing.assert_allclose(kernel.std(axis=1), np.sqrt(2 / 72), rtol=0.15)
    keras.utils.set_random_seed(0)
    again = DyConv2D(16, 3, num_experts=3)
    again.build((None, 8, 8, 8), (None, 12))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(again.kernel).reshape(3, -1), kernel)


def test_examples_are_independent_and_task_matters():
    keras.utils.set_random_seed(2)
    layer = DyConv2D(4, 3, routing_initializer="random_normal")
    rng = np.random.RandomState(3)
    x = rng.randn(3, 8, 8, 2).astype("float32")
    y = layer(x, T2_TASKS).numpy()
    x2 = x.copy()
    x2[1:] = rng.randn(2, 8, 8, 2)
    np.testing.assert_allclose(layer(x2, T2_TASKS).numpy()[0], y[0], rtol=1e-5, atol=1e-6)
    same_image = np.repeat(x[:1], 3, axis=0)
    out = layer(same_image, T2_TASKS).numpy()
    assert np.abs(out[0] - out[1]).max() > 1e-3
    assert np.abs(out[1] - out[2]).max() > 1e-3


@pytest.mark.parametrize("method", ["grouped", "patches"])
@pytest.mark.parametrize(
    "k,stride,padding,size",
    [
        (3, 1, "SAME", 8),
        (3, 2, "SAME", 9),
        (4, 2, "SAME", 8),
        (4, 1, "SAME", 8),
        (3, 2, "VALID", 9),
        (4, 2, "VALID", 11),
        (2, 2, "SAME", 7),
        (4, 2, "SAME", 2),
        (1, 1, "SAME", 5),
    ],
)
def test_gradient_matches_autodiff_of_a_per_example_loop(k, stride, padding, size, method):
    rng = np.random.RandomState(4)
    x = tf.constant(rng.randn(3, size, size, 4).astype("float32"))
    kernels = tf.constant(rng.randn(k, k, 4, 3, 5).astype("float32"))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, kernels])
        y = method_function(method)(x, tf.transpose(kernels, [3, 0, 1, 2, 4]), stride, padding)
        weights = tf.constant(rng.randn(*y.shape).astype("float32"))
        loss = tf.reduce_sum(y * weights)
        reference = tf.concat(
            [tf.nn.conv2d(x[b : b + 1], kernels[:, :, :, b], stride, padding) for b in range(3)], 0
        )
        reference_loss = tf.reduce_sum(reference * weights)
    np.testing.assert_allclose(y.numpy(), reference.numpy(), rtol=1e-5, atol=1e-5)
    for got, want in zip(
        tape.gradient(loss, [x, kernels]), tape.gradient(reference_loss, [x, kernels])
    ):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-4)


def test_tensorflow_runs_its_own_grouped_convolution_and_loop_and_keras_ops_the_rest():
    assert method_function("grouped") is tf_dyconv.grouped_per_example
    assert method_function("loop") is tf_dyconv.loop_per_example
    for method in ("patches", "stacked_inputs", "stacked_outputs", "dense_map"):
        assert method_function(method) is dyconv_methods._FUNCTIONS[method]
    with pytest.raises(ValueError, match="Received: method='im2row'"):
        method_function("im2row")


@pytest.mark.parametrize("conv_method", ("auto",) + METHODS)
def test_unknown_batch_under_xla_with_gradients(conv_method):
    layer = DyConv2D(4, 3, strides=2, conv_method=conv_method)
    layer(np.zeros((1, 8, 8, 3), "float32"), np.zeros((1, 12), "float32"))

    @tf.function(
        jit_compile=True,
        input_signature=[tf.TensorSpec([None, 8, 8, 3]), tf.TensorSpec([None, 12])],
    )
    def step(x, task):
        with tf.GradientTape() as tape:
            y = layer(x, task)
            loss = tf.reduce_sum(tf.square(y))
        return y, tape.gradient(loss, layer.trainable_weights)

    x = np.random.RandomState(5).randn(3, 8, 8, 3).astype("float32")
    y, grads = step(x, T2_TASKS)
    np.testing.assert_allclose(y.numpy(), layer(x, T2_TASKS).numpy(), rtol=1e-5, atol=1e-5)
    assert all(np.isfinite(g.numpy()).all() for g in grads)
    assert step(x[:2], T2_TASKS[:2])[0].shape == (2, 4, 4, 4)


def test_config_and_keras_file_round_trip(tmp_path):
    layer = DyConv2D(5, (3, 3), strides=2, num_experts=2, use_bias=False, name="dy")
    clone = DyConv2D.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    image, task = keras.Input((8, 8, 3)), keras.Input((12,))
    model = keras.Model([image, task], layer(image, task))
    path = tmp_path / "layer.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    x = np.random.RandomState(6).randn(3, 8, 8, 3).astype("float32")
    np.testing.assert_allclose(
        loaded([x, T2_TASKS]).numpy(), model([x, T2_TASKS]).numpy(), rtol=1e-6
    )


@pytest.mark.parametrize(
    "kwargs", [dict(filters=0), dict(strides=(1, 2)), dict(num_experts=0), dict(padding="full")]
)
def test_bad_arguments_name_what_was_received(kwargs):
    args = dict(filters=4, kernel_size=3) | kwargs
    with pytest.raises(ValueError, match="Received"):
        DyConv2D(**args)
