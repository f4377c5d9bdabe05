"""Random smooth fields and trilinear sampling on the BraTS grid, shared by both
phantoms (`phantom`, v1, and `phantom_v2`)."""

import numpy as np

SHAPE = (240, 240, 155)  # BraTS's grid (x, y, z) at 1 mm


def _interp_matrix(coarse, fine):
    """(fine, coarse) weights of linear, pixel-area aligned upsampling along one axis."""
    x = np.clip((np.arange(fine) + 0.5) * coarse / fine - 0.5, 0, coarse - 1)
    lo = np.minimum(np.floor(x).astype(int), coarse - 2) if coarse > 1 else np.zeros(fine, int)
    w = np.zeros((fine, coarse), dtype=np.float32)
    w[np.arange(fine), lo] = 1 - (x - lo)
    if coarse > 1:
        w[np.arange(fine), lo + 1] = x - lo
    return w


def smooth_field(rng, coarse_shape, shape):
    """A smooth random field of `shape`: coarse normal noise upsampled linearly (as
    three small matrix products, far cheaper than a 3-D zoom)."""
    field = rng.standard_normal(coarse_shape).astype(np.float32)
    for axis, (c, n) in enumerate(zip(coarse_shape, shape)):
        field = np.moveaxis(np.tensordot(_interp_matrix(c, n), field, axes=(1, axis)), 0, axis)
    return np.ascontiguousarray(field)


def trilinear(padded, coords):
    """Samples `padded` (X, Y, Z, C), zero-padded by one voxel, at float voxel `coords`
    (3, N) of the unpadded volume -> (N, C); zero outside. All channels share one set
    of corner indices and weights."""
    shape = padded.shape[:3]
    flat = padded.reshape(-1, padded.shape[3])
    strides = (shape[1] * shape[2], shape[2], 1)
    index = np.zeros(coords.shape[1], dtype=np.int64)
    weights = []
    for axis in range(3):
        c = np.clip(coords[axis] + 1, 0, shape[axis] - 1.001)
        base = c.astype(np.int32)  # floor, as c >= 0
        frac = c - base
        index += base * strides[axis]
        weights.append((1 - frac, frac))
    out = np.zeros((coords.shape[1], padded.shape[3]), dtype=np.float32)
    for corner in range(8):
        offs = [(corner >> axis) & 1 for axis in range(3)]
        weight = weights[0][offs[0]] * weights[1][offs[1]] * weights[2][offs[2]]
        offset = sum(o * s for o, s in zip(offs, strides))
        out += np.take(flat, index + offset, axis=0) * weight[:, None]
    return out
