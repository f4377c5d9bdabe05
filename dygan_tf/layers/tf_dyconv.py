"""TensorFlow's own ways of running a dynamic convolution: only what `keras.ops` cannot
give TensorFlow.

`dygan_tf.layers.dyconv_methods` writes every method once in `keras.ops`; this module
holds the TensorFlow implementations that its factory picks instead, on the TensorFlow
backend only (it is imported nowhere else):

- "grouped": the batch folded into the channel axis and convolved once as a grouped
  convolution (one group per example). TensorFlow's CPU kernels run grouped convolutions
  forward but refuse their gradients ("Gradients for grouped convolutions are not
  supported on CPU"), and Keras's `ops.conv` then compiles the grouped convolution with
  XLA (~10x slower). So the gradient here is written with forward grouped convolutions:
  - input gradient: the output gradient convolved with the flipped kernels, one
    sub-pixel phase per output channel block (no zeros inserted for stride 2);
  - kernel gradient: the padded input, examples as groups and input channels as batch,
    convolved with the output gradient as the "kernel" (stride phases on the batch axis).
- "loop" with an unknown batch (as `fit`'s train function traces it): one dense
  convolution per example in a `tf.map_fn` loop; `keras.ops` needs a static batch to
  unroll the loop.
Spatial sizes must be static (the batch may be unknown).
"""

import tensorflow as tf

from dygan_tf.layers.conv_geometry import conv_geometry as _geometry


def per_example_method(method):
    """TensorFlow's implementation of per-example `method` (`f(x, kernels, stride,
    padding)`, kernels `[B, kh, kw, C, F]`), or None where keras.ops' serves."""
    return {"grouped": grouped_per_example, "loop": loop_per_example}.get(method)


def loop_per_example(x, kernels, stride, padding):
    """One dense convolution per example: unrolled when the batch is static (split and
    unstacked, not sliced: the gradient of `x[b : b + 1]` is a zero-padded full-batch
    tensor per example), a `tf.map_fn` loop when it is not."""
    padding = padding.upper()
    batch = x.shape[0]
    if batch is not None:
        return tf.concat(
            [
                tf.nn.conv2d(example, kernel, stride, padding)
                for example, kernel in zip(tf.split(x, batch), tf.unstack(kernels))
            ],
            0,
        )
    out_h = _geometry(x.shape[1], kernels.shape[1], stride, padding)[0]
    out_w = _geometry(x.shape[2], kernels.shape[2], stride, padding)[0]
    return tf.map_fn(
        lambda args: tf.nn.conv2d(args[0][None], args[1], stride, padding)[0],
        (x, kernels),
        fn_output_signature=tf.TensorSpec([out_h, out_w, kernels.shape[-1]], x.dtype),
    )


def grouped_per_example(x, kernels, stride, padding):
    """`x[b]` convolved with `kernels[b]` as one grouped convolution with the gradient
    written out (module docstring).

    Args:
        x: `[B, H, W, C]` with static H and W.
        kernels: `[B, kh, kw, C, F]`.
        stride: int, the same on both axes.
        padding: "same" or "valid" (TensorFlow semantics).
    Returns:
        `[B, H', W', F]`.
    """
    padding = padding.upper()
    height, width = x.shape[1], x.shape[2]
    if height is None or width is None:
        raise ValueError(f"grouped convolution needs static spatial sizes. Received: {x.shape}")
    kernels = tf.transpose(kernels, [1, 2, 3, 0, 4])  # [kh, kw, C, B, F]
    kh, kw = kernels.shape[0], kernels.shape[1]
    geometry = (_geometry(height, kh, stride, padding), _geometry(width, kw, stride, padding))
    return _conv(x, kernels, stride, padding, geometry)


def _fold(x, height, width):
    """[B, H, W, C] -> [1, H, W, B*C] (example-major channels). The sizes are given as
    Python ints (a gradient's static shape may be unknown), so only B stays dynamic."""
    folded = tf.transpose(x, [1, 2, 0, 3])
    return tf.reshape(folded, [1, height, width, -1])


def _unfold(y, height, width, filters):
    """[1, H, W, B*F] -> [B, H, W, F]."""
    y = tf.reshape(y, [height, width, -1, filters])
    return tf.transpose(y, [2, 0, 1, 3])


def _fit(x, axis_lengths):
    """Crops or zero-pads axes 1 and 2 of x (static) to the given lengths (padding at
    the end)."""
    x = x[:, : axis_lengths[0], : axis_lengths[1], :]
    pads = [[0, 0], [0, axis_lengths[0] - x.shape[1]], [0, axis_lengths[1] - x.shape[2]], [0, 0]]
    return tf.pad(x, pads)


