"""The brains the phantoms are built from: soft CSF/GM/WM fractions on one grid.

Every anatomy is resampled onto MNI152 2009's 1 mm grid (197 x 233 x 189, nilearn's
templates), so the phantoms' deformations address any of them the same way:

- `mni152`: nilearn's MNI152 2009 T1, GM and WM templates (CSF = 1 - GM - WM in the mask);
- `colin27`: one real subject, Colin Holmes's 27-scan average (Holmes et al. 1998), from
  Debian's mricron-data (`ch2bet.nii.gz`, brain extracted) or any brain-extracted T1 given
  as `template`, segmented here by `segment_t1` (see its docstring for the method).
"""

import dataclasses
import functools
import os

import nibabel as nib
import numpy as np
import scipy.ndimage

from dygan_tf.utils.errors import UserError

ANATOMIES = ("mni152", "colin27")
COLIN27_PATH = "/usr/share/mricron/templates/ch2bet.nii.gz"
# MNI152 2009 1 mm (nilearn): voxel (i, j, k) -> world (i - 98, j - 134, k - 72) mm.
GRID_SHAPE = (197, 233, 189)
GRID_AFFINE = np.array(
    [[1.0, 0, 0, -98], [0, 1.0, 0, -134], [0, 0, 1.0, -72], [0, 0, 0, 1]], dtype=np.float64
)


@dataclasses.dataclass(frozen=True)
class Anatomy:
    """One anatomy on the MNI152 grid: its name, where it came from, and float32 volumes
    of GRID_SHAPE: `t1` (template intensities on MNI152's scale), `csf`, `gm`, `wm`
    (fractions summing to 1 in the brain) and `mask` (0/1)."""

    name: str
    source: str
    t1: np.ndarray
    csf: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    mask: np.ndarray

    def volumes_ml(self):
        """{tissue: volume in ml} (1 mm voxels)."""
        return {t: float(getattr(self, t).sum() / 1000.0) for t in ("csf", "gm", "wm")}


def colin27_path(template=None):
    """The Colin27 T1 to read: `template`, else Debian's; UserError (one line saying how
    to install it) when it is absent."""
    path = template or COLIN27_PATH
    if not os.path.isfile(path):
        if template:
            raise UserError(f"{template}: not found; expected a brain-extracted T1 NIfTI file")
        raise UserError(
            f"{COLIN27_PATH}: not found; the colin27 anatomy needs Debian's mricron-data "
            "(apt-get install mricron-data), or pass --template PATH"
        )
    return path


@functools.lru_cache(maxsize=4)
def load_anatomy(name, template=None):
    """The `Anatomy` called `name` (cached per process); `template` replaces Colin27's
    T1 file (tests use a small synthetic one)."""
    if name == "mni152":
        return _mni152()
    if name == "colin27":
        path = colin27_path(template)
        return segment_t1(_resample_to_grid(path), name, path)
    raise UserError(f"anatomy {name!r}: expected one of {', '.join(ANATOMIES)}")


def _mni152():
    from nilearn import datasets  # slow import: only phantom workers need it

    def get(image):
        return np.asarray(image.get_fdata(), dtype=np.float32)

    mask = (get(datasets.load_mni152_brain_mask(resolution=1)) > 0).astype(np.float32)
    gm = get(datasets.load_mni152_gm_template(resolution=1)) * mask
    wm = get(datasets.load_mni152_wm_template(resolution=1)) * mask
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0) * mask
    t1 = get(datasets.load_mni152_template(resolution=1))
    return Anatomy("mni152", "nilearn MNI152 2009 (1 mm)", t1, csf, gm, wm, mask)


def _resample_to_grid(path):
    """The T1 at `path` resampled (trilinear, by world coordinates) onto GRID_SHAPE."""
    try:
        image = nib.load(path)
        data = np.asarray(image.get_fdata(), dtype=np.float32)
    except Exception as e:  # nibabel raises several kinds for a bad file
        raise UserError(f"{path}: cannot read as NIfTI ({type(e).__name__}: {e})") from None
    if data.ndim != 3:
        raise UserError(f"{path}: expected a 3-D T1 volume, found shape {data.shape}")
    to_template = np.linalg.inv(image.affine) @ GRID_AFFINE
    return scipy.ndimage.affine_transform(
        data, to_template[:3, :3], to_template[:3, 3], output_shape=GRID_SHAPE, order=1
    ).astype(np.float32)


def _pure_tissue_levels(values, iterations=30):
    """CSF, GM and WM pure-tissue intensities of the brain's T1 `values`.

    A 1-D k-means (3 classes, started at the 10th, 50th and 90th percentiles) splits
    the values; a class mean is pulled towards its neighbours by the partial-volume
    voxels it holds, so GM and WM take their class's histogram mode (the pure-tissue
    peak) and CSF, which has no peak of its own in a 1 mm T1, its class's 25th
    percentile (ours: with Colin27 this gives GM/WM/CSF volumes within 15 % of MNI152's).
    """
    means = np.percentile(values, [10, 50, 90]).astype(np.float64)
    for _ in range(iterations):
        label = np.searchsorted((means[:-1] + means[1:]) / 2, values)
        means = np.array([values[label == c].mean() for c in range(3)])
    levels = [np.percentile(values[label == 0], 25)]
    for c in (1, 2):
        counts, edges = np.histogram(values[label == c], bins=60)
        levels.append((edges[counts.argmax()] + edges[counts.argmax() + 1]) / 2)
    return np.array(levels)


def segment_t1(t1, name, source):
    """Soft tissue fractions of a brain-extracted T1 on the grid (an `Anatomy`).

    Method (ours): brain = voxels above 2 % of the 99th percentile, holes filled; the
    three pure-tissue levels of the lightly smoothed (sigma 0.5 mm) brain intensities
    (`_pure_tissue_levels`); then the two-compartment partial-volume model of FSL FAST's PVE
    (Zhang et al. 2001): a voxel between two adjacent class means is a linear mixture
    of those two tissues, below the CSF mean pure CSF, above the WM mean pure WM.
    The `t1` kept is the intensity rescaled so WM's level matches MNI152's (v1 uses it).
    """
    top = np.percentile(t1[t1 > 0], 99) if (t1 > 0).any() else 0.0
    mask = scipy.ndimage.binary_fill_holes(t1 > 0.02 * top)
    if mask.sum() < 1000:
        raise UserError(f"{source}: found no brain (fewer than 1000 voxels above background)")
    smooth = scipy.ndimage.gaussian_filter(t1, 0.5)
    values = smooth[mask].astype(np.float64)
    m_csf, m_gm, m_wm = _pure_tissue_levels(values)
    level = np.clip(smooth, m_csf, m_wm)
    low = level < m_gm
    gm_low = (level - m_csf) / (m_gm - m_csf)
    wm_high = (level - m_gm) / (m_wm - m_gm)
    gm = np.where(low, gm_low, 1.0 - wm_high)
    wm = np.where(low, 0.0, wm_high)
    csf = np.where(low, 1.0 - gm_low, 0.0)
    fmask = mask.astype(np.float32)
    scale = MNI152_WM_T1 / m_wm
    return Anatomy(
        name,
        source,
        (t1 * scale * fmask).astype(np.float32),
        (csf * fmask).astype(np.float32),
        (gm * fmask).astype(np.float32),
        (wm * fmask).astype(np.float32),
        fmask,
    )


# MNI152 2009's T1 template (nilearn, scaled to [0, 1]): the mean intensity of its
# voxels with WM probability > 0.9 (measured once; it sets another anatomy's `t1` scale).
MNI152_WM_T1 = 0.871
