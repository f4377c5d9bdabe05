"""Pure array functions shared by the shard builder and the whole-volume translator.

Reorientation to canonical RAS and back, the brain mask, axial slice choice, slice
resizing and the [-1, 1] normalisation of docs/method.md (reading the volumes is
dygan_tf.data.nifti's). Nothing here draws random numbers or imports TensorFlow.
"""

import nibabel as nib
import numpy as np
import scipy.ndimage

from dygan_tf.config.conditions import BEYOND_VOLUME
from dygan_tf.utils.errors import UserError

ROBUST_PERCENTILE = 99.5
DEFAULT_SLICE_RANGE = (75, 86)  # axial indices 75..85 inclusive, in canonical RAS
DEFAULT_SLICES_PER_VOLUME = 5
# `--source-slices all`: every axial slice that holds brain, i.e. at least
# MIN_BRAIN_VOXELS voxels of `brain_mask` (one: any non-zero voxel in any modality; the
# volumes are skull-stripped, so the background outside the brain is exactly zero).
ALL_SLICES = "all"
MIN_BRAIN_VOXELS = 1
DEFAULT_IMAGE_SIZE = 256
_RAS = nib.orientations.axcodes2ornt("RAS")

# How a volume becomes model input, in words: written into the shard manifest and into
# every exported model's metadata.json, so both always describe these functions.
ORIENTATION = (
    "canonical RAS; axial slice k = volume[:, :, k] rotated 90 degrees "
    "(anterior up, patient right on image left)"
)
NORMALIZATION = {
    "robust_max": f"{ROBUST_PERCENTILE} percentile of brain voxels per volume and modality",
    "formula": "clip(x / robust_max * 2 - 1, -1, 1)",
}

# The training data's voxel size (BraTS: co-registered, skull-stripped, 1 mm isotropic).
# The shard builder refuses any other voxel size: its slice range is in 1 mm slices, and
# resampling training data would add a blur the model then learns. `translate` resamples
# each axial slice to this in-plane spacing and back instead, because the network sees
# only in-plane structure; slices of any thickness are translated one by one.
TRAINING_SPACING_MM = 1.0
SPACING_TOLERANCE_MM = 0.01
IN_PLANE = {
    "spacing_mm": TRAINING_SPACING_MM,
    "rule": "each axial slice resampled to 1 mm in-plane (the shard builder refuses other "
    "voxel sizes), padded to a square with background, then resized to image_size",
}


def to_canonical(data, affine):
    """Reorients a 3-D array to closest canonical (RAS+) voxel axes.

    Same axis permutation and flips as `nib.as_closest_canonical` (no resampling;
    the result is a view of `data` where possible). Returns
    `(canonical_data, canonical_affine, ornt)`; `ornt` is the original volume's
    orientation, which `from_canonical` needs to go back.
    """
    ornt = nib.orientations.io_orientation(affine)
    to_ras = nib.orientations.ornt_transform(ornt, _RAS)
    canonical = nib.orientations.apply_orientation(data, to_ras)
    inv = nib.orientations.inv_ornt_aff(to_ras, data.shape)
    return canonical, affine @ inv, ornt


def from_canonical(canonical_data, ornt):
    """Inverse of `to_canonical`: a canonical array back to the original voxel axes."""
    back = nib.orientations.ornt_transform(_RAS, np.asarray(ornt))
    return np.ascontiguousarray(nib.orientations.apply_orientation(canonical_data, back))


def brain_mask(volumes):
    """Brain = non-zero voxels of the union of modalities (SPEC, ours). Returns bool.

    A NaN or infinite voxel is never brain (`read_volume` reads them as 0 already)."""
    mask = None
    for v in volumes:
        inside = v != 0
        if v.dtype.kind == "f":
            inside &= np.isfinite(v)
        if mask is None:
            mask = inside
        else:
            mask |= inside
    return mask


def parse_slice_range(text):
    """'75:86' -> (75, 86): a Python-style half-open range of axial indices."""
    try:
        start, stop = (int(part) for part in str(text).split(":"))
    except ValueError:
        raise UserError(f"{text!r}: expected START:STOP like 75:86") from None
    if start < 0 or stop <= start:
        raise UserError(f"{text!r}: expected 0 <= START < STOP")
    return start, stop


def parse_source_slices(text):
    """`--source-slices`: "all" -> ALL_SLICES (every brain slice), else
    `parse_slice_range`'s (start, stop)."""
    if str(text).strip().lower() == ALL_SLICES:
        return ALL_SLICES
    if str(text).count(":") != 1:
        raise UserError(f"{text!r}: expected START:STOP like 75:86, or {ALL_SLICES}")
    return parse_slice_range(text)


