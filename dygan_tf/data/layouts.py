"""How BraTS releases name a case's files, told apart by the names themselves.

- `brats2019`: BraTS 2017-2021 (2019 in HGG/ and LGG/ folders; 2020 and 2021 as flat
  case folders): `<ID>/<ID>_{flair,t1,t1ce,t2,seg}.nii[.gz]`;
- `brats2023`: BraTS 2023 and later (GLI, PED, MEN, MET, SSA; BraSyn):
  `<ID>/<ID>-{t2f,t1n,t1c,t2w,seg}.nii[.gz]`.

`t1n`, `t1c`, `t2w` and `t2f` are T1, T1CE, T2 and FLAIR. Nothing is configured: each
case folder's names say which naming it uses, and one root may not mix them.
"""

import os

from dygan_tf.config.tasks import BRATS2023_NAMES, MODALITIES
from dygan_tf.data import nifti
from dygan_tf.utils.errors import UserError

SEG = "seg"
# naming -> (separator after the case id, {our key: the release's token})
NAMINGS = {
    "brats2019": ("_", {**{m: m for m in MODALITIES}, SEG: SEG}),
    "brats2023": ("-", {**BRATS2023_NAMES, SEG: SEG}),
}


def file_name(case_id, key, naming="brats2019", ext=".nii.gz"):
    """The file name of `key` (a modality or "seg") of case `case_id` in `naming`."""
    separator, tokens = NAMINGS[naming]
    return f"{case_id}{separator}{tokens[key]}{ext}"


def _found(folder, case_id, naming):
    files = {}
    for key in MODALITIES + (SEG,):
        for ext in nifti.NIFTI_EXTENSIONS:
            path = os.path.join(folder, file_name(case_id, key, naming, ext))
            if os.path.isfile(path):
                files[key] = path
                break
    return files


def case_files(folder, case_id=None):
    """`(naming, {modality or "seg": path})` of the files of case folder `folder` (the
    case id is the folder's name unless given). A folder with no file in either naming
    gives `(None, {})`; one whose files use both is refused in one line naming two."""
    case_id = case_id or os.path.basename(os.path.normpath(folder))
    found = {naming: _found(folder, case_id, naming) for naming in NAMINGS}
    used = [naming for naming, files in found.items() if files]
    if len(used) > 1:
        first, second = (next(iter(found[n].values())) for n in used)
        raise UserError(
            f"{folder}: mixes two namings ({os.path.basename(first)}, "
            f"{os.path.basename(second)}); expected one per case"
        )
    if not used:
        return None, {}
    return used[0], found[used[0]]


def naming_of(path):
    """The naming a NIfTI file's name ends in ("brats2023" for `<ID>-t2w.nii.gz`, else
    "brats2019"): how to spell modalities back to a user who has such files."""
    name = os.path.basename(path)
    stem = nifti.nifti_stem(name) or name
    separator, tokens = NAMINGS["brats2023"]
    if any(stem.endswith(separator + tokens[m]) for m in MODALITIES):
        return "brats2023"
    return "brats2019"


def expected_names(case_id):
    """ "<ID>_<modality>.nii.gz or <ID>-<t1n|t1c|t2w|t2f>.nii.gz", for error lines."""
    return f"{case_id}_<modality>.nii.gz or {case_id}-<t1n|t1c|t2w|t2f>.nii.gz"


def one_naming(cases_files):
    """The naming every case uses, from `[(case folder, naming, files)]`; UserError naming
    a file of each where cases differ (one root may not mix BraTS releases)."""
    seen = {}
    for folder, naming, files in cases_files:
        if naming is not None and naming not in seen:
            seen[naming] = next(iter(files.values()), folder)
    if len(seen) > 1:
        (a, path_a), (b, path_b) = list(seen.items())[:2]
        raise UserError(
            f"mixed layouts in one root: {path_a} ({a}) and {path_b} ({b}); "
            "build each release's cases from a root of its own"
        )
    return next(iter(seen), None)


# Segmentation labels of the regions, per release and cohort: oedema 2 throughout; the
# enhancing tumour 4 in BraTS 2017-2021 and 3 in BraTS 2023 GLI (3 was unused since 2017).
# Other 2023 cohorts (PED, MEN, MET, SSA) label regions in schemes of their own.
OEDEMA = 2
ENHANCING = {"brats2019": 4, "brats2020": 4, ("brats2023", "GLI"): 3}


def cohort(case_id):
    """The BraTS 2023 cohort of a case id ("GLI" of "BraTS-GLI-00001-000"), or None."""
    parts = case_id.split("-")
    return parts[1] if len(parts) > 2 and parts[0] == "BraTS" else None


def enhancing_label(layout, case_ids=()):
    """The enhancing tumour's seg label in a shard folder of `layout` (None: built before
    layouts were recorded, BraTS 2019) with these cases; UserError for a cohort whose
    labels are not mapped."""
    if layout in (None, "brats2019", "brats2020"):
        return ENHANCING["brats2019"]
    cohorts = sorted({cohort(c) or "?" for c in case_ids}) or ["?"]
    unmapped = [c for c in cohorts if (layout, c) not in ENHANCING]
    if unmapped:
        raise UserError(
            f"cohort {', '.join(unmapped)} of {layout}: its segmentation labels are not mapped "
            "onto regions here (mapped: BraTS 2017-2021, BraTS 2023 GLI); region analyses "
            "are refused"
        )
    return ENHANCING[(layout, cohorts[0])]
