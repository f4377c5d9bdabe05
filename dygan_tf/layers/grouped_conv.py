"""Per-example 2-D convolution: every example in a batch has its own kernel.

Two ways, chosen by shape (`method="auto"`):
- "patches" for tiny output maps (up to 8x8, the discriminator's heads): the k*k shifted
  views of the input are stacked on the channel axis and multiplied by each example's
  kernel in one batched matmul; autodiff gives the gradient (slices, pads, matmuls).
  There TensorFlow's convolution kernels, the backprop ones above all, are slowest.
  At 16x16x512 both ways measured 2.4-3x a static conv (batch 3 and 12), and at larger
  maps the patch tensor (k*k times the input) costs memory and bandwidth, so it stops
  at 8x8 (benchmarks/dyconv_bench.py --breakdown).
- "grouped" for larger maps: the batch is folded into the channel axis and convolved
  once as a grouped convolution (one group per example). TensorFlow's CPU kernels run
  grouped convolutions forward but refuse their gradients ("Gradients for grouped
  convolutions are not supported on CPU"), so the gradient here is written with forward
  grouped convolutions only:
  - input gradient: the output gradient convolved with the flipped kernels, one
    sub-pixel phase per output channel block (no zeros inserted for stride 2);
  - kernel gradient: the padded input, examples as groups and input channels as batch,
    convolved with the output gradient as the "kernel" (stride phases on the batch axis).
Spatial sizes must be static (the batch may be unknown).
"""

import tensorflow as tf

from dygan_tf.layers.dyconv_ops import conv_geometry as _geometry

FORMS = ("auto", "grouped", "patches")
# "auto" uses patches up to this many output pixels per example (see benchmarks/).
PATCHES_MAX_PIXELS = 8 * 8


def choose_form(out_height, out_width):
    """The faster way for an output map of this size (measured on CPU, see module doc)."""
    return "patches" if out_height * out_width <= PATCHES_MAX_PIXELS else "grouped"


def grouped_conv2d(x, kernels, stride, padding, method="auto"):
    """Convolves x[b] with kernels[:, :, :, b, :].

    Args:
        x: `[B, H, W, C]`.
        kernels: `[kh, kw, C, B, F]`.
        stride: int, the same on both axes.
        padding: "SAME" or "VALID" (TensorFlow semantics).
        method: "auto", "grouped" or "patches" (the same result either way).
    Returns:
        `[B, H', W', F]`.
    """
    padding = padding.upper()
    if method not in FORMS:
        raise ValueError(f"`method` must be one of {FORMS}. Received: method={method!r}")
    height, width = x.shape[1], x.shape[2]
    if height is None or width is None:
        raise ValueError(f"grouped_conv2d needs static spatial sizes. Received: x.shape={x.shape}")
    kh, kw = kernels.shape[0], kernels.shape[1]
    geometry = (_geometry(height, kh, stride, padding), _geometry(width, kw, stride, padding))
    if method == "auto":
        method = choose_form(geometry[0][0], geometry[1][0])
    if method == "patches":
        return _patches_conv(x, kernels, stride, geometry)
    return _conv(x, kernels, stride, padding, geometry)


def _patches_conv(x, kernels, stride, geometry):
    """im2col with strided slices: taps ordered (i, j, c) to match the kernel's layout."""
    (out_h, top, padded_h), (out_w, left, padded_w) = geometry
    kh, kw, channels, _, filters = kernels.shape
    height, width = x.shape[1], x.shape[2]
    x = tf.pad(x, [[0, 0], [top, padded_h - height - top], [left, padded_w - width - left], [0, 0]])
    span_h, span_w = stride * (out_h - 1) + 1, stride * (out_w - 1) + 1
    taps = [
        x[:, i : i + span_h : stride, j : j + span_w : stride, :]
        for i in range(kh)
        for j in range(kw)
    ]
    patches = tf.reshape(tf.concat(taps, axis=-1), [-1, out_h * out_w, kh * kw * channels])
    matrices = tf.reshape(tf.transpose(kernels, [3, 0, 1, 2, 4]), [-1, kh * kw * channels, filters])
    return tf.reshape(tf.matmul(patches, matrices), [-1, out_h, out_w, filters])


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
