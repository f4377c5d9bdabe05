"""Finding BraTS cases on disk, checking their headers, and the train/test split.

Shared by the shard builder and the data benchmark; reads headers only, never voxels.
"""

import os

import numpy as np

from dygan_tf.config.tasks import MODALITIES
from dygan_tf.data import layouts, nifti, preprocessing
from dygan_tf.utils.errors import UserError

GRADES = ("HGG", "LGG")
SPLITS = ("train", "test")
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
                f"{wanted[grade]} training cases; pass a count <= {len(group)}, "
                "--train-fraction or --split-file"
            )
        order = rng.permutation(len(group))
        split["train"] += [group[i] for i in order[: wanted[grade]]]
        split["test"] += [group[i] for i in order[wanted[grade] :]]
    return {name: sorted(group, key=lambda c: c["case_id"]) for name, group in split.items()}


def read_split_file(path, cases):
    """{"train": [...], "test": [...]} from a shared split file: one case id per line
    (the training cases; every other case is tested), or two columns `<case id>
    <train|test>` separated by a comma, tab or spaces (an unlisted case is left out).
    Blank lines, `#` comments and a `case_id,split` header are skipped. UserError names
    the file and line of an id that is not among `cases` or of a malformed line."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read the split file ({e})") from None
    by_id = {c["case_id"]: c for c in cases}
    listed, columns = {}, None
    for number, line in enumerate(lines, 1):
        fields = [f for f in line.split("#")[0].replace(",", " ").split() if f]
        if not fields or [f.lower() for f in fields] in (["case_id", "split"], ["case_id"]):
            continue
        if columns is None:
            columns = len(fields)
        if len(fields) != columns or columns > 2 or (columns == 2 and fields[1] not in SPLITS):
            raise UserError(
                f"{path}:{number}: expected one case id per line, or '<case id> train|test' "
                f"on every line; found {line.strip()!r}"
            )
        if fields[0] not in by_id:
            raise UserError(
                f"{path}:{number}: case {fields[0]!r} is not among the {len(cases)} cases on disk"
            )
        if fields[0] in listed:
            raise UserError(f"{path}:{number}: case {fields[0]!r} is listed twice")
        listed[fields[0]] = fields[1] if columns == 2 else "train"
    if not listed:
        raise UserError(f"{path}: lists no case")
    split = {name: [] for name in SPLITS}
    for cid, case in sorted(by_id.items()):
        where = listed.get(cid, "test" if columns == 1 else None)
        if where:
            split[where].append(case)
    return split


def split_fraction(cases, fraction, seed):
    """Per grade, round(fraction * n) of the cases (sorted ids shuffled with `seed`)
    train and the rest test."""
    if not 0 < fraction < 1:
        raise UserError(f"expected a fraction between 0 and 1, found {fraction}")
    rng = np.random.default_rng(seed)
    split = {name: [] for name in SPLITS}
    for grade in sorted({c["grade"] for c in cases}):
        group = sorted((c for c in cases if c["grade"] == grade), key=lambda c: c["case_id"])
        order = rng.permutation(len(group))
        count = round(fraction * len(group))
        split["train"] += [group[i] for i in order[:count]]
        split["test"] += [group[i] for i in order[count:]]
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
