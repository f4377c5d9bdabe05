"""A shard build's choices and its plan, decided before any voxel is read: the cases
found, their train/test split, the shard each goes to, the cases whose headers are bad.
Pure Python (`dygan_tf.data.shards` writes what is planned here).
"""

import dataclasses
import math
import os

from dygan_tf.data import preprocessing
from dygan_tf.data.cases import (
    TRAIN_HGG,
    TRAIN_LGG,
    check_case,
    discover_cases,
    layout_of,
    read_split_file,
    split_cases,
    split_fraction,
)
from dygan_tf.data.shard_check import sha256_file
from dygan_tf.utils.errors import UserError, for_flag

SPLITS = ("train", "test")
DEFAULT_SLICES_PER_SHARD = 128
# Shards are sized before any voxel is read, so a case of `--source-slices all` counts
# as this many slices there: an estimate (BraTS volumes have 155 axial slices, the brain
# most of them), which only sets how many shards a split gets.
ALL_SLICES_ESTIMATE = 140


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    """Every choice of a shard build but its folders: `build`'s keywords, by what they
    decide. The split: `split_file` (`cases.read_split_file`), else `train_fraction` of
    each grade, else `train_hgg` + `train_lgg` cases (the paper's 220 + 60 of BraTS 2019)."""

    # The slices: their size, the axial range they come from and how many per volume
    # (the most brain); or, `source_slices` `preprocessing.ALL_SLICES` ("all"), every
    # slice that holds brain (`preprocessing.brain_slices`; `per_volume` unused).
    image_size: int = preprocessing.DEFAULT_IMAGE_SIZE
    source_slices: tuple = preprocessing.DEFAULT_SLICE_RANGE
    per_volume: int = preprocessing.DEFAULT_SLICES_PER_VOLUME
    # Each slice's axial neighbours stored with it, K on each side (2.5-D; 0: none, the
    # records of schema version 1).
    context: int = 0
    # The train/test split.
    train_hgg: int = TRAIN_HGG
    train_lgg: int = TRAIN_LGG
    seed: int = 0
    split_file: str | None = None
    train_fraction: float | None = None
    # The shards.
    shards_per_split: int | None = None
    slices_per_shard: int | None = None
    compression: str = "gzip"
    # Where the baselines (intensity LUT) of an evaluation on this folder are fitted: the
    # training split of another shard folder (None: this folder's own), and what the
    # volumes are (e.g. {"phantom": "v2", "set": "test_colin27"}), both recorded in the
    # manifest.
    baseline_from: str | None = None
    provenance: dict | None = None
    # The run: worker processes (None: one per CPU), bad cases skipped, progress shown.
    workers: int | None = None
    skip_bad: bool = False
    verbose: bool = True

    def __post_init__(self):
        if type(self.context) is not int or self.context < 0:
            raise ValueError(f"context must be an int >= 0. Received: context={self.context!r}")


@dataclasses.dataclass(frozen=True)
class BuildPlan:
    """What `plan_build` decides before any voxel is read."""

    layout: str  # the BraTS release's file naming (`cases.layout_of`)
    split: dict  # {"train": [case, ...], "test": [...]}
    split_record: dict  # the manifest's "split" record
    plans: dict  # per split, `shard_plan`'s case ranges
    jobs: list  # (split, position in it, case), every case in writing order


def plan_build(brats_root, options):
    """Finds the cases, splits them and assigns each to a shard (`BuildPlan`)."""
    cases = discover_cases(brats_root)
    layout = layout_of(cases)
    split, split_record = choose_split(
        cases,
        options.train_hgg,
        options.train_lgg,
        options.seed,
        options.split_file,
        options.train_fraction,
    )
    per_case = (
        ALL_SLICES_ESTIMATE
        if options.source_slices == preprocessing.ALL_SLICES
        else options.per_volume
    )
    plans = {
        s: shard_plan(len(split[s]), per_case, options.shards_per_split, options.slices_per_shard)
        for s in SPLITS
    }
    jobs = [(s, pos, c) for s in SPLITS for pos, c in enumerate(split[s])]
    return BuildPlan(layout, split, split_record, plans, jobs)


def header_problems(jobs, skip_bad):
    """{case id: error line} of the cases whose headers are bad (missing files, absurd
    sizes, mismatched grids), found before any voxel is read; data problems surface in
    the workers. Without `skip_bad` the first one is raised."""
    problems = {}
    for _, _, case in jobs:
        try:
            check_case(case)
        except UserError as e:
            if not skip_bad:
                raise
            problems[case["case_id"]] = str(e)
    return problems


