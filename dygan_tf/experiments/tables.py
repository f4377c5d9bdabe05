"""The paper's Tables 2-4 as runnable rows, and its five claims as paired comparisons.

Each row is one set of `dygan_tf.fit` flags in our reading of the paper
(docs/method.md, "The paper's results"):

- 3×pix2pix = `--baseline pix2pix3` (three one-target pix2pix models, static PatchGAN D);
- MGAN = label planes at the input, static G, static PatchGAN D;
- DyGAN = DyConv in G's up path, static PatchGAN D;
- Ms_DyGAN = DyConv in G's up path, multi-scale D with DyConv (the default model);
- Table 3 varies λ of Ms_DyGAN, so its λ = 100 row is Table 2's Ms_DyGAN run;
- Table 4 trains one-target T2 → T1 models with a static PatchGAN D: no DyConv
  (pix2pix), DyConv down / up / both, and "up + D" with DyConv in the PatchGAN.
"""

from typing import NamedTuple

TARGETS = ("flair", "t1", "t1ce")
RECORD = "record.json"  # a run's record, written last: its presence means "done"
TEST_SETS = ("demo", "heldout")  # the data's test split; the larger held-out set
TEST_SET_NAMES = {
    "demo": "the demo's 7 test cases",
    "heldout": "40 held-out cases of a seed-1 phantom",
}
ABOUT = (
    "These verdicts are about a 64 px phantom built from one template brain (nilearn's "
    "MNI152), at the demo preset, on a CPU — not about BraTS."
)
STATIC_PATCH_D = ("--discriminator", "patch", "--d-dyconv", "off")
T2_TO_T1 = ("--targets", "t1")
MS_DYGAN = ("--dyconv", "up", "--discriminator", "multiscale", "--d-dyconv", "on")


class Row(NamedTuple):
    id: str
    table: object  # 2, 3, 4 or BACKENDS
    label: str
    flags: tuple  # dygan_tf.fit flags beyond --data/--out/--preset/--seed
    targets: tuple
    paper_psnr: dict  # target -> the paper's PSNR (dB)
    same_as: str = ""  # another row whose runs this row reuses (same configuration)


def _psnr(*values, targets=TARGETS):
    return dict(zip(targets, values))


ROWS = (
    Row(
        "t2_pix2pix3",
        2,
        "3×pix2pix",
        ("--baseline", "pix2pix3"),
        TARGETS,
        _psnr(23.2853, 22.4321, 24.3262),
    ),
    Row(
        "t2_mgan",
        2,
        "MGAN (label at the input)",
        ("--label-mode", "input", "--dyconv", "none") + STATIC_PATCH_D,
        TARGETS,
        _psnr(23.2601, 22.5030, 24.2171),
    ),
    Row(
        "t2_dygan",
        2,
        "DyGAN (PatchGAN D)",
        ("--dyconv", "up") + STATIC_PATCH_D,
        TARGETS,
        _psnr(23.6634, 22.8382, 24.8458),
    ),
    Row(
        "t2_ms_dygan",
        2,
        "Ms_DyGAN (multi-scale D)",
        MS_DYGAN,
        TARGETS,
        _psnr(23.7781, 22.9610, 24.6364),
    ),
    Row(
        "t3_lambda10",
        3,
        "λ = 10",
        MS_DYGAN + ("--lambda-l1", "10"),
        TARGETS,
        _psnr(22.7145, 22.5283, 23.9847),
    ),
    Row(
        "t3_lambda100",
        3,
        "λ = 100",
        MS_DYGAN,
        TARGETS,
        _psnr(22.9480, 22.8284, 24.7043),
        same_as="t2_ms_dygan",
    ),
    Row(
        "t3_lambda300",
        3,
        "λ = 300",
        MS_DYGAN + ("--lambda-l1", "300"),
        TARGETS,
        _psnr(22.7175, 22.7366, 24.6900),
    ),
    Row(
        "t4_pix2pix",
        4,
        "pix2pix",
        ("--dyconv", "none") + T2_TO_T1 + STATIC_PATCH_D,
        ("t1",),
        {"t1": 22.4321},
    ),
    Row(
        "t4_down",
        4,
        "only down",
        ("--dyconv", "down") + T2_TO_T1 + STATIC_PATCH_D,
        ("t1",),
        {"t1": 22.2052},
    ),
    Row(
        "t4_up",
        4,
        "only up",
        ("--dyconv", "up") + T2_TO_T1 + STATIC_PATCH_D,
        ("t1",),
        {"t1": 22.7242},
    ),
    Row(
        "t4_both",
        4,
        "down + up",
        ("--dyconv", "both") + T2_TO_T1 + STATIC_PATCH_D,
        ("t1",),
        {"t1": 22.6783},
    ),
    Row(
        "t4_up_d",
        4,
        "only up + DyConv in D",
        ("--dyconv", "up") + T2_TO_T1 + ("--discriminator", "patch", "--d-dyconv", "on"),
        ("t1",),
        {"t1": 23.1012},
    ),
)
# Not the paper's: the demo's Ms_DyGAN trained on each Keras backend (its TensorFlow
# row is Table 2's Ms_DyGAN run of the same seed). The same seed draws other initial
# weights on each backend, so these compare as independent samples, not pairs.
BACKENDS = "backends"
ROWS += tuple(
    Row(
        f"b_{backend}",
        BACKENDS,
        label,
        MS_DYGAN + (() if backend == "tensorflow" else ("--backend", backend)),
        TARGETS,
        {},
        same_as="t2_ms_dygan" if backend == "tensorflow" else "",
    )
    for backend, label in (("tensorflow", "TensorFlow"), ("jax", "JAX"), ("torch", "PyTorch"))
)
ROW_BY_ID = {r.id: r for r in ROWS}
TABLES = (2, 3, 4)
# Seeds each table runs by default: 5 for Table 2, 3 for Tables 3 and 4 (two seeds give
# no usable confidence interval) and for the backends.
DEFAULT_SEEDS = {2: (0, 1, 2, 3, 4), 3: (0, 1, 2), 4: (0, 1, 2), BACKENDS: (0, 1, 2)}


class Claim(NamedTuple):
    number: int
    text: str
    pairs: tuple  # (better row, worse row): the claim says the first beats the second


CLAIMS = (
    Claim(1, "one DyGAN beats three pix2pix models", (("t2_dygan", "t2_pix2pix3"),)),
    Claim(
        2, "the label in the kernels beats the label as input planes", (("t2_dygan", "t2_mgan"),)
    ),
    Claim(3, "the multi-scale DyConv discriminator adds to DyGAN", (("t2_ms_dygan", "t2_dygan"),)),
    Claim(
        4,
        "λ = 100 is the best L1 weight",
        (("t3_lambda100", "t3_lambda10"), ("t3_lambda100", "t3_lambda300")),
    ),
    Claim(
        5,
        "DyConv in the up path is the best placement, and DyConv in D adds to it (T2 → T1)",
        (
            ("t4_up", "t4_pix2pix"),
            ("t4_up", "t4_down"),
            ("t4_up", "t4_both"),
            ("t4_up_d", "t4_up"),
        ),
    ),
)


def run_id(row):
    """The row whose run folder and record serve `row` (itself unless `same_as`)."""
    return row.same_as or row.id


def rows_of(tables):
    return [r for r in ROWS if r.table in tables]
