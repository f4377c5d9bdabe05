"""Ways to run a dynamic convolution, written once in `keras.ops`.

A DyConv2D convolves example b with `sum_k alpha[b, k] W_k`. Every method below gives
that result (to float rounding) and differs only in cost, which depends on the backend,
the device and the shape (`dygan_tf.layers.dyconv_dispatch` picks one per layer):

- "grouped": per-example kernels, the batch folded into the channel axis, `[1, H, W,
  B*C]`, and convolved once with the kernels as groups `[kh, kw, C, B*F]`; native on
  GPUs.
- "patches": per-example kernels; im2col by strided slices (the k*k shifted views of the
  input stacked on the channel axis) and one batched matmul with each example's kernel.
- "loop": per-example kernels, one dense convolution per example (unrolled: the batch
  must be static).
- "stacked_inputs": no per-example kernels. The K copies `alpha_k * x` are stacked on
  the channel axis and convolved once with the experts stacked on the input axis.
- "stacked_outputs": no per-example kernels. One dense convolution with the K experts'
  K*F outputs, then `sum_k alpha_k y_k`.
- "dense_map": for a kernel that covers most of a tiny map (the discriminator's 2x2 and
  4x4 heads): the convolution is one matmul of the flattened map `[B, H*W*C]` with the
  experts laid out as `[H*W*C, K*H'*W'*F]` (a gather of their taps, zero where a tap
  falls in the padding), then `sum_k alpha_k y_k`. No convolution kernel runs at all.

The stacked forms cost K times the multiply-adds but run dense kernels (forward and both
gradients) on the whole batch; on small maps that wins.

`method_function(name)` is the one factory: the `keras.ops` function of each method, or
on TensorFlow the implementation of `dygan_tf.layers.tf_dyconv` where TensorFlow needs
its own (the grouped convolution's CPU gradient, the loop over an unknown batch).
"""

from keras import name_scope, ops

from dygan_tf.layers.conv_geometry import (  # noqa: F401 (part of this module's API)
    DENSE_MAP_MAX_TAP_RATIO,
    DENSE_MAP_MIN_DENSITY,
    conv_geometry,
    dense_map_applies,
    tap_index,
)
from dygan_tf.utils import backend

METHODS = ("grouped", "patches", "loop", "stacked_inputs", "stacked_outputs", "dense_map")
# The methods that first mix the experts into one kernel per example.
PER_EXAMPLE = ("grouped", "patches", "loop")


def dynamic_conv2d(x, alpha, experts, stride, padding, method):
    """`x[b]` convolved with `sum_k alpha[b, k] * experts[k]`.

    Args:
        x: `[B, H, W, C]` with static H, W, C (B may be unknown, except for "loop" off
            TensorFlow).
        alpha: `[B, K]` mixing weights.
        experts: `[K, kh, kw, C, F]`.
        stride: int, the same on both axes.
        padding: "same" or "valid".
        method: one of METHODS.
    Returns:
        `[B, H', W', F]`.
    """
    padding = padding.lower()
    function = method_function(method)
    if method not in PER_EXAMPLE:
        # The name scopes let benchmarks.profile_step split a layer's time.
        with name_scope("conv"):
            return function(x, alpha, experts, stride, padding)
    with name_scope("mixing"):
        kernels = mix_kernels(alpha, experts)
    with name_scope("conv"):
        return function(x, kernels, stride, padding)


def method_function(method):
    """The function computing `method`: `f(x, alpha, experts, stride, padding)`, or for
    the PER_EXAMPLE methods `f(x, kernels, stride, padding)` with `kernels` `[B, kh, kw,
    C, F]`. TensorFlow's own implementation where it has one, else the `keras.ops` one."""
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}. Received: method={method!r}")
    if backend.is_tensorflow():
        from dygan_tf.layers import tf_dyconv

        function = tf_dyconv.per_example_method(method)
        if function is not None:
            return function
    return _FUNCTIONS[method]


def mix_kernels(alpha, experts):
    """`[B, K] x [K, kh, kw, C, F] -> [B, kh, kw, C, F]` as one matmul.

    Its gradient is one matmul as well; an einsum straight into the grouped layout
    `[kh, kw, C, B, F]` measured ~10x slower backward on TensorFlow
    (benchmarks/results/profile_*).
    """
    k = experts.shape[0]
    flat = ops.matmul(alpha, ops.reshape(experts, (k, -1)))
    return ops.reshape(flat, (-1, *experts.shape[1:]))


