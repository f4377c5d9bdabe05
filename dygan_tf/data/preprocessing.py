"""Pure array functions shared by the shard builder and the whole-volume translator.

NIfTI loading with validation (the one reader of every input, NIfTI-1 and NIfTI-2
only: docs/reference/inputs.md), reorientation to canonical RAS and back, the brain
mask, axial slice choice, slice resizing and the [-1, 1] normalisation of docs/method.md.
Nothing here draws random numbers or imports TensorFlow.
"""

import dataclasses
import gzip
import os
import warnings
import zlib

import nibabel as nib
import numpy as np
import scipy.ndimage

from dygan_tf.utils.errors import UserError

NIFTI_EXTENSIONS = (".nii.gz", ".nii")
MAX_VOLUME_BYTES = 1 << 30  # refuse volumes whose header claims more than 1 GiB
MAX_DIM = 2048
ROBUST_PERCENTILE = 99.5
DEFAULT_SLICE_RANGE = (75, 86)  # axial indices 75..85 inclusive, in canonical RAS
DEFAULT_SLICES_PER_VOLUME = 5
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

_READ_ERRORS = (
    OSError,
    EOFError,
    ValueError,
    zlib.error,
    gzip.BadGzipFile,
    nib.filebasedimages.ImageFileError,
)


def nifti_stem(name):
    """`name` without its NIfTI extension (".nii.gz" or ".nii"), or None if it has none."""
    for ext in NIFTI_EXTENSIONS:
        if name.endswith(ext):
            return name[: -len(ext)]
    return None


# The image classes read, exactly: `type(image)`, because CIFTI-2 shares NIfTI-2's
# file layout and nibabel's pair classes are bases of the single-file ones.
NIFTI_CLASSES = (nib.Nifti1Image, nib.Nifti2Image)
# What each other format nibabel opens is, in words, for the refusal line.
_OTHER_FORMATS = {
    "Cifti2Image": "a CIFTI-2 file (grayordinates on surfaces and parcels, not a voxel grid)",
    "GiftiImage": "a GIFTI surface file",
    "Minc1Image": "a MINC1 volume",
    "Minc2Image": "a MINC2 volume",
    "MGHImage": "a FreeSurfer MGH/MGZ volume",
    "AnalyzeImage": "an Analyze 7.5 image (.hdr/.img pair)",
    "Spm99AnalyzeImage": "an Analyze 7.5 image (.hdr/.img pair, SPM99 flavour)",
    "Spm2AnalyzeImage": "an Analyze 7.5 image (.hdr/.img pair, SPM2 flavour)",
    "Nifti1Pair": "a NIfTI-1 .hdr/.img pair",
    "Nifti2Pair": "a NIfTI-2 .hdr/.img pair",
    "PARRECImage": "a Philips PAR/REC file",
    "EcatImage": "an ECAT file",
    "AFNIImage": "an AFNI BRIK/HEAD volume",
}
CIFTI_EXTENSION_CODE = 32  # NIFTI_ECODE_CIFTI
EXPECTED_FORMAT = "a NIfTI-1 or NIfTI-2 volume in one .nii or .nii.gz file"
NON_FINITE = ("refuse", "background")  # what `read_volume` does with NaN/inf voxels


@dataclasses.dataclass(frozen=True)
class Volume:
    """A 3-D volume as `read_volume` returns it: `data` in the file's voxel order,
    its `affine` and `header`, and how many NaN/inf voxels were read as 0."""

    data: np.ndarray
    affine: np.ndarray
    header: object
    non_finite: int = 0


def _format_error(path, image):
    """The refusal line for a file nibabel opened that is not a NIfTI volume."""
    name = type(image).__name__
    what = _OTHER_FORMATS.get(name, f"a {name} file")
    file_map = getattr(image, "file_map", {})
    if "image" in file_map and "header" in file_map:  # a .hdr/.img pair
        data_file = file_map["image"].filename
        if data_file and not os.path.exists(data_file):
            what += f" whose image file {data_file} is missing"
    hint = "" if name == "Cifti2Image" else " (convert it first)"  # CIFTI: no voxel grid
    return UserError(f"{path}: {what}; expected {EXPECTED_FORMAT}{hint}")


def _is_cifti(header):
    """Whether a NIfTI header carries CIFTI: its extension (code 32) or intent 3000-3099."""
    codes = {e.get_code() for e in header.extensions}
    return CIFTI_EXTENSION_CODE in codes or 3000 <= int(header["intent_code"]) < 3100


