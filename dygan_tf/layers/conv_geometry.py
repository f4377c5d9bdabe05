"""The geometry of a 2-D convolution, in plain Python and numpy: output sizes and
padding as TensorFlow pads, which kernel tap joins which pixels, and the rule that sends
a kernel covering most of a tiny map to the "dense_map" method."""

import numpy as np

# "auto" takes "dense_map" where at least this share of the (input pixel, output pixel)
# pairs meet through a kernel tap, and the matrix holds at most this many times the
# experts' taps (its gather, matmuls and their gradients move that much more memory).
DENSE_MAP_MIN_DENSITY = 0.5
DENSE_MAP_MAX_TAP_RATIO = 2


def conv_geometry(size, k, stride, padding):
    """(output size, leading pad, padded size) along one axis, as TensorFlow pads
    ("same": the extra pixel of an odd total at the end)."""
    if padding.upper() == "VALID":
        return (size - k) // stride + 1, 0, size
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return out, total // 2, size + total


def tap_index(in_size, kernel_size, stride, padding):
    """Which kernel tap joins each input pixel to each output pixel of a 2-D convolution.

    Args:
        in_size, kernel_size: (height, width) pairs of Python ints.
        stride: int; padding: "same" or "valid" (TensorFlow's padding).
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