def _input_grad(dy, kernels, s, geometry, size):
    """dx by sub-pixel phases: padded-input pixel s*m + a only meets kernel taps s*q + a.

    Each phase a is a full correlation of dy with the flipped sub-kernel W[s*q + a]; all
    s*s phases come out of one grouped convolution as extra output channels, so no
    zeros are inserted into dy and no multiply is wasted. Only the phase rows and
    columns that land inside the unpadded input are computed (at 8x8 a 3x3 kernel's
    padding ring would otherwise cost 56 % more).
    """
    kh, kw, channels, _, filters = kernels.shape
    qh, qw = -(-kh // s), -(-kw // s)
    sub = tf.pad(kernels, [[0, s * qh - kh], [0, s * qw - kw], [0, 0], [0, 0], [0, 0]])
    sub = tf.reshape(sub, [qh, s, qw, s, channels, -1, filters])
    sub = tf.reverse(sub, axis=[0, 2])
    sub = tf.transpose(sub, [0, 2, 6, 5, 1, 3, 4])  # [qh, qw, F, B, s, s, C]
    sub = tf.reshape(sub, [qh, qw, filters, -1])
    # Phase row m covers padded-input rows s*m .. s*m + s - 1; keep those meeting the input.
    (out_h, top, _), (out_w, left, _) = geometry
    rows = (top // s, (top + size[0] - 1) // s + 1)
    cols = (left // s, (left + size[1] - 1) // s + 1)
    # dy rows past the last phase row meet nothing.
    dy = _fold(dy, out_h, out_w)[:, : rows[1], : cols[1], :]
    dy_padded = tf.pad(
        dy,
        [
            [0, 0],
            [qh - 1 - rows[0], max(rows[1] - out_h, 0)],
            [qw - 1 - cols[0], max(cols[1] - out_w, 0)],
            [0, 0],
        ],
    )
    phases = tf.nn.conv2d(dy_padded, sub, strides=1, padding="VALID")  # [1, m_h, m_w, B*s*s*C]
    m_h, m_w = rows[1] - rows[0], cols[1] - cols[0]
    phases = tf.reshape(phases, [m_h, m_w, -1, s, s, channels])
    dx = tf.transpose(phases, [2, 0, 3, 1, 4, 5])
    dx = tf.reshape(dx, [-1, m_h * s, m_w * s, channels])
    top, left = top - s * rows[0], left - s * cols[0]
    return dx[:, top : top + size[0], left : left + size[1], :]


def _kernel_grad(x, dy, s, geometry, kernel_shape):
    """dW[s*q + a] = sum_o x_a[o + q] dy[o], with x_a the phase-a subsampled input.

    Input channels become the batch and examples the groups, dy acts as the kernel; the
    s*s phases of the input are stacked on the batch axis, so no dilation is needed.
    """
    (out_h, top, padded_h), (out_w, left, padded_w) = geometry
    kh, kw, channels, filters = kernel_shape
    qh, qw = -(-kh // s), -(-kw // s)
    lh, lw = out_h + qh - 1, out_w + qw - 1
    x_padded = tf.pad(x, [[0, 0], [top, 0], [left, 0], [0, 0]])
    x_padded = _fit(x_padded, (s * lh, s * lw))
    x_padded = tf.reshape(x_padded, [-1, lh, s, lw, s, channels])
    x_phases = tf.transpose(x_padded, [2, 4, 5, 1, 3, 0])  # [s, s, C, lh, lw, B]
    x_phases = tf.reshape(x_phases, [s * s * channels, lh, lw, -1])
    dy_kernel = tf.reshape(_fold(dy, out_h, out_w), [out_h, out_w, 1, -1])
    dk = tf.nn.conv2d(x_phases, dy_kernel, strides=1, padding="VALID")  # [s*s*C, qh, qw, B*F]
    dk = tf.reshape(dk, [s, s, channels, qh, qw, -1, filters])
    dk = tf.transpose(dk, [3, 0, 4, 1, 2, 5, 6])  # [qh, s, qw, s, C, B, F]
    dk = tf.reshape(dk, [qh * s, qw * s, channels, -1, filters])
    return dk[:kh, :kw]


def _conv(x, kernels, stride, padding, geometry):
    (out_h, top, padded_h), (out_w, left, padded_w) = geometry
    kh, kw, channels, _, filters = kernels.shape
    height, width = x.shape[1], x.shape[2]

    # The gradient is traced outside the layer's name scope; re-entering it (absolute
    # scopes end in "/") lets a profile attribute each pass to its layer.
    scope = tf.get_current_name_scope()

    @tf.custom_gradient
    def conv(x, kernels):
        grouped = tf.reshape(kernels, [kh, kw, channels, -1])
        y = tf.nn.conv2d(_fold(x, height, width), grouped, strides=stride, padding=padding)
        y = _unfold(y, out_h, out_w, filters)

        def grad(dy):
            with tf.name_scope(f"{scope}/input_grad/" if scope else "input_grad"):
                dx = _input_grad(dy, kernels, stride, geometry, (height, width))
            with tf.name_scope(f"{scope}/kernel_grad/" if scope else "kernel_grad"):
                dk = _kernel_grad(x, dy, stride, geometry, (kh, kw, channels, filters))
            return dx, dk

        return y, grad

    return conv(x, kernels)