def brain_slices(mask, min_voxels=MIN_BRAIN_VOXELS):
    """The sorted axial indices of a canonical (RAS) mask whose slice holds at least
    `min_voxels` brain voxels: every slice that holds brain, and no empty one."""
    if min_voxels < 1:
        raise ValueError(f"min_voxels must be >= 1. Received: min_voxels={min_voxels}")
    areas = np.asarray(mask).sum(axis=(0, 1))
    return [int(i) for i in np.flatnonzero(areas >= min_voxels)]


def select_slices(mask, slice_range=DEFAULT_SLICE_RANGE, count=DEFAULT_SLICES_PER_VOLUME):
    """The `count` axial indices in [start, stop) with the largest brain area.

    `mask` is a canonical (RAS) volume, so axial = the third axis. Ties go to the
    lower index; the result is sorted. Raises ValueError if the range does not fit.
    """
    start, stop = slice_range
    depth = mask.shape[2]
    if stop > depth or stop - start < count:
        raise ValueError(
            f"Slice range {start}:{stop} must lie within 0:{depth} and hold at least "
            f"{count} slices. Received: depth={depth}"
        )
    areas = mask[:, :, start:stop].sum(axis=(0, 1))
    indices = np.arange(start, stop)
    order = np.lexsort((indices, -areas))  # largest area first, then lower index
    return sorted(int(i) for i in indices[order[:count]])


def axial_slice(volume, index):
    """Axial slice `index` of a canonical volume as an image: anterior at the top,
    the patient's right on the image's left (radiological view)."""
    return np.rot90(volume[:, :, index])


def context_planes(plane_at, index, context, depth, size):
    """float32 (2 * context + 1, size, size): the axial planes index - context ..
    index + context, in that order (slice `index` in the middle), each as `plane_at(i)`
    gives it on the model's grid; a plane beyond the volume's `depth` slices holds
    BEYOND_VOLUME. The shard builder and `translate` both cut neighbours here.

    >>> context_planes(lambda i: np.full((1, 1), i), 0, 1, 3, 1)[:, 0, 0].tolist()
    [0.0, 0.0, 1.0]
    """
    return np.stack(
        [
            np.asarray(plane_at(i), np.float32)
            if 0 <= i < depth
            else np.full((size, size), BEYOND_VOLUME, np.float32)
            for i in range(index - context, index + context + 1)
        ]
    )


def axial_plane(image):
    """Inverse of `axial_slice`: an image back to a canonical [x, y] plane."""
    return np.rot90(image, -1)


def resize_slice(image, size, order=1):
    """Resizes a 2-D slice to `size` (int or (h, w)); order 1 = bilinear, 0 = nearest.

    Pixel-area aligned (scipy `grid_mode=True`, like half-pixel centres), edges
    replicated; the one resize used for images (order 1) and label maps (order 0).
    """
    size = (size, size) if np.isscalar(size) else tuple(size)
    image = np.asarray(image)
    if image.shape == size:
        return image.copy()
    zoom = (size[0] / image.shape[0], size[1] / image.shape[1])
    out = scipy.ndimage.zoom(image, zoom, order=order, mode="nearest", grid_mode=True)
    if out.shape != size:  # zoom rounds; never off by more than one pixel
        out = out[: size[0], : size[1]]
    return out


def voxel_sizes(affine):
    """Voxel size in mm along each voxel axis (oblique affines included)."""
    return tuple(float(v) for v in nib.affines.voxel_sizes(np.asarray(affine, dtype=float)))


def is_training_spacing(sizes):
    return all(abs(v - TRAINING_SPACING_MM) <= SPACING_TOLERANCE_MM for v in sizes)


