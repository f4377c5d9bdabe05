"""Finding BraTS cases on disk, checking their headers, and the train/test split.

Shared by the shard builder and the data benchmark; reads headers only, never voxels.
"""

import os

import numpy as np

from dygan_tf.config.tasks import MODALITIES
from dygan_tf.data import layouts, nifti, preprocessing
from dygan_tf.utils.errors import UserError

GRADES = ("HGG", "LGG")
TRAINING_FOLDER = "MICCAI_BraTS_2019_Data_Training"
AFFINE_TOLERANCE = 1e-3  # mm; BraTS modalities are co-registered on one grid
# The paper's split of BraTS 2019's 259 HGG + 76 LGG cases: training cases per grade.
TRAIN_HGG, TRAIN_LGG = 220, 60


def discover_cases(root):
    """Case folders under `root`: [{'case_id', 'grade', 'folder'}], sorted by id.

    `root` may hold MICCAI_BraTS_2019_Data_Training, be that folder (HGG/ and LGG/
    inside), or be a flat folder of case folders (grade 'unknown').
    """
    if not os.path.isdir(root):
        raise UserError(f"{root}: not a folder")
    if os.path.isdir(os.path.join(root, TRAINING_FOLDER)):
        root = os.path.join(root, TRAINING_FOLDER)
    graded = [g for g in GRADES if os.path.isdir(os.path.join(root, g))]
    groups = [(g, os.path.join(root, g)) for g in graded] or [("unknown", root)]
    cases = []
    for grade, folder in groups:
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if not name.startswith(".") and os.path.isdir(path):
                cases.append({"case_id": name, "grade": grade, "folder": path})
    if not cases:
        raise UserError(
            f"{root}: found no case folders; expected HGG/ and LGG/ "
            "folders of BraTS cases or a folder of case folders"
        )
    ids = [c["case_id"] for c in cases]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise UserError(f"{root}: case ids found twice: {duplicates}")
    return sorted(cases, key=lambda c: c["case_id"])


def case_files(case):
    """{modality or 'seg': path} for a case, in either naming of `dygan_tf.data.layouts`
    (BraTS 2017-2021's `<ID>_flair.nii.gz`, BraTS 2023's `<ID>-t2f.nii.gz`); UserError
    naming what is missing."""
    folder, cid = case["folder"], case["case_id"]
    naming, files = layouts.case_files(folder, cid)
    for key in MODALITIES:
        if key not in files:
            present = sorted(n for n in os.listdir(folder) if not n.startswith("."))
            expected = (
                f"{folder}/{layouts.file_name(cid, key, naming)}"
                if naming
                else f"{folder}/{layouts.expected_names(cid)}"
            )
            raise UserError(
                f"case {cid}: missing {key} file: expected {expected} (or .nii), "
                f"found {present or 'no files'}"
            )
    return files


def layout_of(cases):
    """The root's layout from its cases: "brats2019" (HGG/ and LGG/ folders),
    "brats2020" (flat case folders, `<ID>_flair.nii.gz`) or "brats2023" (`<ID>-t2f.nii.gz`);
    a root that mixes namings is refused in one line naming a file of each."""
    naming = layouts.one_naming(
        (c["folder"], *layouts.case_files(c["folder"], c["case_id"])) for c in cases
    )
    if naming == "brats2023":
        return "brats2023"
    return "brats2019" if any(c["grade"] in GRADES for c in cases) else "brats2020"


def split_cases(cases, train_hgg, train_lgg, seed):
    """{'train': [...], 'test': [...]}, each sorted by case id.

    Per grade, the sorted ids are shuffled with `seed` and the first train_<grade>
    go to training. A flat folder (grade 'unknown') trains on train_hgg + train_lgg.
    """
    wanted = {"HGG": train_hgg, "LGG": train_lgg, "unknown": train_hgg + train_lgg}
    flag = {"HGG": "--train-hgg", "LGG": "--train-lgg", "unknown": "--train-hgg + --train-lgg"}
    rng = np.random.default_rng(seed)
    split = {"train": [], "test": []}
    flat = any(c["grade"] == "unknown" for c in cases)  # no HGG/LGG folders at all
    for grade in ("HGG", "LGG", "unknown"):
        if (grade == "unknown") != flat:
            continue
        group = sorted((c for c in cases if c["grade"] == grade), key=lambda c: c["case_id"])
        if len(group) < wanted[grade]:
            raise UserError(
                f"found {len(group)} {grade} cases, but {flag[grade]} asks for "
                f"{wanted[grade]} training cases; pass a count <= {len(group)}"
            )
        order = rng.permutation(len(group))
        split["train"] += [group[i] for i in order[: wanted[grade]]]
        split["test"] += [group[i] for i in order[wanted[grade] :]]
    return {name: sorted(group, key=lambda c: c["case_id"]) for name, group in split.items()}


def check_case(case):
    """Header-level checks of one case, no voxel data read: every modality present,
    3-D, of sane size, 1 mm voxels, and all files on one grid. Returns {modality or 'seg': path}."""
    cid = case["case_id"]
    files = case_files(case)
    reference = None
    for path in files.values():
        try:
            image, shape = nifti.read_header(path)
        except UserError as e:
            raise UserError(f"case {cid}: {e}") from None
        sizes = preprocessing.voxel_sizes(image.affine)
        if not preprocessing.is_training_spacing(sizes):
            raise UserError(
                f"case {cid}: {path}: voxel size {' x '.join(f'{v:g}' for v in sizes)} mm; "
                f"expected {preprocessing.TRAINING_SPACING_MM:g} mm isotropic like BraTS "
                "(resample the case first)"
            )
        if reference is None:
            reference = (path, shape, image.affine)
        elif shape != reference[1]:
            raise UserError(
                f"case {cid}: {path}: shape {shape} differs from {reference[1]} "
                f"of {os.path.basename(reference[0])}; expected co-registered volumes"
            )
        elif not np.allclose(image.affine, reference[2], atol=AFFINE_TOLERANCE):
            raise UserError(
                f"case {cid}: {path}: affine {np.round(image.affine, 3).tolist()} "
                f"differs from {np.round(reference[2], 3).tolist()} of "
                f"{os.path.basename(reference[0])}; expected co-registered volumes"
            )
    return files
