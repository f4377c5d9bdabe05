"""BraTS-shaped phantoms built offline: v1 (below: an MNI152 template moved a little,
contrasts by lookup) and v2 (`dygan_tf.data.phantom_v2`: simulated from MR physics),
written in any of the BraTS layouts `build_tfrecords` reads.

The library behind `dygan-make-phantom` (its usage and flags are in that
command's module and in docs/reference/cli.md).
"""

import concurrent.futures
import contextlib
import dataclasses
import functools
import gzip
import json
import multiprocessing
import os

import nibabel as nib
import numpy as np
import scipy.ndimage

from dygan_tf.data import layouts
from dygan_tf.data.cases import TRAINING_FOLDER
from dygan_tf.data.volume_sampling import SHAPE, smooth_field, trilinear
from dygan_tf.utils.atomic import atomic_path, write_json_atomic, write_text_atomic
from dygan_tf.utils.errors import UserError, for_flag
from dygan_tf.utils.progress import Progress

# BraTS files store voxel axes as diag(-1, -1, 1) (LPS-style). We keep that diagonal and
# choose offsets so world coordinates are MNI millimetres: voxel (i, j, k) -> MNI
# (120 - i, 102 - j, k - 70); template voxels then land on whole grid voxels.
AFFINE = np.array([[-1.0, 0, 0, 120], [0, -1.0, 0, 102], [0, 0, 1.0, -70], [0, 0, 0, 1]])
BRATS19_HGG, BRATS19_LGG = 259, 76
GZIP_LEVEL = 1

# Relative signal per tissue: (CSF, GM, WM, oedema, necrotic core, enhancing rim).
# T1 keeps the template's own intensities for healthy tissue.
CONTRAST = {
    "t1": (None, None, None, 0.45, 0.22, 0.50),
    "t1ce": (None, None, None, 0.45, 0.22, 1.30),
    "t2": (1.00, 0.55, 0.35, 0.85, 0.95, 0.60),
    "flair": (0.12, 0.55, 0.42, 0.95, 0.35, 0.65),
}
GAIN = {"t1": 900.0, "t1ce": 1000.0, "t2": 1400.0, "flair": 700.0}
VERSIONS = ("v1", "v2")
LAYOUTS = ("brats2019", "brats2020", "brats2023")


@dataclasses.dataclass(frozen=True)
class PhantomSpec:
    """What phantom to build: `version` (v1 or v2), `anatomy` (`anatomy.ANATOMIES`),
    `template` (a T1 file replacing Colin27's), and the BraTS `layout` to write."""

    version: str = "v1"
    anatomy: str = "mni152"
    template: str | None = None
    layout: str = "brats2019"

    def __post_init__(self):
        from dygan_tf.data.anatomy import ANATOMIES

        for name, allowed in (
            ("version", VERSIONS),
            ("anatomy", ANATOMIES),
            ("layout", LAYOUTS),
        ):
            if getattr(self, name) not in allowed:
                raise UserError(
                    f"{name} {getattr(self, name)!r}: expected one of {', '.join(allowed)}"
                )


@functools.lru_cache(maxsize=2)
def _templates(anatomy="mni152", template=None):
    """The anatomy's T1, GM, WM and brain mask on the last axis, padded by one zero
    voxel so interpolation needs no bounds checks; plus the mask dilated by 2 voxels,
    which says where sampling can give brain at all (cached per process). MNI152 is
    read here exactly as v1 always read it (its cases stay byte-identical)."""
    if anatomy != "mni152":
        from dygan_tf.data.anatomy import load_anatomy

        a = load_anatomy(anatomy, template)
        stacked = np.stack([a.t1, a.gm, a.wm, a.mask], axis=-1)
        near = scipy.ndimage.binary_dilation(a.mask > 0, iterations=2)
        return np.pad(stacked, [(1, 1)] * 3 + [(0, 0)]), np.pad(near, 1)
    from nilearn import datasets  # slow import: only phantom workers need it

    def get(image):
        return np.asarray(image.get_fdata(), dtype=np.float32)

    mask = get(datasets.load_mni152_brain_mask(resolution=1)) > 0
    stacked = np.stack(
        [
            get(datasets.load_mni152_template(resolution=1)),
            get(datasets.load_mni152_gm_template(resolution=1)),
            get(datasets.load_mni152_wm_template(resolution=1)),
            mask.astype(np.float32),
        ],
        axis=-1,
    )
    near = scipy.ndimage.binary_dilation(mask, iterations=2)
    return np.pad(stacked, [(1, 1)] * 3 + [(0, 0)]), np.pad(near, 1)


