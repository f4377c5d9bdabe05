"""A dynamic convolution in `keras.ops` only: the methods every Keras backend runs.

A DyConv2D convolves example b with `sum_k alpha[b, k] W_k`. This module computes that
with backend-neutral operations, for JAX and PyTorch (TensorFlow has its own fast paths
in dyconv_methods.py, imported only on that backend). Every method gives the same result
to float rounding and differs only in cost, which depends on the backend and the device
(measured where it runs: `choose_ops_method`):
- "loop": one dense convolution per example (the batch must be static; JAX traces it
  with the real batch). XLA's CPU grouped convolution is slow, so this is JAX's CPU way.
- "grouped": the batch folded into the channel axis, `[1, H, W, B*C]`, convolved once with
  the per-example kernels as groups `[kh, kw, C, B*F]`; native on GPUs.
- "stacked_inputs" / "stacked_outputs": the K experts stacked into one dense convolution
  (no per-example kernels; K times the multiply-adds, the batch in one kernel).
- "dense_map": a kernel covering most of a tiny map (the discriminator's heads): one
  matmul of the flattened map with the experts' taps laid out as a matrix.

The geometry helpers (`conv_geometry`, `tap_index`, `dense_map_applies`) are plain
Python and numpy, shared with the TensorFlow methods.
"""

import numpy as np

OPS_METHODS = ("loop", "grouped", "stacked_inputs", "stacked_outputs", "dense_map")
# "auto" takes "dense_map" where at least this share of the (input pixel, output pixel)
# pairs meet through a kernel tap, and the matrix holds at most this many times the
# experts' taps (its gather, matmuls and their gradients move that much more memory).
DENSE_MAP_MIN_DENSITY = 0.5
DENSE_MAP_MAX_TAP_RATIO = 2


def conv_geometry(size, k, stride, padding):
    """(output size, leading pad, padded size) along one axis, as TensorFlow pads
    ("SAME": the extra pixel of an odd total at the end)."""
    if padding.upper() == "VALID":
        return (size - k) // stride + 1, 0, size
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return out, total // 2, size + total


def tap_index(in_size, kernel_size, stride, padding):
    """Which kernel tap joins each input pixel to each output pixel of a 2-D convolution.

    Args:
        in_size, kernel_size: (height, width) pairs of Python ints.
        stride: int; padding: "SAME" or "VALID" (TensorFlow's padding).
    Returns:
        `(index, out_size)`: `index[i, o]` is `ty * kw + tx` for input pixel i and output
        pixel o (row-major), or `kh * kw` where no tap joins them.
    """
    (h, w), (kh, kw) = in_size, kernel_size
    axes = [conv_geometry(n, k, stride, padding) for n, k in ((h, kh), (w, kw))]
    (oh, pad_y, _), (ow, pad_x, _) = axes
    index = np.full((h * w, oh * ow), kh * kw, np.int32)
    for oy in range(oh):
        for ox in range(ow):
            for ty in range(kh):
                iy = oy * stride - pad_y + ty
                for tx in range(kw):
                    ix = ox * stride - pad_x + tx
                    if 0 <= iy < h and 0 <= ix < w:
                        index[iy * w + ix, oy * ow + ox] = ty * kw + tx
    return index, (oh, ow)


def dense_map_applies(in_size, kernel_size, stride, padding):
    """Whether "dense_map" is the natural way for this geometry: a small map on which
    most (input, output) pixel pairs meet through a tap (see DENSE_MAP_MIN_DENSITY)."""
    (h, w), (kh, kw) = in_size, kernel_size
    if h is None or w is None:
        return False
    oh = conv_geometry(h, kh, stride, padding)[0]
    ow = conv_geometry(w, kw, stride, padding)[0]
    # The size test first: the index itself has H*W*H'*W' entries.
    if h * w * oh * ow > DENSE_MAP_MAX_TAP_RATIO * kh * kw:
        return False
    index, _ = tap_index((h, w), (kh, kw), stride, padding)
    return float(np.mean(index < kh * kw)) >= DENSE_MAP_MIN_DENSITY


def ops_dynamic_conv2d(x, alpha, experts, stride, padding, method):
    """`x[b]` convolved with `sum_k alpha[b, k] * experts[k]`, in `keras.ops`.

    Args:
        x: `[B, H, W, C]` with static H, W, C (and B for "loop" and "grouped").
        alpha: `[B, K]` mixing weights.
        experts: `[K, kh, kw, C, F]`.
        stride: int, the same on both axes.
        padding: "same" or "valid".
        method: one of OPS_METHODS.
    Returns:
        `[B, H', W', F]`.
    """
    from keras import ops

    padding = padding.lower()
    k, kh, kw, channels, filters = experts.shape
    if method == "stacked_inputs":
        scaled = x[:, :, :, None, :] * alpha[:, None, None, :, None]  # [B, H, W, K, C]
        scaled = ops.reshape(scaled, (-1, x.shape[1], x.shape[2], k * channels))
        stacked = ops.reshape(
            ops.transpose(experts, (1, 2, 0, 3, 4)), (kh, kw, k * channels, filters)
        )
        return ops.conv(scaled, stacked, stride, padding)
    if method == "stacked_outputs":
        stacked = ops.reshape(
            ops.transpose(experts, (1, 2, 3, 0, 4)), (kh, kw, channels, k * filters)
        )
        y = ops.conv(x, stacked, stride, padding)
        y = ops.reshape(y, (-1, y.shape[1], y.shape[2], k, filters))
        return ops.einsum("bhwkf,bk->bhwf", y, alpha)
    if method == "dense_map":
        return _dense_map(x, alpha, experts, stride, padding)
    kernels = ops.reshape(
        ops.matmul(alpha, ops.reshape(experts, (k, -1))), (-1, kh, kw, channels, filters)
    )
    batch = x.shape[0]
    if batch is None:
        raise ValueError(f"DyConv method {method!r} needs a static batch. Received: {x.shape}")
    if method == "loop":
        return ops.concatenate(
            [ops.conv(x[b : b + 1], kernels[b], stride, padding) for b in range(batch)], axis=0
        )
    if method == "grouped":
        height, width = x.shape[1], x.shape[2]
        folded = ops.reshape(ops.transpose(x, (1, 2, 0, 3)), (1, height, width, batch * channels))
        grouped = ops.reshape(
            ops.transpose(kernels, (1, 2, 3, 0, 4)), (kh, kw, channels, batch * filters)
        )
        y = ops.conv(folded, grouped, stride, padding)
        y = ops.reshape(y, (y.shape[1], y.shape[2], batch, filters))
        return ops.transpose(y, (2, 0, 1, 3))
    raise ValueError(f"`method` must be one of {OPS_METHODS}. Received: method={method!r}")


def _dense_map(x, alpha, experts, stride, padding):
    from keras import ops

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
    y = ops.reshape(y, (-1, k, oh * ow * filters))
    y = ops.einsum("bkp,bk->bp", y, alpha)
    return ops.reshape(y, (-1, oh, ow, filters))