def shard_plan(n_cases, per_volume, shards_per_split=None, slices_per_shard=None):
    """Per shard, the [start, stop) range of case positions (contiguous, balanced)."""
    if n_cases == 0:
        return []
    if shards_per_split is None:
        per_shard = slices_per_shard or DEFAULT_SLICES_PER_SHARD
        shards_per_split = math.ceil(n_cases * per_volume / per_shard)
    n = max(1, min(shards_per_split, n_cases))
    return [(s * n_cases // n, (s + 1) * n_cases // n) for s in range(n)]


def choose_split(cases, train_hgg, train_lgg, seed, split_file=None, train_fraction=None):
    """({"train": [...], "test": [...]}, the manifest's "split" record)."""
    if split_file is not None:
        split = read_split_file(split_file, cases)
        record = {
            "rule": "split file: listed ids train (or as their column says); one column: "
            "the others test",
            "file": os.path.abspath(split_file),
            "sha256": sha256_file(split_file),
        }
    elif train_fraction is not None:
        split = split_fraction(cases, train_fraction, seed)
        record = {
            "seed": seed,
            "train_fraction": train_fraction,
            "rule": "per grade: sorted ids shuffled with seed, round(fraction * n) train",
        }
    else:
        split = split_cases(cases, train_hgg, train_lgg, seed)
        record = {
            "seed": seed,
            "train_hgg": train_hgg,
            "train_lgg": train_lgg,
            "rule": "per grade: sorted ids shuffled with seed, first train_<grade> "
            "train; grade 'unknown' trains train_hgg + train_lgg",
        }
    record["train_cases"] = [c["case_id"] for c in split["train"]]
    record["test_cases"] = [c["case_id"] for c in split["test"]]
    return split, record


def add_split_flags(parser):
    """How a BraTS root's cases split into train and test, as `dygan-build-tfrecords`
    and `dygan-fit --brats-root` take it: --split-file | --train-fraction |
    --train-hgg/--train-lgg (checked by `split_options`)."""
    split = parser.add_mutually_exclusive_group()
    split.add_argument(
        "--split-file",
        help="a shared split: one training case id per line (the rest test), or "
        "'<case id> train|test' lines",
    )
    split.add_argument(
        "--train-fraction",
        type=float,
        help="train this fraction of each grade (drawn with --seed); for a root without "
        "HGG/LGG folders (BraTS 2020+) a fraction of all its cases",
    )
    parser.add_argument(
        "--train-hgg", type=int, help=f"HGG training cases (default: {TRAIN_HGG}, the paper's)"
    )
    parser.add_argument(
        "--train-lgg", type=int, help=f"LGG training cases (default: {TRAIN_LGG}, the paper's)"
    )


def split_options(args):
    """{train_hgg, train_lgg, split_file, train_fraction} of the split flags; one
    UserError line naming the flag for a bad combination or value."""
    counts = [f for f in ("train_hgg", "train_lgg") if getattr(args, f) is not None]
    if counts and (args.split_file or args.train_fraction is not None):
        chosen = "--split-file" if args.split_file else "--train-fraction"
        raise UserError(f"{chosen}: gives the split; drop --train-hgg/--train-lgg")
    options = {
        "train_hgg": TRAIN_HGG if args.train_hgg is None else args.train_hgg,
        "train_lgg": TRAIN_LGG if args.train_lgg is None else args.train_lgg,
        "split_file": args.split_file,
        "train_fraction": args.train_fraction,
    }
    for flag in ("train_hgg", "train_lgg"):
        if options[flag] < 0:
            raise UserError(f"--{flag.replace('_', '-')}: expected >= 0, found {options[flag]}")
    if args.train_fraction is not None and not 0 < args.train_fraction < 1:
        raise UserError(
            f"--train-fraction: expected a fraction between 0 and 1, found {args.train_fraction}"
        )
    return options


def check_root_and_split(brats_root, split_file=None):
    """Before any shard is built (`dygan-build-tfrecords`, `dygan-fit --brats-root`): the
    root's cases and their layout, and every case id of the split file among them; one
    UserError naming --brats-root or --split-file."""
    with for_flag("--brats-root"):
        cases = discover_cases(brats_root)  # the same listing the build makes
        layout_of(cases)
    if split_file:
        with for_flag("--split-file"):
            read_split_file(split_file, cases)