def _deformed_templates(rng, anatomy="mni152", template=None):
    """Templates resampled into the BraTS grid through a random smooth deformation.

    Returns the brain mask (bool volume), the brain voxels' indices and, at those
    voxels, the template T1 and the CSF, GM and WM probabilities (1-D arrays).
    """
    padded, near = _templates(anatomy, template)
    # Bounding box of the brain in the output grid, with room for the deformation.
    lo, hi = np.array([36, 17, 0]), np.array([206, 223, 155])
    box = tuple(hi - lo)
    grid = [np.arange(a, b, dtype=np.float32) for a, b in zip(lo, hi)]
    centre = np.array([120.0, 118.0, 70.0], dtype=np.float32)
    angle = np.deg2rad(rng.uniform(-4, 4))
    scale = rng.uniform(0.94, 1.06, size=3)
    shift = rng.uniform(-3, 3, size=3)
    cos, sin = np.cos(angle), np.sin(angle)
    rot = (np.array([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]]) / scale[:, None]).astype(np.float32)
    i, j, k = (g - c for g, c in zip(grid, centre))
    # Output voxel -> template voxel: the fixed flip/shift of AFFINE composed with a
    # small in-plane rotation, scaling, shift and a coarse elastic field (~2 mm).
    coords = np.empty((3,) + box, dtype=np.float32)
    for axis, (flip, offset) in enumerate(((-1, 218), (-1, 236), (1, 2))):
        moved = (
            rot[axis, 0] * i[:, None, None]
            + rot[axis, 1] * j[None, :, None]
            + rot[axis, 2] * k[None, None, :]
            + (centre[axis] + shift[axis])
        )
        moved += 2.0 * smooth_field(rng, (5, 5, 4), box)
        coords[axis] = flip * moved + offset
    # Interpolate only where the nearest template voxel is near the brain.
    nearest = [
        np.clip(np.rint(c).astype(np.int32) + 1, 0, n - 1) for c, n in zip(coords, near.shape)
    ]
    candidates = np.nonzero(near[tuple(nearest)])
    sampled = trilinear(padded, coords[(slice(None),) + candidates])
    inside = sampled[:, 3] > 0.5
    brain = tuple(c[inside] + o for c, o in zip(candidates, lo))
    t1, gm, wm, _ = sampled[inside].T
    mask = np.zeros(SHAPE, dtype=bool)
    mask[brain] = True
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0)
    return mask, brain, {"t1": t1, "csf": csf, "gm": gm, "wm": wm}


def _tumour(rng, mask, grade):
    """BraTS labels (1 necrotic core, 2 oedema, 4 enhancing rim) as a uint8 volume.

    The centre lies in axial slices 74..86 so the tumour usually crosses 75..85.
    """
    seg = np.zeros(SHAPE, dtype=np.uint8)
    hgg = grade == "HGG"
    radii = rng.uniform(14, 26, size=3) if hgg else rng.uniform(8, 16, size=3)
    kc = int(rng.integers(74, 87))
    depth = scipy.ndimage.distance_transform_edt(mask[:, :, kc])
    candidates = np.argwhere(depth >= min(radii[:2].min(), depth.max()) * 0.8)
    ic, jc = candidates[rng.integers(len(candidates))]
    r = np.ceil(radii * 1.3).astype(int)
    lo = np.maximum([ic - r[0], jc - r[1], kc - r[2]], 0)
    hi = np.minimum([ic + r[0] + 1, jc + r[1] + 1, kc + r[2] + 1], SHAPE)
    box = tuple(hi - lo)
    axes = [(np.arange(a, b) - c) / rad for a, b, c, rad in zip(lo, hi, (ic, jc, kc), radii)]
    dist = np.sqrt(
        axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2 + axes[2][None, None, :] ** 2
    )
    dist = dist * (1.0 + 0.15 * smooth_field(rng, (4, 4, 4), box))  # irregular border
    core = rng.uniform(0.45, 0.65) if hgg else rng.uniform(0.3, 0.5)
    rim = rng.uniform(0.12, 0.2) if hgg else (rng.uniform(0.05, 0.1) if rng.random() < 0.3 else 0.0)
    labels = np.zeros(box, dtype=np.uint8)
    labels[dist < 1.0] = 2
    labels[dist < core] = 4
    labels[dist < core - rim] = 1
    inside = tuple(slice(a, b) for a, b in zip(lo, hi))
    seg[inside] = labels * mask[inside]
    return seg