def read_header(path):
    """Opens a NIfTI-1 or NIfTI-2 file's header only: `(image, shape)` for a 3-D volume.

    This is the one gate every input passes (`translate`, `evaluate_volumes`, the shard
    builder). A 4-D file with exactly one volume (trailing dimensions of size 1) is read
    as 3-D. Raises UserError naming the file when nibabel cannot open it, when it is
    another format nibabel opens (CIFTI-2, GIFTI, MINC, MGH, Analyze or NIfTI .hdr/.img
    pairs, ...), when it claims an absurd size (more than 1 GiB or a dimension over
    2048: refused before any data is read), when it is a series of several volumes or
    not 3-D, or when its affine is singular. The returned image still has its data on disk.
    """
    path = str(path)
    try:
        with warnings.catch_warnings():  # nibabel's guesses at foreign files: not lines
            warnings.simplefilter("ignore")
            image = nib.load(path)  # reads the header only
    except Exception as e:  # noqa: BLE001 - any failure of nibabel's parsers: a bad file
        what = "unreadable NIfTI file" if nifti_stem(path) else "a file nibabel cannot read"
        raise UserError(f"{path}: {what} ({_reason(e)}); expected {EXPECTED_FORMAT}") from None
    if type(image) not in NIFTI_CLASSES:
        raise _format_error(path, image)
    if _is_cifti(image.header):  # nibabel opens a gzipped CIFTI-2 file as plain NIfTI-2
        raise UserError(f"{path}: {_OTHER_FORMATS['Cifti2Image']}; expected {EXPECTED_FORMAT}")
    header = image.header
    shape = tuple(int(d) for d in header.get_data_shape())
    itemsize = np.dtype(header.get_data_dtype()).itemsize
    nbytes = int(np.prod(shape, dtype=np.float64)) * itemsize if shape else 0
    if any(d > MAX_DIM for d in shape) or nbytes > MAX_VOLUME_BYTES:
        raise UserError(
            f"{path}: header claims shape {shape} x {itemsize} bytes = {nbytes} bytes; "
            f"expected every dimension <= {MAX_DIM} and at most {MAX_VOLUME_BYTES} bytes"
        )
    volume_shape = shape
    while len(volume_shape) > 3 and volume_shape[-1] == 1:
        volume_shape = volume_shape[:-1]
    if len(volume_shape) != 3:
        series = ""
        if len(shape) >= 4:
            count = int(np.prod(shape[3:]))
            series = f" (a series of {count} volumes)"
        raise UserError(
            f"{path}: found a {len(shape)}-D volume of shape {shape}{series}; expected a "
            "3-D volume (or 4-D holding exactly one volume)"
        )
    affine = image.affine
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise UserError(
            f"{path}: voxel-to-world affine {np.round(affine, 3).tolist()} is "
            "singular or not finite; expected a valid qform or sform"
        )
    return image, volume_shape


def read_volume(path, allow_zero=False, non_finite="refuse"):
    """Reads a 3-D NIfTI volume of any stored dtype (`read_header`'s checks first).

    Returns a `Volume` whose `data` is in the file's own voxel order and numeric type as
    nibabel gives it (stored dtype, or float if the header scales it; no copy to
    float32, which would cost more than the read itself). An unscaled .nii.gz volume
    comes back read-only (see `_read_voxels`). NaN/inf voxels (SPM, FSL and ANTs write
    them outside the field of view) are refused with `non_finite="refuse"`; with
    "background" they are set to 0, the background value (a copy is made then), and
    counted in `Volume.non_finite`. Raises UserError naming the file when it is
    unreadable or truncated, or holds only zeros (unless `allow_zero`, e.g. for a
    label map).
    """
    if non_finite not in NON_FINITE:
        raise ValueError(f"non_finite must be one of {NON_FINITE}. Received: {non_finite!r}")
    image, shape = read_header(path)
    try:
        data = _read_voxels(image).reshape(shape)
    except _READ_ERRORS as e:
        raise UserError(f"{path}: truncated or unreadable data ({_reason(e)})") from None
    count = 0
    if data.dtype.kind not in "iub":
        bad = ~np.isfinite(data)
        count = int(np.count_nonzero(bad))
        if count and non_finite == "refuse":
            raise UserError(
                f"{path}: volume holds {count} NaN or infinite voxels; expected finite "
                "values (BraTS volumes have none)"
            )
        if count:
            data = np.array(data)  # a writable copy: the file's array may be read-only
            data[bad] = 0
    if not allow_zero and not data.any():
        nothing = " and NaN/inf" if count else ""
        raise UserError(f"{path}: volume is all zeros{nothing}; expected an MR image")
    return Volume(data, image.affine.copy(), image.header, count)


def load_nifti(path, allow_zero=False):
    """`read_volume(path, allow_zero)` as `(data, affine, header)`; NaN/inf refused."""
    volume = read_volume(path, allow_zero)
    return volume.data, volume.affine, volume.header


def non_finite_note(volume, path, where="read as background (0)"):
    """The `note:` line for a volume read with NaN/inf voxels, or None if it had none."""
    if not volume.non_finite:
        return None
    return (
        f"note: {path}: {volume.non_finite} of {volume.data.size} voxels are NaN or "
        f"infinite (outside the field of view); {where}"
    )


def _read_voxels(image):
    """`np.asanyarray(image.dataobj)`, faster for an unscaled gzipped NIfTI file.

    nibabel inflates a .nii.gz through Python's gzip reader in small chunks, a copy
    each; one zlib call into a buffer of the size the header announces costs 25-45%
    less for a BraTS volume (CRC and length are still checked), and the array is a
    read-only view of that buffer, not a copy. Scaled files and other formats go
    through nibabel.
    """
    proxy = image.dataobj
    filename = str(image.get_filename() or "")
    if not (
        isinstance(image, (nib.Nifti1Image, nib.Nifti2Image))
        and isinstance(proxy, nib.arrayproxy.ArrayProxy)
        and filename.endswith(".gz")
        and proxy.slope == 1
        and proxy.inter == 0
    ):
        return np.asanyarray(proxy)
    size = proxy.offset + int(np.prod(proxy.shape)) * proxy.dtype.itemsize
    with open(filename, "rb") as f:
        payload = f.read()
    data = zlib.decompress(payload, wbits=31, bufsize=size)  # 31: gzip; first member
    if len(data) < size:  # several gzip members (e.g. bgzip): let gzip join them
        data = gzip.decompress(payload)
    if len(data) < size:
        raise EOFError(f"expected {size} bytes of header and voxels, found {len(data)}")
    return np.ndarray(proxy.shape, proxy.dtype, buffer=data, offset=proxy.offset, order=proxy.order)


def _reason(error):
    text = str(error).strip().splitlines()
    first = text[0] if text else ""
    first = first if len(first) <= 160 else first[:157] + "..."
    return f"{type(error).__name__}: {first}".rstrip(": ")


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
