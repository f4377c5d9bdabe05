"""Ways to run a dynamic convolution, and the measured table that picks one per shape.

A DyConv2D convolves example b with `sum_k alpha[b, k] W_k`. Every method below gives
that result (to float rounding) and differs only in cost:
- "grouped": per-example kernels, the batch folded into one grouped convolution, with
  the hand-written gradient of grouped_conv.py.
- "patches": per-example kernels, im2col by strided slices and one batched matmul.
- "loop": per-example kernels, one dense convolution per example with TensorFlow's own
  gradients: unrolled when the batch is static, a `tf.map_fn` loop when it is not.
- "stacked_inputs": no per-example kernels. The K copies `alpha_k * x` are stacked on
  the channel axis and convolved once with the experts stacked on the input axis.
- "stacked_outputs": no per-example kernels. One dense convolution with the K experts'
  K*F outputs, then `sum_k alpha_k y_k`.
- "dense_map": for a kernel that covers most of a tiny map (the discriminator's 2x2 and
  4x4 heads): the convolution is one matmul of the flattened map `[B, H*W*C]` with the
  experts laid out as `[H*W*C, K*H'*W'*F]` (a gather of their taps, zero where a tap
  falls in the padding), then `sum_k alpha_k y_k`. No convolution kernel runs at all,
  forward or backward (TensorFlow's convolution gradients on 2x2 maps cost more than
  the arithmetic: benchmarks/results/profile_demo_*).
The stacked forms cost K times the multiply-adds but run TensorFlow's dense kernels
(forward and both gradients) on the whole batch; on small maps that wins.

`choose_method` reads the table `CPU_TABLE`, measured by `python -m
benchmarks.dyconv_dispatch` on the layer shapes of the demo and paper presets
(fwd + bwd with an unknown batch, as `fit` runs). A shape missing from it takes the
method of the nearest measured shape. On GPUs the grouped convolution is native, so it
is used there.
"""

import math

import tensorflow as tf

from dygan_tf.layers import grouped_conv
from dygan_tf.layers.dyconv_ops import (  # noqa: F401 (shared with the other backends)
    DENSE_MAP_MAX_TAP_RATIO,
    DENSE_MAP_MIN_DENSITY,
    dense_map_applies,
    tap_index,
)

METHODS = ("grouped", "patches", "loop", "stacked_inputs", "stacked_outputs", "dense_map")
MIXED_KERNEL_METHODS = ("grouped", "patches", "loop")

# (out_h * out_w, in channels, filters, kernel size, stride) -> fastest method, measured
# on a 2-core AVX-512 EPYC with oneDNN on: benchmarks/results/dyconv_dispatch_cpu.json
# (regenerate with `python -m benchmarks.dyconv_dispatch --print-table`). Demo shapes
# first, then the paper's; generator rows at batch 3, discriminator rows at batch 6.
CPU_TABLE = {
    (256, 192, 64, 3, 1): "loop",
    (256, 64, 64, 3, 1): "loop",
    (1024, 96, 32, 3, 1): "loop",
    (1024, 32, 32, 3, 1): "grouped",
    (4096, 48, 16, 3, 1): "loop",
    (4096, 16, 16, 3, 1): "loop",
    (4096, 16, 1, 1, 1): "grouped",
    (1024, 2, 16, 4, 2): "grouped",
    (256, 16, 32, 4, 2): "grouped",
    (64, 32, 64, 4, 2): "stacked_inputs",
    (16, 64, 128, 4, 2): "stacked_inputs",
    (4, 128, 128, 4, 2): "stacked_outputs",
    (16, 128, 256, 4, 1): "patches",
    (4, 128, 256, 4, 1): "stacked_inputs",
    (64, 64, 128, 4, 1): "grouped",
    (1024, 1536, 512, 3, 1): "loop",
    (1024, 512, 512, 3, 1): "loop",
    (4096, 768, 256, 3, 1): "loop",
    (4096, 256, 256, 3, 1): "loop",
    (16384, 384, 128, 3, 1): "loop",
    (16384, 128, 128, 3, 1): "loop",
    (65536, 192, 64, 3, 1): "loop",
    (65536, 64, 64, 3, 1): "loop",
    (65536, 64, 1, 1, 1): "patches",
    (16384, 2, 64, 4, 2): "loop",
    (4096, 64, 128, 4, 2): "loop",
    (1024, 128, 256, 4, 2): "loop",
    (256, 256, 512, 4, 2): "loop",
    (64, 512, 512, 4, 2): "patches",
    (256, 512, 1024, 4, 1): "patches",
    (64, 512, 1024, 4, 1): "patches",
    (1024, 256, 512, 4, 1): "loop",
}


def choose_method(out_pixels, channels, filters, kernel_size, stride, table=None):
    """The measured-fastest method for a layer of this shape (nearest measured shape)."""
    return choose_method_with_source(out_pixels, channels, filters, kernel_size, stride, table)[0]


def choose_method_with_source(out_pixels, channels, filters, kernel_size, stride, table=None):
    """`(method, where the choice came from)`: "gpu", "table", "nearest table shape" or
    "size rule" (an empty table)."""
    if tf.config.list_logical_devices("GPU"):
        return "grouped", "gpu"
    table = CPU_TABLE if table is None else table
    key = (out_pixels, channels, filters, kernel_size, stride)
    if key in table:
        return table[key], "table"
    if not table:
        side = int(math.sqrt(out_pixels))
        return grouped_conv.choose_form(side, side), "size rule"

    def distance(other):
        pixels, c, f, k, s = other
        return (
            abs(math.log(pixels / out_pixels))
            + abs(math.log(c / channels))
            + abs(math.log(f / filters))
            + abs(math.log(k / kernel_size))
            + (0.5 if s != stride else 0.0)
        )

    return table[min(table, key=distance)], "nearest table shape"