def _bias_field(rng, brain):
    """A smooth multiplicative field (about +-15 %) at the brain voxels: a product of
    one low-order polynomial per axis, so it costs three short exp() calls."""
    bias = 1.0
    for n, index in zip(SHAPE, brain):
        t = np.linspace(-1, 1, n, dtype=np.float32)
        a, b = rng.uniform(-0.08, 0.08, size=2)
        bias = bias * np.exp(a * t + b * t * t).astype(np.float32)[index]
    return bias


def make_case(seed, index, grade, anatomy="mni152", template=None):
    """The five volumes of one v1 case: {modality: int16 array, 'seg': uint8 array}."""
    rng = np.random.default_rng([seed, index])
    mask, brain, tissue = _deformed_templates(rng, anatomy, template)
    seg = _tumour(rng, mask, grade)
    labels = seg[brain]
    tumour = [labels == label for label in (2, 1, 4)]
    volumes = {}
    for modality, (c_csf, c_gm, c_wm, *c_tumour) in CONTRAST.items():
        if c_csf is None:
            signal = tissue["t1"].copy()
        else:
            signal = c_csf * tissue["csf"] + c_gm * tissue["gm"] + c_wm * tissue["wm"]
        for region, value in zip(tumour, c_tumour):
            signal[region] = value
        signal *= GAIN[modality] * rng.uniform(0.9, 1.1) * _bias_field(rng, brain)
        # Rician noise inside the brain; the background stays exactly 0 as in BraTS.
        noise = rng.standard_normal((2, signal.size), dtype=np.float32)
        noise *= 0.02 * GAIN[modality]
        signal = np.sqrt((signal + noise[0]) ** 2 + noise[1] ** 2)
        volume = np.zeros(SHAPE, dtype=np.int16)
        volume[brain] = np.clip(np.rint(signal), 1, 32767)  # brain voxels stay non-zero
        volumes[modality] = volume
    volumes["seg"] = seg
    return volumes


def nifti_gz_bytes(data, affine=AFFINE):
    """A .nii.gz file's bytes with a fixed gzip header (mtime 0), so it is reproducible."""
    image = nib.Nifti1Image(data, affine)
    image.header.set_xyzt_units("mm", "sec")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    return gzip.compress(image.to_bytes(), compresslevel=GZIP_LEVEL, mtime=0)


def case_id(index, layout="brats2019"):
    """Case `index`'s id as the layout's release names its cases."""
    if layout == "brats2020":
        return f"BraTS20_Training_{index + 1:03d}"
    if layout == "brats2023":
        return f"BraTS-GLI-{index + 1:05d}-000"
    return f"BraTS19_PHANTOM_{index + 1:03d}_1"


def case_folder(out, index, grade, layout="brats2019"):
    """Where case `index` goes: HGG/ and LGG/ folders under the BraTS 2019 training
    folder, or flat case folders (BraTS 2020 and 2023)."""
    if layout == "brats2019":
        return os.path.join(out, TRAINING_FOLDER, grade, case_id(index))
    return os.path.join(out, case_id(index, layout))


def simulate(seed, index, grade, spec):
    """({modality: int16, 'seg': uint8}, parameters dict or None) of one case."""
    if spec.version == "v2":
        from dygan_tf.data import phantom_v2

        return phantom_v2.make_case(seed, index, grade, spec.anatomy, spec.template)
    return make_case(seed, index, grade, spec.anatomy, spec.template), None


def write_case(out, seed, index, grade, spec=None):
    """Builds case `index` and writes its five files (and a v2 case's parameters as
    `<ID>_phantom.json`) atomically in `spec.layout`; returns its folder."""
    spec = spec or PhantomSpec()
    cid = case_id(index, spec.layout)
    naming = "brats2023" if spec.layout == "brats2023" else "brats2019"
    folder = case_folder(out, index, grade, spec.layout)
    os.makedirs(folder, exist_ok=True)
    volumes, params = simulate(seed, index, grade, spec)
    if naming == "brats2023":  # BraTS 2023 GLI labels the enhancing tumour 3, not 4
        seg = volumes["seg"]
        volumes["seg"] = np.where(seg == 4, layouts.ENHANCING[("brats2023", "GLI")], seg).astype(
            np.uint8
        )
    for name, data in volumes.items():
        path = os.path.join(folder, layouts.file_name(cid, name, naming))
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                f.write(nifti_gz_bytes(data))
    if params is not None:
        params = dict(params, case_id=cid, layout=spec.layout, template=spec.template)
        separator = layouts.NAMINGS[naming][0]
        write_json_atomic(os.path.join(folder, f"{cid}{separator}phantom.json"), params)
    return folder


