"""The one reader of every input volume: NIfTI-1 and NIfTI-2 only, everything else
nibabel opens refused in one line (docs/reference/inputs.md).

`read_header` is the gate (format, shape, size, affine, before any voxel is read);
`read_volume` reads the voxels, refusing or zeroing NaN/inf ones; `load_nifti` is the
refusing form the shard builder uses. Nothing here imports TensorFlow.
"""

import dataclasses
import gzip
import os
import warnings
import zlib

import nibabel as nib
import numpy as np

from dygan_tf.utils.errors import UserError

NIFTI_EXTENSIONS = (".nii.gz", ".nii")
MAX_VOLUME_BYTES = 1 << 30  # refuse volumes whose header claims more than 1 GiB
MAX_DIM = 2048

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
