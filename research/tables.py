"""The paper's Tables 2-4 as runnable rows, and its five claims as paired comparisons.

Each row is one set of `dygan_tf.fit` flags in our reading of the paper
(docs/method.md, "The paper's results"):

- 3×pix2pix, as the paper trains it: three one-target pix2pix models (static G, static
  PatchGAN D), each exactly Table 4's pix2pix (one slice a step, DyGAN's steps per
  epoch). Its T1 member *is* Table 4's pix2pix: one run, cited by both tables;
- 3×pix2pix, compute-matched = `--baseline pix2pix3-matched`: the three members together
  take one DyGAN run's steps (batches of 3 slices, a third of the steps each);
- MGAN = label planes at the input, static G, static PatchGAN D;
- DyGAN = DyConv in G's up path, static PatchGAN D;
- Ms_DyGAN = DyConv in G's up path, multi-scale D with DyConv (the default model);
- Table 3 varies λ of Ms_DyGAN, so its λ = 100 row is Table 2's Ms_DyGAN run;
- Table 4 trains one-target T2 → T1 models with a static PatchGAN D: no DyConv
  (pix2pix), DyConv down / up / both, and "up + D" with DyConv in the PatchGAN.
"""

from typing import NamedTuple

from dygan_tf.config.tasks import PAPER_TABLE3
from dygan_tf.config.tasks import PAPER_TARGETS as TARGETS

RECORD = "record.json"  # a run's record, written last: its presence means "done"


class Benchmark(NamedTuple):
    """The data a table's runs train and are scored on: records of two benchmarks never
    share a folder or a table."""

    name: str
    phantom: str  # the phantom version its cases come from
    test_sets: tuple  # named test sets, in the order pages show them
    test_set_names: dict  # name -> what it is, for the pages
    records: str  # default records folder, relative to the checkout
    about: str
    primary_test_set: str
    # (in-domain test set, new-anatomy test set): the rows' anatomy gap is read between
    # them; None where the test sets share one anatomy
    anatomy_shift: tuple = None


BENCHMARKS = {
    "v1": Benchmark(
        "v1",
        "v1",
        ("demo", "heldout"),
        {
            "demo": "the demo's 7 test cases",
            "heldout": "40 held-out cases of a seed-1 phantom",
        },
        "docs/results/paper-tables",
        "These verdicts are about a 64 px phantom built from one template brain (nilearn's "
        "MNI152), at the demo preset, on a CPU — not about BraTS.",
        "heldout",
    ),
    "v2": Benchmark(
        "v2",
        "v2",
        ("test_mni", "test_colin27"),
        {
            "test_mni": "40 new MNI152 cases of the physics phantom (v2)",
            "test_colin27": "40 Colin27 cases of the physics phantom (v2): an anatomy "
            "never trained on",
        },
        "docs/results/paper-tables-v2",
        "These verdicts are about a 64 px physically simulated phantom (v2: MNI152 "
        "training cases; MNI152 and Colin27 test cases), at the demo preset, on a CPU — "
        "not about BraTS.",
        "test_mni",
        ("test_mni", "test_colin27"),
    ),
}
# Today's names for the first benchmark (records written before benchmarks had names
# are v1's).
TEST_SETS = BENCHMARKS["v1"].test_sets
TEST_SET_NAMES = BENCHMARKS["v1"].test_set_names
ABOUT = BENCHMARKS["v1"].about
STATIC_PATCH_D = ("--discriminator", "patch", "--d-dyconv", "off")
T2_TO_T1 = ("--targets", "t1")
MS_DYGAN = ("--dyconv", "up", "--discriminator", "multiscale", "--d-dyconv", "on")


class Row(NamedTuple):
    id: str
    table: object  # 2, 3, 4, BACKENDS or MEMBERS
    label: str
    flags: tuple  # dygan_tf.fit flags beyond --data/--out/--preset/--seed
    targets: tuple
    paper_psnr: dict  # target -> the paper's PSNR (dB)
    same_as: str = ""  # another row whose runs this row reuses (same configuration)
    members: tuple = ()  # ((target, row id), ...): a row made of other rows' runs


def _psnr(*values, targets=TARGETS):
    return dict(zip(targets, values))


PIX2PIX = ("--dyconv", "none") + STATIC_PATCH_D  # one-target pix2pix (with --targets)
MEMBERS = "members"  # the table of rows that only serve as members of another row
PAPER_PIX2PIX3 = _psnr(23.2853, 22.4321, 24.3262)

ROWS = (
    Row(
        "t2_pix2pix3_paper",
        2,
        "3×pix2pix",
        (),
        TARGETS,
        PAPER_PIX2PIX3,
        members=(("flair", "p_pix2pix_flair"), ("t1", "t4_pix2pix"), ("t1ce", "p_pix2pix_t1ce")),
    ),
    Row(
        "t2_pix2pix3",  # (the id of the records written before the paper's row existed)
        2,
        "3×pix2pix, compute-matched",
        ("--baseline", "pix2pix3-matched"),
        TARGETS,
        PAPER_PIX2PIX3,
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
        _psnr(*PAPER_TABLE3[10]),
    ),
    Row(
        "t3_lambda100",
        3,
        "λ = 100",
        MS_DYGAN,
        TARGETS,
        _psnr(*PAPER_TABLE3[100]),
        same_as="t2_ms_dygan",
    ),
    Row(
        "t3_lambda300",
        3,
        "λ = 300",
        MS_DYGAN + ("--lambda-l1", "300"),
        TARGETS,
        _psnr(*PAPER_TABLE3[300]),
    ),
    Row(
        "t4_pix2pix",  # also the T1 member of Table 2's 3×pix2pix
        4,
        "pix2pix",
        PIX2PIX + T2_TO_T1,
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
ROWS += tuple(
    Row(
        f"p_pix2pix_{t}",
        MEMBERS,
        f"pix2pix, T2 → {t.upper()}",
        PIX2PIX + ("--targets", t),
        (t,),
        {},
    )
    for t in ("flair", "t1ce")
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
    variant: str = ""  # a secondary reading of the claim ("compute-matched")

    @property
    def name(self):
        return f"{self.number}" + (f" ({self.variant})" if self.variant else "")


CLAIMS = (
    Claim(1, "one DyGAN beats three pix2pix models", (("t2_dygan", "t2_pix2pix3_paper"),)),
    Claim(
        1,
        "one DyGAN beats three pix2pix models that together take its steps",
        (("t2_dygan", "t2_pix2pix3"),),
        variant="compute-matched",
    ),
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


def run_id(row, target=None):
    """The row whose run folder and record serve `row` (for `target`, where `row` is
    made of members): itself unless `same_as` or `members` say otherwise."""
    if row.members:
        if target is None:
            raise ValueError(f"row {row.id} is made of members: name a target")
        return dict(row.members)[target]
    return row.same_as or row.id


def run_rows(row):
    """The rows that are trained for `row`: its members, its `same_as` or itself."""
    if row.members:
        return [ROW_BY_ID[m] for _, m in row.members]
    return [ROW_BY_ID[run_id(row)]]


def rows_of(tables):
    return [r for r in ROWS if r.table in tables]