class SliceGrid:
    """How one axial slice of `shape` (rows, cols) with `spacing` (mm per row, per col)
    maps onto the model's square grid: resampled to the training spacing (a no-op at
    1 mm), padded to a square of `side` pixels with background, resized to the model.
    The aspect ratio is kept, so a non-square slice is never squeezed."""

    def __init__(self, shape, spacing=(TRAINING_SPACING_MM, TRAINING_SPACING_MM)):
        self.shape = tuple(int(n) for n in shape)
        if is_training_spacing(spacing):
            self.resampled = self.shape
        else:
            self.resampled = tuple(
                max(1, int(round(n * s / TRAINING_SPACING_MM))) for n, s in zip(shape, spacing)
            )
        self.side = max(self.resampled)
        self.offset = tuple((self.side - n) // 2 for n in self.resampled)

    def to_model(self, image, size, order=1, fill=-1.0):
        """A slice of `shape` -> the model's (size, size) input."""
        if self.resampled != self.shape:
            image = resize_slice(image, self.resampled, order)
        if self.resampled != (self.side, self.side):
            square = np.full((self.side, self.side), fill, dtype=np.asarray(image).dtype)
            (r, c), (h, w) = self.offset, self.resampled
            square[r : r + h, c : c + w] = image
            image = square
        return resize_slice(image, size, order)

    def from_model(self, image, order=1):
        """Inverse of `to_model`: a (size, size) output -> a slice of `shape`."""
        image = resize_slice(image, self.side, order)
        (r, c), (h, w) = self.offset, self.resampled
        image = image[r : r + h, c : c + w]
        if self.resampled != self.shape:
            image = resize_slice(image, self.shape, order)
        return image


def axial_grid(canonical_affine, canonical_shape):
    """The SliceGrid of the axial slices (`axial_slice` images) of a canonical volume:
    rows run along canonical y, columns along x."""
    sx, sy, _ = voxel_sizes(canonical_affine)
    return SliceGrid((canonical_shape[1], canonical_shape[0]), (sy, sx))


def robust_max(volume, mask):
    """The 99.5th percentile of brain voxels: the volume's normalisation constant."""
    volume, mask = np.asanyarray(volume), np.asanyarray(mask)
    if volume.flags.f_contiguous and not volume.flags.c_contiguous:
        # NIfTI arrays are Fortran-ordered and boolean indexing walks C order, a
        # plane's stride per step (5x slower); the percentile ignores the order.
        volume, mask = volume.T, mask.T
    values = volume[mask]
    if values.size == 0:
        return 1.0
    value = exact_percentile(values, ROBUST_PERCENTILE)
    return value if value > 0 else float(max(values.max(), 1.0))


def exact_percentile(values, q):
    """`float(np.percentile(values, q))` (method "linear") of a 1-D array, bit for bit.

    Integer data of a modest value range (MR volumes are int16) are counted with
    np.bincount instead of partitioned: the two order statistics around the virtual
    index are read from the cumulative counts and interpolated with NumPy's own
    formula. Other data go to np.percentile itself.
    """
    values = np.asarray(values)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"Expected a non-empty 1-D array. Received: shape={values.shape}")
    if not 0 <= q <= 100:
        raise ValueError(f"Expected 0 <= q <= 100. Received: q={q}")
    if values.dtype.kind not in "iu" or values.dtype.itemsize > 4:
        return float(np.percentile(values, q, method="linear"))
    low, high = int(values.min()), int(values.max())
    bins = max(values.size, 1 << 16)
    if high - low >= bins:  # sparse counts: partitioning is cheaper
        return float(np.percentile(values, q, method="linear"))
    # The virtual index and weight exactly as numpy.lib._function_base_impl._quantile
    # computes them for method "linear" (a Python float q is a weak scalar there).
    n = values.size
    virtual = (n - 1) * np.true_divide(q, 100)
    previous = float(np.floor(virtual))
    if virtual >= n - 1:
        previous, positions = -1.0, (n - 1, n - 1)
    else:
        positions = (int(previous), int(previous) + 1)
    gamma = float(virtual - previous)
    base = 0 if 0 <= low and high < bins else low  # bin i counts the value base + i
    counts = np.bincount(values if base == 0 else values.astype(np.intp) - base)
    # The value at sorted position k is in the first bin whose running count exceeds k.
    bins_at = np.searchsorted(np.cumsum(counts), positions, side="right")
    a, b = (values.dtype.type(base + int(i)) for i in bins_at)
    # numpy's _lerp: a + (b - a) * t, or b - (b - a) * (1 - t) when t >= 0.5.
    diff = b - a
    result = np.add(a, diff * gamma)
    if gamma >= 0.5:
        result = np.subtract(b, diff * (1 - gamma), dtype=result.dtype)
    return float(result)


def normalize(volume, scale):
    """x / scale * 2 - 1, clipped to [-1, 1]; background 0 maps to -1.

    Returns float32; `scale` is `robust_max` of the volume and modality.
    """
    out = np.asarray(volume, dtype=np.float32) * np.float32(2.0 / scale) - np.float32(1.0)
    return np.clip(out, -1.0, 1.0, out=out)


def denormalize(image, scale):
    """Inverse of `normalize` (exact below the clip at robust max): (y + 1) / 2 * scale."""
    return (np.asarray(image, dtype=np.float32) + np.float32(1.0)) * np.float32(scale / 2.0)
