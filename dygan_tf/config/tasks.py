"""The four MR modalities and the twelve source -> target tasks of DyGAN.

This is the one place for the task table (the paper's Table 1): every model, data
reader and command imports its codes from here.
"""

import numpy as np

from dygan_tf.utils.errors import UserError

MODALITIES = ("flair", "t1", "t1ce", "t2")
# BraTS 2023's names of the same four (BraSyn's too): t2f is FLAIR, t1n T1, t1c T1CE,
# t2w T2. Flags, row keys and file names take either spelling, in any case.
BRATS2023_NAMES = {"flair": "t2f", "t1": "t1n", "t1ce": "t1c", "t2": "t2w"}
_SPELLINGS = {m: m for m in MODALITIES} | {v: k for k, v in BRATS2023_NAMES.items()}
NUM_TASKS = 12
# The targets of the paper's T2-source experiments (Tables 2 and 3): models, data specs,
# the λ search and the research tables take their default targets from here.
PAPER_TARGETS = ("flair", "t1", "t1ce")
# The paper's Table 3 (T2 source, BraTS19 test split): PSNR (dB) of PAPER_TARGETS per λ;
# 4 decimals where known, else the 2 printed.
PAPER_TABLE3 = {
    1: (21.17, 21.91, 23.47),
    10: (22.7145, 22.5283, 23.9847),
    50: (22.43, 22.44, 24.60),
    100: (22.9480, 22.8284, 24.7043),
    300: (22.7175, 22.7366, 24.6900),
}

# The paper's Table 1, written exactly as printed: leftmost character = element 0.
TASK_CODES = {
    ("flair", "t1"): "000000000001",
    ("flair", "t1ce"): "000000000010",
    ("flair", "t2"): "000000000100",
    ("t1", "flair"): "000000001000",
    ("t1", "t1ce"): "000000010000",
    ("t1", "t2"): "000000100000",
    ("t1ce", "flair"): "000001000000",
    ("t1ce", "t1"): "000010000000",
    ("t1ce", "t2"): "000100000000",
    ("t2", "flair"): "001000000000",
    ("t2", "t1"): "010000000000",
    ("t2", "t1ce"): "100000000000",
}
TASKS = tuple(TASK_CODES)


def accepted_names():
    """ "flair (t2f), t1 (t1n), t1ce (t1c), t2 (t2w)": every spelling, for help and errors."""
    return ", ".join(f"{m} ({BRATS2023_NAMES[m]})" for m in MODALITIES)


def check_modality(name, what="modality"):
    """The MODALITIES name of `name` in any spelling (`t2w`, `T2`, `t2`: "t2"), else
    UserError (a ValueError): a modality name comes from the user (a flag, a file
    name, a config)."""
    modality = _SPELLINGS.get(name.strip().lower()) if isinstance(name, str) else None
    if modality is None:
        raise UserError(
            f"Unknown {what} {name!r}: expected one of {accepted_names()}, in any case."
        )
    return modality


def spelled(modality, naming="brats2019"):
    """`modality` as the files at hand spell it: BraTS 2023's name under "brats2023"."""
    return BRATS2023_NAMES[modality] if naming == "brats2023" else modality


def _check_task(source, target):
    source = check_modality(source, "source modality")
    target = check_modality(target, "target modality")
    if source == target:
        raise UserError(
            f"Source and target are the same modality ({source!r}): DyGAN translates "
            "one modality into a different one."
        )
    return source, target


def task_index(source, target):
    """Position of the 1 in the task's 12-element code."""
    source, target = _check_task(source, target)
    return TASK_CODES[(source, target)].index("1")


def task_code(source, target):
    """The task's one-hot code as a float32 array of shape (12,).

    Example:

    >>> from dygan_tf.config import task_code
    >>> task_code("t2", "flair").shape, int(task_code("t2", "flair").argmax())
    ((12,), 2)
    """
    code = np.zeros(NUM_TASKS, dtype="float32")
    code[task_index(source, target)] = 1.0
    return code


def targets_for(source):
    """The three modalities that can be synthesised from `source`, in MODALITIES order."""
    source = check_modality(source, "source modality")
    return tuple(m for m in MODALITIES if m != source)


def task_from_index(index):
    """(source, target) of the task whose code has its 1 at `index`."""
    for task, code in TASK_CODES.items():
        if code.index("1") == index:
            return task
    raise UserError(f"Unknown task index {index!r}: expected 0..{NUM_TASKS - 1}.")