def _grouped(x, kernels, stride, padding):
    batch, height, width, channels = x.shape
    _static_batch(batch, "grouped")
    kh, kw, filters = kernels.shape[1], kernels.shape[2], kernels.shape[4]
    folded = ops.reshape(ops.transpose(x, (1, 2, 0, 3)), (1, height, width, batch * channels))
    grouped = ops.reshape(
        ops.transpose(kernels, (1, 2, 3, 0, 4)), (kh, kw, channels, batch * filters)
    )
    y = ops.conv(folded, grouped, stride, padding)
    y = ops.reshape(y, (y.shape[1], y.shape[2], batch, filters))
    return ops.transpose(y, (2, 0, 1, 3))


def _patches(x, kernels, stride, padding):
    """im2col with strided slices: taps ordered (i, j, c) to match the kernel's layout."""
    _, kh, kw, channels, filters = kernels.shape
    height, width = x.shape[1], x.shape[2]
    (out_h, top, padded_h), (out_w, left, padded_w) = (
        conv_geometry(height, kh, stride, padding),
        conv_geometry(width, kw, stride, padding),
    )
    x = ops.pad(
        x, ((0, 0), (top, padded_h - height - top), (left, padded_w - width - left), (0, 0))
    )
    span_h, span_w = stride * (out_h - 1) + 1, stride * (out_w - 1) + 1
    taps = [
        x[:, i : i + span_h : stride, j : j + span_w : stride, :]
        for i in range(kh)
        for j in range(kw)
    ]
    patches = ops.reshape(ops.concatenate(taps, axis=-1), (-1, out_h * out_w, kh * kw * channels))
    matrices = ops.reshape(kernels, (-1, kh * kw * channels, filters))
    return ops.reshape(ops.matmul(patches, matrices), (-1, out_h, out_w, filters))


def _loop(x, kernels, stride, padding):
    batch = x.shape[0]
    _static_batch(batch, "loop")
    # Split and unstacked, not sliced: the gradient of `x[b : b + 1]` is a zero-padded
    # full-batch tensor per example on some backends, that of a split one concatenation.
    return ops.concatenate(
        [
            ops.conv(example, kernel, stride, padding)
            for example, kernel in zip(ops.split(x, batch), ops.unstack(kernels))
        ],
        axis=0,
    )


def _stacked_inputs(x, alpha, experts, stride, padding):
    k, kh, kw, channels, filters = experts.shape
    scaled = x[:, :, :, None, :] * alpha[:, None, None, :, None]  # [B, H, W, K, C]
    scaled = ops.reshape(scaled, (-1, x.shape[1], x.shape[2], k * channels))
    stacked = ops.reshape(ops.transpose(experts, (1, 2, 0, 3, 4)), (kh, kw, k * channels, filters))
    return ops.conv(scaled, stacked, stride, padding)


def _stacked_outputs(x, alpha, experts, stride, padding):
    k, kh, kw, channels, filters = experts.shape
    stacked = ops.reshape(ops.transpose(experts, (1, 2, 3, 0, 4)), (kh, kw, channels, k * filters))
    y = ops.conv(x, stacked, stride, padding)
    with name_scope("expert_mix"):
        y = ops.reshape(y, (-1, y.shape[1], y.shape[2], k, filters))
        return ops.einsum("bhwkf,bk->bhwf", y, alpha)


def _dense_map(x, alpha, experts, stride, padding):
    k, kh, kw, channels, filters = experts.shape
    height, width = x.shape[1], x.shape[2]
    index, (oh, ow) = tap_index((height, width), (kh, kw), stride, padding)
    taps = ops.reshape(experts, (k, kh * kw, channels, filters))
    taps = ops.concatenate([taps, ops.zeros((k, 1, channels, filters), taps.dtype)], axis=1)
    matrix = ops.take(taps, index, axis=1)  # [K, H*W, H'*W', C, F]
    matrix = ops.reshape(
        ops.transpose(matrix, (1, 3, 0, 2, 4)), (height * width * channels, k * oh * ow * filters)
    )
    y = ops.matmul(ops.reshape(x, (-1, height * width * channels)), matrix)
    with name_scope("expert_mix"):
        y = ops.reshape(y, (-1, k, oh * ow * filters))
        y = ops.einsum("bkp,bk->bp", y, alpha)
    return ops.reshape(y, (-1, oh, ow, filters))


_FUNCTIONS = {
    "grouped": _grouped,
    "patches": _patches,
    "loop": _loop,
    "stacked_inputs": _stacked_inputs,
    "stacked_outputs": _stacked_outputs,
    "dense_map": _dense_map,
}


def _static_batch(batch, method):
    if batch is None:
        raise ValueError(
            f"DyConv method {method!r} needs a static batch on the {backend.name()} backend."
        )