def split_grades(cases):
    """`cases` split HGG:LGG in BraTS19's proportion (259:76), at least one of each."""
    if cases < 2:
        raise UserError(f"--cases: expected at least 2 (one HGG, one LGG), found {cases}")
    lgg = min(max(1, round(cases * BRATS19_LGG / (BRATS19_HGG + BRATS19_LGG))), cases - 1)
    return cases - lgg, lgg


def build_phantom(out, hgg, lgg, seed=0, workers=1, verbose=True, spec=None):
    """Writes the phantom dataset; returns the list of (case_id, grade)."""
    spec = spec or PhantomSpec()
    if spec.anatomy == "colin27":  # a missing template: one line before any worker starts
        from dygan_tf.data.anatomy import colin27_path

        colin27_path(spec.template)
    jobs = [(i, "HGG" if i < hgg else "LGG") for i in range(hgg + lgg)]
    bar = Progress(len(jobs), unit="case", enabled=verbose)
    if workers <= 1:
        for i, grade in jobs:
            write_case(out, seed, i, grade, spec)
            bar.add(1)
    else:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = [pool.submit(write_case, out, seed, i, g, spec) for i, g in jobs]
            for future in concurrent.futures.as_completed(futures):
                future.result()
                bar.add(1)
    bar.close()
    _write_name_mapping(out, jobs, spec.layout)
    return [(case_id(i, spec.layout), g) for i, g in jobs]


def make_phantom(
    out,
    cases=None,
    hgg=None,
    lgg=None,
    seed=0,
    workers=1,
    phantom="v1",
    anatomy="mni152",
    template=None,
    layout="brats2019",
):
    """`dygan-make-phantom`: checks the counts and the template (one UserError line
    naming the flag), builds the phantom; returns (HGG count, LGG count, the folder
    holding the cases)."""
    if template and anatomy != "colin27":
        raise UserError("--template: only with --anatomy colin27")
    if cases is not None and (hgg is not None or lgg is not None):
        raise UserError("dygan-make-phantom: pass either --cases or --hgg/--lgg, not both")
    if cases is not None:
        hgg, lgg = split_grades(cases)
    elif hgg is None or lgg is None:
        raise UserError("dygan-make-phantom: expected --cases N or both --hgg N and --lgg M")
    if hgg < 0 or lgg < 0 or hgg + lgg == 0:
        raise UserError(
            f"dygan-make-phantom: expected non-negative counts with at least one "
            f"case, found --hgg {hgg} --lgg {lgg}"
        )
    spec = PhantomSpec(phantom, anatomy, template, layout)
    with for_flag("--template") if template else contextlib.nullcontext():
        build_phantom(out, hgg, lgg, seed=seed, workers=workers, spec=spec)
    return hgg, lgg, os.path.join(out, TRAINING_FOLDER) if layout == "brats2019" else out


def _write_name_mapping(out, jobs, layout):
    """name_mapping.csv as the release has it (BraTS 2023 has none)."""
    if layout == "brats2023":
        return
    if layout == "brats2020":
        header = "Grade,BraTS_2017_subject_ID,BraTS_2018_subject_ID,TCGA_TCIA_subject_ID,"
        header += "BraTS_2019_subject_ID,BraTS_2020_subject_ID\n"
        rows = "".join(f"{g},NA,NA,NA,NA,{case_id(i, layout)}\n" for i, g in jobs)
        write_text_atomic(os.path.join(out, "name_mapping.csv"), header + rows)
        return
    header = (
        "Grade,BraTS_2017_subject_ID,BraTS_2018_subject_ID,"
        "TCGA_TCIA_subject_ID,BraTS_2019_subject_ID\n"
    )
    rows = "".join(f"{g},NA,NA,NA,{case_id(i)}\n" for i, g in jobs)
    write_text_atomic(os.path.join(out, TRAINING_FOLDER, "name_mapping.csv"), header + rows)


def read_case_parameters(folder):
    """The v2 parameters JSON of a case folder (None for a v1 case)."""
    for name in os.listdir(folder):
        if name.endswith("phantom.json"):
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                return json.load(f)
    return None