def mix_kernels(alpha, experts):
    """`[B, K] x [K, kh, kw, C, F] -> [B, kh, kw, C, F]` as one matmul.

    Its gradient is one matmul as well; an einsum straight into the grouped layout
    `[kh, kw, C, B, F]` measured ~10x slower backward (benchmarks/results/profile_*).
    """
    k = experts.shape[0]
    flat = tf.matmul(alpha, tf.reshape(experts, [k, -1]))
    return tf.reshape(flat, [-1, *experts.shape[1:]])


def dynamic_conv2d(x, alpha, experts, stride, padding, method):
    """`x[b]` convolved with `sum_k alpha[b, k] * experts[k]`.

    Args:
        x: `[B, H, W, C]`, static H and W (B may be unknown).
        alpha: `[B, K]` mixing weights.
        experts: `[K, kh, kw, C, F]`.
        stride: int, the same on both axes.
        padding: "SAME" or "VALID".
        method: one of METHODS.
    Returns:
        `[B, H', W', F]`.
    """
    padding = padding.upper()
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}. Received: method={method!r}")
    if method == "stacked_inputs":
        with tf.name_scope("conv"):
            return _stacked_inputs(x, alpha, experts, stride, padding)
    if method == "stacked_outputs":
        with tf.name_scope("conv"):
            return _stacked_outputs(x, alpha, experts, stride, padding)
    if method == "dense_map":
        with tf.name_scope("conv"):
            return _dense_map(x, alpha, experts, stride, padding)
    with tf.name_scope("mixing"):
        kernels = mix_kernels(alpha, experts)
    with tf.name_scope("conv"):
        return per_example_conv2d(x, kernels, stride, padding, method)


def per_example_conv2d(x, kernels, stride, padding, method):
    """`x[b]` convolved with `kernels[b]` (`[B, kh, kw, C, F]`) by a per-kernel method."""
    if method == "loop":
        return _loop(x, kernels, stride, padding)
    if method not in ("grouped", "patches"):
        raise ValueError(
            f"`method` must be one of {MIXED_KERNEL_METHODS}. Received: method={method!r}"
        )
    return grouped_conv.grouped_conv2d(
        x, tf.transpose(kernels, [1, 2, 3, 0, 4]), stride, padding, method
    )


def _loop(x, kernels, stride, padding):
    batch = x.shape[0]
    if batch is not None:
        # A static batch: unrolled dense convolutions. Split and unstacked, not sliced:
        # the gradient of `x[b : b + 1]` is a zero-padded full-batch tensor per example
        # (StridedSliceGrad), that of a split one concatenation.
        return tf.concat(
            [
                tf.nn.conv2d(example, kernel, stride, padding)
                for example, kernel in zip(tf.split(x, batch), tf.unstack(kernels))
            ],
            0,
        )
    out_h = grouped_conv._geometry(x.shape[1], kernels.shape[1], stride, padding)[0]
    out_w = grouped_conv._geometry(x.shape[2], kernels.shape[2], stride, padding)[0]
    return tf.map_fn(
        lambda args: tf.nn.conv2d(args[0][None], args[1], stride, padding)[0],
        (x, kernels),
        fn_output_signature=tf.TensorSpec([out_h, out_w, kernels.shape[-1]], x.dtype),
    )


def _stacked_inputs(x, alpha, experts, stride, padding):
    k, kh, kw, channels, filters = experts.shape
    scaled = x[:, :, :, None, :] * alpha[:, None, None, :, None]  # [B, H, W, K, C]
    scaled = tf.reshape(scaled, [-1, x.shape[1], x.shape[2], k * channels])
    stacked = tf.reshape(tf.transpose(experts, [1, 2, 0, 3, 4]), [kh, kw, k * channels, filters])
    return tf.nn.conv2d(scaled, stacked, stride, padding)


def _stacked_outputs(x, alpha, experts, stride, padding):
    k, kh, kw, channels, filters = experts.shape
    stacked = tf.reshape(tf.transpose(experts, [1, 2, 3, 0, 4]), [kh, kw, channels, k * filters])
    y = tf.nn.conv2d(x, stacked, stride, padding)
    with tf.name_scope("expert_mix"):
        y = tf.reshape(y, [-1, y.shape[1], y.shape[2], k, filters])
        return tf.einsum("bhwkf,bk->bhwf", y, alpha)


def _dense_map(x, alpha, experts, stride, padding):
    k, kh, kw, channels, filters = experts.shape
    height, width = x.shape[1], x.shape[2]
    index, (oh, ow) = tap_index((height, width), (kh, kw), stride, padding)
    taps = tf.reshape(experts, [k, kh * kw, channels, filters])
    taps = tf.concat([taps, tf.zeros([k, 1, channels, filters], taps.dtype)], axis=1)
    matrix = tf.gather(taps, index, axis=1)  # [K, H*W, H'*W', C, F]
    matrix = tf.reshape(
        tf.transpose(matrix, [1, 3, 0, 2, 4]), [height * width * channels, k * oh * ow * filters]
    )
    y = tf.matmul(tf.reshape(x, [-1, height * width * channels]), matrix)
    with tf.name_scope("expert_mix"):
        y = tf.reshape(y, [-1, k, oh * ow * filters])
        y = tf.einsum("bkp,bk->bp", y, alpha)
    return tf.reshape(y, [-1, oh, ow, filters])
