"""Evaluates trained generators on a split: report.json, report.md (Table 2) and figure.png.

    dygan-evaluate --run RUN_DIR [--data TFRECORD_DIR] --out DIR
    dygan-evaluate --model SAVEDMODEL_DIR --data TFRECORD_DIR --out DIR
        [--split test] [--compare RUN_A RUN_B ...] [--figure-cases 4] [--tta flip]
        [--baseline-from TRAIN_SHARDS]

Baselines scored beside every model: copy_source (the source slice itself) and
intensity_lut (per target, source intensity -> mean target intensity on the training split
of --baseline-from, else of the folder the shards' manifest names in baseline_from,
as the named phantom test sets do, else of --data itself).
`--tta flip` (ours) scores every model's left-right flip-averaged outputs
(`dygan_tf.inference.tta`). A run is scored only on the shards it trained on (run.json
records their manifest's sha256): other or rebuilt shards are refused in one line naming
what changed, unless `--allow-changed-data` (recorded in report.json).
"""

from dygan_tf.inference.tta import TTA_MODES
from dygan_tf.utils.cli import ArgumentParser, run_main
from dygan_tf.utils.errors import UserError, for_flag

PROG = "dygan-evaluate"


def main(argv=None):
    p = ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    which = p.add_mutually_exclusive_group()
    which.add_argument("--run", help="training run folder")
    which.add_argument("--model", help="exported SavedModel folder")
    p.add_argument("--data", help="TFRecord folder (default: the run's training data)")
    p.add_argument("--split", default="test")
    p.add_argument("--out", required=True)
    p.add_argument("--compare", nargs="+", default=[], metavar="RUN")
    p.add_argument("--figure-cases", type=int, default=4)
    p.add_argument(
        "--tta",
        choices=TTA_MODES,
        default="none",
        help="test-time augmentation of the models' outputs (flip: left-right mean)",
    )
    p.add_argument(
        "--baseline-from",
        metavar="SHARDS",
        help="shard folder whose training split fits the intensity LUT",
    )
    p.add_argument(
        "--allow-changed-data",
        action="store_true",
        help="score a run on shards other than those it trained on (refused otherwise; "
        "the report records it)",
    )
    args = p.parse_args(argv)
    runs = ([args.run] if args.run else []) + list(args.compare)
    if not runs and not args.model:
        raise UserError(f"{PROG}: expected --run RUN_DIR, --model DIR or --compare")
    if args.model and not args.data:
        raise UserError(f"{PROG}: --model needs --data TFRECORD_DIR")
    if args.figure_cases < 1:
        raise UserError(f"--figure-cases: expected >= 1, found {args.figure_cases}")
    from dygan_tf.data.shard_folder import ShardFolder
    from dygan_tf.inference.synthesis import check_savedmodel
    from dygan_tf.run_folder.folder import RunFolder
    from dygan_tf.utils.cli import import_tensorflow_quietly

    # Pure Python: missing run folders, a folder without a SavedModel and bad shards are
    # refused before TensorFlow starts.
    flags = (["--run"] if args.run else []) + ["--compare"] * len(args.compare)
    runs = [RunFolder(run) for run in runs]  # each opened once here, handed down
    for flag, run in zip(flags, runs):
        with for_flag(flag):
            run.require()
    if args.model:
        with for_flag("--model"):
            check_savedmodel(args.model)
    shards = baseline = None  # each opened once here, handed down
    if args.data:
        with for_flag("--data"):
            shards = ShardFolder.open(args.data)
    if args.baseline_from:
        with for_flag("--baseline-from"):
            baseline = ShardFolder.open(args.baseline_from)
    import_tensorflow_quietly()  # its C++ start-up lines would break one-line errors
    from dygan_tf.evaluation import report
    from dygan_tf.run_folder.data_record import ChangedData

    try:
        report.evaluate_report(
            runs,
            args.out,
            data_dir=shards,
            split=args.split,
            model=args.model,
            figure_cases=args.figure_cases,
            run_flags=flags,
            tta_mode=args.tta,
            allow_changed_data=args.allow_changed_data,
            baseline_from=baseline,
        )
    except ChangedData as e:
        raise UserError(f"{e}; --allow-changed-data scores them anyway") from None


def cli():
    """The installed `dygan-evaluate` command (pyproject.toml's [project.scripts])."""
    run_main(main)


if __name__ == "__main__":
    cli()
