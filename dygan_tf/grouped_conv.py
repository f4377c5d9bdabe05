"""Per-example 2-D convolution: every example in a batch has its own kernel.

The batch is folded into the channel axis and convolved once as a grouped convolution
(one group per example). TensorFlow's CPU kernels run grouped convolutions forward but
refuse their gradients ("Gradients for grouped convolutions are not supported on CPU"),
so the gradient here is written with forward grouped convolutions only:
- input gradient: the zero-dilated output gradient convolved with the flipped kernels;
- kernel gradient: the padded input, examples as channels and input channels as batch,
  convolved with the output gradient as a dilated "kernel".
Spatial sizes must be static (the batch may be unknown).
"""

import tensorflow as tf


def per_example_conv2d(x, kernels, stride, padding):
    """Convolves x[b] with kernels[:, :, :, b, :].

    Args:
        x: `[B, H, W, C]`.
        kernels: `[kh, kw, C, B, F]`.
        stride: int, the same on both axes.
        padding: "SAME" or "VALID" (TensorFlow semantics).
    Returns:
        `[B, H', W', F]`.
    """
    padding = padding.upper()
    height, width = x.shape[1], x.shape[2]
    if height is None or width is None:
        raise ValueError(f"per_example_conv2d needs static spatial sizes. Received: x.shape={x.shape}")
    kh, kw = kernels.shape[0], kernels.shape[1]
    geometry = (_geometry(height, kh, stride, padding), _geometry(width, kw, stride, padding))
    return _conv(x, kernels, stride, padding, geometry)


def _geometry(size, k, stride, padding):
    """(output size, leading pad, padded size) along one axis, as TensorFlow pads."""
    if padding == "VALID":
        return (size - k) // stride + 1, 0, size
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return out, total // 2, size + total


def _fold(x):
    """[B, H, W, C] -> [1, H, W, B*C] (example-major channels)."""
    shape = tf.shape(x)
    folded = tf.transpose(x, [1, 2, 0, 3])
    return tf.reshape(folded, [1, shape[1], shape[2], shape[0] * shape[3]])


def _unfold(y, batch):
    """[1, H, W, B*F] -> [B, H, W, F]."""
    shape = tf.shape(y)
    y = tf.reshape(y, [shape[1], shape[2], batch, shape[3] // batch])
    return tf.transpose(y, [2, 0, 1, 3])


def _dilate(y, stride):
    """Inserts stride-1 zeros between the pixels of y [N, H, W, C]."""
    if stride == 1:
        return y
    shape = tf.shape(y)
    y = y[:, :, None, :, None, :]
    y = tf.pad(y, [[0, 0], [0, 0], [0, stride - 1], [0, 0], [0, stride - 1], [0, 0]])
    y = tf.reshape(y, [shape[0], shape[1] * stride, shape[2] * stride, shape[3]])
    return y[:, : (shape[1] - 1) * stride + 1, : (shape[2] - 1) * stride + 1, :]


def _conv(x, kernels, stride, padding, geometry):
    (out_h, top, padded_h), (out_w, left, padded_w) = geometry
    kh, kw, channels, _, filters = kernels.shape
    height, width = x.shape[1], x.shape[2]

    @tf.custom_gradient
    def conv(x, kernels):
        batch = tf.shape(x)[0]
        grouped = tf.reshape(kernels, [kh, kw, channels, batch * filters])
        y = tf.nn.conv2d(_fold(x), grouped, strides=stride, padding=padding)
        y = _unfold(y, batch)

        def grad(dy):
            dy_folded = _fold(dy)
            # Input gradient: full correlation of the dilated dy with flipped kernels.
            used_h, used_w = (out_h - 1) * stride + kh, (out_w - 1) * stride + kw
            dy_padded = tf.pad(
                _dilate(dy_folded, stride),
                [[0, 0], [kh - 1, kh - 1 + padded_h - used_h],
                 [kw - 1, kw - 1 + padded_w - used_w], [0, 0]],
            )
            flipped = tf.reverse(kernels, axis=[0, 1])
            flipped = tf.transpose(flipped, [0, 1, 4, 3, 2])
            flipped = tf.reshape(flipped, [kh, kw, filters, batch * channels])
            dx = tf.nn.conv2d(dy_padded, flipped, strides=1, padding="VALID")
            dx = _unfold(dx[:, top : top + height, left : left + width, :], batch)

            # Kernel gradient: input channels become the batch, examples the groups.
            x_padded = tf.pad(
                x, [[0, 0], [top, padded_h - height - top], [left, padded_w - width - left], [0, 0]]
            )
            x_padded = tf.transpose(x_padded, [3, 1, 2, 0])  # [C, Hp, Wp, B]
            dy_kernel = tf.reshape(dy_folded, [out_h, out_w, 1, batch * filters])
            dk = tf.nn.conv2d(
                x_padded, dy_kernel, strides=1, padding="VALID", dilations=stride
            )[:, :kh, :kw, :]
            dk = tf.reshape(dk, [channels, kh, kw, batch, filters])
            dk = tf.transpose(dk, [1, 2, 0, 3, 4])
            return dx, dk

        return y, grad

    return conv(x, kernels)
